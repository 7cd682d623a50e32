"""The bisection dispute game (DisputeGame, StepVerifier, TraceCodec) on a real anvil, every transaction signed locally.

Step programs are built by hand here with `trace_codec` (every step kind); the game runs first against a small test
oracle (tests/contracts/GameTestOracle.sol: it records each result and refuses a second one), then end to end through
AIOracle (challenge without a proof → game → settleGame → slash or settle, bonds where they belong, stale games).

- StepVerifier.evaluate agrees with `trace_codec.evaluate_step` + `int_pack` on random and edge-case steps.
- Randomized games: a liar defender (lying at the first step, the last step, inside a GEMM tile, only in the claimed
  output, a garbage leaf, a lie carried through the rest of the trace) always loses; a lying challenger against an
  honest defender always loses; a side that stops answering loses by clock; every transaction <= 5M gas.
- Garbage moves revert with the right custom error.
"""

import json
import os
import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from eth_utils import keccak
from web3.logs import DISCARD

from helpers import ToyModel, advance, compile_with_test_contracts, fraud_proof, from_field, funded_accounts, reverts, rolled_back
from imo.proving.protocol import Claim, ModelSpec, Registration, SegmentSpec, pack_tensor, to_field
from imo.proving.trace_codec import (
    TRANSFORMER_KINDS,
    ZERO,
    MerkleTree,
    Slice,
    Step,
    StepKind,
    TraceDataError,
    evaluate_step,
    int_pack,
    table_tree,
)
from imo.verifier_contracts.contracts import ContractRevertError, OracleConfig, deploy_protocol, transact
from imo.verifier_contracts.evm import deploy
from imo.verifier_contracts.game_client import (
    GameClient,
    GameStatus,
    StepWitness,
    Turn,
)
from imo.verifier_contracts.oracle_client import OracleClient, Status

K = StepKind
MAX_TX_GAS = 5_000_000
CLOCK = 1_000
ETH = 10**18
BOND = 10**16
FEE = 10**15
CHALLENGE_WINDOW = 600
RESPONSE_WINDOW = 1_000  # each side's game clock: longer than the challenge window, so a game outlives it
I64 = (-(1 << 63), (1 << 63) - 1)
GAS: dict[str, list[int]] = {}  # move (step per kind) → gas of every such transaction in this module
GAMES: list[dict] = []  # per game: moves, max and total gas



# ------------------------------------------------------------------ playing hand-built trees honestly


def honest_choice(reference: MerkleTree, left: bytes, right: bytes, height: int, index: int) -> bool:
    """The challenger's choice at the node (height, index) whose revealed children are left/right: the left child
    when it differs from the reference tree's (the first wrong leaf is there), else the right one. `reference` is the
    honest trace with, where the claimed output differs from the honest one, the OUTPUT step's leaf replaced by a value
    no trace can have (e.g. keccak(b"wrong output")), so that the game ends on the OUTPUT step, which is then invalid."""
    if reference.node(height - 1, 2 * index) != left:
        return False
    # the padding after the last step is never the way (no step lives there): prefer the child holding real steps
    return (2 * index + 1) << (height - 1) < len(reference.leaves)


def defender_proof(reference: MerkleTree, revealed: dict[tuple[int, int], bytes], leaf: int) -> list[bytes]:
    """The Merkle proof of leaf `leaf` (left of the disputed one) under the defender's root: the siblings the defender
    revealed where it did, the reference tree's elsewhere (those subtrees hold only leaves left of the disputed one,
    on which both sides agree)."""
    out, index = [], leaf
    for height in range(reference.depth):
        sibling = index ^ 1
        out.append(revealed.get((height, sibling), reference.node(height, sibling)))
        index >>= 1
    return out

def record(name: str, receipt) -> int:
    assert receipt.gasUsed <= MAX_TX_GAS, f"{name} used {receipt.gasUsed} gas"
    GAS.setdefault(name, []).append(receipt.gasUsed)
    return receipt.gasUsed


