"""The oracle node and the challenger node (DESIGN.md, protocol steps 4-6), each a poll loop over AIOracle events
with its work in sqlite (`imo.pipeline.state`).

`OracleNode` answers the requests of the models whose registered plan hash is its plan's: it takes the private
input from an off-chain inbox (keyed by the input commitment C_0), executes the plan (op segments with the native
fixed-point executor, zk segments proven with ezkl, reusing proofs in the artifact store), publishes the boundary
tensors around every op segment in `boundaryData` (`encode_boundaries`), and submits with the minimum bond.
`dishonest=` corrupts an op boundary, the output or a commitment (tests and the demo only).

`ChallengerNode` reads every submission for those models, re-executes each op segment from the published tensors,
checks every commitment and the output, and on the first mismatch proves that segment with ezkl from its claimed
input and calls `challenge` before the window closes. It also finalizes results whose window has passed.

Both nodes have `step()` (one poll: scan new events, advance every unfinished request) and `run_forever()`, which
reconnects after RPC errors. Before any transaction a node re-reads the request on chain, so a restart after
`kill -9` at any point finishes the work without sending a transaction twice."""

import json
import logging
import random
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import ezkl
import numpy as np

from imo.circuits.fixed_point import (
    FIELD_MODULUS,
    FixedPointProgram,
    dequantize,
    poseidon_commitment,
    quantize,
)
from imo.circuits.plan import Plan
from imo.errors import ChainError, ImoError, MissingArtifactError
from imo.pipeline.chain import connect
from imo.pipeline.state import NodeState, RequestRecord
from imo.proving import prover
from imo.proving.circuit import write_input
from imo.proving.executors import LocalExecutor
from imo.proving.native import call_ezkl
from imo.proving.segments import CIRCUITS_FILE, circuit_files, prove_plan
from imo.proving.store import ArtifactStore, proof_key
from imo.verifier_contracts.contracts import (
    Deployment,
    ModelSpec,
    SegmentSpec,
    compile_protocol,
    register_model,
    transact,
)
from imo.verifier_contracts.evm import ProofCall, compile_verifier, deploy

log = logging.getLogger("imo.nodes")

DISHONEST_MODES = ("boundary", "output", "commitment")
PENDING, SUBMITTED, FINALIZED, CANCELLED = 1, 2, 3, 4  # AIOracle.Status


def felt(hex_le: str) -> int:
    """ezkl's little-endian hex field element as an integer."""
    return int.from_bytes(bytes.fromhex(hex_le), "little")


def input_commitment(plan: Plan, x: np.ndarray) -> int:
    """C_0: the Poseidon commitment of the model input quantized at the plan's scale, the `input` of a request."""
    return felt(poseidon_commitment(quantize(np.asarray(x, dtype=np.float32), plan.scale)))


# ------------------------------------------------------------------ boundary data (data availability)

_DTYPES = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def encode_boundaries(tensors: dict[int, np.ndarray]) -> bytes:
    """zlib( version 1 | count | per tensor: boundary index u16, width u8, length u32, little-endian ints ), each tensor
    in the narrowest signed width that holds it (int16 for the usual scale-7 activations)."""
    out = [struct.pack("<BH", 1, len(tensors))]
    for index, q in sorted(tensors.items()):
        q = np.asarray(q, dtype=np.int64).ravel()
        width = next(w for w, t in _DTYPES.items() if q.size == 0 or (q.min() >= np.iinfo(t).min and q.max() <= np.iinfo(t).max))
        out.append(struct.pack("<HBI", index, width, q.size) + q.astype(np.dtype(_DTYPES[width]).newbyteorder("<")).tobytes())
    return zlib.compress(b"".join(out), 9)


