"""Compile and prove a plan segment by segment, linking segments through their boundaries.

Every segment, zk or op, gets a circuit and keys (op circuits are needed to prove fraud). Proving runs the
segments in order with ezkl's fixed-point semantics at the plan's one common scale: segment k's quantized output is
exactly segment k+1's quantized input, handed to ezkl as exact field elements, so a hashed boundary's commitment C_k
is the same on both sides and a public one is the same tensor. Witnesses are cheap and computed in order; the zk
proofs are independent and go to an executor in parallel."""

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import ezkl
import numpy as np
import onnx
from tqdm import tqdm

from imo.circuits.fixed_point import FixedPointProgram, dequantize, int_to_felt, poseidon_commitment, quantize, witness_outputs
from imo.circuits.graph import join_inputs, tile_model
from imo.circuits.plan import Plan, Segment, refuse_tiled
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
    """The one circuit of an untiled segment (a tiled one has one per tile: `unit_files`)."""
    refuse_tiled([segment])  # registration, the public bundle and on-chain verification come through here
    return unit_files(plan_dir, segment, None)


def unit_files(plan_dir: Path, segment: Segment, tile: int | None) -> CircuitFiles:
    """The circuit of one proving unit: an untiled segment (tile None) or one tile of a tiled segment."""
    index = Path(plan_dir) / CIRCUITS_FILE
    if not index.is_file():
        raise MissingArtifactError(f"{index} not found; run `imo compile {Path(plan_dir) / 'plan.json'}` first")
    entry = json.loads(index.read_text())[str(segment.index)]
    if tile is not None:
        entry = entry["tiles"][tile]
    return CircuitFiles(Path(plan_dir) / entry["dir"])  # a public bundle's dirs are relative


def unit_model(plan: Plan, plan_dir: Path, segment: Segment, tile: int | None, joined: bool = True) -> onnx.ModelProto:
    """The ONNX model a unit's circuit proves: the segment's own, or one tile of it (`graph.tile_model`); joined: with
    the input taken as the chunks a tiled producer committed to (`graph.join_inputs`), as the circuit takes it. Without
    joining it is what the executor runs (same numbers)."""
    model = onnx.load(str(Path(plan_dir) / segment.onnx))
    chunks = segment.input_chunks if joined else None
    if tile is not None:
        lo, hi = segment.tiles[tile].cols
        return tile_model(model, lo, hi, join=chunks)
    return join_inputs(model, chunks) if chunks else model


def executor_settings(files: CircuitFiles, segment: Segment) -> dict:
    """A unit circuit's settings as the executor takes them: it runs the unjoined model (one input), and the chunks
    of a joined input all have the plan's one scale."""
    settings = files.settings_dict()
    if segment.input_chunks and settings.get("model_input_scales"):
        settings["model_input_scales"] = settings["model_input_scales"][:1]
    return settings


def unit_name(segment: Segment, tile: int | None) -> str:
    return f"seg{segment.index}" if tile is None else f"seg{segment.index}/tile{tile}"


def segment_visibility(plan: Plan, segment: Segment) -> Visibility:
    """Each side of a segment is hashed or public as its boundary is (`Plan.boundary_hashed`)."""
    def side(k: int) -> str:
        return "hashed" if plan.boundary_hashed(k) else "public"
    return Visibility(input=side(segment.index), output=side(segment.index + 1))


