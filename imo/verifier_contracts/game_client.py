"""A typed client for `DisputeGame`, the bisection game over an op segment's execution trace (`trace_codec.py` holds
the encodings): games found from their events, decoded game records with their status and whose turn it is, one method
per move, reverts raised as `ContractRevertError(name, args)` (transactions sign like `OracleClient`'s: a LocalAccount
locally, an address by the node that unlocked it).

A game is opened by the oracle (`OracleClient.open_game`: a challenge without a proof of an op segment registered with
a step program). The defender posts its trace root with the root's children (`post_root`); the challenger picks the
child it disputes (`choose`), the defender opens it (`reveal`), down to one leaf; then the challenger has that step
recomputed on chain (`step`, with a `StepWitness`). `timeout` ends a game whose side to move has used its clock up.

Playing honestly (which child to dispute, operand proofs under the defender's root) is chain-free and lives with the
trace: `imo.proving.trace.Bisection` and `PatchedTree`; `imo.pipeline.game_play` plays a node's side."""

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from web3 import Web3
from web3.exceptions import ContractCustomError

from imo.errors import ChainError
from imo.proving.trace_codec import Step
from imo.verifier_contracts.contracts import ContractRevertError, Sender, compile_protocol, decode_revert, transact


class GameStatus(IntEnum):
    """`DisputeGame.Status`."""

    NONE = 0
    AWAITING_ROOT = 1  # defender: post_root
    AWAITING_CHOICE = 2  # challenger: choose
    AWAITING_REVEAL = 3  # defender: reveal
    AWAITING_STEP = 4  # challenger: step
    CHALLENGER_WON = 5
    DEFENDER_WON = 6


class Turn(Enum):
    DEFENDER = "defender"
    CHALLENGER = "challenger"
    NOBODY = "nobody"  # no such game, or it is over


@dataclass(frozen=True)
class ChainGame:
    """`DisputeGame.Game`. `level`: choices made (the disputed node is `level` below the root); `index`: their bits,
    the disputed step once `level == depth`; clocks are as of `last_move` (see `GameClient.clocks` for now)."""

    game_id: int
    defender: str
    last_move: int
    depth: int
    level: int
    status: GameStatus
    challenger: str
    n_steps: int
    index: int
    defender_clock: int
    challenger_clock: int
    segment: int
    request_id: int
    program_root: bytes
    in_hash: bytes
    out_hash: bytes
    trace_root: bytes
    node: bytes
    left: bytes
    right: bytes

    @property
    def exists(self) -> bool:
        return self.status != GameStatus.NONE

    @property
    def over(self) -> bool:
        return self.status in (GameStatus.CHALLENGER_WON, GameStatus.DEFENDER_WON)

    @property
    def turn(self) -> Turn:
        if self.status in (GameStatus.AWAITING_ROOT, GameStatus.AWAITING_REVEAL):
            return Turn.DEFENDER
        if self.status in (GameStatus.AWAITING_CHOICE, GameStatus.AWAITING_STEP):
            return Turn.CHALLENGER
        return Turn.NOBODY

    @property
    def height(self) -> int:
        """Levels above the leaves of the disputed node (0: the disputed node is a leaf, the step to check)."""
        return self.depth - self.level


@dataclass(frozen=True)
class OpenedGame:
    """A `GameOpened` event."""

    game_id: int
    request_id: int
    segment: int
    defender: str
    challenger: str
    program_root: bytes
    n_steps: int
    in_hash: bytes
    out_hash: bytes
    clock: int
    block_number: int


@dataclass
class StepWitness:
    """`StepProof` (StepVerifier.sol): what `step` needs to have step `index` recomputed. `leaves` are the int_pack
    bytes of each slice's producer leaf (operand by operand, slice by slice), `leaf_proofs` their proofs under the
    defender's trace root (`PatchedTree.proof`); `const_values` int_pack(C) for GEMM and ADD/MUL with a constant;
    `boundary` the claim's packed input (INPUT) or output (OUTPUT) boundary of the segment; for LOOKUP each input's
    table entry and its proof under the table root."""

    step: Step
    step_proof: list[bytes]
    leaves: list[bytes] = field(default_factory=list)
    leaf_proofs: list[list[bytes]] = field(default_factory=list)
    const_values: bytes = b""
    boundary: bytes = b""
    table_values: list[int] = field(default_factory=list)
    table_proofs: list[list[bytes]] = field(default_factory=list)

    def as_tuple(self) -> tuple:
        return (self.step.abi_tuple(), list(self.step_proof), list(self.leaves), [list(p) for p in self.leaf_proofs],
                self.const_values, self.boundary, list(self.table_values), [list(p) for p in self.table_proofs])


