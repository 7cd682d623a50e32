"""`imo bench`: what the hybrid buys over proving a whole model with ezkl, measured side by side in one run.

Per model: onnxruntime latency; the native fixed-point executor and ezkl's reference witness; monolithic ezkl
(setup and prove separately); segmented fully-zk (sequential and parallel); the hybrid plan (the private input layer zk,
the rest op). Proving time is measured in warm worker pools, as a serving node proves; peak memory in a fresh process per
proof (the monolithic one and the segments' alike). Writes bench.json, bench.md, PNG plots."""

import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import ezkl
import numpy as np
from tqdm import tqdm

from imo.circuits.cost import NARROW_DECOMP, RESERVED_ROWS
from imo.circuits.fixed_point import FixedPointProgram
from imo.circuits.plan import DEFAULT_SCALE, Plan, make_plan, write_plan
from imo.models import cached_export
from imo.models.zoo import ZOO
from imo.pipeline.chain import anvil
from imo.proving import onnx_io
from imo.proving.circuit import CircuitFiles, Visibility, build_circuit, write_input, write_quantized_input
from imo.proving.executors import LocalExecutor, ProveJob
from imo.proving.native import call_ezkl
from imo.proving.segments import circuit_files, compile_plan, prove_plan, unit_files
from imo.proving.store import ArtifactStore
from imo.verifier_contracts.evm import ProofCall, verify_onchain
from imo.verifier_contracts.reusable import deploy_circuit_verifier

HYBRID_BUDGET_LOGROWS = 1
"""The hybrid plan's policy: only the layers reading the private input are zk (every other layer is over this budget and
runs optimistically), untiled: the plan AIOracle can register and a node serves (docs/zk-cost.md, "what the hybrid costs")."""
SEGMENTED_TILE_LOGROWS = 15  # segmented fully-zk plans: a layer above this is tiled into column blocks (docs/zk-cost.md)