def compile_plan(plan_path: Path, calibration: np.ndarray, store: ArtifactStore | None = None, quiet: bool = False) -> list[dict]:
    """Build (or find in the store) every segment's circuit and keys, one per tile for a tiled segment. `calibration` is
    (N, *model input shape). Circuits are content-addressed (`store.circuit_key`: the unit's ONNX bytes, visibility,
    scale, range-check table, calibration batch): units with equal shape and weights share one circuit and keys."""
    plan, plan_dir = Plan.load(plan_path), Path(plan_path).parent
    store = store or ArtifactStore()
    batch = np.asarray(calibration, dtype=np.float32)
    reports, index = [], {}
    if any(not segment.onnx for segment in plan.segments):
        raise MissingArtifactError(f"{plan_path} is a public bundle (its zk segments' ONNX files are private); compile the operator's plan")
    units = [(segment, tile) for segment in plan.segments for tile in segment.units()]
    with tempfile.TemporaryDirectory() as scratch:
        for segment, tile in tqdm(units, desc="compile segments", unit="circuit", disable=quiet):
            onnx_path = plan_dir / segment.onnx
            if segment.game_only:  # no circuit: its settings are the plan's, and its output calibrates the next segment
                index[str(segment.index)] = _game_only_settings(store, plan_dir, segment)
                reports.append({"segment": segment.index, "tile": None, "mode": "op", "game_only": True, "est_logrows": segment.est_logrows})
                batch = np.stack([onnx_io.run_onnxruntime(onnx_path, x)[0] for x in batch])
                continue
            visibility = segment_visibility(plan, segment)
            chunks = segment.input_chunks or None
            decomp = tuple(plan.tile_decomp) if tile is not None else (tuple(segment.decomp) if segment.decomp else None)
            if tile is None and not chunks:
                unit_onnx = onnx_path
            else:
                unit_onnx = Path(scratch) / f"{unit_name(segment, tile).replace('/', '-')}.onnx"
                onnx.save(unit_model(plan, plan_dir, segment, tile), str(unit_onnx))
            key = circuit_key(unit_onnx.read_bytes(), visibility, [plan.scale], batch, decomp=decomp)
            start = time.perf_counter()
            files, hit = store.circuit(key, lambda files: build_circuit(unit_onnx, batch, files, visibility, scales=[plan.scale], quiet=quiet,
                                                                       decomp=decomp, chunks=chunks))
            report = json.loads(files.report.read_text())
            checked = _check_executor_agrees(segment, unit_model(plan, plan_dir, segment, tile, joined=False), files, batch, plan.scale, chunks, tile)
            reports.append({"segment": segment.index, "tile": tile, "mode": segment.mode,
                            "est_logrows": segment.est_logrows if tile is None else segment.tiles[tile].est_logrows, "cached": hit,
                            "wall_seconds": round(time.perf_counter() - start, 3), "executor_checked_inputs": checked, **report})
            entry = {"key": key, "dir": str(files.root)}
            if tile is None:
                index[str(segment.index)] = entry
            else:
                index.setdefault(str(segment.index), {"tiles": []})["tiles"].append(entry)
            if tile is None or tile == len(segment.tiles) - 1:
                batch = np.stack([onnx_io.run_onnxruntime(onnx_path, x)[0] for x in batch])  # float inputs of the next segment, for calibration only
    (plan_dir / CIRCUITS_FILE).write_text(json.dumps(index, indent=2))
    return reports


def _game_only_settings(store: ArtifactStore, plan_dir: Path, segment: Segment) -> dict:
    """A game-only op segment's "circuit": its executor settings alone (settings.json), content-addressed like a
    circuit so every node finds the same file."""
    settings = {"run_args": segment.run_args, "game_only": True}
    key = hashlib.sha256(json.dumps({"onnx": segment.onnx_sha256, "settings": settings}, sort_keys=True).encode()).hexdigest()
    files, _ = store.circuit(key, lambda files: files.settings.write_text(json.dumps(settings, indent=2)))
    return {"key": key, "dir": str(files.root)}


EXECUTOR_CHECK_INPUTS = 4


def _check_executor_agrees(segment: Segment, model, files: CircuitFiles, batch: np.ndarray, scale: int, chunks: list[int] | None = None,
                           tile: int | None = None) -> int:
    """The canonical executor must be bit-exact with ezkl on this circuit, or an honest op result could be contradicted
    by a fraud proof (and a zk segment would fail at prove): compare both on a few calibration inputs now, before any
    claim depends on it. Returns how many inputs were compared; raises InvalidModelError naming the segment."""
    if chunks:
        return 0  # a joined unit: ezkl distributes the Gemm over the Concat (see prove_plan); its witness is the reference
    program = FixedPointProgram(model, executor_settings(files, segment))
    compared = 0
    with tempfile.TemporaryDirectory() as tmp:
        for x in batch[:EXECUTOR_CHECK_INPUTS]:
            q = quantize(x, scale)
            try:
                native = program(q.reshape(segment.input_shape)).ravel()
            except UnprovableClaimError:
                continue  # outside the circuit's range: no witness either
            write_quantized_input(Path(tmp) / "input.json", q.reshape(segment.input_shape), chunks)
            witness = call_ezkl("witness", ezkl.gen_witness, str(Path(tmp) / "input.json"), str(files.compiled), str(Path(tmp) / "witness.json"))
            if not np.array_equal(native, witness_outputs(witness)[0]):
                raise InvalidModelError(f"segment {segment.index}{'' if tile is None else f' tile {tile}'} ({', '.join(segment.ops)}): the fixed-point executor is not bit-exact with ezkl "
                                        f"on a calibration input, so its results could be contradicted; plan these nodes differently or report the model")
            compared += 1
    return compared


