"""Compile and prove a plan segment by segment, linking segments through Poseidon commitments of their boundaries.

Every segment, zk or op, gets a circuit and keys (op circuits are needed to prove fraud). Proving runs the
segments in order with ezkl's fixed-point semantics: segment k's quantized output, dequantized at the plan's
common scale, is exactly segment k+1's quantized input, so C_k (output hash of k) = C_k (input hash of k+1).
Witnesses are cheap and computed in order; the zk proofs are independent and go to an executor in parallel."""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import ezkl
import numpy as np
from tqdm import tqdm

from imo.circuits.fixed_point import FixedPointProgram, dequantize, int_to_felt, poseidon_commitment, quantize, witness_commitments, witness_outputs
from imo.circuits.plan import Plan, Segment
from imo.errors import MissingArtifactError, ProofError
from imo.fsutil import atomic_dir
from imo.proving import onnx_io, prover
from imo.proving.circuit import CircuitFiles, Visibility, build_circuit, write_input
from imo.proving.executors import LocalExecutor, ProveJob
from imo.proving.native import call_ezkl
from imo.proving.store import ArtifactStore, circuit_key, proof_key

CIRCUITS_FILE = "circuits.json"  # beside plan.json: segment index → circuit entry in the artifact store


def circuit_files(plan_dir: Path, segment: Segment) -> CircuitFiles:
    index = Path(plan_dir) / CIRCUITS_FILE
    if not index.is_file():
        raise MissingArtifactError(f"{index} not found; run `imo compile {Path(plan_dir) / 'plan.json'}` first")
    return CircuitFiles(json.loads(index.read_text())[str(segment.index)]["dir"])


def segment_visibility(plan: Plan, segment: Segment) -> Visibility:
    """Boundaries are hashed; the final output is public so the contract can compare it with the claimed result."""
    last = segment.index == len(plan.segments) - 1
    return Visibility(input="hashed", output="public" if last else "hashed")


def compile_plan(plan_path: Path, calibration: np.ndarray, store: ArtifactStore | None = None, quiet: bool = False) -> list[dict]:
    """Build (or find in the store) every segment's circuit and keys. `calibration` is (N, *model input shape)."""
    plan, plan_dir = Plan.load(plan_path), Path(plan_path).parent
    store = store or ArtifactStore()
    batch = np.asarray(calibration, dtype=np.float32)
    reports, index = [], {}
    for segment in tqdm(plan.segments, desc="compile segments", unit="seg", disable=quiet):
        onnx_path = plan_dir / segment.onnx
        visibility = segment_visibility(plan, segment)
        key = circuit_key(onnx_path.read_bytes(), visibility, [plan.scale], batch)
        start = time.perf_counter()
        files, hit = store.circuit(key, lambda files: build_circuit(onnx_path, batch, files, visibility, scales=[plan.scale], quiet=quiet))
        report = json.loads(files.report.read_text())
        reports.append({"segment": segment.index, "mode": segment.mode, "est_logrows": segment.est_logrows, "cached": hit, "wall_seconds": round(time.perf_counter() - start, 3), **report})
        index[str(segment.index)] = {"key": key, "dir": str(files.root)}
        batch = np.stack([onnx_io.run_onnxruntime(onnx_path, x)[0] for x in batch])  # float inputs of the next segment, for calibration only
    (plan_dir / CIRCUITS_FILE).write_text(json.dumps(index, indent=2))
    return reports


@dataclass
class Boundary:
    """A tensor between segments (index k is the input of segment k; the last is the model output)."""

    index: int
    name: str
    shape: list[int]
    quantized: list[int]
    commitment: str  # Poseidon hash, little-endian hex field element as ezkl writes it


