"""Compile and prove a plan segment by segment, linking segments through their boundaries.

Every segment, zk or op, gets a circuit and keys (op circuits are needed to prove fraud). Proving runs the
segments in order with ezkl's fixed-point semantics at the plan's one common scale: segment k's quantized output is
exactly segment k+1's quantized input, handed to ezkl as exact field elements, so a hashed boundary's commitment C_k
is the same on both sides and a public one is the same tensor. Witnesses are cheap and computed in order; the zk
proofs are independent and go to an executor in parallel."""

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import ezkl
import numpy as np
from tqdm import tqdm

from imo.circuits.fixed_point import FixedPointProgram, dequantize, int_to_felt, poseidon_commitment, quantize, witness_outputs
from imo.circuits.plan import Plan, Segment
from imo.errors import InvalidModelError, MissingArtifactError, ProofError, UnprovableClaimError
from imo.fsutil import atomic_dir, private_dir, write_private
from imo.proving import onnx_io, prover
from imo.proving.circuit import CircuitFiles, Visibility, build_circuit, write_quantized_input
from imo.proving.executors import LocalExecutor, ProveJob
from imo.proving.native import call_ezkl
from imo.proving.store import ArtifactStore, circuit_key, proof_key

CIRCUITS_FILE = "circuits.json"  # beside plan.json: segment index → circuit entry in the artifact store
RUN_FILE = "run.json"  # in a run directory: public, like every segment's proof.json
PRIVATE_DIR = "private"  # in a run directory: operator-only (0700 dir, 0600 files); never share it


def circuit_files(plan_dir: Path, segment: Segment) -> CircuitFiles:
    index = Path(plan_dir) / CIRCUITS_FILE
    if not index.is_file():
        raise MissingArtifactError(f"{index} not found; run `imo compile {Path(plan_dir) / 'plan.json'}` first")
    return CircuitFiles(Path(plan_dir) / json.loads(index.read_text())[str(segment.index)]["dir"])  # a public bundle's dirs are relative


def segment_visibility(plan: Plan, segment: Segment) -> Visibility:
    """Each side of a segment is hashed or public as its boundary is (`Plan.boundary_hashed`)."""
    def side(k: int) -> str:
        return "hashed" if plan.boundary_hashed(k) else "public"
    return Visibility(input=side(segment.index), output=side(segment.index + 1))


def compile_plan(plan_path: Path, calibration: np.ndarray, store: ArtifactStore | None = None, quiet: bool = False) -> list[dict]:
    """Build (or find in the store) every segment's circuit and keys. `calibration` is (N, *model input shape)."""
    plan, plan_dir = Plan.load(plan_path), Path(plan_path).parent
    store = store or ArtifactStore()
    batch = np.asarray(calibration, dtype=np.float32)
    reports, index = [], {}
    if any(not segment.onnx for segment in plan.segments):
        raise MissingArtifactError(f"{plan_path} is a public bundle (its zk segments' ONNX files are private); compile the operator's plan")
    for segment in tqdm(plan.segments, desc="compile segments", unit="seg", disable=quiet):
        onnx_path = plan_dir / segment.onnx
        visibility = segment_visibility(plan, segment)
        key = circuit_key(onnx_path.read_bytes(), visibility, [plan.scale], batch)
        start = time.perf_counter()
        files, hit = store.circuit(key, lambda files: build_circuit(onnx_path, batch, files, visibility, scales=[plan.scale], quiet=quiet))
        report = json.loads(files.report.read_text())
        checked = _check_executor_agrees(segment, onnx_path, files, batch, plan.scale)
        reports.append({"segment": segment.index, "mode": segment.mode, "est_logrows": segment.est_logrows, "cached": hit,
                        "wall_seconds": round(time.perf_counter() - start, 3), "executor_checked_inputs": checked, **report})
        index[str(segment.index)] = {"key": key, "dir": str(files.root)}
        batch = np.stack([onnx_io.run_onnxruntime(onnx_path, x)[0] for x in batch])  # float inputs of the next segment, for calibration only
    (plan_dir / CIRCUITS_FILE).write_text(json.dumps(index, indent=2))
    return reports


EXECUTOR_CHECK_INPUTS = 4


def _check_executor_agrees(segment: Segment, onnx_path: Path, files: CircuitFiles, batch: np.ndarray, scale: int) -> int:
    """The canonical executor must be bit-exact with ezkl on this circuit, or an honest op result could be contradicted
    by a fraud proof (and a zk segment would fail at prove): compare both on a few calibration inputs now, before any
    claim depends on it. Returns how many inputs were compared; raises InvalidModelError naming the segment."""
    program = FixedPointProgram(onnx_path, files.settings_dict())
    compared = 0
    with tempfile.TemporaryDirectory() as tmp:
        for x in batch[:EXECUTOR_CHECK_INPUTS]:
            q = quantize(x, scale)
            try:
                native = program(q.reshape(segment.input_shape)).ravel()
            except UnprovableClaimError:
                continue  # outside the circuit's range: no witness either
            write_quantized_input(Path(tmp) / "input.json", q)
            witness = call_ezkl("witness", ezkl.gen_witness, str(Path(tmp) / "input.json"), str(files.compiled), str(Path(tmp) / "witness.json"))
            if not np.array_equal(native, witness_outputs(witness)[0]):
                raise InvalidModelError(f"segment {segment.index} ({', '.join(segment.ops)}): the fixed-point executor is not bit-exact with ezkl "
                                        f"on a calibration input, so its results could be contradicted; plan these nodes differently or report the model")
            compared += 1
    return compared