@dataclass
class Boundary:
    """A tensor between segments (index k is the input of segment k; the last is the model output). A hashed
    boundary keeps only its Poseidon commitment (little-endian hex field element as ezkl writes it) in run.json, or,
    after a tiled segment, one commitment per tile output (`chunk_commitments`, `Plan.output_chunks`); its tensor is
    private (run dir's `private/`, owner-only). A public boundary has `quantized` and no commitment."""

    index: int
    name: str
    shape: list[int]
    quantized: list[int] | None
    commitment: str | None
    chunk_commitments: list[str] | None = None


def _columns(q: np.ndarray, shape: list[int], lo: int, hi: int) -> np.ndarray:
    """Columns lo:hi of a (rows, width) tensor, flattened row-major: a tile's output chunk."""
    return np.asarray(q).reshape(-1, shape[-1])[:, lo:hi].ravel()


def _boundary(plan: Plan, k: int, name: str, shape: list[int], q: np.ndarray) -> Boundary:
    if plan.boundary_hashed(k):
        chunks = plan.output_chunks(k)
        if chunks:
            bounds = np.cumsum([0, *chunks])
            return Boundary(k, name, list(shape), None, None, [poseidon_commitment(_columns(q, shape, lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])])
        return Boundary(k, name, list(shape), None, poseidon_commitment(q))
    return Boundary(k, name, list(shape), [int(v) for v in q], None)


def _boundary_json(b: Boundary) -> dict:
    body = asdict(b)
    if body["chunk_commitments"] is None:
        body.pop("chunk_commitments")  # runs of untiled plans keep their format
    return body


def _private_dir(run_dir: Path) -> Path:
    """The run's operator-only folder."""
    return private_dir(run_dir / PRIVATE_DIR)