@pytest.fixture(scope="module", autouse=True)
def gas_report():
    yield
    summary = {name: {"n": len(v), "max": max(v), "mean": sum(v) // len(v)} for name, v in sorted(GAS.items())}
    if GAMES:
        summary["per_game"] = {"games": len(GAMES), "max_tx_gas": max(g["max"] for g in GAMES),
                               "max_total_gas": max(g["total"] for g in GAMES), "max_moves": max(g["moves"] for g in GAMES)}
    print("\ndispute game gas:\n" + "\n".join(f"  {name}: {json.dumps(v)}" for name, v in summary.items()))
    if os.environ.get("IMO_GAME_GAS_REPORT"):
        with open(os.environ["IMO_GAME_GAS_REPORT"], "w") as f:
            json.dump(summary, f, indent=1)


# ---------------------------------------------------------------- step programs


@dataclass
class Program:
    """A hand-built step program with its constants and lookup tables."""

    steps: list[Step] = field(default_factory=list)
    consts: dict[int, list[int]] = field(default_factory=dict)
    tables: dict[int, tuple[int, list[int], MerkleTree]] = field(default_factory=dict)
    _tree: MerkleTree | None = None

    def add(self, kind: StepKind, operands=(), params=(), out_count=0, const=None, table=None) -> int:
        i = len(self.steps)
        const_hash = ZERO
        if const is not None:
            self.consts[i] = list(const)
            const_hash = keccak(int_pack(const))
        if table is not None:
            tree = table_tree(table)
            self.tables[i] = (params[0], list(table), tree)
            const_hash = tree.root
        self.steps.append(Step(kind, tuple(tuple(op) for op in operands), tuple(params), const_hash, out_count))
        self._tree = None
        return i

    @property
    def tree(self) -> MerkleTree:
        if self._tree is None:
            self._tree = MerkleTree([s.hash() for s in self.steps])
        return self._tree

    @property
    def root(self) -> bytes:
        return self.tree.root

    def operands(self, i: int, outs: list[list[int]]) -> list[list[int]]:
        return [[v for sl in op for v in outs[sl.step][sl.start:sl.start + sl.count]] for op in self.steps[i].operands]

    def evaluate(self, i: int, outs: list[list[int]], inp: list[int], out_boundary: list[int] | None) -> list[int]:
        s = self.steps[i]
        ops = self.operands(i, outs)
        table = None
        if i in self.tables:
            p0, values, _ = self.tables[i]
            table = lambda x: values[x - p0]  # noqa: E731
        boundary = inp if s.kind == K.INPUT else (ops[0] if out_boundary is None else out_boundary) if s.kind == K.OUTPUT else None
        return evaluate_step(s, ops, self.consts.get(i), boundary, table)

    def run(self, inp: list[int], out_boundary: list[int] | None = None, upto: int | None = None) -> list[list[int]]:
        """Every step's output (the honest trace); OUTPUT checks against `out_boundary` (default: its own operand)."""
        outs: list[list[int]] = []
        for i in range(len(self.steps) if upto is None else upto):
            outs.append(self.evaluate(i, outs, inp, out_boundary))
        return outs


def leaves_of(outs: list[list[int]]) -> list[bytes]:
    return [keccak(int_pack(o)) for o in outs]


def split(n: int, rng: random.Random, most: int) -> list[int]:
    sizes = []
    while n > 0:
        sizes.append(min(n, rng.randint(1, most)))
        n -= sizes[-1]
    return sizes


def random_program(rng: random.Random) -> tuple[Program, list[int]]:
    """INPUT chunks → GEMM column tiles → ADD bias → RESCALE → RELU → MUL → ADD → RESCALE → LOOKUP → OUTPUT, with
    random sizes, tiles, weights and input; the lookup table covers the honest values (and a little more)."""
    n_in = rng.choice([8, 12, 16])
    inp = [rng.randint(-40, 40) for _ in range(n_in)]
    p = Program()
    x, pos = [], 0
    for c in split(n_in, rng, 8):
        x.append(Slice(p.add(K.INPUT, (), (pos,), c), 0, c))
        pos += c
    m = rng.randint(3, 10)
    w = [[rng.randint(-6, 6) for _ in range(m)] for _ in range(n_in)]
    h, col = [], 0
    for t in split(m, rng, 3):
        c = [w[k][col + j] for k in range(n_in) for j in range(t)]
        h.append(Slice(p.add(K.GEMM, [x], (n_in, t), t, const=c), 0, t))
        col += t
    b = p.add(K.ADD, [h], (1, 1), m, const=[rng.randint(-60, 60) for _ in range(m)])
    r = p.add(K.RESCALE, [[Slice(b, 0, m)]], (rng.randint(2, 4),), m)
    relu = p.add(K.RELU, [[Slice(r, 0, m)]], (), m)
    mul = p.add(K.MUL, [[Slice(r, 0, m)], [Slice(relu, 0, m)]], (), m)
    add2 = p.add(K.ADD, [[Slice(mul, 0, m)], [Slice(r, 0, m)]], (rng.choice([1, 2]), rng.choice([-3, -1, 1, 2])), m)
    r2 = p.add(K.RESCALE, [[Slice(add2, 0, m)]], (rng.randint(6, 9),), m)
    vals = p.run(inp, upto=r2 + 1)[r2]
    lo, hi = min(vals) - rng.randint(0, 4), max(vals) + rng.randint(0, 4)
    lk = p.add(K.LOOKUP, [[Slice(r2, 0, m)]], (lo, hi), m, table=[rng.randint(-500, 500) for _ in range(hi - lo + 1)])
    extra = rng.randint(1, m)
    p.add(K.OUTPUT, [[Slice(lk, 0, m), Slice(relu, m - extra, extra)]], (), m + extra)
    return p, inp


# ---------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def world(chain):
    """StepVerifier, a GameTestOracle and the DisputeGame wired to them; parties with fresh local keys."""
    w3 = chain.w3
    deployer, defender, challenger, anyone = funded_accounts(w3, 4, wei=100 * ETH)
    compiled = compile_with_test_contracts()
    verifier, gas_verifier = deploy(w3, compiled["StepVerifier"], deployer)
    oracle, _ = deploy(w3, compiled["GameTestOracle"], deployer)
    game, gas_game = deploy(w3, compiled["DisputeGame"], deployer, oracle.address, verifier.address)
    transact(oracle.functions.setGame(game.address), deployer)
    GAS["deploy StepVerifier"] = [gas_verifier]
    GAS["deploy DisputeGame"] = [gas_game]
    return SimpleNamespace(w3=w3, compiled=compiled, verifier=verifier, oracle=oracle, game=game, deployer=deployer,
                           defender=defender, challenger=challenger, anyone=anyone,
                           games=GameClient(w3, game.address, anyone))


@pytest.fixture
def fresh(world):
    with rolled_back(world.w3):
        yield world


@dataclass
class Scenario:
    """One game: the program, the claim's input and published output, and the defender's trace."""

    program: Program
    inp: list[int]
    honest: list[list[int]]
    claimed_out: list[int]
    defender_leaves: list[bytes]

    @property
    def in_bytes(self) -> bytes:
        return pack_tensor(self.inp)

    @property
    def out_bytes(self) -> bytes:
        return pack_tensor(self.claimed_out)

    @property
    def defender_tree(self) -> MerkleTree:
        return MerkleTree(self.defender_leaves)

    def reference(self) -> MerkleTree:
        """The honest challenger's tree: the honest trace, with a leaf no trace has at OUTPUT when the claimed output
        is not the honest one."""
        leaves = leaves_of(self.honest)
        last = len(leaves) - 1
        if self.program.steps[last].kind == K.OUTPUT and self.honest[last] != self.claimed_out:
            leaves[last] = keccak(b"wrong output")
        return MerkleTree(leaves)


def honest_scenario(program: Program, inp: list[int]) -> Scenario:
    honest = program.run(inp)
    return Scenario(program, inp, honest, honest[-1], leaves_of(honest))


def lying_scenario(program: Program, inp: list[int], at: int, how: str, rng: random.Random) -> Scenario:
    """A defender whose trace is wrong at step `at`: `single` (only that leaf; at OUTPUT the claim says the same),
    `carried` (the lie flows through every later step and into the claimed output), `garbage` (a leaf that is no
    int_pack at all), `output` (an honest trace, only the claimed output is wrong), `output-leaf` (the claimed
    output wrong, and the OUTPUT leaf says so too)."""
    honest = program.run(inp)
    last = len(honest) - 1
    outs = [list(o) for o in honest]

    def nudge(values: list[int]) -> list[int]:
        if not values:
            return [rng.randint(-3, 3)]
        values = list(values)
        j = rng.randrange(len(values))
        values[j] += rng.choice([-2, -1, 1, 2, 1000])
        return values

    claimed = honest[last]
    if how in ("output", "output-leaf"):
        claimed = nudge(honest[last])
        if how == "output-leaf":
            outs[last] = claimed
        return Scenario(program, inp, honest, claimed, leaves_of(outs))
    if how == "garbage":
        leaves = leaves_of(outs)
        leaves[at] = keccak(rng.randbytes(40))
        return Scenario(program, inp, honest, claimed, leaves)
    outs[at] = nudge(outs[at])
    leaves = leaves_of(outs)
    if at == last:
        claimed = outs[at]
    elif how == "carried":
        broken = set()
        for i in range(at + 1, len(outs)):
            if any(sl.step in broken for op in program.steps[i].operands for sl in op):
                broken.add(i)
                leaves[i] = keccak(rng.randbytes(33))
                continue
            try:
                outs[i] = program.evaluate(i, outs, inp, None)
                leaves[i] = keccak(int_pack(outs[i]))
            except TraceDataError:  # e.g. a lookup input the lie pushed off the table: the liar commits to anything
                broken.add(i)
                leaves[i] = keccak(rng.randbytes(33))
        claimed = outs[last] if last not in broken else nudge(honest[last])
    return Scenario(program, inp, honest, claimed, leaves)


def open_game(w, sc: Scenario, defender=None, challenger=None, clock=CLOCK) -> int:
    setup = (7, 1, (defender or w.defender).address, (challenger or w.challenger).address, sc.program.root,
             len(sc.program.steps), keccak(sc.in_bytes), keccak(sc.out_bytes), clock)
    receipt = transact(w.oracle.functions.openGame(setup), w.anyone)
    record("open (oracle → DisputeGame.open)", receipt)
    return w.game.events.GameOpened().process_receipt(receipt, errors=DISCARD)[0]["args"]["gameId"]


def witness(sc: Scenario, i: int, revealed: dict, outs: list[list[int]] | None = None) -> StepWitness:
    """The honest challenger's witness for step i: producer leaves from the honest trace (agreed: left of i), proven
    under the defender's root with the nodes it revealed."""
    p, outs = sc.program, outs or sc.honest
    reference = sc.reference()
    s = p.steps[i]
    leaves, proofs = [], []
    for op in s.operands:
        for sl in op:
            leaves.append(int_pack(outs[sl.step]))
            proofs.append(defender_proof(reference, revealed, sl.step))
    wit = StepWitness(s, p.tree.proof(i), leaves, proofs, int_pack(p.consts[i]) if i in p.consts else b"",
                      sc.in_bytes if s.kind == K.INPUT else sc.out_bytes if s.kind == K.OUTPUT else b"")
    if s.kind == K.LOOKUP:
        p0, values, tree = p.tables[i]
        for x in p.operands(i, outs)[0]:
            if p0 <= x <= s.params[1]:
                wit.table_values.append(values[x - p0])
                wit.table_proofs.append(tree.proof(x - p0))
    return wit


def play(w, sc: Scenario, challenger_mode: str = "honest", defender_stops: int | None = None,
         challenger_stops: int | None = None, rng: random.Random | None = None) -> SimpleNamespace:
    """Play a game to its end; returns the final game record, the moves' gas and the disputed index.
    challenger_mode: `honest` (descend to the first wrong leaf, then step), `random` (random choices, then the best
    witness it has, which fails against an honest defender), `claims-output-wrong` (a liar who says the output is
    wrong). A side stops answering at its `*_stops`-th move: its clock runs out and anyone calls `timeout`."""
    rng = rng or random.Random(0)
    gid = open_game(w, sc)
    d, c = w.games.as_sender(w.defender), w.games.as_sender(w.challenger)
    tree = sc.defender_tree
    reference = sc.reference() if challenger_mode == "honest" else MerkleTree(
        leaves_of(sc.honest)[:-1] + [keccak(b"wrong output")]) if challenger_mode == "claims-output-wrong" else None
    gas, d_moves, c_moves = [], 0, 0

    def give_up():
        advance(w.w3, CLOCK + 1)
        gas.append(record("timeout (+ settle)", w.games.timeout(gid)))

    while True:
        g = w.games.game(gid)
        if g.over:
            break
        if g.turn is Turn.DEFENDER:
            if d_moves == defender_stops:
                with reverts("GameClockRunning"):
                    w.games.timeout(gid)
                advance(w.w3, CLOCK + 1)
                with reverts("GameClockExpired"):  # too late to answer now
                    d.post_root(gid, tree.root, tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1)) \
                        if g.status == GameStatus.AWAITING_ROOT else d.reveal(gid, ZERO, ZERO)
                gas.append(record("timeout (+ settle)", w.games.timeout(gid)))
                continue
            d_moves += 1
            if g.status == GameStatus.AWAITING_ROOT:
                gas.append(record("postRoot", d.post_root(gid, tree.root, tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1))))
            else:
                h, idx = g.height, g.index
                gas.append(record("reveal", d.reveal(gid, tree.node(h - 1, 2 * idx), tree.node(h - 1, 2 * idx + 1))))
            continue
        if c_moves == challenger_stops:
            give_up()
            continue
        c_moves += 1
        if g.status == GameStatus.AWAITING_CHOICE:
            if reference is not None:
                right = honest_choice(reference, g.left, g.right, g.height, g.index)
            else:
                right = rng.random() < 0.5
            try:
                gas.append(record("choose", c.choose(gid, right)))
            except ContractRevertError as exc:
                assert exc.name == "GameIndexOutOfRange" and right and reference is None, exc
                gas.append(record("choose", c.choose(gid, False)))
            continue
        i = g.index
        wit = witness(sc, i, w.games.revealed_nodes(gid))
        try:
            gas.append(record(f"step {sc.program.steps[i].kind.name}", c.step(gid, wit)))
        except ContractRevertError as exc:
            assert exc.name == "StepCorrect" and exc.args_ == (gid, i), exc
            give_up()
    final = w.games.game(gid)
    assert w.oracle.functions.results(gid).call() == (1 if final.status == GameStatus.CHALLENGER_WON else 2)
    GAMES.append({"moves": len(gas), "max": max(gas), "total": sum(gas)})
    return SimpleNamespace(game=final, gas=gas, index=final.index, game_id=gid)


