"""Attacks on the bisection dispute game (DisputeGame, StepVerifier, TraceCodec, AIOracle's game wiring).

Every test plays one deviation by one side; it fails if the deviation pays off (a liar keeps a lie, an honest
defender loses, a witness that proves nothing wins). Driven on anvil exactly like tests/test_dispute_game.py (whose
fixtures and helpers it reuses), every transaction signed with fresh local keys.
"""

import random

import pytest
from eth_utils import keccak

from helpers import advance, funded_accounts, reverts
from imo.proving.protocol import pack_tensor
from imo.proving.trace_codec import ZERO, MerkleTree, Slice, Step, int_pack
from imo.verifier_contracts.contracts import ContractRevertError
from imo.verifier_contracts.game_client import GameStatus, StepWitness
from test_dispute_game import (  # noqa: F401 - fixtures
    BOND,
    CHALLENGE_WINDOW,
    CLOCK,
    I64,
    RESPONSE_WINDOW,
    K,
    Program,
    fresh,
    honest_choice,
    honest_scenario,
    leaves_of,
    lying_scenario,
    oracle_claim,
    oracle_world,
    open_game,
    open_oracle_game,
    ow,
    play_opened,
    game_scenario,
    random_program,
    served,
    witness,
    world,
)


# ------------------------------------------------------------------ helpers


def program_with_steps(pred, seed0: int = 0):
    """The first random program (and input) whose step count satisfies `pred`."""
    for seed in range(seed0, seed0 + 200):
        program, inp = random_program(random.Random(seed))
        if pred(len(program.steps)):
            return program, inp, random.Random(seed)
    raise AssertionError("no such program")


def descend(w, gid: int, tree_node, target: int | None = None, reference: MerkleTree | None = None):
    """Drive a game to AwaitingStep: the defender reveals with `tree_node(height, index) -> (left, right)`; the
    challenger goes to leaf `target` (its bits) or plays `honest_choice` against `reference`. Returns the index."""
    d, c = w.games.as_sender(w.defender), w.games.as_sender(w.challenger)
    g = w.games.game(gid)
    depth = g.depth
    left, right = tree_node(depth, 0)
    d.post_root(gid, keccak(left + right), left, right)
    while True:
        g = w.games.game(gid)
        if g.status == GameStatus.AWAITING_STEP:
            return g.index
        if g.status == GameStatus.AWAITING_CHOICE:
            if target is not None:
                right_ = bool((target >> (depth - g.level - 1)) & 1)
            else:
                right_ = honest_choice(reference, g.left, g.right, g.height, g.index)
            c.choose(gid, right_)
        else:
            d.reveal(gid, *tree_node(g.height, g.index))


def nodes_of(tree: MerkleTree):
    return lambda h, i: (tree.node(h - 1, 2 * i), tree.node(h - 1, 2 * i + 1))


def widen(packed: bytes, width: int = 8) -> bytes:
    """The same values in a wider (non-canonical) int_pack width."""
    w0 = packed[0]
    vals = [int.from_bytes(packed[1 + j:1 + j + w0], "big", signed=True) for j in range(0, len(packed) - 1, w0)]
    return bytes([width]) + b"".join(v.to_bytes(width, "big", signed=True) for v in vals)


def step_fails(w, gid: int, wit: StepWitness) -> str:
    """The challenger's step with `wit` must revert (not win): returns the error name."""
    c = w.games.as_sender(w.challenger)
    try:
        c.step(gid, wit)
    except ContractRevertError as exc:
        assert w.games.game(gid).status == GameStatus.AWAITING_STEP
        return exc.name
    pytest.fail(f"a forged witness won the game against an honest defender: {wit}")


def copy_witness(wit: StepWitness, **changes) -> StepWitness:
    fields = dict(step=wit.step, step_proof=list(wit.step_proof), leaves=list(wit.leaves),
                  leaf_proofs=[list(p) for p in wit.leaf_proofs], const_values=wit.const_values, boundary=wit.boundary,
                  table_values=list(wit.table_values), table_proofs=[list(p) for p in wit.table_proofs])
    fields.update(changes)
    return StepWitness(**fields)