def prove_plan(plan_path: Path, input_path: Path | None, out_dir: Path, executor=None, store: ArtifactStore | None = None, quiet: bool = False,
               quantized_input: np.ndarray | None = None) -> dict:
    """Execute every segment in ezkl's fixed-point semantics (zk: ezkl's witness, op: the native executor), prove the
    zk segments (every tile of a tiled one; reusing proofs already in the store), and write boundaries, commitments
    and proofs to out_dir (atomically).

    What lands in out_dir is shareable: run.json (public boundaries, commitments of hashed ones, the output) and each zk
    segment's proof.json (seg<k>/tile<j>/proof.json per tile). Private data never does: the zk segments' inputs and
    witnesses (the private input, every tensor inside a zk segment) live in out_dir/private/ (0700) only while their
    proof is made, and the hashed boundaries' tensors stay there in boundaries.json (0600) for the operator.

    run.json's `zk_proving_seconds` is the wall time from the start until every zk proof of this inference is done
    (proofs found in the store count as done)."""
    plan, plan_dir = Plan.load(plan_path), Path(plan_path).parent
    store = store or ArtifactStore()
    executor = executor or LocalExecutor()
    q_input = quantize(onnx_io.load_input(input_path, plan.input_signature()), plan.scale) if quantized_input is None else np.asarray(quantized_input, dtype=np.int64)
    units = {(segment.index, tile): unit_files(plan_dir, segment, tile) for segment in plan.segments for tile in segment.units()}
    for (index, _), files in units.items():  # a game-only segment has settings and no circuit
        files.require(*((files.settings,) if plan.segments[index].game_only else (files.compiled, files.settings)))
    keys = json.loads((plan_dir / CIRCUITS_FILE).read_text())

    def unit_key(segment: Segment, tile: int | None) -> str:
        entry = keys[str(segment.index)]
        return (entry if tile is None else entry["tiles"][tile])["key"]

    start_all = time.perf_counter()
    with atomic_dir(out_dir, derived=(PRIVATE_DIR,)) as tmp:
        private = _private_dir(tmp)
        boundaries, hidden, records, jobs, cached = [], [], [], [], {}
        q_prev = q_input

        def boundary(k: int, name: str, shape: list[int], q: np.ndarray) -> Boundary:
            b = _boundary(plan, k, name, shape, q)
            if b.quantized is None:
                hidden.append({"index": k, "name": name, "shape": list(shape), "quantized": [int(v) for v in q], "commitment": b.commitment,
                               **({"chunk_commitments": b.chunk_commitments} if b.chunk_commitments else {})})
            return b

        for segment in tqdm(plan.segments, desc="execute", unit="seg", disable=quiet, leave=False):
            start = time.perf_counter()
            x = q_prev.reshape(segment.input_shape)
            # the canonical executor first: it enforces the circuit's limits (UnprovableClaimError where no proof exists,
            # before ezkl's prover could hang on a witness outside a lookup table); a tiled segment runs tile by tile,
            # each with its own circuit's limits, and its output is the tiles' outputs side by side
            if segment.tiles:
                parts = [FixedPointProgram(unit_model(plan, plan_dir, segment, t.index, joined=False), executor_settings(units[segment.index, t.index], segment))(x)
                         for t in segment.tiles]
                q_native = np.concatenate([p.reshape(-1, p.shape[-1]) for p in parts], axis=-1).ravel()
            else:
                q_native = FixedPointProgram(plan_dir / segment.onnx, executor_settings(units[segment.index, None], segment))(x).ravel()
            q_out = q_native
            if segment.mode == "zk":  # the prover needs ezkl's witness file: private, and deleted once proven
                (tmp / f"seg{segment.index}").mkdir()  # will hold the proof(s)
                proven = []
                for tile in segment.units():
                    files, tag = units[segment.index, tile], unit_name(segment, tile).replace("/", "-")
                    seg_input, seg_witness = private / f"{tag}-input.json", private / f"{tag}-witness.json"
                    write_quantized_input(seg_input, x, segment.input_chunks or None)
                    witness = call_ezkl("witness", ezkl.gen_witness, str(seg_input), str(files.compiled), str(seg_witness))
                    want = q_native if tile is None else _columns(q_native, segment.output_shape, *segment.tiles[tile].cols)
                    proven.append(witness_outputs(witness)[0])
                    if not segment.input_chunks and not np.array_equal(proven[-1], want):
                        raise ProofError(f"{unit_name(segment, tile)}: ezkl's witness and the canonical executor disagree; please report this model")
                    job = ProveJob(segment.index, str(files.root), str(seg_witness), str(store.root), proof_key(unit_key(segment, tile), q_prev), tile)
                    jobs.append(job)
                    cached[segment.index, tile] = store.get("proofs", job.proof_key)
                    if cached[segment.index, tile] is not None:  # no proof to make: the witness and input go now, not after every proof
                        seg_witness.unlink()
                        seg_input.unlink()
            if segment.input_chunks:
                # a consumer of chunk commitments takes the chunks as separate inputs and ezkl (tract) distributes its
                # Gemm over the Concat: one rescale per chunk's partial product, which can round 1 LSB away from the
                # executor's one rescale. Its output is what its proof proves (zk segments are never re-executed); the
                # executor above still enforced the circuit's ranges.
                rows = int(np.prod(segment.output_shape[:-1]))
                q_out = np.concatenate([p.reshape(rows, -1) for p in proven], axis=-1).ravel()
            records.append({"index": segment.index, "mode": segment.mode, "execute_seconds": round(time.perf_counter() - start, 3)})
            if segment.tiles:
                records[-1]["tiles"] = [{"tile": t.index, "cols": t.cols} for t in segment.tiles]
            if not boundaries:
                boundaries.append(boundary(0, segment.input, segment.input_shape, q_prev.ravel()))
            boundaries.append(boundary(segment.index + 1, segment.output, segment.output_shape, q_out))
            q_prev = q_out
        todo = {}  # proof key → job: two units with one circuit (shared keys) and one input need one proof
        for job in jobs:
            if cached[job.segment, job.tile] is None:
                todo.setdefault(job.proof_key, job)
        fresh_results = executor.run(list(todo.values()), quiet=quiet)
        zk_proving_seconds = round(time.perf_counter() - start_all, 3)
        proved = {(r.segment, r.tile): r for r in fresh_results}
        by_key = {todo_job.proof_key: proved[todo_job.segment, todo_job.tile] for todo_job in todo.values()}
        for job in jobs:
            fresh = proved.get((job.segment, job.tile))
            hit = cached[job.segment, job.tile] or (Path(by_key[job.proof_key].proof_dir) if fresh is None and job.proof_key in by_key else None)
            proof_dir = tmp / f"seg{job.segment}" / ("" if job.tile is None else f"tile{job.tile}")
            proof_dir.mkdir(exist_ok=True)
            (proof_dir / "proof.json").write_bytes(((hit or Path(fresh.proof_dir)) / "proof.json").read_bytes())
            Path(job.witness_file).unlink(missing_ok=True)
            Path(job.witness_file.replace("-witness.json", "-input.json")).unlink(missing_ok=True)
            record = records[job.segment] if job.tile is None else records[job.segment]["tiles"][job.tile]
            record["proof_cached"] = hit is not None
            if fresh:
                record.update(prove_seconds=fresh.seconds, peak_rss_bytes=fresh.peak_rss_bytes, rss_isolated=fresh.rss_isolated,
                              worker=fresh.worker, prove_span=[fresh.started, fresh.finished])
        for record in records:  # a tiled segment's figures: its tiles' sum (time), max (memory)
            if record["mode"] == "zk" and record.get("tiles"):
                fresh = [t for t in record["tiles"] if "prove_seconds" in t]
                record["proof_cached"] = not fresh
                if fresh:
                    record.update(prove_seconds=round(sum(t["prove_seconds"] for t in fresh), 3), peak_rss_bytes=max(t["peak_rss_bytes"] for t in fresh),
                                  rss_isolated=all(t["rss_isolated"] for t in fresh), worker=f"{len(fresh)} tile proofs")
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
            "zk_proving_seconds": zk_proving_seconds,
            "segments": records,
            "boundaries": [_boundary_json(b) for b in boundaries],
        }
        (tmp / RUN_FILE).write_text(json.dumps(result, indent=2))
    return result