# ---------------------------------------------------------------- StepVerifier == evaluate_step


def py_result(step: Step, ops, const, boundary, table_values, p0) -> bytes | None:
    table = (lambda x: table_values[x - p0]) if table_values is not None else None  # noqa: E731
    try:
        return int_pack(evaluate_step(step, ops, const, boundary, table))
    except TraceDataError:
        return None


def chain_result(w, step: Step, ops, const, boundary_bytes, table_for_inputs) -> bytes | None:
    valid, packed = w.verifier.functions.evaluate(step.abi_tuple(), ops, b"" if const is None else int_pack(const),
                                                  boundary_bytes, table_for_inputs).call()
    return bytes(packed) if valid else None


def edge_values(rng: random.Random, n: int, big: bool = False) -> list[int]:
    pool = [0, 1, -1, 127, 128, -128, -129, 32767, 32768, -32768, -32769, (1 << 31) - 1, -(1 << 31), 1 << 31]
    if big:
        pool += [I64[0], I64[1], 1 << 40, -(1 << 40), (1 << 62) + 5]
    return [rng.choice(pool) if rng.random() < 0.3 else rng.randint(-300, 300) for _ in range(n)]


def random_step_case(rng: random.Random):
    """(step, operands, const, boundary values or None, table values or None) of a random kind, often malformed."""
    kind = K(rng.randrange(8))
    n = rng.randint(0, 9)
    a = edge_values(rng, n, big=kind in (K.RESCALE, K.RELU, K.MUL, K.ADD, K.OUTPUT))
    jitter = rng.choice([0, 0, 0, 1, -1]) if n else rng.choice([0, 1])
    sl = (Slice(0, 0, n),)
    if kind == K.INPUT:
        boundary = [v for v in edge_values(rng, rng.randint(0, 12)) if -(1 << 31) <= v < (1 << 31)]  # int32, as claims
        start = rng.randint(0, len(boundary) + 2)
        cnt = max(0, rng.randint(0, 6))
        return Step(kind, (), (start,), ZERO, cnt), [], None, boundary, None
    if kind == K.OUTPUT:
        boundary = [v for v in a if -(1 << 31) <= v < (1 << 31)]
        a = list(boundary)
        if rng.random() < 0.4 and boundary:
            boundary[rng.randrange(len(boundary))] += 1
        elif rng.random() < 0.2:
            boundary = boundary + [5]
        return Step(kind, (sl,), (), ZERO, len(a) + jitter), [a], None, boundary, None
    if kind == K.GEMM:
        kk, tt = rng.randint(0, 6), rng.randint(0, 4)
        if rng.random() < 0.1:
            kk, tt = 0, -1
        a = edge_values(rng, max(kk, 0) + (1 if rng.random() < 0.1 else 0), big=rng.random() < 0.3)
        c = edge_values(rng, max(kk * tt, 0) + (1 if rng.random() < 0.1 else 0), big=rng.random() < 0.3)
        return Step(kind, ((Slice(0, 0, len(a)),),), (kk, tt), ZERO, max(tt + jitter, 0)), [a], c, None, None
    if kind in (K.ADD, K.MUL):
        b = edge_values(rng, n + (rng.choice([-1, 1]) if rng.random() < 0.15 and n else 0), big=True)
        params = (rng.choice([1, -1, 3, 1 << 100, -(1 << 60)]), rng.choice([1, 2, -7, 1 << 70])) if kind == K.ADD else ()
        two = rng.random() < 0.5
        ops = [a, b] if two else [a]
        step = Step(kind, (sl, (Slice(0, 0, len(b)),)) if two else (sl,), params, ZERO, n + jitter)
        return step, ops, None if two else b, None, None
    if kind == K.RESCALE:
        shift = rng.choice([-3, 0, 1, 2, 3, 7, 31, 62, 63, 64, 65, 127, 128, 300])
        if rng.random() < 0.5:  # exact halves: round half away from zero, on both signs
            a = [rng.choice([-1, 1]) * (rng.randint(0, 50) * 2 + 1) << max(shift - 1, 0) if 0 < shift < 40 else v for v in a]
            a = [max(min(v, I64[1]), I64[0]) for v in a]
        return Step(kind, (sl,), (shift,), ZERO, n + jitter), [a], None, None, None
    if kind == K.RELU:
        return Step(kind, (sl,), (), ZERO, n + jitter), [a], None, None, None
    p0 = rng.randint(-50, 10)
    p1 = p0 + rng.randint(0, 60)
    a = [rng.randint(p0 - 3, p1 + 3) if rng.random() < 0.1 else rng.randint(p0, p1) for _ in range(n)]
    table = [rng.choice([rng.randint(-1000, 1000), I64[0], I64[1], 1 << 63]) if rng.random() < 0.05 else rng.randint(-1000, 1000)
             for _ in range(p1 - p0 + 1)]
    return Step(kind, (sl,), (p0, p1), ZERO, n + jitter), [a], None, None, table