# ------------------------------------------------------------------ a lying challenger's witnesses


def test_forged_witnesses_never_beat_an_honest_defender(fresh):
    """Against an honest trace, at a GEMM step (several producer slices, a constant) and at the LOOKUP step: a leaf
    proven at another index, a leaf re-encoded wider, an extra/duplicated leaf, a descriptor of another step, a
    constant re-encoded wider, table entries for other indices or wrong values: every one reverts, the honest witness
    reverts StepCorrect, and the game is still the challenger's to lose."""
    w = fresh
    program, inp, _ = program_with_steps(lambda n: n > 8, 7)
    sc = honest_scenario(program, inp)
    gemm = next(i for i, s in enumerate(program.steps) if s.kind == K.GEMM and len(s.operands[0]) > 1)
    lookup = next(i for i, s in enumerate(program.steps) if s.kind == K.LOOKUP)
    tree = sc.defender_tree
    for target in (gemm, lookup):
        gid = open_game(w, sc)
        assert descend(w, gid, nodes_of(tree), target=target) == target
        revealed = w.games.revealed_nodes(gid)
        wit = witness(sc, target, revealed)
        s = program.steps[target]
        names = []
        # a producer leaf swapped for another (earlier) step's leaf with that step's real proof
        other = next(j for j in range(target) if int_pack(sc.honest[j]) != wit.leaves[0])
        names.append(step_fails(w, gid, copy_witness(wit, leaves=[int_pack(sc.honest[other])] + wit.leaves[1:],
                                                     leaf_proofs=[tree.proof(other)] + wit.leaf_proofs[1:])))
        # the right leaf, non-canonical width (hash differs) and with a trailing byte
        names.append(step_fails(w, gid, copy_witness(wit, leaves=[widen(wit.leaves[0])] + wit.leaves[1:])))
        names.append(step_fails(w, gid, copy_witness(wit, leaves=[wit.leaves[0] + b"\x00"] + wit.leaves[1:])))
        # a duplicated slice leaf
        names.append(step_fails(w, gid, copy_witness(wit, leaves=wit.leaves + wit.leaves[-1:],
                                                     leaf_proofs=wit.leaf_proofs + wit.leaf_proofs[-1:])))
        # the descriptor of another step (with its own program proof), the operands unchanged
        names.append(step_fails(w, gid, copy_witness(wit, step=program.steps[target - 1],
                                                     step_proof=program.tree.proof(target - 1))))
        # a descriptor whose slices reach a later step
        late = Step(s.kind, tuple(tuple(Slice(target, sl.start, sl.count) for sl in op) for op in s.operands), s.params,
                    s.const_hash, s.out_count)
        names.append(step_fails(w, gid, copy_witness(wit, step=late)))
        if s.kind == K.GEMM:
            names.append(step_fails(w, gid, copy_witness(wit, const_values=widen(wit.const_values))))
            names.append(step_fails(w, gid, copy_witness(wit, const_values=wit.const_values + b"\x00")))
        else:
            p0, values, ttree = program.tables[target]
            a0 = program.operands(target, sc.honest)[0][0]
            j = (a0 - p0 + 1) % len(values)  # another table index, with its real entry and proof
            names.append(step_fails(w, gid, copy_witness(wit, table_values=[values[j]] + wit.table_values[1:],
                                                         table_proofs=[ttree.proof(j)] + wit.table_proofs[1:])))
            names.append(step_fails(w, gid, copy_witness(wit, table_values=[wit.table_values[0] + 1] + wit.table_values[1:])))
            names.append(step_fails(w, gid, copy_witness(wit, table_values=wit.table_values[:-1],
                                                         table_proofs=wit.table_proofs[:-1])))
            # a proof one level short or long (an inner node posing as an entry)
            names.append(step_fails(w, gid, copy_witness(wit, table_proofs=[wit.table_proofs[0][:-1]] + wit.table_proofs[1:])))
            names.append(step_fails(w, gid, copy_witness(wit, table_proofs=[wit.table_proofs[0] + [ZERO]] + wit.table_proofs[1:])))
        assert step_fails(w, gid, wit) == "StepCorrect", names


