"""The oracle node (DESIGN.md, protocol steps 4-5): answers the requests of the models it serves and defends its
claims.

For each request it takes the input (a private input from the off-chain inbox, keyed by C_0; a public input from the
request itself), executes the plan (op segments on the canonical fixed-point executor, zk segments proven with
ezkl), saves the claim, commits to it, and reveals it with the model's bond. When a challenger disputes one of its
op segments it answers with an ezkl proof of its own claim for that segment. A request whose input has no provable
execution (the executor enforces the circuit's limits) is declined with the reason, so the requester can cancel at
once instead of getting a claim nobody could ever contradict.

Status of a request: seen → executing → committed → submitted → finalized | slashed | declined | cancelled |
answered_by_other (back to seen when that other claim is slashed and the request reopens). Every status is written before the transaction it announces, and the claim is on disk before
its commitment is sent, so after `kill -9` the node re-reads the chain and finishes without sending anything twice."""

import json
import logging
import random
import time
from pathlib import Path

import numpy as np

from imo.circuits.fixed_point import quantize
from imo.errors import ImoError, UnprovableClaimError
from imo.fsutil import private_dir, write_private
from imo.pipeline.faults import FAULTS, corrupt
from imo.pipeline.node import Node
from imo.pipeline.state import RequestRecord
from imo.proving.protocol import Claim, request_input, submit_commitment, unpack_tensor
from imo.verifier_contracts.oracle_client import Status

log = logging.getLogger("imo.nodes")


class Inbox:
    """Private inputs delivered off-chain, keyed by their request input C_0: a dict in memory, or a directory of
    `<C_0 as 0x hex>.json` files in ezkl's input format."""

    def __init__(self, source: Path | dict | None = None):
        self.items = source if isinstance(source, dict) else {}
        self.dir = Path(source) if isinstance(source, (str, Path)) else None

    def put(self, plan, x: np.ndarray) -> bytes:
        """Deliver x; returns the request input (C_0) to request it with."""
        key = request_input(plan, x)
        if self.dir is not None:
            private_dir(self.dir)
            write_private(self.path(key), json.dumps({"input_data": [np.asarray(x, dtype=np.float64).ravel().tolist()]}))
        else:
            self.items[key] = np.asarray(x, dtype=np.float32)
        return key

    def path(self, key: bytes) -> Path:
        return self.dir / f"0x{key.hex()}.json"

    def get(self, key: bytes) -> np.ndarray | None:
        if self.dir is not None:
            path = self.path(key)
            return np.asarray(json.loads(path.read_text())["input_data"][0], dtype=np.float32) if path.is_file() else None
        return self.items.get(key)


def _claim_to_json(claim: Claim) -> str:
    return json.dumps({"input": claim.input.hex(), "commitments": [hex(c) for c in claim.commitments], "data": claim.data.hex(),
                       "output": claim.output.hex(), "proofs": [p.hex() for p in claim.proofs]})


def _claim_from_json(text: str) -> Claim:
    d = json.loads(text)
    return Claim(bytes.fromhex(d["input"]), tuple(int(c, 16) for c in d["commitments"]), bytes.fromhex(d["data"]),
                 bytes.fromhex(d["output"]), tuple(bytes.fromhex(p) for p in d["proofs"]))