def test_step_verifier_agrees_with_evaluate_step_on_random_and_edge_cases(world):
    rng = random.Random(1234)
    seen = {k: [0, 0] for k in K if k not in TRANSFORMER_KINDS}  # valid, invalid (those: test_trace_transformer.py)
    for _ in range(400):
        step, ops, const, boundary, table = random_step_case(rng)
        p0 = step.params[0] if step.kind == K.LOOKUP else 0
        want = py_result(step, ops, const, boundary, table, p0)
        if step.kind == K.LOOKUP:
            a = ops[0] if ops else []
            in_range = all(step.params[0] <= x <= step.params[1] for x in a)
            table_for_inputs = [table[x - p0] for x in a] if in_range else []
            table_for_inputs = [v if I64[0] <= v <= I64[1] else v for v in table_for_inputs]
        else:
            table_for_inputs = []
        try:
            got = chain_result(world, step, ops, const, pack_tensor(boundary) if boundary is not None else b"", table_for_inputs)
        except Exception as exc:  # noqa: BLE001 - report the case
            raise AssertionError(f"{step} {ops} {const} {boundary}: {exc}") from None
        assert got == want, (step, ops, const, boundary, table_for_inputs, got, want)
        seen[step.kind][want is None] += 1
    assert all(v > 0 and i > 0 for k, (v, i) in seen.items() if k != K.RELU), seen  # both outcomes for every kind


@pytest.mark.parametrize("case", [
    # (kind, operands, params, const, boundary, table, out_count)
    ("RESCALE", [[-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 5, 6]], (2,), None, None, None, 12),  # -1.5 → -2, 1.25 → 1
    ("RESCALE", [[I64[0], I64[1], -1]], (64,), None, None, None, 3),  # |int64 min| rounds up to 1 at 2^64
    ("RESCALE", [[I64[0], 5]], (-4,), None, None, None, 2),  # a non-positive shift leaves the values
    ("MUL", [[1 << 40], [1 << 30]], (), None, None, None, 1),  # 2^70: no int64 holds it
    ("MUL", [[(1 << 31)], [(1 << 31) - 1]], (), None, None, None, 1),  # fits only width 8
    ("ADD", [[1, 2], [3]], (1, 1), None, None, None, 2),  # length mismatch
    ("ADD", [[]], (1 << 200, 1), [], None, None, 0),  # empty: huge params never multiply anything
    ("ADD", [[I64[1]], [1]], (1, 1), None, None, None, 1),  # int64 max + 1
    ("GEMM", [[]], (0, 3), [], None, None, 3),  # K = 0: T zeros
    ("GEMM", [[1, 2]], (2, 2), [1, 2, 3], None, None, 2),  # weights of the wrong size
    ("RELU", [[]], (), None, None, None, 0),
    ("RELU", [[]], (), None, None, None, 1),  # one output promised, none computed
    ("LOOKUP", [[-3, 4]], (-3, 3), None, None, [7, 6, 5, 4, 3, 2, 1], 2),  # 4 is off the table
    ("LOOKUP", [[-3, 3]], (-3, 3), None, None, [7, 6, 5, 4, 3, 2, 1], 2),
    ("OUTPUT", [[1, 2, 3]], (), None, [1, 2, 4], None, 3),  # the trace's output is not the published one
    ("OUTPUT", [[1, 2, 3]], (), None, [1, 2, 3], None, 3),
    ("INPUT", [], (3,), None, [1, 2, 3, 4], None, 2),  # past the end of the boundary
    ("INPUT", [], (2,), None, [1, 2, 3, -70000], None, 2),
])
def test_step_verifier_edge_cases(world, case):
    kind, ops, params, const, boundary, table, n = case
    step = Step(K[kind], tuple((Slice(0, 0, len(o)),) for o in ops), params, ZERO, n)
    p0 = params[0] if table is not None else 0
    want = py_result(step, ops, const, boundary, table, p0)
    a = ops[0] if ops else []
    tv = [table[x - p0] for x in a] if table and all(params[0] <= x <= params[1] for x in a) else []
    assert chain_result(world, step, ops, const, pack_tensor(boundary) if boundary else b"", tv) == want


# ---------------------------------------------------------------- randomized games

LIES = [("first", "single"), ("last", "single"), ("tile", "single"), ("tile", "carried"), ("random", "single"),
        ("random", "carried"), ("random", "garbage"), ("output", "output"), ("output", "output-leaf"), ("first", "carried")]