def test_boundary_tricks_at_input_and_output(fresh):
    """INPUT: a boundary with a trailing byte or a wider width does not hash to the claim's. OUTPUT: a published output
    packed wider than canonical (the claim's own bytes) still decodes to the same values: an honest defender wins."""
    w = fresh
    program, inp, _ = program_with_steps(lambda n: n > 4, 3)
    sc = honest_scenario(program, inp)
    gid = open_game(w, sc)
    assert descend(w, gid, nodes_of(sc.defender_tree), target=0) == 0
    wit = witness(sc, 0, w.games.revealed_nodes(gid))
    for bad in (wit.boundary + b"\x00", widen(wit.boundary, 4), widen(wit.boundary, 8)):
        assert step_fails(w, gid, copy_witness(wit, boundary=bad)) in ("StepBoundaryMismatch",)
    assert step_fails(w, gid, wit) == "StepCorrect"
    # OUTPUT against a non-canonically packed (width 4) but equal published output: valid, the canonical leaf
    out = sc.honest[-1]
    step = Step(K.OUTPUT, ((Slice(0, 0, len(out)),),), (), ZERO, len(out))
    valid, packed = w.verifier.functions.evaluate(step.abi_tuple(), [out], b"", widen(pack_tensor(out), 4), []).call()
    assert valid and bytes(packed) == int_pack(out)
    valid, _ = w.verifier.functions.evaluate(step.abi_tuple(), [out], b"", pack_tensor(out[:-1] + [out[-1] + 256]), []).call()
    assert not valid
    # an empty output: OUTPUT of nothing equals an empty published tensor only
    empty = Step(K.OUTPUT, (), (), ZERO, 0)
    valid, packed = w.verifier.functions.evaluate(empty.abi_tuple(), [], b"", b"\x01", []).call()
    assert valid and bytes(packed) == int_pack([])
    valid, _ = w.verifier.functions.evaluate(empty.abi_tuple(), [], b"", b"\x01\x00", []).call()
    assert not valid


# ------------------------------------------------------------------ a lying defender's trees


def test_garbage_padding_cannot_steer_the_challenger_off_a_lie(fresh):
    """A liar whose real leaves are all honest (even its OUTPUT leaf) but whose padding is garbage, publishing a
    wrong output: the honest challenger never follows the padding, reaches OUTPUT and wins; a `choose` into a subtree
    of padding only reverts."""
    w = fresh
    program, inp, rng = program_with_steps(lambda n: n & (n - 1) != 0 and n % 4 != 0, 0)
    n = len(program.steps)
    for how in ("output", "output-leaf"):
        sc = lying_scenario(program, inp, n - 1, how, rng)
        depth = MerkleTree(sc.defender_leaves).depth
        padded = sc.defender_leaves + [keccak(b"pad%d" % j) for j in range((1 << depth) - n)]
        tree = MerkleTree(padded)
        assert tree.depth == depth
        gid = open_game(w, sc)
        d = w.games.as_sender(w.defender)
        d.post_root(gid, tree.root, tree.node(depth - 1, 0), tree.node(depth - 1, 1))
        c = w.games.as_sender(w.challenger)
        while (g := w.games.game(gid)).status != GameStatus.AWAITING_STEP:
            if g.status == GameStatus.AWAITING_CHOICE:
                if not ((2 * g.index + 1) << (g.height - 1) < n):
                    with reverts("GameIndexOutOfRange"):
                        c.choose(gid, True)
                c.choose(gid, honest_choice(sc.reference(), g.left, g.right, g.height, g.index))
            else:
                d.reveal(gid, tree.node(g.height - 1, 2 * g.index), tree.node(g.height - 1, 2 * g.index + 1))
        assert g.index == n - 1
        revealed = w.games.revealed_nodes(gid)
        c.step(gid, witness(sc, n - 1, revealed))
        assert w.games.game(gid).status == GameStatus.CHALLENGER_WON