class OracleNode(Node):
    """Answers requests for its plan's models. `dishonest` ∈ FAULTS | "random" | None (tests and the demo only)."""

    role = "oracle"
    event = "AICallbackRequest"

    def __init__(self, *args, inbox: "Inbox | Path | dict | None" = None, dishonest: str | None = None, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if dishonest not in (None, "random", *FAULTS):
            raise ImoError(f"--dishonest must be one of {', '.join(FAULTS)} or random, not {dishonest!r}")
        self.inbox = inbox if isinstance(inbox, Inbox) else Inbox(inbox)
        self.dishonest = dishonest
        self.rng = random.Random(seed)

    def step(self) -> None:
        start = self.state.cursor + 1
        events, latest = self.scan()
        # a slashed claim reopens its request: answer it now if another node had answered it before us
        slashed = self.oracle.contract.events.AIResultSlashed().get_logs(from_block=start, to_block=latest) if start <= latest else []
        for rid in dict.fromkeys(e["args"]["requestId"] for e in slashed):
            record = self.state.request(rid)
            if record is not None and record.status == "answered_by_other":
                self.state.set_status(rid, "seen")
        self.state.record_scan(latest, [(e["args"]["requestId"], e["args"]["modelId"], bytes(e["args"]["input"]).hex())
                                        for e in events if e["args"]["modelId"] in self.model_ids])
        for record in self.state.requests("seen", "executing", "committed"):
            self.isolated(record, self.answer)
        for record in self.state.requests("submitted"):
            self.isolated(record, self.defend)

    # ------------------------------------------------------------------ answering

    def _claim_file(self, request_id: int) -> Path:
        return self.work_dir / f"request-{request_id}" / "claim.json"

    def _moved_on(self, record: RequestRecord) -> bool:
        """Bring the local status in line with the chain; True when the request no longer needs an answer from us."""
        request = self.oracle.request(record.request_id)
        if request.status == Status.PENDING:
            return False
        claim = self.oracle.claim(record.request_id)
        mine = claim.exists and claim.submitter == self.account
        new = {Status.SUBMITTED: "submitted", Status.FINALIZED: "finalized"}.get(request.status, "cancelled") if mine else (
            "cancelled" if request.status == Status.CANCELLED else "answered_by_other")
        self.state.set_status(record.request_id, new)
        return True

    def _input(self, record: RequestRecord) -> np.ndarray | None:
        """The request's quantized input: from the inbox (hashed input) or exactly as the request carries it (public
        input: never through floats, which would change values of 2^24 and more)."""
        key = bytes.fromhex(record.input)
        plan = self.runtime.plan
        if plan.boundary_hashed(0):
            x = self.inbox.get(key)
            if x is None:
                where = f"{self.inbox.path(key)}" if self.inbox.dir else "the node's inbox"
                self.warnings.add(f"oracle: request {record.request_id} waits for its private input (C_0 = 0x{key.hex()}); deliver it to {where}")
                return None
            return quantize(np.asarray(x, dtype=np.float32), plan.scale)
        q, _ = unpack_tensor(key, 0, self.runtime.request_size)
        return q

    def answer(self, record: RequestRecord) -> None:
        """Execute, commit and reveal one request, or pick up where a crash left it."""
        if self._moved_on(record):
            return
        claim_file = self._claim_file(record.request_id)
        if record.status in ("seen", "executing") or not claim_file.is_file():
            request = self.oracle.request(record.request_id)
            price = self.oracle.fn.callbackGasPrice().call()
            if request.gas_limit and price < self.w3.eth.gas_price:
                self.warnings.add(f"oracle: request {record.request_id} skipped: its callback gas is paid at {price} wei, below the chain's {self.w3.eth.gas_price}")
                return
            x = self._input(record)
            if x is None:
                return
            self.state.set_status(record.request_id, "executing")
            started = time.time()
            try:
                claim = self.runtime.execute(self.runtime.model_input(x), claim_file.parent)
            except UnprovableClaimError as exc:
                self.send("decline", record.request_id, str(exc)[:200])
                self.state.set_status(record.request_id, "declined", reason=str(exc))
                log.warning("oracle: declined request %d: %s", record.request_id, exc)
                return
            fault = None
            if self.dishonest:
                claim, fault = corrupt(self.runtime, claim, self.rng.choice(FAULTS) if self.dishonest == "random" else self.dishonest, self.rng)
            claim_file.write_text(_claim_to_json(claim))
            self.state.set_status(record.request_id, "committed", prove_seconds=round(time.time() - started, 3), dishonest=fault)
        claim = _claim_from_json(claim_file.read_text())
        commitment = submit_commitment(self.account, record.request_id, claim)
        if self.oracle.fn.commitBlock(commitment).call() == 0:
            receipt = self.oracle.commit(commitment)
            self.state.record_tx(record.request_id, "commit", receipt)
        bond = self.oracle.model(record.model_id).spec.bond_wei
        receipt = self.send("reveal", record.request_id, claim, bond)
        if receipt is None:
            self._moved_on(record)
            return
        self.state.record_tx(record.request_id, "submit", receipt)
        self.state.set_status(record.request_id, "submitted", tx="0x" + bytes(receipt.transactionHash).hex(), gas=receipt.gasUsed,
                              block=receipt.blockNumber,
                              data_bytes=len(claim.data) + len(claim.output))
        log.info("oracle: submitted request %d (%s) gas %d", record.request_id, record.detail.get("dishonest") or "honest", receipt.gasUsed)

    # ------------------------------------------------------------------ defending

    def _defend_games(self, record: RequestRecord, claim) -> None:
        """One move in every open bisection game against our current claim (any number may run on one segment)."""
        side = self.game_side(claim)
        for g in self.games.games_opened(from_block=record.detail.get("block") or 0, request_id=record.request_id):
            if g.defender != self.account:
                continue
            move = side.defend(g.game_id)
            if move is not None:
                self.state.record_tx(record.request_id, f"game {move[0]}", move[1])
                log.info("oracle: request %d segment %d: game %d %s", record.request_id, g.segment, g.game_id, move[0])

    def defend(self, record: RequestRecord) -> None:
        """Answer every open dispute on our claim with a proof of our own claim; record how the request ended."""
        request = self.oracle.request(record.request_id)
        chain_claim = self.oracle.claim(record.request_id)
        mine = chain_claim.exists and chain_claim.submitter == self.account
        if request.status != Status.SUBMITTED or not mine:
            self.state.set_status(record.request_id, "finalized" if request.status == Status.FINALIZED and mine else "slashed")
            return
        claim = _claim_from_json(self._claim_file(record.request_id).read_text())
        if chain_claim.open_disputes and self.games is not None:
            self._defend_games(record, claim)
        tensors = claim.tensors(self.runtime.sizes)
        for k, seg in enumerate(self.runtime.plan.segments, start=1):
            dispute = self.oracle.dispute(record.request_id, k)
            if seg.mode != "op" or not dispute.open or self.now() >= dispute.deadline:
                continue
            proof, instances = self.runtime.prove_segment(k, tensors[k - 1])
            claimed = sum(claim.segment_instances(self.runtime.sizes, k), [])
            if instances != claimed:
                self.warnings.add(f"oracle: request {record.request_id}: our claim for segment {k} is not what its circuit computes; cannot answer the dispute")
                continue
            receipt = self.oracle.respond(record.request_id, k, claim, proof)
            self.state.record_tx(record.request_id, "respond", receipt)
            log.info("oracle: answered the dispute on segment %d of request %d", k, record.request_id)
