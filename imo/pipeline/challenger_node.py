"""The challenger node (DESIGN.md, protocol steps 5-6): checks every submission for the models it serves, disputes
wrong ones, and finalizes the rest.

A claim carries every public boundary in its submit transaction's calldata, so the node can always re-execute it:
it checks each posted zk proof with the registered verifier (an eth_call, free) and re-executes each op segment on
the canonical executor. An invalid posted proof is slashed with `disputeProof`; a wrong op segment is proven from
its claimed input with ezkl and challenged; after the response window an unanswered dispute is resolved (slashed).
If the submitter answers with a valid proof of its own claim (ezkl's rescale admits two roundings), the claim stands
for that segment and the node checks the remaining ones. It never finalizes a claim it could not fully re-execute.

Requests are handled in order of their deadlines, each on its own (see `Node.isolated`). Status of a request:
submitted → ok → finalized, or submitted → fraud → disputing → slashed, plus superseded / missed / unverifiable.
Commitments are sent before reveals and the proof is kept in the artifact store, so after `kill -9` a restart
reveals the same challenge without committing twice."""

import logging

from imo.errors import UnprovableClaimError
from imo.pipeline.game_play import FAST_PATH_MAX_LOGROWS
from imo.pipeline.node import Node
from imo.pipeline.state import RequestRecord
from imo.proving.protocol import Claim, DisputeKind, challenge_commitment
from imo.proving.segments import circuit_files
from imo.verifier_contracts.contracts import compile_protocol
from imo.verifier_contracts.game_client import GameStatus
from imo.verifier_contracts.oracle_client import Status

log = logging.getLogger("imo.nodes")

ACTIVE = ("submitted", "fraud", "disputing", "gaming", "ok")