def decode_boundaries(data: bytes) -> dict[int, np.ndarray]:
    """Inverse of `encode_boundaries`; raises ValueError on anything malformed."""
    try:
        raw = zlib.decompress(data)
        version, count = struct.unpack_from("<BH", raw)
        if version != 1:
            raise ValueError(f"unknown boundary data version {version}")
        pos, tensors = 3, {}
        for _ in range(count):
            index, width, size = struct.unpack_from("<HBI", raw, pos)
            pos += 7
            dtype = np.dtype(_DTYPES[width]).newbyteorder("<")
            tensors[index] = np.frombuffer(raw, dtype=dtype, count=size, offset=pos).astype(np.int64)
            pos += width * size
        return tensors
    except (zlib.error, struct.error, KeyError) as exc:
        raise ValueError(f"malformed boundary data: {exc}") from None


def published_boundaries(plan: Plan) -> list[int]:
    """The boundaries a submission publishes: the input and output of every op segment, except the model input
    when the first segment is zk (it is private) and the model output (it is the public result y)."""
    n, ks = len(plan.segments), set()
    for s in plan.segments:
        if s.mode == "op":
            ks |= {s.index, s.index + 1}
    return sorted(k for k in ks if k < n and (k > 0 or plan.segments[0].mode == "op"))


# ------------------------------------------------------------------ registration


def register_plan(w3, sender: str, deployment: Deployment, plan_file: Path, name: str, fee_wei: int = 10**15,
                  operator_share_bps: int = 2_000, challenge_window_s: int = 600) -> int:
    """Deploy every segment's ezkl verifier and register the plan as model `name`; returns its model id."""
    plan, plan_dir = Plan.load(plan_file), Path(plan_file).parent
    segments = []
    for s in plan.segments:
        verifier, gas = deploy(w3, compile_verifier(circuit_files(plan_dir, s).verifier_sol), sender)
        deployment.verifiers[f"{name}/seg{s.index}"] = verifier.address
        deployment.gas[f"Halo2Verifier {name}/seg{s.index}"] = gas
        segments.append(SegmentSpec(verifier.address, s.mode == "zk"))
    spec = ModelSpec(bytes.fromhex(plan.model_sha256), bytes.fromhex(plan.plan_hash), deployment.token, fee_wei,
                     operator_share_bps, challenge_window_s, int(np.prod(plan.segments[-1].output_shape)), plan.scale)
    return register_model(w3, sender, deployment, name, spec, segments)


# ------------------------------------------------------------------ inbox


class Inbox:
    """Private inputs delivered off-chain, keyed by their commitment C_0: a dict in memory, or a directory of
    `<C_0 as 0x hex>.json` files in ezkl's input format."""

    def __init__(self, source: Path | dict | None = None):
        self.items = source if isinstance(source, dict) else {}
        self.dir = Path(source) if isinstance(source, (str, Path)) else None

    def put(self, plan: Plan, x: np.ndarray) -> int:
        c0 = input_commitment(plan, x)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_input(self.dir / f"{c0:#066x}.json", np.asarray(x, dtype=np.float32))
        else:
            self.items[c0] = np.asarray(x, dtype=np.float32)
        return c0

    def get(self, c0: int) -> np.ndarray | None:
        if self.dir is not None:
            path = self.dir / f"{c0:#066x}.json"
            return np.asarray(json.loads(path.read_text())["input_data"][0], dtype=np.float32) if path.is_file() else None
        return self.items.get(c0)


# ------------------------------------------------------------------ shared node machinery


@dataclass
class _Model:
    plan: Plan
    plan_dir: Path
    programs: dict = field(default_factory=dict)

    def op_program(self, index: int) -> FixedPointProgram:
        if index not in self.programs:
            seg = self.plan.segments[index]
            self.programs[index] = FixedPointProgram(self.plan_dir / seg.onnx, circuit_files(self.plan_dir, seg).settings_dict())
        return self.programs[index]

    def run_op(self, index: int, q_in: np.ndarray) -> np.ndarray:
        seg = self.plan.segments[index]
        return self.op_program(index)(np.asarray(q_in, dtype=np.int64).reshape(seg.input_shape)).ravel()


