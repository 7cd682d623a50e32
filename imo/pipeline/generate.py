"""`imo generate`: greedy byte-level decoding with a zoo language model (`gpt`) on the canonical fixed-point
executor (the numbers an ezkl circuit of the model would hold, what a challenger re-executes), and the same
decoding with onnxruntime in float for comparison; `imo bench --llm`: the issue's targets, measured.

One ONNX graph serves every step: the text so far is cropped to its last `context` bytes and left-padded with
spaces (imo.models.gpt.window), and the graph returns the logits of the next byte.

Executor settings. ezkl's gen_settings/calibrate_settings on the 100M-parameter graph is out of reach on this
machine (its circuit would hold ~3e9 multiplications: far beyond any logrows ezkl sets up), so the settings the
executor runs with are fixed here, not calibrated on the big model: ``input_scale = param_scale = SCALE`` with
``scale_rebase_multiplier`` 1 (token ids are integer inputs, at scale 0), and ezkl's decomposition base 2**14 with
3 legs instead of ezkl 23's default 2: LayerNorm's mean of squares is range-checked at scale 2 * SCALE, and with 2
legs (|v| < 2**28) a residual-stream variance above 2**28 / 2**20 = 256 has no witness, which the trained model
reaches in its late blocks (the executor refuses such a claim: UnprovableClaimError). SCALE was chosen by measuring
the executor against onnxruntime on the trained model: at 10 the greedy tokens agree and logits differ by < 0.05;
at 8 they diverge. tests/test_gpt.py checks a one-block model of the same architecture bit-exact against
ezkl.gen_witness at this scale. No lookup range is set: the executor's lookup-table check is skipped (no circuit
of the whole model is compiled, so there is no table to check against).
"""

from __future__ import annotations

import gc
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imo.errors import ImoError, InputShapeError, UnknownModelError

SCALE = 10
"""Fixed-point scale (input, params, rebase target) the executor decodes at; see the module docstring."""

LLM_MODELS = ("gpt",)

BENCH_PROMPT = (
    "The for statement is used to iterate over the elements of a sequence (such as a string, tuple or list) "
    "or other iterable object:"
)
"""A 128-byte prompt (the whole context) for `imo bench --llm`."""
assert len(BENCH_PROMPT.encode()) == 128


def executor_settings(scale: int = SCALE) -> dict:
    """The run_args the executor decodes with (see the module docstring for how they were set)."""
    return {"run_args": {"input_scale": scale, "param_scale": scale, "scale_rebase_multiplier": 1,
                         "decomp_base": 16384, "decomp_legs": 3, "variables": [["batch_size", 1]]}}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class LanguageModel:
    onnx_path: Path
    name: str
    context: int
    vocab: int
    params: int