@pytest.mark.parametrize("seed", range(40))
def test_a_lying_defender_always_loses(world, seed):
    rng = random.Random(seed)
    program, inp = random_program(rng)
    where, how = LIES[seed % len(LIES)]
    n = len(program.steps)
    tiles = [i for i, s in enumerate(program.steps) if s.kind == K.GEMM]
    at = {"first": 0, "last": n - 1, "tile": rng.choice(tiles), "random": rng.randrange(n), "output": n - 1}[where]
    sc = lying_scenario(program, inp, at, how, rng)
    with rolled_back(world.w3):
        result = play(world, sc, "honest", rng=rng)
    assert result.game.status == GameStatus.CHALLENGER_WON, (where, how, at)
    if how in ("single", "garbage") and where != "output":
        assert result.index == at  # the first wrong leaf is the lie itself
    assert len(result.gas) <= 2 * program.tree.depth + 2


@pytest.mark.parametrize("seed", range(12))
def test_an_honest_defender_never_loses_to_a_lying_challenger(world, seed):
    rng = random.Random(1000 + seed)
    program, inp = random_program(rng)
    sc = honest_scenario(program, inp)
    with rolled_back(world.w3):
        result = play(world, sc, "random" if seed % 2 else "claims-output-wrong", rng=rng)
    assert result.game.status == GameStatus.DEFENDER_WON


@pytest.mark.parametrize("seed", range(10))
def test_a_side_that_stops_answering_loses_by_clock(world, seed):
    rng = random.Random(2000 + seed)
    program, inp = random_program(rng)
    depth = program.tree.depth
    with rolled_back(world.w3):
        if seed % 2:  # the honest defender stops: post_root or some reveal never comes
            result = play(world, honest_scenario(program, inp), "claims-output-wrong", defender_stops=rng.randint(0, depth - 1), rng=rng)
            assert result.game.status == GameStatus.CHALLENGER_WON and result.game.defender_clock == 0
        else:  # the honest challenger stops before its step against a liar
            sc = lying_scenario(program, inp, rng.randrange(len(program.steps)), "single", rng)
            result = play(world, sc, "honest", challenger_stops=rng.randint(0, depth), rng=rng)
            assert result.game.status == GameStatus.DEFENDER_WON and result.game.challenger_clock == 0


def test_clocks_are_chess_clocks(fresh):
    w = fresh
    rng = random.Random(5)
    program, inp = random_program(rng)
    sc = honest_scenario(program, inp)
    gid = open_game(w, sc)
    tree = sc.defender_tree
    assert w.games.game(gid).turn is Turn.DEFENDER and w.games.clocks(gid) == (CLOCK, CLOCK)
    advance(w.w3, 300)
    w.games.as_sender(w.defender).post_root(gid, tree.root, tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1))
    g = w.games.game(gid)
    assert g.turn is Turn.CHALLENGER and CLOCK - 303 <= g.defender_clock <= CLOCK - 300 and g.challenger_clock == CLOCK
    advance(w.w3, 200)
    d_left, c_left = w.games.clocks(gid)
    assert d_left == g.defender_clock and CLOCK - 201 <= c_left <= CLOCK - 200
    with reverts("GameClockRunning"):
        w.games.timeout(gid)


# ---------------------------------------------------------------- big steps: gas


def big_program(rng: random.Random) -> tuple[Program, list[int]]:
    """A 4096-value input in 8 INPUT chunks of 512; GEMM K=4096 (T=1) over it (width-4 leaves) and over its squares
    (width-8 leaves); a 32-input LOOKUP into a 2^18-entry table; rescales; OUTPUT."""
    inp = [rng.randint(-(1 << 17), (1 << 17) - 1) for _ in range(4096)]
    p = Program()
    chunks = [Slice(p.add(K.INPUT, (), (512 * c,), 512), 0, 512) for c in range(8)]
    squares = [Slice(p.add(K.MUL, [[s], [s]], (), 512), 0, 512) for s in chunks]
    g1 = p.add(K.GEMM, [chunks], (4096, 1), 1, const=[rng.randint(-100, 100) for _ in range(4096)])
    g2 = p.add(K.GEMM, [squares], (4096, 1), 1, const=[rng.randint(-100, 100) for _ in range(4096)])
    r1 = p.add(K.RESCALE, [[Slice(g1, 0, 1)]], (8,), 1)
    r2 = p.add(K.RESCALE, [[Slice(g2, 0, 1)]], (40,), 1)
    lo = -(1 << 17)
    lk = p.add(K.LOOKUP, [[Slice(chunks[0].step, 0, 32)]], (lo, lo + (1 << 18) - 1), 32,
               table=[rng.randint(-(1 << 20), 1 << 20) for _ in range(1 << 18)])
    p.add(K.OUTPUT, [[Slice(r1, 0, 1), Slice(r2, 0, 1), Slice(lk, 0, 32)]], (), 34)
    return p, inp


def test_gas_of_the_largest_steps_stays_under_5m(world):
    rng = random.Random(77)
    program, inp = big_program(rng)
    steps = {s.kind: i for i, s in enumerate(program.steps)}  # the last of each kind
    gemm_w4 = next(i for i, s in enumerate(program.steps) if s.kind == K.GEMM)
    targets = {"INPUT 512 of a 4096-value boundary": 0, "MUL 512": steps[K.MUL], "GEMM K=4096 width-4 leaves": gemm_w4,
               "GEMM K=4096 width-8 leaves": steps[K.GEMM], "RESCALE": steps[K.RESCALE],
               "LOOKUP 32 in a 2^18 table": steps[K.LOOKUP], "OUTPUT 34": steps[K.OUTPUT]}
    measured = {}
    for name, at in targets.items():
        sc = lying_scenario(program, inp, at, "single", rng)
        with rolled_back(world.w3):
            result = play(world, sc, "honest", rng=rng)
        assert result.game.status == GameStatus.CHALLENGER_WON and result.index == at
        measured[name] = result.gas[-1]
        GAS.setdefault(f"step {name}", []).append(result.gas[-1])
    print("\nlargest steps:", measured)
    assert max(measured.values()) <= MAX_TX_GAS


# ---------------------------------------------------------------- garbage


def at_step(w, sc: Scenario, honest_challenger: bool = True) -> tuple[int, int]:
    """A game played up to the challenger's step; returns (game id, disputed index)."""
    gid = open_game(w, sc)
    d, c = w.games.as_sender(w.defender), w.games.as_sender(w.challenger)
    tree, reference = sc.defender_tree, sc.reference()
    d.post_root(gid, tree.root, tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1))
    while True:
        g = w.games.game(gid)
        if g.status == GameStatus.AWAITING_STEP:
            return gid, g.index
        if g.status == GameStatus.AWAITING_CHOICE:
            c.choose(gid, honest_choice(reference, g.left, g.right, g.height, g.index))
        else:
            d.reveal(gid, tree.node(g.height - 1, 2 * g.index), tree.node(g.height - 1, 2 * g.index + 1))


def lookup_liar(seed=3):
    rng = random.Random(seed)
    program, inp = random_program(rng)
    at = next(i for i, s in enumerate(program.steps) if s.kind == K.LOOKUP)
    return lying_scenario(program, inp, at, "single", rng), at