@dataclass
class Boundary:
    """A tensor between segments (index k is the input of segment k; the last is the model output). A hashed
    boundary keeps only its Poseidon commitment (little-endian hex field element as ezkl writes it) in run.json;
    its tensor is private (run dir's `private/`, owner-only). A public boundary has `quantized` and no commitment."""

    index: int
    name: str
    shape: list[int]
    quantized: list[int] | None
    commitment: str | None


def _boundary(plan: Plan, k: int, name: str, shape: list[int], q: np.ndarray) -> Boundary:
    if plan.boundary_hashed(k):
        return Boundary(k, name, list(shape), None, poseidon_commitment(q))
    return Boundary(k, name, list(shape), [int(v) for v in q], None)


def _private_dir(run_dir: Path) -> Path:
    """The run's operator-only folder."""
    return private_dir(run_dir / PRIVATE_DIR)


def prove_plan(plan_path: Path, input_path: Path | None, out_dir: Path, executor=None, store: ArtifactStore | None = None, quiet: bool = False,
               quantized_input: np.ndarray | None = None) -> dict:
    """Execute every segment in ezkl's fixed-point semantics (zk: ezkl's witness, op: the native executor), prove the
    zk segments (reusing proofs already in the store), and write boundaries, commitments and proofs to out_dir (atomically).

    What lands in out_dir is shareable: run.json (public boundaries, commitments of hashed ones, the output) and each zk
    segment's proof.json. Private data never does: the zk segments' inputs and witnesses (the private input, every
    tensor inside a zk segment) live in out_dir/private/ (0700) only while their proof is made, and the hashed
    boundaries' tensors stay there in boundaries.json (0600) for the operator."""
    plan, plan_dir = Plan.load(plan_path), Path(plan_path).parent
    store = store or ArtifactStore()
    executor = executor or LocalExecutor()
    q_input = quantize(onnx_io.load_input(input_path, plan.input_signature()), plan.scale) if quantized_input is None else np.asarray(quantized_input, dtype=np.int64)
    circuits = {segment.index: circuit_files(plan_dir, segment) for segment in plan.segments}
    for files in circuits.values():
        files.require(files.compiled, files.settings)
    keys = json.loads((plan_dir / CIRCUITS_FILE).read_text())
    start_all = time.perf_counter()
    with atomic_dir(out_dir, derived=(PRIVATE_DIR,)) as tmp:
        private = _private_dir(tmp)
        boundaries, hidden, records, jobs, cached = [], [], [], [], {}
        q_prev = q_input

        def boundary(k: int, name: str, shape: list[int], q: np.ndarray) -> Boundary:
            b = _boundary(plan, k, name, shape, q)
            if b.quantized is None:
                hidden.append({"index": k, "name": name, "shape": list(shape), "quantized": [int(v) for v in q], "commitment": b.commitment})
            return b

        for segment in tqdm(plan.segments, desc="execute", unit="seg", disable=quiet, leave=False):
            files = circuits[segment.index]
            start = time.perf_counter()
            # the canonical executor first: it enforces the circuit's limits (UnprovableClaimError where no proof exists,
            # before ezkl's prover could hang on a witness outside a lookup table)
            q_native = FixedPointProgram(plan_dir / segment.onnx, files.settings_dict())(q_prev.reshape(segment.input_shape)).ravel()
            if segment.mode == "zk":  # the prover needs ezkl's witness file: private, and deleted once proven
                (tmp / f"seg{segment.index}").mkdir()  # will hold the proof
                seg_input, seg_witness = private / f"seg{segment.index}-input.json", private / f"seg{segment.index}-witness.json"
                write_quantized_input(seg_input, q_prev)
                witness = call_ezkl("witness", ezkl.gen_witness, str(seg_input), str(files.compiled), str(seg_witness))
                q_out = witness_outputs(witness)[0]
                if not np.array_equal(q_out, q_native):
                    raise ProofError(f"segment {segment.index}: ezkl's witness and the canonical executor disagree; please report this model")
                jobs.append(ProveJob(segment.index, str(files.root), str(seg_witness), str(store.root), proof_key(keys[str(segment.index)]["key"], q_prev)))
                cached[segment.index] = store.get("proofs", jobs[-1].proof_key)
                if cached[segment.index] is not None:  # no proof to make: the witness and input go now, not after every proof
                    seg_witness.unlink()
                    seg_input.unlink()
            else:  # optimistic: the native fixed-point executor, bit-exact with the circuit a fraud proof would use
                q_out = q_native
            records.append({"index": segment.index, "mode": segment.mode, "execute_seconds": round(time.perf_counter() - start, 3)})
            if not boundaries:
                boundaries.append(boundary(0, segment.input, segment.input_shape, q_prev.ravel()))
            boundaries.append(boundary(segment.index + 1, segment.output, segment.output_shape, q_out))
            q_prev = q_out
        proved = {r.segment: r for r in executor.run([job for job in jobs if cached[job.segment] is None], quiet=quiet)}
        for job in jobs:
            hit, fresh, seg_dir = cached[job.segment], proved.get(job.segment), tmp / f"seg{job.segment}"
            (seg_dir / "proof.json").write_bytes(((hit or Path(fresh.proof_dir)) / "proof.json").read_bytes())
            Path(job.witness_file).unlink(missing_ok=True)
            (private / f"seg{job.segment}-input.json").unlink(missing_ok=True)
            records[job.segment]["proof_cached"] = hit is not None
            if fresh:
                records[job.segment].update(prove_seconds=fresh.seconds, peak_rss_bytes=fresh.peak_rss_bytes, worker=fresh.worker, prove_span=[fresh.started, fresh.finished])
        if hidden:
            write_private(private / "boundaries.json", json.dumps({"plan_hash": plan.plan_hash, "scale": plan.scale, "boundaries": hidden}, indent=2))
        else:
            private.rmdir()
        result = {
            "plan": os.path.relpath(Path(plan_path).resolve(), Path(out_dir).resolve()),  # relative to the run directory
            "plan_hash": plan.plan_hash,
            "scale": plan.scale,
            "output": dequantize(np.array(boundaries[-1].quantized), plan.scale).tolist(),
            "wall_seconds": round(time.perf_counter() - start_all, 3),
            "segments": records,
            "boundaries": [asdict(b) for b in boundaries],
        }
        (tmp / RUN_FILE).write_text(json.dumps(result, indent=2))
    return result


