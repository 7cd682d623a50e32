"""Both nodes' moves in bisection games (`DisputeGame`), computed from the chain and their own re-execution only.

A node keeps nothing about a game but its id: whose turn it is, the node at stake and what the defender revealed are
all on chain, and a trace is a pure function of the claimed input. So a node killed mid-game (kill -9) and restarted
continues the game where it stands, and two restarts never send a move twice (the contract refuses a second move).

The defender (the oracle node that submitted the claim) posts the root of its trace of the op segment from its own
claimed input and opens every node the challenger picks. The challenger (the challenger node) descends towards the
first step where the defender's tree leaves its honest trace and has that step recomputed on chain. Either side
ends a game whose other side let its clock run out."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from eth_hash.auto import keccak

from imo.proving.protocol import Claim, PlanRuntime, pack_tensor
from imo.proving.segments import circuit_files
from imo.proving.trace import Bisection, NotBisectable, PatchedTree, StepProgram, Trace
from imo.verifier_contracts.game_client import GameClient, GameStatus, Turn

log = logging.getLogger("imo.nodes")

#: a whole-segment ezkl fraud proof is the fast path up to this many rows (logrows 17); above it, the game
FAST_PATH_MAX_LOGROWS = 17



class Traces:
    """Step programs of a plan's op segments (built once) and recent traces (by segment and input). Without a plan
    (`runtime` None), `programs` gives them by segment (e.g. a game-only segment built from its ONNX)."""

    def __init__(self, runtime: PlanRuntime | None, keep: int = 4, programs: dict[int, StepProgram] | None = None):
        self.runtime = runtime
        self._programs: dict[int, StepProgram] = dict(programs or {})
        self._traces: OrderedDict[tuple[int, bytes], Trace] = OrderedDict()
        self._keep = keep

    def pin(self, k: int, q_in: np.ndarray, trace: Trace) -> None:
        """Use `trace` as segment k's trace on `q_in` (a bench's or test's lying defender plays its tampered trace)."""
        self._traces[(k, keccak(pack_tensor(np.asarray(q_in, dtype=np.int64))))] = trace

    def program(self, k: int) -> StepProgram:
        if k not in self._programs:
            if self.runtime is None:
                raise NotBisectable(f"no step program for segment {k}")
            seg = self.runtime.plan.segments[k - 1]
            if seg.mode != "op":
                raise NotBisectable(f"segment {k} is a zk segment; only op segments are bisected")
            files = circuit_files(self.runtime.plan_dir, seg)
            self._programs[k] = StepProgram.build(self.runtime.plan_dir / seg.onnx, files.settings_dict())
        return self._programs[k]

    def trace(self, k: int, q_in: np.ndarray) -> Trace:
        q_in = np.asarray(q_in, dtype=np.int64)
        key = (k, keccak(pack_tensor(q_in)))
        if key not in self._traces:
            self._traces[key] = self.program(k).execute(q_in)
            while len(self._traces) > self._keep:
                self._traces.popitem(last=False)
        self._traces.move_to_end(key)
        return self._traces[key]


@dataclass
class GameSide:
    """One party's view of one game: the chain client, and the claim the game is about."""

    games: GameClient
    traces: Traces
    claim: Claim
    sizes: list[int]

    def _play(self, game_id: int, me: Turn):
        """(game, None) when it is `me` to move; else (None, what to return): nothing, or a timeout of the other side
        when its clock has run out."""
        g = self.games.game(game_id)
        if g.turn is me:
            return g, None
        if g.over or g.turn is Turn.NOBODY:
            return None, None
        defender_left, challenger_left = self.games.clocks(game_id)
        if (defender_left if g.turn is Turn.DEFENDER else challenger_left) == 0:
            log.info("game %d: the other side's clock ran out; ending it", game_id)
            return None, ("timeout", self.games.timeout(game_id))
        return None, None

    def defend(self, game_id: int):
        """The defender's move, if it is ours: post the root or open the chosen node. Returns (move, receipt) or None."""
        g, other = self._play(game_id, Turn.DEFENDER)
        if g is None:
            return other
        k = g.segment
        trace = self.traces.trace(k, self.claim.tensors(self.sizes)[k - 1])
        if g.status == GameStatus.AWAITING_ROOT:
            left, right = Bisection.children(trace.tree, trace.tree.depth, 0)
            return "postRoot", self.games.post_root(game_id, trace.root, left, right)
        left, right = Bisection.children(trace.tree, g.height, g.index)
        return "reveal", self.games.reveal(game_id, left, right)

    def challenge(self, game_id: int):
        """The challenger's move, if it is ours: pick the disputed child, or have the disputed step recomputed."""
        g, other = self._play(game_id, Turn.CHALLENGER)
        if g is None:
            return other
        k = g.segment
        tensors = self.claim.tensors(self.sizes)
        honest = self.traces.trace(k, tensors[k - 1])
        if g.status == GameStatus.AWAITING_CHOICE:
            child = Bisection(honest).choose(g.height, g.index, g.left, g.right)
            return "choose", self.games.choose(game_id, bool(child & 1))
        revealed = self.games.revealed_nodes(game_id)
        witness = self.traces.program(k).one_step(
            PatchedTree(honest.tree, revealed), g.index,
            self.claim.boundary_bytes(self.sizes, k - 1), self.claim.boundary_bytes(self.sizes, k), values=honest)
        return "step", self.games.step(game_id, witness)