def test_garbage_moves_revert_with_custom_errors(fresh):
    w = fresh
    sc, at = lookup_liar()
    gid = open_game(w, sc)
    d, c = w.games.as_sender(w.defender), w.games.as_sender(w.challenger)
    tree = sc.defender_tree
    l, r = tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1)
    with reverts("GameNotYourMove"):
        c.post_root(gid, tree.root, l, r)
    with reverts("GameChildrenMismatch"):  # a root its children do not hash to
        d.post_root(gid, tree.root, r, l)
    with reverts("GameUnexpectedStatus"):
        c.choose(gid, True)
    with reverts("GameUnexpectedStatus"):  # no such game
        d.post_root(gid + 1, tree.root, l, r)
    d.post_root(gid, tree.root, l, r)
    with reverts("GameUnexpectedStatus"):
        d.post_root(gid, tree.root, l, r)
    with reverts("GameNotYourMove"):
        d.choose(gid, False)
    with reverts("GameNotOracle"):
        transact(w.game.functions.open((1, 1, w.defender.address, w.challenger.address, sc.program.root, 5, ZERO, ZERO, 10)), w.anyone)


def test_out_of_range_indices_revert(fresh):
    w = fresh
    rng = random.Random(11)
    program, inp = random_program(rng)
    while len(program.steps) & (len(program.steps) - 1) == 0:  # need padding
        program, inp = random_program(rng)
    sc = honest_scenario(program, inp)
    gid = open_game(w, sc)
    d, c = w.games.as_sender(w.defender), w.games.as_sender(w.challenger)
    tree = sc.defender_tree
    d.post_root(gid, tree.root, tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1))
    n = len(program.steps)
    # walk along the index of the last real step, then try to step into padding
    target = n - 1
    for level in range(1, tree.depth + 1):
        bit = (target >> (tree.depth - level)) & 1
        if not bit and ((target >> (tree.depth - level)) | 1) << (tree.depth - level) >= n:
            with reverts("GameIndexOutOfRange"):
                c.choose(gid, True)
        c.choose(gid, bool(bit))
        g = w.games.game(gid)
        if g.status == GameStatus.AWAITING_REVEAL:
            d.reveal(gid, tree.node(g.height - 1, 2 * g.index), tree.node(g.height - 1, 2 * g.index + 1))
    assert w.games.game(gid).index == n - 1


def test_one_step_proofs_that_prove_nothing_revert(fresh):
    w = fresh
    sc, at = lookup_liar()
    gid, i = at_step(w, sc)
    assert i == at
    c = w.games.as_sender(w.challenger)
    revealed = w.games.revealed_nodes(gid)
    good = witness(sc, i, revealed)
    p = sc.program

    def bad(**changes):
        return StepWitness(**{**good.__dict__, **changes})

    other = i - 1
    with reverts("StepNotInProgram"):  # a proof for another step
        c.step(gid, bad(step=p.steps[other], step_proof=p.tree.proof(other)))
    with reverts("StepNotInProgram"):
        c.step(gid, bad(step_proof=p.tree.proof(i)[:-1]))
    forged = list(good.leaves)
    vals = list(sc.honest[p.steps[i].operands[0][0].step])
    vals[0] += 1
    forged[0] = int_pack(vals)
    with reverts("StepLeafNotInTrace"):
        c.step(gid, bad(leaves=forged))
    with reverts("StepWrongLeafCount"):
        c.step(gid, bad(leaves=good.leaves + good.leaves, leaf_proofs=good.leaf_proofs + good.leaf_proofs))
    with reverts("StepTableMismatch"):
        c.step(gid, bad(table_values=[v + 1 for v in good.table_values]))
    with reverts("StepTableMismatch"):
        c.step(gid, bad(table_proofs=good.table_proofs[1:] + good.table_proofs[:1]))
    with reverts("GameNotYourMove"):
        w.games.as_sender(w.defender).step(gid, good)
    assert w.games.as_sender(w.challenger).would_win_step(gid, good)
    record(f"step {p.steps[i].kind.name}", c.step(gid, good))
    assert w.games.game(gid).status == GameStatus.CHALLENGER_WON
    with reverts("GameUnexpectedStatus"):
        w.games.timeout(gid)


def test_const_and_boundary_must_match(fresh):
    w = fresh
    rng = random.Random(21)
    program, inp = random_program(rng)
    tile = next(i for i, s in enumerate(program.steps) if s.kind == K.GEMM)
    sc = lying_scenario(program, inp, tile, "single", rng)
    gid, i = at_step(w, sc)
    c = w.games.as_sender(w.challenger)
    good = witness(sc, i, w.games.revealed_nodes(gid))
    with reverts("StepConstMismatch"):
        c.step(gid, StepWitness(**{**good.__dict__, "const_values": int_pack([v + 1 for v in program.consts[i]])}))
    s = program.steps[i]  # a descriptor that is not the program's (here: one whose producer is the step itself)
    with reverts("StepNotInProgram"):
        c.step(gid, StepWitness(**{**good.__dict__, "step": Step(s.kind, ((Slice(i, 0, 1),),), s.params, s.const_hash, s.out_count)}))
    c.step(gid, good)

    sc = lying_scenario(program, inp, 0, "single", rng)
    with rolled_back(w.w3):
        gid, i = at_step(w, sc)
        good = witness(sc, i, w.games.revealed_nodes(gid))
        with reverts("StepBoundaryMismatch"):
            c.step(gid, StepWitness(**{**good.__dict__, "boundary": pack_tensor([v + 1 for v in inp])}))
        c.step(gid, good)


def test_an_honest_leaf_costs_the_challenger(fresh):
    w = fresh
    rng = random.Random(8)
    program, inp = random_program(rng)
    sc = honest_scenario(program, inp)
    # a challenger who says the (right) output is wrong walks to OUTPUT, whose leaf is right
    gid = open_game(w, sc)
    d, c = w.games.as_sender(w.defender), w.games.as_sender(w.challenger)
    tree = sc.defender_tree
    d.post_root(gid, tree.root, tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1))
    n = len(program.steps)
    for level in range(1, tree.depth + 1):
        c.choose(gid, bool(((n - 1) >> (tree.depth - level)) & 1))
        g = w.games.game(gid)
        if g.status == GameStatus.AWAITING_REVEAL:
            d.reveal(gid, tree.node(g.height - 1, 2 * g.index), tree.node(g.height - 1, 2 * g.index + 1))
    before = w.w3.eth.get_balance(w.challenger.address)
    with pytest.raises(ContractRevertError, match="StepCorrect"):
        c.step(gid, witness(sc, n - 1, w.games.revealed_nodes(gid)))
    assert not c.would_win_step(gid, witness(sc, n - 1, w.games.revealed_nodes(gid)))
    with reverts("GameClockRunning"):
        w.games.timeout(gid)
    advance(w.w3, CLOCK + 1)
    w.games.timeout(gid)
    assert w.games.game(gid).status == GameStatus.DEFENDER_WON
    assert w.w3.eth.get_balance(w.challenger.address) <= before


# ---------------------------------------------------------------- end to end through AIOracle