class ChallengerNode(Node):
    """Watches every submission for its plan's models, disputes wrong ones, finalizes the rest."""

    role = "challenger"
    event = "AIResultSubmitted"

    def __init__(self, *args, fast_path_max_logrows: int = FAST_PATH_MAX_LOGROWS, **kwargs):
        super().__init__(*args, **kwargs)
        self._claims: dict[str, Claim] = {}
        self.fast_path_max_logrows = fast_path_max_logrows

    def step(self) -> None:
        events, latest = self.scan()
        fresh = []
        for e in events:
            request = self.oracle.request(e["args"]["requestId"])
            if request.model_id in self.model_ids:
                fresh.append((e, request))
        self.state.record_scan(self.state.cursor, [(r.request_id, r.model_id, r.input.hex()) for _, r in fresh])
        for e, r in fresh:  # a new submission (also one after a slash) is checked from scratch
            self.state.set_status(r.request_id, "submitted", tx="0x" + bytes(e["transactionHash"]).hex(), block=e["blockNumber"], segment=None,
                                  game=None)
        self.state.record_scan(latest)
        records = self.state.requests(*ACTIVE)
        deadlines = {}
        for record in records:
            try:
                deadlines[record.request_id] = self.oracle.request(record.request_id).deadline
            except Exception:  # noqa: BLE001 - handled (and reported) in `advance`
                deadlines[record.request_id] = 0
        for record in sorted(records, key=lambda r: deadlines[r.request_id]):  # the most urgent first
            self.isolated(record, self.advance)

    def _claim(self, record: RequestRecord) -> Claim:
        tx = record.detail["tx"]
        if tx not in self._claims:
            _, self._claims[tx] = self.oracle.submitted_claim(tx)
        return self._claims[tx]

    def _proof_ok(self, model_id: int):
        segments = self.oracle.model(model_id).registration.segments
        abi = compile_protocol()["IHalo2Verifier"].abi

        def check(k: int, proof: bytes, instances: list[int]) -> bool:
            verifier = self.w3.eth.contract(address=segments[k - 1].verifier, abi=abi)
            try:
                return bool(verifier.functions.verifyProof(proof, instances).call())
            except Exception:  # noqa: BLE001 - ezkl's verifier reverts on a malformed proof: that is a rejection
                return False
        return check

    def advance(self, record: RequestRecord) -> None:
        rid = record.request_id
        request = self.oracle.request(rid)
        chain_claim = self.oracle.claim(rid)
        claim = self._claim(record)
        if request.status != Status.SUBMITTED or chain_claim.claim_hash != claim.claim_hash:
            final = "finalized" if request.status == Status.FINALIZED and chain_claim.claim_hash == claim.claim_hash else (
                "slashed" if record.status in ("disputing", "gaming") or request.status == Status.PENDING else "superseded")
            self.state.set_status(rid, final)
            return
        if record.status == "submitted":
            settled = {k for k in range(1, self.runtime.n + 1) if chain_claim.settled >> (k - 1) & 1}
            try:
                dispute = self.runtime.find_dispute(claim, self._proof_ok(record.model_id), skip=settled)
            except (ValueError, UnprovableClaimError) as exc:
                self.state.set_status(rid, "unverifiable", reason=str(exc))
                self.warnings.add(f"challenger: request {rid} cannot be re-executed ({exc}); it is NOT finalized by this node")
                return
            if dispute is None:
                self.state.set_status(rid, "ok")
            else:
                self.state.set_status(rid, "fraud", segment=dispute.segment, kind=dispute.kind.value, reason=dispute.reason)
                log.info("challenger: request %d: %s", rid, dispute.reason)
            record = self.state.request(rid)
        if record.status == "fraud":
            self._dispute(record, request.deadline)
        elif record.status == "disputing":
            self._follow_dispute(record)
        elif record.status == "gaming":
            self._play_game(record)
        elif record.status == "ok" and self.now() >= request.deadline and chain_claim.open_disputes == 0:
            receipt = self.send("finalize", rid, claim)
            if receipt is not None:
                self.state.record_tx(rid, "finalize", receipt)
            self.state.set_status(rid, "finalized", finalize_gas=receipt.gasUsed if receipt else None)

    def _dispute(self, record: RequestRecord, deadline: int) -> None:
        rid, k, claim = record.request_id, record.detail["segment"], self._claim(record)
        if self.now() >= deadline:
            self.state.set_status(rid, "missed")
            self.warnings.add(f"challenger: the challenge window of request {rid} closed before its fraud at segment {k} was disputed")
            return
        bond = self.oracle.model(record.model_id).spec.bond_wei
        if record.detail["kind"] == DisputeKind.INVALID_PROOF.value:
            evidence, reveal = b"", ("reveal_dispute_proof", rid, k, claim)
        elif self._by_game(record.model_id, k):
            evidence, reveal = b"", ("reveal_challenge", rid, k, claim, b"", [], bond)
        else:
            inputs, _ = claim.segment_instances(self.runtime.sizes, k)
            proof, instances = self.runtime.prove_segment(k, claim.tensors(self.runtime.sizes)[k - 1])
            evidence, reveal = proof, ("reveal_challenge", rid, k, claim, proof, instances[len(inputs):], bond)
        game = reveal[0] == "reveal_challenge" and not evidence
        if game:  # games: any number per segment; ours may have been opened before a crash
            mine = self._my_game(record)
            if mine is not None:
                self.state.set_status(rid, "gaming", game=mine)
                return
        else:
            opened = self.oracle.dispute(rid, k)
            if opened.open:  # revealed before a crash (or by someone else): follow it
                self.state.set_status(rid, "disputing", opened_by=opened.challenger)
                return
        commitment = challenge_commitment(self.account, rid, k, evidence)
        if self.oracle.fn.commitBlock(commitment).call() == 0:
            self.state.record_tx(rid, "commit", self.oracle.commit(commitment))
        receipt = self.send(*reveal)
        if receipt is None:
            return
        what = "openGame" if game else "challenge" if evidence else "disputeProof"
        self.state.record_tx(rid, what, receipt)
        self.state.set_status(rid, "gaming" if game else "disputing" if evidence else "slashed", challenge_gas=receipt.gasUsed,
                              game=self._my_game(record) if game else None)
        log.info("challenger: request %d segment %d %s", rid, k,
                 "challenged: bisection game opened" if game else "challenged" if evidence else "slashed (invalid proof)")

    def _by_game(self, model_id: int, k: int) -> bool:
        """Dispute op segment k with a bisection game rather than one ezkl proof of the whole segment: when the
        segment has a registered step program and either no verifier or a circuit above the fast-path size."""
        spec = self.oracle.model(model_id).registration.segments[k - 1]
        if not spec.program_steps or self.games is None:
            return False
        if int(spec.verifier, 16) == 0:
            return True
        seg = self.runtime.plan.segments[k - 1]
        logrows = circuit_files(self.runtime.plan_dir, seg).settings_dict().get("run_args", {}).get("logrows", 0)
        return int(logrows) > self.fast_path_max_logrows

    def _my_game(self, record: RequestRecord) -> int | None:
        """The id of the game this node opened on the disputed segment of the current submission, if any."""
        opened = self.games.games_opened(from_block=record.detail.get("block") or 0, request_id=record.request_id)
        mine = [g.game_id for g in opened if g.challenger == self.account and g.segment == record.detail["segment"]]
        return mine[-1] if mine else None

    def _play_game(self, record: RequestRecord) -> None:
        """One move of our game, if it is ours. A won game slashes the claim in the same transaction (`advance` then
        sees the request reopened); a lost one means the submitter's trace held where ours said it did not: we stop
        disputing this claim and say so (a re-challenge would lose again)."""
        rid, k, game_id = record.request_id, record.detail["segment"], record.detail["game"]
        move = self.game_side(self._claim(record)).challenge(game_id)
        if move is not None:
            self.state.record_tx(rid, f"game {move[0]}", move[1])
            log.info("challenger: request %d segment %d: game %d %s", rid, k, game_id, move[0])
        elif self.games.game(game_id).status == GameStatus.DEFENDER_WON:
            self.warnings.add(f"challenger: request {rid}: the submitter won bisection game {game_id} on segment {k}; our bond went to it")
            self.state.set_status(rid, "lost")

    def _follow_dispute(self, record: RequestRecord) -> None:
        rid, k = record.request_id, record.detail["segment"]
        dispute = self.oracle.dispute(rid, k)
        if dispute.open:
            if self.now() >= dispute.deadline:
                receipt = self.oracle.resolve(rid, k)
                self.state.record_tx(rid, "resolve", receipt)
                self.state.set_status(rid, "slashed", resolve_gas=receipt.gasUsed)
                log.info("challenger: request %d: unanswered dispute on segment %d resolved, submitter slashed", rid, k)
            return
        # answered: the claim stands for segment k (ezkl's relation admits it); check the other segments again
        self.warnings.add(f"challenger: request {rid}: the submitter answered the dispute on segment {k} with a valid proof; our bond went to it")
        self.state.set_status(rid, "submitted")