def prove_plan(plan_path: Path, input_path: Path, out_dir: Path, executor=None, store: ArtifactStore | None = None, quiet: bool = False) -> dict:
    """Execute every segment in ezkl's fixed-point semantics (zk: ezkl's witness, op: the native executor), prove the
    zk segments (reusing proofs already in the store), and write boundaries, commitments and proofs to out_dir (atomically)."""
    plan, plan_dir = Plan.load(plan_path), Path(plan_path).parent
    store = store or ArtifactStore()
    executor = executor or LocalExecutor()
    x = onnx_io.load_input(input_path, plan.input_signature())
    circuits = {segment.index: circuit_files(plan_dir, segment) for segment in plan.segments}
    for files in circuits.values():
        files.require(files.compiled, files.settings)
    keys = json.loads((plan_dir / CIRCUITS_FILE).read_text())
    start_all = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        boundaries, records, jobs = [], [], []
        q_prev, c_prev = quantize(x, plan.scale), None
        for segment in tqdm(plan.segments, desc="execute", unit="seg", disable=quiet, leave=False):
            files, seg_dir = circuits[segment.index], tmp / f"seg{segment.index}"
            seg_dir.mkdir()
            start = time.perf_counter()
            if segment.mode == "zk":  # the prover needs ezkl's witness file
                write_input(seg_dir / "input.json", dequantize(q_prev, plan.scale).reshape(segment.input_shape))
                witness = call_ezkl("witness", ezkl.gen_witness, str(seg_dir / "input.json"), str(files.compiled), str(seg_dir / "witness.json"))
                q_out, out_hash = witness_outputs(witness)[0], witness_commitments(witness, "outputs")
                c_in, c_out = witness_commitments(witness, "inputs")[0], out_hash[0] if out_hash else poseidon_commitment(q_out)
                jobs.append(ProveJob(segment.index, str(files.root), str(seg_dir / "witness.json"), str(store.root), proof_key(keys[str(segment.index)]["key"], q_prev)))
            else:  # optimistic: the native fixed-point executor, bit-exact with the circuit a fraud proof would use
                q_out = FixedPointProgram(plan_dir / segment.onnx, files.settings_dict())(q_prev.reshape(segment.input_shape)).ravel()
                c_in, c_out = c_prev or poseidon_commitment(q_prev), poseidon_commitment(q_out)
            records.append({"index": segment.index, "mode": segment.mode, "execute_seconds": round(time.perf_counter() - start, 3)})
            if not boundaries:
                boundaries.append(Boundary(0, segment.input, segment.input_shape, q_prev.ravel().tolist(), c_in))
            boundaries.append(Boundary(segment.index + 1, segment.output, segment.output_shape, q_out.tolist(), c_out))
            q_prev, c_prev = q_out, c_out
        cached = {job.segment: store.get("proofs", job.proof_key) for job in jobs}
        proved = {r.segment: r for r in executor.run([job for job in jobs if cached[job.segment] is None], quiet=quiet)}
        for job in jobs:
            hit, fresh, seg_dir = cached[job.segment], proved.get(job.segment), tmp / f"seg{job.segment}"
            (seg_dir / "proof.json").write_bytes(((hit or Path(fresh.proof_dir)) / "proof.json").read_bytes())
            (seg_dir / "witness.json").unlink()
            records[job.segment]["proof_cached"] = hit is not None
            if fresh:
                records[job.segment].update(prove_seconds=fresh.seconds, peak_rss_bytes=fresh.peak_rss_bytes, worker=fresh.worker, prove_span=[fresh.started, fresh.finished])
        result = {
            "plan": str(Path(plan_path).resolve()),
            "plan_hash": plan.plan_hash,
            "scale": plan.scale,
            "output": dequantize(np.array(boundaries[-1].quantized), plan.scale).tolist(),
            "wall_seconds": round(time.perf_counter() - start_all, 3),
            "segments": records,
            "boundaries": [asdict(b) for b in boundaries],
        }
        (tmp / "run.json").write_text(json.dumps(result, indent=2))
    return result


def expected_instances(run: dict, segment_index: int, is_last: bool) -> list[str]:
    """The public instances a proof of segment k must carry: [C_k, C_{k+1}], or [C_k, y...] for the last segment."""
    boundaries = run["boundaries"]
    head = [boundaries[segment_index]["commitment"]]
    if is_last:
        return head + [int_to_felt(v) for v in boundaries[segment_index + 1]["quantized"]]
    return head + [boundaries[segment_index + 1]["commitment"]]


def verify_run(plan_path: Path, run_dir: Path) -> dict:
    """Verify every zk proof of a run off-chain and check that its public instances link to the published boundaries."""
    plan, plan_dir = Plan.load(plan_path), Path(plan_path).parent
    run_file = Path(run_dir) / "run.json"
    if not run_file.is_file():
        raise MissingArtifactError(f"{run_file} not found; run `imo prove PLAN INPUT --out {run_dir}` first")
    run = json.loads(run_file.read_text())
    if run["plan_hash"] != plan.plan_hash:
        raise ProofError(f"{run_dir} was proven for plan {run['plan_hash'][:12]}…, not {plan.plan_hash[:12]}… ({plan_path})")
    checked = []
    for segment in plan.segments:
        if segment.mode != "zk":
            continue
        proof_file = Path(run_dir) / f"seg{segment.index}" / "proof.json"
        seconds = prover.verify(circuit_files(plan_dir, segment), proof_file=proof_file)
        instances = json.loads(proof_file.read_text())["instances"][0]
        if instances != expected_instances(run, segment.index, segment.index == len(plan.segments) - 1):
            raise ProofError(f"segment {segment.index}'s proof does not link: its public instances differ from the published boundary commitments C_{segment.index}/C_{segment.index + 1}")
        checked.append({"segment": segment.index, "verify_seconds": seconds})
    return {"plan_hash": plan.plan_hash, "verified": checked, "linked": True}