def resolve(model: str, progress: bool = True) -> LanguageModel:
    """A zoo language model by name (exported once into the cache), or an ONNX file of the same interface:
    input "input" (1, context) int64 token ids, output (1, vocab) logits."""
    import onnx

    path = Path(model)
    if model in LLM_MODELS and not path.exists():
        from imo.models.gpt import cached_gpt

        path = cached_gpt(progress=progress)
    elif not path.is_file():
        raise UnknownModelError(f"unknown model {model!r}: not a zoo language model ({', '.join(LLM_MODELS)}) nor an ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is the same user error
        raise InputShapeError(f"{path} is not an ONNX model: {type(e).__name__}") from None
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    dims = lambda vi: [d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.INT64 or len(dims(inputs[0])) != 2 \
            or len(proto.graph.output) != 1 or len(dims(proto.graph.output[0])) != 2:
        raise InputShapeError(f"{path} is not a byte-level language model: expected one int64 input (1, context) of token ids "
                              "and one output (1, vocab) of logits")
    params = sum(int(np.prod(t.dims, dtype=np.int64)) for t in proto.graph.initializer)
    return LanguageModel(path, model if model in LLM_MODELS else path.name, dims(inputs[0])[1], dims(proto.graph.output[0])[1], params)


def encode_prompt(prompt: str) -> bytes:
    try:
        return prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise InputShapeError("--prompt is not valid UTF-8 text") from None


def _decode(model: LanguageModel, step, prompt: bytes, tokens: int, desc: str, progress: bool) -> dict:
    from tqdm import tqdm

    from imo.models.gpt import window

    data, times, ids = prompt, [], []
    for _ in tqdm(range(tokens), desc=desc, unit="token", disable=not progress, leave=False):
        x = window(data, model.context)
        start = time.perf_counter()
        logits = np.asarray(step(x)).reshape(-1)
        times.append(time.perf_counter() - start)
        nxt = int(np.argmax(logits))  # greedy; ties go to the lowest byte
        if not 0 <= nxt < 256:
            raise InputShapeError(f"{model.onnx_path}: vocabulary of {model.vocab} is not bytes")
        ids.append(nxt)
        data += bytes([nxt])
    out = bytes(ids)
    return {"text": out.decode("utf-8", errors="replace"), "bytes_hex": out.hex(), "tokens": ids,
            "seconds_per_token": float(np.mean(times)), "seconds_total": float(np.sum(times))}


def run_executor(model: LanguageModel, prompt: bytes, tokens: int, settings: dict, progress: bool = True) -> dict:
    """Greedy decoding on the canonical fixed-point executor (FixedPointProgram); logits compared as integers."""
    from imo.circuits.fixed_point import FixedPointProgram

    start = time.perf_counter()
    program = FixedPointProgram(model.onnx_path, settings)
    load_s = time.perf_counter() - start
    import os

    from threadpoolctl import threadpool_limits

    from imo.circuits.fixed_point import matmul_threads

    # BLAS on one thread, the matmuls split across the cores by the executor: robust when the machine is loaded
    with threadpool_limits(1), matmul_threads(os.cpu_count() or 1):
        result = _decode(model, lambda x: program.run(x)[0], prompt, tokens, "executor", progress)
    del program
    gc.collect()
    return {**result, "load_s": load_s, "peak_rss_mb": peak_rss_mb()}


def run_onnxruntime(model: LanguageModel, prompt: bytes, tokens: int, threads: int = 2, progress: bool = True) -> dict:
    from imo.models.gpt import ort_session

    start = time.perf_counter()
    session = ort_session(model.onnx_path, threads)
    load_s = time.perf_counter() - start
    name = session.get_inputs()[0].name
    result = _decode(model, lambda x: session.run(None, {name: x})[0], prompt, tokens, "onnxruntime", progress)
    del session
    gc.collect()
    return {**result, "load_s": load_s, "peak_rss_mb": peak_rss_mb()}


def generate(model: str, prompt: str, tokens: int, engines: tuple[str, ...] = ("executor", "onnxruntime"),
             settings: dict | None = None, progress: bool = True) -> dict:
    """Greedy decoding of `tokens` bytes after `prompt`. The executor runs first, so its peak RSS is its own
    (`executor.peak_rss_mb`); onnxruntime's figure is the process peak after both."""
    if tokens <= 0:
        raise InputShapeError(f"--tokens must be at least 1, got {tokens}")
    data = encode_prompt(prompt)
    lm = resolve(model, progress)
    settings = settings or executor_settings()
    result: dict = {"model": lm.name, "onnx": str(lm.onnx_path), "params": lm.params, "context": lm.context,
                    "prompt": prompt, "new_tokens": tokens, "settings": settings["run_args"] if "run_args" in settings else settings}
    if "executor" in engines:
        result["executor"] = run_executor(lm, data, tokens, settings, progress)
    if "onnxruntime" in engines:
        result["onnxruntime"] = run_onnxruntime(lm, data, tokens, progress=progress)
    main = result.get("executor") or result["onnxruntime"]
    result |= {"engine": "executor" if "executor" in result else "onnxruntime", "text": main["text"],
               "seconds_per_token": main["seconds_per_token"], "peak_rss_mb": peak_rss_mb()}
    if "executor" in result and "onnxruntime" in result:
        e, o = result["executor"]["tokens"], result["onnxruntime"]["tokens"]
        result["executor_over_onnxruntime"] = result["executor"]["seconds_per_token"] / result["onnxruntime"]["seconds_per_token"]
        result["tokens_agree"] = e == o
        result["first_divergence"] = next((i for i, (a, b) in enumerate(zip(e, o)) if a != b), None)
    return result


def human(result: dict) -> str:
    lines = [f"{result['prompt']}{result['text']}", ""]
    for engine in ("executor", "onnxruntime"):
        if engine in result:
            r = result[engine]
            lines.append(f"{engine:<12} {r['seconds_per_token']:.3f} s/token (load {r['load_s']:.1f} s), peak RSS {r['peak_rss_mb']:.0f} MB"
                         + ("" if engine == "executor" else f": {r['text']!r}"))
    if "executor_over_onnxruntime" in result:
        agree = "the same tokens" if result["tokens_agree"] else f"diverge at token {result['first_divergence']}"
        lines.append(f"executor / onnxruntime per token: {result['executor_over_onnxruntime']:.2f}; {agree}")
    lines.append(f"{result['model']}: {result['params']:,} parameters, context {result['context']} bytes")
    return "\n".join(lines)


# --------------------------------------------------------------------------- imo bench --llm
def bench_llm(out_dir: Path, model: str = "gpt", tokens: int = 16, zk_head: bool = True, progress: bool = True) -> dict:
    """16 new tokens after a 128-byte prompt on both engines; with `zk_head`, a real ezkl proof of the output head
    (final LayerNorm output -> logits, private weights). Merged into out_dir/bench.json under "llm" and a line of bench.md."""
    r = generate(model, BENCH_PROMPT, tokens, progress=progress)
    llm = {
        "model": r["model"], "params": r["params"], "context": r["context"], "prompt_bytes": len(BENCH_PROMPT.encode()),
        "new_tokens": tokens, "settings": r["settings"],
        "native_over_onnxruntime": r["executor_over_onnxruntime"],
        "native_s_per_token": r["executor"]["seconds_per_token"], "onnxruntime_s_per_token": r["onnxruntime"]["seconds_per_token"],
        f"seconds_{tokens}_tokens": r["executor"]["seconds_total"],
        "native_load_s": r["executor"]["load_s"],
        "peak_rss_mb": r["executor"]["peak_rss_mb"], "process_peak_rss_mb": r["peak_rss_mb"],
        "tokens_agree": r["tokens_agree"], "text": r["text"],
    }
    if zk_head:
        llm |= prove_head(Path(r["onnx"]), progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bench_path = out_dir / "bench.json"
    bench = json.loads(bench_path.read_text()) if bench_path.is_file() else {}
    if not isinstance(bench, dict):
        raise ImoError(f"{bench_path} is not a bench.json")
    bench["llm"] = llm
    bench_path.write_text(json.dumps(bench, indent=2))
    md = out_dir / "bench.md"
    lines = [line for line in (md.read_text().splitlines() if md.is_file() else []) if not line.startswith("- llm:")]
    lines.append(llm_line(llm))
    md.write_text("\n".join(lines) + "\n")
    return bench


def llm_line(llm: dict) -> str:
    n = llm["new_tokens"]
    zk = f", zk head prove {llm['zk_head_prove_s']:.1f} s (logrows {llm['zk_head_logrows']})" if "zk_head_prove_s" in llm else ""
    return (f"- llm: {llm['model']} ({llm['params']:,} params): native/onnxruntime per token = {llm['native_over_onnxruntime']:.2f} "
            f"(target ≤ 3; {llm['native_s_per_token']:.2f} vs {llm['onnxruntime_s_per_token']:.2f} s), "
            f"{n} tokens after a {llm['prompt_bytes']}-byte prompt in {llm[f'seconds_{n}_tokens']:.1f} s{' (target ≤ 300)' if n == 16 else ''}, "
            f"peak RSS {llm['peak_rss_mb']:.0f} MB (target ≤ 8192){zk}")


# --------------------------------------------------------------------------- the private output head in zk
def _head_parts(onnx_path: Path):
    """(proto without weights, the head Gemm node, its input tensor's name): the last Gemm of the graph."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    if not gemms or gemms[-1].output[0] != proto.graph.output[0].name:
        raise InputShapeError(f"{onnx_path}: the graph does not end in a Gemm output head")
    return proto, gemms[-1], gemms[-1].input[0]


def head_onnx(onnx_path: Path, out: Path) -> Path:
    """The output head alone as an ONNX graph: "input" (1, d_model) -> "output" (1, vocab), its weights inside."""
    import onnx
    from onnx import helper, numpy_helper

    proto, gemm, _ = _head_parts(onnx_path)
    inits = {t.name: t for t in proto.graph.initializer}
    arrays = [numpy_helper.to_array(inits[name], base_dir=str(Path(onnx_path).parent)) for name in gemm.input[1:]]
    w = arrays[0]
    trans_b = next((a.i for a in gemm.attribute if a.name == "transB"), 0)
    d_in, d_out = (w.shape[1], w.shape[0]) if trans_b else w.shape
    names = ["W", "B"][: len(arrays)]
    node = helper.make_node("Gemm", ["input", *names], ["output"], transB=trans_b)
    graph = helper.make_graph([node], "head", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, d_in])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, d_out])],
                              [numpy_helper.from_array(a, n) for a, n in zip(arrays, names)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def head_inputs(onnx_path: Path, texts: list[bytes]) -> np.ndarray:
    """The head's real inputs (the final LayerNorm's output) for the windows of `texts`, from onnxruntime: a copy
    of the graph (no weights: it points at the same external data) that also outputs that tensor."""
    import os

    import onnx

    from imo.models.gpt import ort_session, window

    proto, _, hidden = _head_parts(onnx_path)
    proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(hidden))
    probe = Path(onnx_path).with_name(f".head-probe-{os.getpid()}.onnx")  # beside the model: the data path resolves
    try:
        onnx.save(proto, str(probe))
        session = ort_session(probe)
        context = session.get_inputs()[0].shape[1]
        rows = [session.run([hidden], {"input": window(t, context)})[0] for t in texts]
    finally:
        probe.unlink(missing_ok=True)
    return np.stack(rows).astype(np.float32)  # (n, 1, d_model)


def prove_head(onnx_path: Path, scale: int = SCALE, progress: bool = True) -> dict:
    """A real ezkl proof (CPU) of the model's output head as its own zk segment: public input (the backbone's
    boundary), public logits, private weights; calibrated on the head's real inputs for a few corpus windows,
    at the executor's scale. Also checks the executor bit-exact with the proof's witness."""
    import tempfile

    import ezkl

    from imo.circuits.fixed_point import FixedPointProgram, quantize, witness_outputs
    from imo.models.gpt import held_out_texts
    from imo.proving import prover
    from imo.proving.circuit import CircuitFiles, Visibility, build_circuit, write_quantized_input
    from imo.proving.native import call_ezkl

    with tempfile.TemporaryDirectory(prefix="imo-llm-head-") as tmp:
        tmp = Path(tmp)
        head = head_onnx(onnx_path, tmp / "head.onnx")
        x = head_inputs(onnx_path, [BENCH_PROMPT.encode(), *held_out_texts(7)])
        files = CircuitFiles(tmp / "circuit")
        report = build_circuit(head, x, files, Visibility(input="public", output="public", params="private"), scales=[scale], quiet=not progress)
        settings = files.settings_dict()
        q = quantize(x[0], settings["run_args"]["input_scale"])
        write_quantized_input(tmp / "input.json", q)
        call_ezkl("witness", ezkl.gen_witness, str(tmp / "input.json"), str(files.compiled), str(tmp / "witness.json"))
        prove_s = prover.prove_witness(files, tmp / "witness.json", tmp / "proof.json")
        verify_s = prover.verify(files, proof_file=tmp / "proof.json")
        (want,) = witness_outputs(json.loads((tmp / "witness.json").read_text()))
        got = FixedPointProgram(head, settings).run(q)[0].ravel()
        return {"zk_head_prove_s": prove_s, "zk_head_verify_s": verify_s, "zk_head_setup_s": report.seconds.get("setup"),
                "zk_head_logrows": report.logrows, "zk_head_scale": report.input_scale,
                "zk_head_params": int(sum(np.prod(t.dims) for t in __import__("onnx").load(str(head)).graph.initializer)),
                "zk_head_visibility": "input public, logits public, weights private",
                "zk_head_executor_bit_exact": bool(np.array_equal(got, want))}