class GameClient:
    """`DisputeGame` at `address`, sending as `sender` (a LocalAccount signs locally; an address must be unlocked)."""


    def __init__(self, w3: Web3, address: str, sender: Sender | None = None):
        self.w3 = w3
        self.contract = w3.eth.contract(address=address, abi=compile_protocol()["DisputeGame"].abi)
        self.sender = sender
        self.fn = self.contract.functions

    @property
    def address(self) -> str:
        return self.contract.address

    def as_sender(self, sender: Sender) -> "GameClient":
        return GameClient(self.w3, self.address, sender)

    def _send(self, fn, gas: int | None = None):
        if self.sender is None:
            raise ChainError("this game client has no sender account")
        return transact(fn, self.sender, gas=gas)

    # ------------------------------------------------------------------ views

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def game_count(self) -> int:
        return self.fn.gameCount().call()

    def game(self, game_id: int) -> ChainGame:
        g = self.fn.getGame(game_id).call()
        (defender, last_move, depth, level, status, challenger, n_steps, index, d_clock, c_clock, segment, request_id,
         program_root, in_hash, out_hash, trace_root, node, left, right) = g
        return ChainGame(game_id, defender, last_move, depth, level, GameStatus(status), challenger, n_steps, index,
                         d_clock, c_clock, segment, request_id, bytes(program_root), bytes(in_hash), bytes(out_hash),
                         bytes(trace_root), bytes(node), bytes(left), bytes(right))

    def clocks(self, game_id: int) -> tuple[int, int]:
        """Seconds (defender, challenger) have left as of the latest block; the side to move is charged since its
        opponent's last move. A side whose clock shows 0 has lost: anyone may call `timeout`."""
        return tuple(self.fn.clocks(game_id).call())

    def games_opened(self, from_block: int = 0, to_block: int | str = "latest", request_id: int | None = None,
                     party: str | None = None) -> list[OpenedGame]:
        """Every game opened in the block range (of `request_id`, or where `party` defends or challenges), oldest first."""
        filters = {"requestId": request_id} if request_id is not None else {}
        logs = self.contract.events.GameOpened().get_logs(from_block=from_block, to_block=to_block, argument_filters=filters)
        out = []
        for e in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
            a = e["args"]
            if party is not None and Web3.to_checksum_address(party) not in (a["defender"], a["challenger"]):
                continue
            out.append(OpenedGame(a["gameId"], a["requestId"], a["segment"], a["defender"], a["challenger"], bytes(a["programRoot"]),
                                  a["nSteps"], bytes(a["inHash"]), bytes(a["outHash"]), a["clock"], e["blockNumber"]))
        return out

    def open_games(self, from_block: int = 0, party: str | None = None) -> list[OpenedGame]:
        """The games opened since `from_block` (where `party` plays, if given) that are not over yet."""
        return [g for g in self.games_opened(from_block, party=party) if not self.game(g.game_id).over]

    def game_of(self, request_id: int, segment: int, from_block: int = 0) -> int | None:
        """The id of the latest game opened on segment `segment` of `request_id` (None: none)."""
        games = [g for g in self.games_opened(from_block, request_id=request_id) if g.segment == segment]
        return games[-1].game_id if games else None

    def revealed_nodes(self, game_id: int, from_block: int = 0) -> dict[tuple[int, int], bytes]:
        """Every node of the defender's trace tree it has shown so far, as {(height, index): hash} in the positions of
        `MerkleTree.node(level, index)` (height 0: leaves): the root, its children, and the children of every node the
        challenger chose."""
        g = self.game(game_id)
        if g.status in (GameStatus.NONE, GameStatus.AWAITING_ROOT) and not g.trace_root.strip(b"\0"):
            return {}
        events = []
        for name in ("RootPosted", "ChildChosen", "ChildrenRevealed"):
            for e in getattr(self.contract.events, name)().get_logs(from_block=from_block, argument_filters={"gameId": game_id}):
                events.append((e["blockNumber"], e["logIndex"], name, e["args"]))
        nodes: dict[tuple[int, int], bytes] = {}
        index = 0
        for _, _, name, a in sorted(events, key=lambda e: (e[0], e[1])):
            if name == "RootPosted":
                nodes[(g.depth, 0)] = bytes(a["root"])
                nodes[(g.depth - 1, 0)], nodes[(g.depth - 1, 1)] = bytes(a["left"]), bytes(a["right"])
            elif name == "ChildChosen":
                index = a["index"]
            else:
                height = g.depth - a["level"]
                nodes[(height - 1, 2 * index)], nodes[(height - 1, 2 * index + 1)] = bytes(a["left"]), bytes(a["right"])
        return nodes

    # ------------------------------------------------------------------ moves

    def post_root(self, game_id: int, root: bytes, left: bytes, right: bytes):
        """Defender: the trace root and its two children (keccak(left || right) == root)."""
        return self._send(self.fn.postRoot(game_id, root, left, right))

    def choose(self, game_id: int, right: bool):
        """Challenger: dispute the right (True) or the left child of the current node."""
        return self._send(self.fn.choose(game_id, bool(right)))

    def reveal(self, game_id: int, left: bytes, right: bytes):
        """Defender: the chosen node's children."""
        return self._send(self.fn.reveal(game_id, left, right))

    def step(self, game_id: int, witness, gas: int | None = None):
        """Challenger: have the disputed step recomputed (a `StepWitness`, or the `StepProof` ABI tuple); wins the
        game, or raises ContractRevertError('StepCorrect', ...) when the defender's leaf is right."""
        proof = witness.as_tuple() if hasattr(witness, "as_tuple") else witness
        return self._send(self.fn.step(game_id, proof), gas=gas)

    def timeout(self, game_id: int):
        """Anyone: end a game whose side to move has used up its clock; the other side wins."""
        return self._send(self.fn.timeout(game_id))

    def would_win_step(self, game_id: int, witness) -> bool:
        """Whether `step` with this witness would win now (a call, no transaction); other reverts are raised."""
        proof = witness.as_tuple() if hasattr(witness, "as_tuple") else witness
        try:
            self.fn.step(game_id, proof).call({"from": _address(self.sender)})
            return True
        except ContractCustomError as exc:
            name, args = decode_revert(exc.data)
            if name == "StepCorrect":
                return False
            raise ContractRevertError("step", name, args) from None


def _address(sender: Sender | None) -> str | None:
    return sender if sender is None or isinstance(sender, str) else sender.address