def expected_instances(run: dict, segment_index: int) -> list[str]:
    """The public instances a proof of segment k must carry: its input boundary then its output boundary, each its
    commitment (hashed) or its elements (public)."""
    def side(b: dict) -> list[str]:
        return [b["commitment"]] if b["commitment"] is not None else [int_to_felt(v) for v in b["quantized"]]
    return side(run["boundaries"][segment_index]) + side(run["boundaries"][segment_index + 1])


def read_run(run_dir: Path) -> dict:
    """A run directory's run.json, or one line saying why there is none."""
    run_file = Path(run_dir) / RUN_FILE
    if not run_file.is_file():
        raise MissingArtifactError(f"{run_file} not found; run `imo prove PLAN INPUT --out {run_dir}` first")
    try:
        run = json.loads(run_file.read_text())
        if not (isinstance(run["plan_hash"], str) and isinstance(run["boundaries"], list) and isinstance(run["plan"], str)):
            raise TypeError("plan, plan_hash or boundaries has the wrong type")
    except (ValueError, KeyError, TypeError) as exc:
        raise MissingArtifactError(f"{run_file} is not a run.json written by `imo prove PLAN INPUT --out DIR` ({type(exc).__name__}: {exc})") from None
    return run


def run_plan_file(run_dir: Path) -> Path:
    """The plan.json a run was proven with, as run.json records it (relative to the run directory)."""
    return Path(os.path.normpath(Path(run_dir).resolve() / read_run(run_dir)["plan"]))


def verify_run(plan_path: Path | None, run_dir: Path, srs_file: Path | None = None) -> dict:
    """Verify every zk proof of a run off-chain and check that its public instances link to the published boundaries.
    plan_path None: the plan recorded in run.json. srs_file: the SRS the circuits were set up with, if not the recorded one."""
    run = read_run(run_dir)
    plan_path = Path(plan_path) if plan_path is not None else run_plan_file(run_dir)
    plan, plan_dir = Plan.load(plan_path), plan_path.parent
    if run["plan_hash"] != plan.plan_hash:
        raise ProofError(f"{run_dir} was proven for plan {run['plan_hash'][:12]}…, not {plan.plan_hash[:12]}… ({plan_path})")
    if len(run["boundaries"]) != len(plan.segments) + 1:
        raise ProofError(f"{Path(run_dir) / RUN_FILE} has {len(run['boundaries'])} boundaries, the plan {len(plan.segments) + 1}")
    checked = []
    for segment in plan.segments:
        if segment.mode != "zk":
            continue
        proof_file = Path(run_dir) / f"seg{segment.index}" / "proof.json"
        seconds = prover.verify(circuit_files(plan_dir, segment), srs_file=srs_file, proof_file=proof_file)
        instances = json.loads(proof_file.read_text())["instances"][0]
        try:
            expected = expected_instances(run, segment.index)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProofError(f"{Path(run_dir) / RUN_FILE}: boundary {segment.index} or {segment.index + 1} is malformed ({type(exc).__name__}: {exc})") from None
        if instances != expected:
            raise ProofError(f"segment {segment.index}'s proof does not link: its public instances differ from the published boundary commitments C_{segment.index}/C_{segment.index + 1}")
        checked.append({"segment": segment.index, "verify_seconds": seconds})
    return {"plan": str(plan_path), "plan_hash": plan.plan_hash, "verified": checked, "linked": True}