@pytest.fixture(scope="module")
def oracle_world(chain):
    """deploy_protocol (AIOracle + StepVerifier + DisputeGame wired), and two models whose first op segment has a
    registered step program: `one` (a single op segment, public input) and `two` (op with a program → op checked by
    a ToyVerifier)."""
    w3 = chain.w3
    owner, requester, operator, challenger, other, finalizer = funded_accounts(w3, 6, wei=100 * ETH)
    dep = deploy_protocol(w3, owner, sale=None, oracle=OracleConfig(min_bond_wei=BOND, request_timeout_s=5_000))
    compiled = compile_with_test_contracts()
    oracle = OracleClient(w3, dep.oracle, owner)
    assert oracle.dispute_game() == dep.game
    rng = random.Random(99)
    program, inp = random_program(rng)
    honest = program.run(inp)
    n_in, n_out = len(inp), len(honest[-1])
    toy = ToyModel([1, 2], [n_in, n_out, 3])
    models = {}
    for name, sizes in (("one", [n_in, n_out]), ("two", [n_in, n_out, 3])):
        verifiers = [deploy(w3, compiled["ToyVerifier"], owner, k, sizes[k - 1], sizes[k], 0, False)[0].address
                     for k in range(1, len(sizes))]
        segments = [SegmentSpec(verifiers[0], False, program.root, len(program.steps))] + [SegmentSpec(v, False) for v in verifiers[1:]]
        spec = ModelSpec(keccak(name.encode()), keccak(name.encode() + b"plan"), dep.token, FEE, BOND, 2_000,
                         CHALLENGE_WINDOW, RESPONSE_WINDOW, 7)
        model_id, digest, receipt = oracle.register(spec, segments, sizes)
        code_hashes = tuple(bytes(keccak(w3.eth.get_code(v))) for v in verifiers)
        assert digest == Registration(spec, tuple(segments), tuple(sizes), code_hashes).digest()
        assert oracle.model(model_id).registration.segments[0].program_root == program.root
        models[name] = SimpleNamespace(id=model_id, sizes=sizes, spec=spec, segments=segments)
    return SimpleNamespace(w3=w3, dep=dep, oracle=oracle, games=GameClient(w3, dep.game, other), program=program,
                           inp=inp, honest=honest, toy=toy, models=models, owner=owner, requester=requester,
                           operator=operator, challenger=challenger, other=other, finalizer=finalizer,
                           token=w3.eth.contract(address=dep.token, abi=compiled["RevShareToken"].abi))


@pytest.fixture
def ow(oracle_world):
    with rolled_back(oracle_world.w3):
        yield oracle_world


def oracle_claim(ow, model: str, out: list[int], y: list[int] | None = None) -> Claim:
    """Model `one`: the program's output is y. Model `two`: it is boundary 1, and y (3 values) follows."""
    inp = pack_tensor(ow.inp)
    if model == "one":
        return Claim(inp, (0, 0), b"", pack_tensor(out), ())
    return Claim(inp, (0, 0, 0), pack_tensor(out), pack_tensor(y), ())


def _fields(values):
    return [to_field(v) for v in values]


def served(ow, model: str, claim: Claim) -> int:
    m = ow.models[model]
    rid, _ = ow.oracle.as_sender(ow.requester).request_callback(m.id, pack_tensor(ow.inp))
    ow.oracle.as_sender(ow.operator).submit(rid, claim, bond=BOND)
    return rid


def game_scenario(ow, claim: Claim, defender_out: list[int] | None = None) -> Scenario:
    """The defender's trace is honest but for the OUTPUT leaf, which says `defender_out` (default: the claim's)."""
    claimed = list(Claim.tensors(claim, [len(ow.inp), len(ow.honest[-1])] + ([3] if len(claim.commitments) == 3 else []))[1])
    outs = [list(o) for o in ow.honest]
    outs[-1] = defender_out if defender_out is not None else [int(v) for v in claimed]
    return Scenario(ow.program, ow.inp, ow.honest, [int(v) for v in claimed], leaves_of(outs))


def play_opened(ow, gid: int, sc: Scenario, challenger_mode: str) -> None:
    """Play an AIOracle-opened game to its end (honest or give-up challenger, defender playing its own tree)."""
    d, c = ow.games.as_sender(ow.operator), ow.games.as_sender(ow.challenger)
    tree = sc.defender_tree
    reference = sc.reference() if challenger_mode == "honest" else MerkleTree(leaves_of(sc.honest)[:-1] + [keccak(b"x")])
    while not (g := ow.games.game(gid)).over:
        if g.status == GameStatus.AWAITING_ROOT:
            record("postRoot", d.post_root(gid, tree.root, tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1)))
        elif g.status == GameStatus.AWAITING_REVEAL:
            record("reveal", d.reveal(gid, tree.node(g.height - 1, 2 * g.index), tree.node(g.height - 1, 2 * g.index + 1)))
        elif g.status == GameStatus.AWAITING_CHOICE:
            record("choose", c.choose(gid, honest_choice(reference, g.left, g.right, g.height, g.index)))
        else:
            try:
                record("step + settle (AIOracle)", c.step(gid, witness(sc, g.index, ow.games.revealed_nodes(gid))))
            except ContractRevertError as exc:
                assert exc.name == "StepCorrect"
                advance(ow.w3, RESPONSE_WINDOW + 1)
                record("timeout + settle (AIOracle)", ow.games.timeout(gid))


def open_oracle_game(ow, rid: int, k: int, claim: Claim, challenger=None) -> int:
    _, receipt = ow.oracle.as_sender(challenger or ow.challenger).open_game(rid, k, claim, bond=BOND)
    record("challenge → open game (AIOracle)", receipt)
    gid = ow.games.game_of(rid, k)
    assert not ow.oracle.dispute(rid, k).open  # a game is not a fraud-proof dispute: it has no response window
    g = ow.games.game(gid)
    assert (g.defender, g.challenger, g.request_id, g.segment) == (ow.operator.address, (challenger or ow.challenger).address, rid, k)
    assert g.in_hash == keccak(claim.input) and g.n_steps == len(ow.program.steps) and g.program_root == ow.program.root
    return gid


def test_oracle_a_lying_submitter_is_slashed_through_the_game(ow):
    lie = list(ow.honest[-1])
    lie[0] += 1
    claim = oracle_claim(ow, "one", lie)
    rid = served(ow, "one", claim)
    oracle_before = ow.w3.eth.get_balance(ow.oracle.address)
    token_before = ow.w3.eth.get_balance(ow.token.address)
    gid = open_oracle_game(ow, rid, 1, claim)
    assert ow.games.game(gid).out_hash == keccak(claim.output)
    with reverts("AIOracleNoDispute"):  # a game is answered by playing it, not by a proof or a deadline
        ow.oracle.as_sender(ow.operator).respond(rid, 1, claim, b"\x00" * 32)
    with reverts("AIOracleNoDispute"):
        ow.oracle.resolve(rid, 1)
    advance(ow.w3, CHALLENGE_WINDOW + 1)
    with reverts("AIOracleDisputesOpen"):  # finalize waits for the game
        ow.oracle.as_sender(ow.finalizer).finalize(rid, claim)
    play_opened(ow, gid, game_scenario(ow, claim), "honest")
    assert ow.games.game(gid).status == GameStatus.CHALLENGER_WON and ow.games.game(gid).index == len(ow.program.steps) - 1
    assert ow.oracle.request(rid).status == Status.PENDING and not ow.oracle.claim(rid).exists
    assert ow.oracle.credits(ow.challenger.address) == BOND + BOND // 2  # its bond back and half the submitter's
    assert ow.oracle.credits(ow.operator.address) == 0
    assert ow.w3.eth.get_balance(ow.token.address) - token_before == BOND // 2
    # conservation: the oracle received the challenger's bond and paid half the submitter's bond to the token
    assert ow.w3.eth.get_balance(ow.oracle.address) == oracle_before + BOND - BOND // 2
    # the reopened request is answered honestly and finalized
    honest = oracle_claim(ow, "one", ow.honest[-1])
    ow.oracle.as_sender(ow.operator).submit(rid, honest, bond=BOND)
    advance(ow.w3, CHALLENGE_WINDOW + 1)
    ow.oracle.as_sender(ow.finalizer).finalize(rid, honest)
    for who in (ow.challenger, ow.operator):
        ow.oracle.as_sender(who).withdraw()
    assert ow.w3.eth.get_balance(ow.oracle.address) == 0  # every wei escrowed went out