class _Node:
    """Connection, contracts, served models and the poll loop shared by both nodes."""

    role = "node"

    def __init__(self, rpc_url: str, deployment: Deployment | Path, plan_file: Path, account: str | int,
                 state: NodeState | Path | str = ":memory:", poll_interval: float = 1.0, store: ArtifactStore | None = None,
                 work_dir: Path | None = None):
        self.rpc_url = rpc_url
        self.deployment = deployment if isinstance(deployment, Deployment) else Deployment.read(Path(deployment))
        self.plan_file = Path(plan_file)
        self.model = _Model(Plan.load(plan_file), Path(plan_file).parent)
        if not (self.model.plan_dir / CIRCUITS_FILE).is_file():
            raise MissingArtifactError(f"{self.model.plan_dir / CIRCUITS_FILE} not found; run `imo compile {plan_file}` first")
        self.state = state if isinstance(state, NodeState) else NodeState(state)
        self.poll_interval = poll_interval
        self.store = store or ArtifactStore()
        self.work_dir = Path(work_dir) if work_dir else Path(self.state.path).parent / f"{self.role}-work" if self.state.path != ":memory:" else None
        self._account = account
        self._connect()

    def _connect(self) -> None:
        self.w3 = connect(self.rpc_url).w3
        self.account = self.w3.eth.accounts[self._account] if isinstance(self._account, int) else self._account
        self.oracle = self.w3.eth.contract(address=self.deployment.oracle, abi=compile_protocol()["AIOracle"].abi)
        self.model_ids = self._served_models()

    def _served_models(self) -> set[int]:
        """The registered models whose plan hash is this node's plan's."""
        want = bytes.fromhex(self.model.plan.plan_hash)
        count = self.oracle.functions.modelCount().call()
        return {m for m in range(1, count + 1) if self.oracle.functions.getModel(m).call()[0][1] == want}

    def chain_request(self, request_id: int) -> tuple:
        """(status, deadline, modelId, input) of a request on chain."""
        r = self.oracle.functions.getRequest(request_id).call()[0]
        return r[6], r[2], r[1], r[7]

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def _scan(self, event: str) -> tuple[list, int]:
        latest = self.w3.eth.block_number
        start = self.state.cursor + 1
        if start > latest:
            return [], latest
        return getattr(self.oracle.events, event)().get_logs(from_block=start, to_block=latest), latest

    def step(self) -> None:
        raise NotImplementedError

    def run_forever(self, max_backoff: float = 30.0) -> None:
        """Poll until interrupted; after an RPC failure wait (doubling up to max_backoff) and reconnect."""
        backoff = self.poll_interval
        log.info("%s %s serving models %s of %s", self.role, self.account, sorted(self.model_ids), self.deployment.oracle)
        while True:
            try:
                self.step()
                backoff = self.poll_interval
                time.sleep(self.poll_interval)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - the RPC node dropped, or a transient failure: retry from the saved state
                log.warning("%s: %s; retrying in %.0f s", self.role, str(exc).splitlines()[0][:200], backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)
                try:
                    self._connect()
                except ImoError:
                    pass


# ------------------------------------------------------------------ oracle node