def test_a_root_of_another_depth_loses(fresh):
    """A liar posts the root of a deeper tree (its real trace one level down, so its 'leaves' are inner nodes): the
    honest challenger descends to a leaf that no step output hashes to and wins."""
    w = fresh
    program, inp, rng = program_with_steps(lambda n: n > 4, 11)
    sc = lying_scenario(program, inp, len(program.steps) - 1, "output", rng)
    n = len(program.steps)
    depth = MerkleTree(sc.defender_leaves).depth
    deep = MerkleTree(sc.defender_leaves + [ZERO] * ((1 << depth) - n + 1))
    assert deep.depth == depth + 1
    gid = open_game(w, sc)
    i = descend(w, gid, nodes_of(deep), reference=sc.reference())
    w.games.as_sender(w.challenger).step(gid, witness(sc, i, w.games.revealed_nodes(gid)))
    assert w.games.game(gid).status == GameStatus.CHALLENGER_WON


# ------------------------------------------------------------------ EVM arithmetic


def _sel(signature: str) -> str:
    """The selector of a custom error, as a reverted eth_call's data starts."""
    return "0x" + keccak(text=signature)[:4].hex()


def _eval(w, step: Step, ops, const=None):
    valid, packed = w.verifier.functions.evaluate(step.abi_tuple(), ops, b"" if const is None else int_pack(const),
                                                  b"", []).call()
    return bytes(packed) if valid else None