def test_oracle_an_honest_submitter_wins_the_game_and_the_challengers_bond(ow):
    claim = oracle_claim(ow, "one", ow.honest[-1])
    rid = served(ow, "one", claim)
    fee = ow.oracle.request(rid).fee
    gid = open_oracle_game(ow, rid, 1, claim)
    play_opened(ow, gid, game_scenario(ow, claim), "claims-output-wrong")
    assert ow.games.game(gid).status == GameStatus.DEFENDER_WON
    c = ow.oracle.claim(rid)
    assert c.open_disputes == 0 and c.settled == 0  # a won game settles nothing: other games may still convict
    assert ow.oracle.credits(ow.operator.address) == BOND  # the challenger's bond
    assert not ow.oracle.dispute(rid, 1).open
    advance(ow.w3, CHALLENGE_WINDOW + 1)
    ow.oracle.as_sender(ow.finalizer).finalize(rid, claim)
    revenue, operator_payout, finalizer_payout = fee * 8 // 10, fee - fee * 8 // 10, 0
    assert ow.oracle.credits(ow.operator.address) == BOND + BOND + operator_payout
    assert ow.oracle.credits(ow.challenger.address) == 0
    for who in (ow.operator,):
        ow.oracle.as_sender(who).withdraw()
    assert ow.w3.eth.get_balance(ow.oracle.address) == 0 and finalizer_payout == 0 and revenue > 0


def test_oracle_a_game_whose_claim_was_slashed_meanwhile_is_ignored(ow):
    """Game on segment 1; segment 2 (a wrong y) is slashed by an unanswered fraud-proof dispute, which returns the
    game's bond; the request is answered again and a new game opened; the old game's result then changes nothing."""
    honest_mid = ow.honest[-1]
    y = [from_field(v) for v in ow.toy.segment_output(2, _fields(honest_mid))]
    lie = oracle_claim(ow, "two", honest_mid, [v + 1 for v in y])
    rid = served(ow, "two", lie)
    old = open_oracle_game(ow, rid, 1, lie)  # a (wrong) game on the right segment
    sizes = ow.models["two"].sizes
    proof, outputs = fraud_proof(ToyModel([1, 2], sizes), lie, 2)
    ow.oracle.as_sender(ow.other).challenge(rid, 2, lie, proof, outputs, bond=BOND)
    assert ow.oracle.claim(rid).open_disputes == 2
    advance(ow.w3, RESPONSE_WINDOW + 1)
    ow.oracle.as_sender(ow.other).resolve(rid, 2)  # slash: the fraud-proof disputer's reward; the game's bond waits for it
    assert ow.oracle.credits(ow.challenger.address) == 0 and ow.oracle.credits(ow.other.address) == BOND + BOND // 2
    honest = oracle_claim(ow, "two", honest_mid, y)
    ow.oracle.as_sender(ow.operator).submit(rid, honest, bond=BOND)
    new = open_oracle_game(ow, rid, 1, honest)
    assert new != old
    ow.games.timeout(old)  # the old game's defender never posted its root: its challenger "wins" — about a gone claim
    assert ow.games.game(old).status == GameStatus.CHALLENGER_WON
    assert ow.oracle.claim(rid).exists and ow.oracle.claim(rid).open_disputes == 1  # the new claim is untouched
    assert ow.oracle.credits(ow.challenger.address) == BOND  # its bond back, nothing more
    play_opened(ow, new, game_scenario(ow, honest), "claims-output-wrong")
    assert ow.games.game(new).status == GameStatus.DEFENDER_WON and ow.oracle.claim(rid).settled == 0
    assert ow.oracle.credits(ow.operator.address) == BOND


def test_oracle_wiring_is_guarded(ow):
    with reverts("AIOracleUnauthorized"):
        ow.oracle.as_sender(ow.owner)._send(ow.oracle.fn.setDisputeGame(ow.other.address))
    with reverts("AIOracleUnauthorized"):
        ow.oracle.as_sender(ow.other)._send(ow.oracle.fn.settleGame(1, 1, 1, True))
    # a segment without a program keeps the old rule: a challenge needs a contradicting proof
    claim = oracle_claim(ow, "two", ow.honest[-1], [1, 2, 3])
    rid = served(ow, "two", claim)
    with reverts("AIOracleInvalidInstances"):  # as before: no proof, no output instances
        ow.oracle.as_sender(ow.challenger).open_game(rid, 2, claim, bond=BOND)
    spec = ow.models["one"].spec
    zk_with_program = [SegmentSpec(ow.models["one"].segments[0].verifier, True, ow.program.root, 3)]
    with reverts("AIOracleInvalidProgram"):
        ow.oracle.register(spec, zk_with_program, [len(ow.inp), len(ow.honest[-1])])
    with reverts("AIOracleInvalidProgram"):
        ow.oracle.register(spec, [SegmentSpec(zk_with_program[0].verifier, False, ow.program.root, 0)], [len(ow.inp), len(ow.honest[-1])])


# ---------------------------------------------------------------- the real trace builder


def test_the_trace_builders_witnesses_recompute_on_chain(world):
    """`imo.proving.trace` (the step program of an ONNX segment): every step of an honest trace of its small test
    model (every kind) recomputes on chain to the leaf the trace has."""
    trace_tests = pytest.importorskip("test_trace")
    import numpy as np

    from imo.circuits.fixed_point import quantize
    from imo.proving.trace import StepProgram

    program = StepProgram.build(trace_tests.small_model(), trace_tests.settings())
    x = quantize(np.random.default_rng(5).uniform(-1.5, 1.5, (1, 24)), 7)
    honest = program.execute(x)
    in_bytes, out_bytes = pack_tensor(x), pack_tensor(honest.output)
    kinds = set()
    for i in range(program.n_steps):
        w = program.one_step(honest, i, in_bytes, out_bytes)
        ctx = (i, program.depth, program.root, honest.root, keccak(in_bytes), keccak(out_bytes))
        valid, leaf = world.verifier.functions.leafOf(w.abi_tuple(), ctx).call()
        assert valid and bytes(leaf) == honest.leaves[i], (i, program.steps[i].kind)
        kinds.add(program.steps[i].kind)
    assert kinds == set(K) - TRANSFORMER_KINDS  # those: tests/test_trace_transformer.py