def _timeit(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def _ort_ms(onnx_path: Path, x: np.ndarray, repeat: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return 1e3 * _timeit(lambda: session.run(None, {name: x}), repeat)


def _verify_gas(chain, files: CircuitFiles, proof_file: Path) -> int:
    verifier, _, _ = deploy_circuit_verifier(chain.w3, files.verifier_sol, chain.require_signer())
    accepted, gas = verify_onchain(verifier, ProofCall.from_proof_file(proof_file), chain.require_signer())
    return gas if accepted else -1


def bench_model(name: str, work: Path, chain, quick: bool) -> dict:
    exported = cached_export(name)
    sig = onnx_io.signature(onnx_io.load_model(exported.onnx_path))
    x = onnx_io.load_input(exported.input_path, sig)
    calibration = onnx_io.load_batch(exported.onnx_path.with_name("calibration.json"), sig)[: 4 if quick else 16]
    store = ArtifactStore(work / "store")
    result: dict = {"model": name, "params": json.loads(exported.card_path.read_text())["params"]}

    # native latencies
    result["onnxruntime_ms"] = _ort_ms(exported.onnx_path, x.astype(np.float32), 20 if quick else 200)

    # monolithic ezkl: compile with the same pipeline as `imo prove`, at the plans' scale (ezkl's own pick can be higher:
    # 11 for gen, a 2^19-row circuit against 2^15 at scale 7) and with the narrow range-check table where that lowers its
    # logrows, as plans do: the baseline gets every setting the segments get; prove in a fresh process
    mono = CircuitFiles(work / "mono")
    report = build_circuit(exported.onnx_path, calibration, mono, Visibility(), scales=[DEFAULT_SCALE], quiet=True)
    narrow_table = False
    if report.num_rows + RESERVED_ROWS < 2 ** (report.logrows - 1):
        narrow = CircuitFiles(work / "mono-narrow")
        narrow_report = build_circuit(exported.onnx_path, calibration, narrow, Visibility(), scales=[DEFAULT_SCALE], quiet=True, decomp=NARROW_DECOMP)
        if narrow_report.logrows < report.logrows:
            mono, report, narrow_table = narrow, narrow_report, True
    write_input(work / "mono-input.json", x)
    call_ezkl("witness", ezkl.gen_witness, str(work / "mono-input.json"), str(mono.compiled), str(work / "mono-witness.json"))
    (job_result,) = LocalExecutor(1, isolate=True).run([ProveJob(0, str(mono.root), str(work / "mono-witness.json"), str(store.root), "mono")], quiet=True)
    mono_proof = Path(job_result.proof_dir) / "proof.json"
    result["monolithic"] = {
        "logrows": report.logrows, "rows": report.num_rows, "scale": report.input_scale, "narrow_table": narrow_table, "setup_s": report.seconds["setup"], "keygen_s": report.seconds["setup"], "prove_s": job_result.seconds,
        "peak_rss_mb": job_result.peak_rss_bytes / 2**20, "pk_mb": report.pk_bytes / 2**20,
        "proof_bytes": len(ProofCall.from_proof_file(mono_proof).proof), "verify_gas": _verify_gas(chain, mono, mono_proof),
    }

    # segmented fully-zk, one segment per layer: sequential vs parallel
    seg_plan = write_plan(*make_plan(exported.onnx_path, merge=False, tile_logrows=SEGMENTED_TILE_LOGROWS), work / "segmented")
    compile_reports = compile_plan(seg_plan, calibration, store=store, quiet=True)
    plan = Plan.load(seg_plan)
    runs = {}
    # time: warm pools in both modes (a fresh process per proof would let two workers overlap process start-up, which a
    # serving node never pays); memory: each proof in a fresh process, as the monolithic one, so both peaks are the proof's
    for mode, executor in (("sequential", LocalExecutor(1).start()), ("parallel", LocalExecutor(2).start()), ("memory", LocalExecutor(1, isolate=True))):
        shutil.rmtree(store.root / "proofs", ignore_errors=True)
        try:
            runs[mode] = prove_plan(seg_plan, exported.input_path, work / f"run-{mode}", executor=executor, store=store, quiet=True)
        finally:
            executor.close()
    result["segmented"] = {
        "segments": len(plan.segments), "tiles": [len(s.tiles) for s in plan.segments], "proofs": len(compile_reports),
        "logrows_untiled": [s.est_logrows for s in plan.segments], "logrows": [r["logrows"] for r in compile_reports],
        **_keygen(compile_reports),
        "sequential_s": runs["sequential"]["wall_seconds"], "parallel_s": runs["parallel"]["wall_seconds"],
        "peak_rss_mb": max(s["peak_rss_bytes"] for s in runs["memory"]["segments"]) / 2**20,
        "pk_mb": sum(r["pk_bytes"] for r in compile_reports) / 2**20,
        "verify_gas": [_verify_gas(chain, unit_files(seg_plan.parent, s, s.units()[0]), _proof_file(work / "run-parallel", s)) for s in plan.segments],
    }

    # hybrid: the private input layer zk, the rest optimistic
    hybrid_plan = write_plan(*make_plan(exported.onnx_path, private_input=True, budget_logrows=HYBRID_BUDGET_LOGROWS), work / "hybrid")
    hybrid_reports = compile_plan(hybrid_plan, calibration, store=store, quiet=True)
    shutil.rmtree(store.root / "proofs", ignore_errors=True)
    with LocalExecutor(2) as warm:  # a serving node's warm pool: workers up (ezkl imported) before the request; every proof is made
        hybrid = prove_plan(hybrid_plan, exported.input_path, work / "run-hybrid", executor=warm, store=store, quiet=True)
    hplan = Plan.load(hybrid_plan)
    zk = [s for s in hybrid["segments"] if s["mode"] == "zk"]
    result["hybrid"] = {
        "modes": [s.mode for s in hplan.segments], "tiles": [len(s.tiles) for s in hplan.segments], "logrows": [s.est_logrows for s in hplan.segments],
        "zk_logrows": [r["logrows"] for r in hybrid_reports if r["mode"] == "zk"], "zk_rows": [r["num_rows"] for r in hybrid_reports if r["mode"] == "zk"],
        **_keygen([r for r in hybrid_reports if r["mode"] == "zk"]),
        "time_to_submit_s": hybrid["wall_seconds"], "zk_proving_s": hybrid["zk_proving_seconds"],
        "zk_prove_cpu_s": sum(s.get("prove_seconds", 0) for s in zk),
        "peak_rss_mb": max((s["peak_rss_bytes"] for s in zk), default=0) / 2**20,
        "verify_gas": [_verify_gas(chain, unit_files(hybrid_plan.parent, s, s.units()[0]), _proof_file(work / "run-hybrid", s)) for s in hplan.segments if s.mode == "zk"],
    }

    # op-segment executors on the hybrid plan's op segments: native fixed point vs ezkl's reference witness
    op = [s for s in hplan.segments if s.mode == "op"]
    if op:
        seg = op[0]
        files = circuit_files(hybrid_plan.parent, seg)
        program = FixedPointProgram(hybrid_plan.parent / seg.onnx, files.settings_dict())
        q_in = np.array(hybrid["boundaries"][seg.index]["quantized"]).reshape(seg.input_shape)
        write_quantized_input(work / "op-input.json", q_in)
        seg_float = (q_in / 2.0**hplan.scale).astype(np.float32)
        result["op_executor"] = {
            "segment": seg.index,
            "onnxruntime_ms": _ort_ms(hybrid_plan.parent / seg.onnx, seg_float, 20 if quick else 200),
            "native_ms": 1e3 * _timeit(lambda: program(q_in), 20 if quick else 200),
            "reference_witness_ms": 1e3 * _timeit(lambda: call_ezkl("witness", ezkl.gen_witness, str(work / "op-input.json"), str(files.compiled), str(work / "op-witness.json")), 1 if quick else 3),
        }
    return result


def _keygen(reports: list[dict]) -> dict:
    """Keygen (ezkl setup) apart from proving: seconds spent on the circuits built in this run, how many were built,
    and how many were reused from the content-addressed store (units with equal ONNX bytes and settings share keys)."""
    built = [r for r in reports if not r["cached"]]
    return {"keygen_s": round(sum(r["seconds"]["setup"] for r in built), 3), "setup_s": round(sum(r["seconds"]["setup"] for r in built), 3),
            "circuits_built": len(built), "circuits_reused": len(reports) - len(built)}


def _proof_file(run_dir: Path, segment) -> Path:
    """The proof of a segment, or of its first tile (a tiled segment's verifier gas is per tile)."""
    return run_dir / f"seg{segment.index}" / ("" if not segment.tiles else "tile0") / "proof.json"


def run_bench(out_dir: Path, quick: bool = False, models: list[str] | None = None) -> dict:
    """Benchmark the models (quick: mlp only) and write bench.json, bench.md, time.png and memory.png."""
    models = models or (["mlp"] if quick else list(ZOO))
    results = []
    with tempfile.TemporaryDirectory(prefix="imo-bench-") as tmp, anvil() as chain:
        for name in tqdm(models, desc="bench", unit="model"):
            results.append(bench_model(name, Path(tmp) / name, chain, quick))
    bench = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "ezkl": ezkl.__version__, "quick": quick, "models": results, "ratios": _ratios(results)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out_dir / "bench.json").read_text()) if (out_dir / "bench.json").is_file() else {}
    if isinstance(previous, dict) and "llm" in previous:  # `imo bench --llm`'s part is kept
        from imo.pipeline.generate import llm_line

        bench["llm"] = previous["llm"]
    (out_dir / "bench.json").write_text(json.dumps(bench, indent=2))
    (out_dir / "bench.md").write_text(_markdown(bench) + (llm_line(bench["llm"]) + "\n" if "llm" in bench else ""))
    _plots(results, out_dir)
    return bench