def _side(b: dict, cols: tuple[int, int] | None = None, chunk: int | None = None) -> list[str]:
    """Boundary b as instances: its commitment, the chunk commitments (all, or one), or its elements (all, or columns)."""
    if b.get("chunk_commitments") is not None:
        chunks = b["chunk_commitments"]
        return list(chunks) if chunk is None else [chunks[chunk]]
    if b["commitment"] is not None:
        return [b["commitment"]]
    q = b["quantized"] if cols is None else _columns(np.array(b["quantized"], dtype=np.int64), b["shape"], *cols).tolist()
    return [int_to_felt(int(v)) for v in q]


def expected_instances(run: dict, segment_index: int, tile: int | None = None, plan: Plan | None = None) -> list[str]:
    """The public instances a proof of segment k (or of its tile j: pass the plan) must carry: its input boundary then
    its output boundary, each its commitment (hashed; after a tiled segment one per chunk, and a tile's output its own
    chunk's) or its elements (public; a tile's output its own columns)."""
    inputs = _side(run["boundaries"][segment_index])
    if tile is None:
        return inputs + _side(run["boundaries"][segment_index + 1])
    lo, hi = plan.segments[segment_index].tiles[tile].cols
    return inputs + _side(run["boundaries"][segment_index + 1], cols=(lo, hi), chunk=tile)


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
        for tile in segment.units():
            proof_file = Path(run_dir) / f"seg{segment.index}" / ("" if tile is None else f"tile{tile}") / "proof.json"
            if not proof_file.is_file():
                raise ProofError(f"{proof_file} is missing: every zk segment (every tile of a tiled one) needs its proof")
            seconds = prover.verify(unit_files(plan_dir, segment, tile), srs_file=srs_file, proof_file=proof_file)
            instances = json.loads(proof_file.read_text())["instances"][0]
            try:
                expected = expected_instances(run, segment.index, tile, plan)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise ProofError(f"{Path(run_dir) / RUN_FILE}: boundary {segment.index} or {segment.index + 1} is malformed ({type(exc).__name__}: {exc})") from None
            if instances != expected:
                raise ProofError(f"{unit_name(segment, tile)}'s proof does not link: its public instances differ from the published boundary "
                                 f"commitments C_{segment.index}/C_{segment.index + 1}")
            checked.append({"segment": segment.index, "tile": tile, "verify_seconds": seconds})
    return {"plan": str(plan_path), "plan_hash": plan.plan_hash, "verified": checked, "linked": True}