class OracleNode(_Node):
    """Answers requests for its plan's models from its inbox. `dishonest` ∈ DISHONEST_MODES | "random" | None."""

    role = "oracle"

    def __init__(self, *args, inbox: Inbox | Path | dict | None = None, dishonest: str | None = None, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if dishonest not in (None, "random", *DISHONEST_MODES):
            raise ImoError(f"--dishonest must be one of {', '.join(DISHONEST_MODES)} or random, not {dishonest!r}")
        self.inbox = inbox if isinstance(inbox, Inbox) else Inbox(inbox)
        self.dishonest = dishonest
        self.rng = random.Random(seed)

    def step(self) -> None:
        events, latest = self._scan("AICallbackRequest")
        self.state.record_scan(latest, [(e["args"]["requestId"], e["args"]["modelId"], e["args"]["input"].hex())
                                        for e in events if e["args"]["modelId"] in self.model_ids])
        for record in self.state.requests("seen", "proving"):
            self.answer(record)
        for record in self.state.requests("submitted"):
            self._reconcile(record)

    def _reconcile(self, record: RequestRecord) -> bool:
        """Bring the local status in line with the chain; True when the request still needs an answer from us."""
        status, *_ = self.chain_request(record.request_id)
        if status == PENDING:
            if record.status == "submitted":  # our result was taken back by a fraud proof
                self.state.set_status(record.request_id, "challenged")
                return False
            return True
        if status in (SUBMITTED, FINALIZED):
            mine = self.oracle.functions.getClaim(record.request_id).call()[0] == self.account
            new = ("submitted" if status == SUBMITTED else "finalized") if mine else "answered_by_other"
        else:
            new = "cancelled" if status == CANCELLED else "unknown"
        if new != record.status:
            self.state.set_status(record.request_id, new)
        return False

    def answer(self, record: RequestRecord) -> None:
        """Execute, prove and submit one request (or find that it was already submitted before a crash)."""
        if not self._reconcile(record):
            return
        c0 = int(record.input, 16)
        x = self.inbox.get(c0)
        if x is None:
            return  # the requester has not delivered the input yet
        self.state.set_status(record.request_id, "proving")
        started = time.time()
        claim = self.execute(x, record.request_id)
        mode = self._pick_mode()
        if mode:
            claim = self.corrupt(claim, mode)
        prove_seconds = round(time.time() - started, 3)
        # the last check before the transaction: a crash between here and the receipt is caught by _reconcile
        if not self._reconcile(self.state.request(record.request_id)):
            return
        bond = self.oracle.functions.minBond().call()
        fn = self.oracle.functions.submit(record.request_id, claim["commitments"], claim["output"], claim["proofs"], claim["boundary_data"])
        receipt = _transact_unless_moved_on(fn, self.account, value=bond)
        if receipt is None:
            self._reconcile(self.state.request(record.request_id))
            return
        self.state.record_tx(record.request_id, "submit", receipt)
        self.state.set_status(record.request_id, "submitted", tx="0x" + bytes(receipt.transactionHash).hex(), gas=receipt.gasUsed,
                              prove_seconds=prove_seconds, dishonest=mode, boundary_bytes=len(claim["boundary_data"]))
        log.info("oracle: submitted request %d (%s) gas %d", record.request_id, mode or "honest", receipt.gasUsed)

    def _pick_mode(self) -> str | None:
        if self.dishonest == "random":
            return self.rng.choice(DISHONEST_MODES)
        return self.dishonest

    def execute(self, x: np.ndarray, request_id: int) -> dict:
        """Run the plan on x (zk proofs from the store when this input was proven before): the honest claim."""
        plan = self.model.plan
        work = (self.work_dir or Path(self.store.root) / "oracle-runs") / f"request-{request_id}-{self.account}"
        work.mkdir(parents=True, exist_ok=True)
        write_input(work / "input.json", x.reshape(plan.segments[0].input_shape))
        run = prove_plan(self.plan_file, work / "input.json", work / "run", executor=LocalExecutor(workers=1), store=self.store, quiet=True)
        q = [np.array(b["quantized"], dtype=np.int64) for b in run["boundaries"]]
        proofs = [ProofCall.from_proof_file(work / "run" / f"seg{s.index}" / "proof.json").proof for s in plan.segments if s.mode == "zk"]
        return self._claim(q, [felt(b["commitment"]) for b in run["boundaries"]], proofs)

    def _claim(self, q: list[np.ndarray], commitments: list[int], proofs: list[bytes]) -> dict:
        return {"q": q, "commitments": commitments, "output": [int(v) for v in q[-1]], "proofs": proofs,
                "boundary_data": encode_boundaries({k: q[k] for k in published_boundaries(self.model.plan)})}

    def corrupt(self, claim: dict, mode: str) -> dict:
        """A dishonest claim the zk proofs still pass: a wrong op boundary (recommitted, later op segments re-run
        from it), a wrong output element, or a wrong commitment after an op segment."""
        plan, n = self.model.plan, len(self.model.plan.segments)
        q, commitments = [a.copy() for a in claim["q"]], list(claim["commitments"])
        # op segments k whose output boundary k+1 is internal and followed only by op segments
        inner = [s.index for s in plan.segments if s.mode == "op" and s.index + 1 < n
                 and all(t.mode == "op" for t in plan.segments[s.index + 1:])]
        if mode in ("boundary", "commitment") and not inner:
            mode = "output"
        if mode == "output":
            if plan.segments[-1].mode != "op":
                raise ImoError("--dishonest output needs a plan whose last segment is op")
            i = self.rng.randrange(q[n].size)
            q[n][i] += self.rng.choice((-1, 1))
        elif mode == "boundary":
            k = self.rng.choice(inner) + 1
            i = self.rng.randrange(q[k].size)
            q[k][i] += self.rng.choice((-3, -1, 1, 3))
            commitments[k] = felt(poseidon_commitment(q[k]))
            for j in range(k, n):
                q[j + 1] = self.model.run_op(j, q[j])
                commitments[j + 1] = felt(poseidon_commitment(q[j + 1]))
        else:
            k = self.rng.choice(inner) + 1
            commitments[k] = (commitments[k] + self.rng.randrange(1, 1 << 32)) % FIELD_MODULUS
        return {**self._claim(q, commitments, claim["proofs"]), "mode": mode}


# ------------------------------------------------------------------ challenger node


@dataclass(frozen=True)
class Dispute:
    segment: int  # 1-based, as `challenge` takes it
    q_in: np.ndarray
    reason: str


class ChallengerNode(_Node):
    """Watches every submission for its plan's models, challenges wrong ones with fraud proofs, finalizes the rest."""

    role = "challenger"

    def step(self) -> None:
        events, latest = self._scan("AIResultSubmitted")
        fresh = []
        for e in events:
            _, _, model_id, c0 = self.chain_request(e["args"]["requestId"])
            if model_id in self.model_ids:
                fresh.append((e, model_id, c0))
        self.state.record_scan(self.state.cursor, [(e["args"]["requestId"], m, f"{c0:x}") for e, m, c0 in fresh])
        for e, _, _ in fresh:  # a new submission (also a resubmission after a challenge) is checked from scratch
            self.state.set_status(e["args"]["requestId"], "submitted", tx="0x" + bytes(e["transactionHash"]).hex(), block=e["blockNumber"])
        self.state.record_scan(latest)
        for record in self.state.requests("submitted", "fraud", "challenging", "ok"):
            self.advance(record)

    def _submission(self, record: RequestRecord) -> dict:
        receipt = self.w3.eth.get_transaction_receipt(record.detail["tx"])
        (event,) = [e for e in self.oracle.events.AIResultSubmitted().process_receipt(receipt) if e["args"]["requestId"] == record.request_id]
        return event["args"]

    def advance(self, record: RequestRecord) -> None:
        status, deadline, *_ = self.chain_request(record.request_id)
        claim = self.oracle.functions.getClaim(record.request_id).call()
        submission = self._submission(record)
        same = (claim[0], list(claim[2]), list(claim[3])) == (submission["submitter"], list(submission["commitments"]), list(submission["output"]))
        if status != SUBMITTED or not same:
            # taken back (by us before a crash, or someone else), finalized, or replaced by a newer submission
            final = {PENDING: "challenged", FINALIZED: "finalized", CANCELLED: "cancelled"}.get(status, "superseded")
            if status == SUBMITTED:
                final = "superseded"
            self.state.set_status(record.request_id, final)
            return
        if record.status == "submitted":
            dispute = self.check(submission)
            if dispute is None:
                self.state.set_status(record.request_id, "ok")
            else:
                self.state.set_status(record.request_id, "fraud", segment=dispute.segment, reason=dispute.reason)
                record = self.state.request(record.request_id)
        if record.status in ("fraud", "challenging"):
            if self.now() >= deadline:
                self.state.set_status(record.request_id, "missed")
                return
            self.state.set_status(record.request_id, "challenging")
            dispute = self.check(submission)
            call = self.fraud_proof(dispute)
            receipt = _transact_unless_moved_on(self.oracle.functions.challenge(record.request_id, dispute.segment, call.proof, call.instances), self.account)
            if receipt is None:
                self.state.set_status(record.request_id, "challenged_by_other")
                return
            self.state.record_tx(record.request_id, "challenge", receipt)
            self.state.set_status(record.request_id, "challenged", gas=receipt.gasUsed, challenge_tx="0x" + bytes(receipt.transactionHash).hex())
            log.info("challenger: request %d segment %d slashed (%s)", record.request_id, dispute.segment, dispute.reason)
        elif record.status == "ok" and self.now() >= deadline:
            receipt = _transact_unless_moved_on(self.oracle.functions.finalize(record.request_id), self.account)
            if receipt is None:
                self.state.set_status(record.request_id, "finalized")
                return
            self.state.record_tx(record.request_id, "finalize", receipt)
            self.state.set_status(record.request_id, "finalized", finalize_gas=receipt.gasUsed)

    def check(self, submission) -> Dispute | None:
        """Re-execute every op segment from the published tensors; the first segment whose claim is wrong, or None."""
        plan, n = self.model.plan, len(self.model.plan.segments)
        commitments, output = list(submission["commitments"]), list(submission["output"])
        try:
            tensors = decode_boundaries(submission["boundaryData"])
        except ValueError as exc:
            log.warning("challenger: %s", exc)
            return None  # nothing to re-execute from: no fraud proof is possible
        for s in plan.segments:
            if s.mode != "op":
                continue
            q_in = tensors.get(s.index)
            if q_in is None or q_in.size != int(np.prod(s.input_shape)) or felt(poseidon_commitment(q_in)) != commitments[s.index]:
                log.warning("challenger: boundary %d is not published or does not match C_%d", s.index, s.index)
                return None  # the previous op segment, if any, was already checked against this commitment
            q_out = self.model.run_op(s.index, q_in)
            if s.index + 1 == n:
                if [int(v) for v in q_out] != [int(v) for v in output]:
                    return Dispute(n, q_in, "output y differs from re-execution")
            elif felt(poseidon_commitment(q_out)) != commitments[s.index + 1]:
                return Dispute(s.index + 1, q_in, f"C_{s.index + 1} differs from re-execution")
            elif s.index + 1 in tensors and not np.array_equal(tensors[s.index + 1], q_out):
                return Dispute(s.index + 1, q_in, f"published boundary {s.index + 1} differs")
        return None

    def fraud_proof(self, dispute: Dispute) -> ProofCall:
        """An ezkl proof of the disputed segment from its claimed input (kept in the artifact store by input)."""
        plan_dir, seg = self.model.plan_dir, self.model.plan.segments[dispute.segment - 1]
        files = circuit_files(plan_dir, seg)
        key = proof_key(json.loads((plan_dir / CIRCUITS_FILE).read_text())[str(seg.index)]["key"], dispute.q_in)

        def build(tmp: Path) -> None:
            write_input(tmp / "input.json", dequantize(dispute.q_in, self.model.plan.scale).reshape(seg.input_shape))
            call_ezkl("witness", ezkl.gen_witness, str(tmp / "input.json"), str(files.compiled), str(tmp / "witness.json"))
            prover.prove_witness(files, tmp / "witness.json", tmp / "proof.json")
            (tmp / "witness.json").unlink()
            (tmp / "input.json").unlink()

        entry, _ = self.store.get_or_put("proofs", key, build)
        return ProofCall.from_proof_file(entry / "proof.json")


def _transact_unless_moved_on(fn, account: str, **kwargs):
    """Send a request transaction; None when the contract says the request already moved on (AIOracleUnexpectedStatus):
    done by this node before a crash, or by another node. No transaction is ever sent twice."""
    try:
        return transact(fn, account, **kwargs)
    except ChainError as exc:
        if "AIOracleUnexpectedStatus" in str(exc):
            return None
        raise