def _ratios(results: list[dict]) -> dict:
    """The issue's targets, as ratios measured within this run."""
    ratios = {}
    for r in results:
        m, seg = r["monolithic"], r["segmented"]
        ratios[r["model"]] = {
            "hybrid_time_to_submit_over_monolithic_prove": r["hybrid"]["time_to_submit_s"] / m["prove_s"],
            "hybrid_zk_proving_over_monolithic_prove": r["hybrid"]["zk_proving_s"] / m["prove_s"],
            "hybrid_zk_rows_over_monolithic_rows": sum(r["hybrid"]["zk_rows"]) / m["rows"],  # the floor the time ratio cannot beat
            "segmented_peak_rss_over_monolithic": seg["peak_rss_mb"] / m["peak_rss_mb"],
            "parallel_over_sequential_segmented": seg["parallel_s"] / seg["sequential_s"],
            "native_executor_over_onnxruntime": r["op_executor"]["native_ms"] / r["op_executor"]["onnxruntime_ms"] if "op_executor" in r else None,
        }
    return ratios


def _markdown(bench: dict) -> str:
    lines = [f"# imo bench ({'quick' if bench['quick'] else 'full'}; ezkl {bench['ezkl']}; {bench['machine']})", "",
             "| model | params | onnxruntime ms | mono logrows | mono setup s | mono prove s | mono peak MB | mono pk MB | mono verify gas | seg logrows | seg sequential s | seg parallel s | seg peak MB | hybrid modes | hybrid time-to-submit s | hybrid peak MB | hybrid verify gas |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---|"]
    for r in bench["models"]:
        m, s, h = r["monolithic"], r["segmented"], r["hybrid"]
        lines.append(f"| {r['model']} | {r['params']:,} | {r['onnxruntime_ms']:.3f} | {m['logrows']} | {m['setup_s']:.1f} | {m['prove_s']:.1f} | {m['peak_rss_mb']:.0f} | {m['pk_mb']:.0f} | {m['verify_gas']:,} | "
                     f"{s['logrows']} | {s['sequential_s']:.1f} | {s['parallel_s']:.1f} | {s['peak_rss_mb']:.0f} | {'+'.join(h['modes'])} | {h['time_to_submit_s']:.1f} | {h['peak_rss_mb']:.0f} | {', '.join(f'{g:,}' for g in h['verify_gas'])} |")
    lines += ["", "| model | op segment: onnxruntime ms | native fixed-point ms | ezkl reference witness ms |", "|---|---:|---:|---:|"]
    for r in bench["models"]:
        if "op_executor" in r:
            o = r["op_executor"]
            lines.append(f"| {r['model']} (seg {o['segment']}) | {o['onnxruntime_ms']:.3f} | {o['native_ms']:.3f} | {o['reference_witness_ms']:.1f} |")
    lines += ["", "Keygen (ezkl setup) apart from proving; tiles (column blocks) and circuits reused from the store:", "",
              "| model | mono logrows | mono keygen s | mono prove s | seg logrows untiled | seg tiles | seg logrows (per circuit) | seg keygen s | seg circuits built/reused | hybrid tiles | hybrid zk logrows | hybrid keygen s | hybrid zk proving s |",
              "|---|---:|---:|---:|---|---|---|---:|---|---|---|---:|---:|"]
    for r in bench["models"]:
        m, s, h = r["monolithic"], r["segmented"], r["hybrid"]
        lines.append(f"| {r['model']} | {m['logrows']} | {m.get('keygen_s', m['setup_s']):.1f} | {m['prove_s']:.1f} | {s.get('logrows_untiled')} | {s.get('tiles')} | {s['logrows']} | "
                     f"{s.get('keygen_s', s['setup_s']):.1f} | {s.get('circuits_built')}/{s.get('circuits_reused')} | {h.get('tiles')} | {h.get('zk_logrows')} | "
                     f"{h.get('keygen_s', 0):.1f} | {h.get('zk_proving_s', 0):.1f} |")
    lines += ["", "Ratios (targets: hybrid zk proving/monolithic prove ≤ 0.10; segmented/monolithic peak RSS ≤ 0.5; parallel/sequential ≤ 0.65; native/onnxruntime ≤ 3). "
              "hybrid_zk_rows_over_monolithic_rows: the zk circuits' rows over the monolithic circuit's, what the proving-time ratio tracks:", ""]
    for model, ratios in bench["ratios"].items():
        lines.append(f"- {model}: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items() if v is not None))
    return "\n".join(lines) + "\n"


def _plots(results: list[dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in results]
    series = {
        "time": ({"monolithic setup": [r["monolithic"]["setup_s"] for r in results], "monolithic prove": [r["monolithic"]["prove_s"] for r in results],
                  "segmented sequential": [r["segmented"]["sequential_s"] for r in results], "segmented parallel": [r["segmented"]["parallel_s"] for r in results],
                  "hybrid time-to-submit": [r["hybrid"]["time_to_submit_s"] for r in results]}, "seconds"),
        "memory": ({"monolithic prove": [r["monolithic"]["peak_rss_mb"] for r in results], "segmented (largest segment)": [r["segmented"]["peak_rss_mb"] for r in results],
                    "hybrid (largest zk segment)": [r["hybrid"]["peak_rss_mb"] for r in results]}, "peak RSS (MB)"),
    }
    for name, (data, ylabel) in series.items():
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(data)
        for i, (label, values) in enumerate(data.items()):
            ax.bar(np.arange(len(names)) + i * width, values, width, label=label)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.set_title(f"imo bench: {name} per mode per model")
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=100)
        plt.close(fig)