def test_arithmetic_never_wraps_into_a_valid_leaf(world):
    """GEMM of 4096 int64-min products (2^138: no int256 wrap, no int64 fits → invalid); an exactly cancelling GEMM
    (valid 0); MUL / ADD just past int64 (invalid, not the wrapped value numpy would give); RESCALE with shifts 0,
    255, 256 and 2^255 - 1 (x, 0, 0, 0); ADD multipliers at the bound revert (never a leaf)."""
    w = world
    kk = 4096
    g = Step(K.GEMM, ((Slice(0, 0, kk),),), (kk, 1), ZERO, 1)
    assert _eval(w, g, [[I64[0]] * kk], [I64[0]] * kk) is None
    assert _eval(w, g, [[I64[0]] * kk], [I64[1]] * (kk // 2) + [-I64[1]] * (kk // 2)) == int_pack([0])
    g2 = Step(K.GEMM, ((Slice(0, 0, 2),),), (2, 1), ZERO, 1)
    assert _eval(w, g2, [[I64[1], I64[1]]], [1, 1]) is None  # 2^64 - 2: not int64 (numpy wraps to -2)
    assert _eval(w, g2, [[I64[0], I64[1]]], [1, 1]) == int_pack([-1])
    mul = Step(K.MUL, ((Slice(0, 0, 1),), (Slice(0, 0, 1),)), (), ZERO, 1)
    assert _eval(w, mul, [[I64[0]], [I64[0]]]) is None
    assert _eval(w, mul, [[I64[0]], [-1]]) is None  # -int64 min
    assert _eval(w, mul, [[I64[0]], [1]]) == int_pack([I64[0]])
    add = Step(K.ADD, ((Slice(0, 0, 1),), (Slice(0, 0, 1),)), (1, 1), ZERO, 1)
    assert _eval(w, add, [[I64[1]], [1]]) is None
    assert _eval(w, add, [[I64[0]], [-1]]) is None
    big = Step(K.ADD, ((Slice(0, 0, 1),), (Slice(0, 0, 1),)), ((1 << 62), (1 << 62)), ZERO, 1)
    assert _eval(w, big, [[2], [-2]]) == int_pack([0])
    for shift, want in ((0, [I64[0], 5]), (255, [0, 0]), (256, [0, 0]), ((1 << 255) - 1, [0, 0]), (-(1 << 255), [I64[0], 5])):
        r = Step(K.RESCALE, ((Slice(0, 0, 2),),), (shift,), ZERO, 2)
        assert _eval(w, r, [[I64[0], 5]]) == int_pack(want), shift
    with pytest.raises(Exception, match=_sel("StepParamOutOfRange(uint256)")):
        _eval(w, Step(K.ADD, ((Slice(0, 0, 1),), (Slice(0, 0, 1),)), (1 << 190, 1), ZERO, 1), [[1], [1]])


# ------------------------------------------------------------------ clocks


def _at(w, t: int):
    w.w3.provider.make_request("evm_mine", [t])


def test_a_clock_runs_out_exactly_at_its_budget(fresh):
    """At `clock - 1` seconds used the side to move may still move and `timeout` reverts; at exactly `clock` it may
    not and `timeout` ends the game for the other side. The waiting side's clock never runs."""
    w = fresh
    program, inp, _ = program_with_steps(lambda n: n > 4, 5)
    sc = honest_scenario(program, inp)
    tree = sc.defender_tree
    gid = open_game(w, sc)
    t0 = w.games.game(gid).last_move
    root_args = (gid, tree.root, tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1))
    post = w.game.functions.postRoot(*root_args)
    _at(w, t0 + CLOCK - 1)
    post.call({"from": w.defender.address})  # still in time
    with pytest.raises(Exception, match=_sel("GameClockRunning(uint256,uint256)")):
        w.game.functions.timeout(gid).call({"from": w.anyone.address})
    assert w.games.clocks(gid) == (1, CLOCK)
    _at(w, t0 + CLOCK)
    with pytest.raises(Exception, match=_sel("GameClockExpired(uint256)")):
        post.call({"from": w.defender.address})
    w.game.functions.timeout(gid).call({"from": w.anyone.address})
    assert w.games.clocks(gid) == (0, CLOCK)


# ------------------------------------------------------------------ AIOracle integration


def test_a_liars_own_challenger_cannot_shield_a_segment(ow):
    """A submitter lies, and at once opens the game on its own segment from a second key (a sybil challenger), which
    then lets its clock run out: the game says the defender won. The honest challenger must still be able to dispute
    the segment and slash the lie. (One dispute per segment, and a game won by the defender settling the segment for
    good, would let a liar lock out every honest challenger at no cost: the sybil's lost bond goes to the liar.)"""
    lie = list(ow.honest[-1])
    lie[0] += 1
    claim = oracle_claim(ow, "one", lie)
    rid = served(ow, "one", claim)
    (sybil,) = funded_accounts(ow.w3, 1, wei=10 * 10**18)
    sybil_gid = open_oracle_game(ow, rid, 1, claim, challenger=sybil)
    sc = game_scenario(ow, claim)
    tree = sc.defender_tree
    ow.games.as_sender(ow.operator).post_root(sybil_gid, tree.root, tree.node(tree.depth - 1, 0), tree.node(tree.depth - 1, 1))
    shielded = None
    try:  # the honest challenger disputes the same segment while the sybil's game runs
        gid = open_oracle_game(ow, rid, 1, claim)
    except ContractRevertError as exc:
        shielded = exc.name
        gid = None
    if gid is None:  # or, at the latest, once the sybil's game is over and the window still open
        advance(ow.w3, RESPONSE_WINDOW + 1)
        ow.games.timeout(sybil_gid)
        assert ow.games.game(sybil_gid).status == GameStatus.DEFENDER_WON
        try:
            gid = open_oracle_game(ow, rid, 1, claim)
        except ContractRevertError as exc:
            shielded = f"{shielded}, then {exc.name}"
    if gid is None:
        pytest.fail(f"a liar's own challenger shielded the lie: the honest challenge reverts {shielded}")
    play_opened(ow, gid, sc, "honest")
    assert ow.games.game(gid).status == GameStatus.CHALLENGER_WON
    assert not ow.oracle.claim(rid).exists
