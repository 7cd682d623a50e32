"""The zoo's byte-level language model (`gpt`) at test size: the same architecture (imo.models.gpt.SMALL and
smaller), exported with external weight data, decoded greedily on the canonical fixed-point executor and on
onnxruntime; bit-exact with ezkl.gen_witness; `imo generate` and its errors. The 100M-parameter model itself is
exercised by `imo bench --llm` (minutes), not here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from imo.circuits.fixed_point import FixedPointProgram
from imo.models.gpt import MASK_VALUE, PAD, SMALL, GPT, GPTConfig, export_gpt_onnx, held_out_texts, ort_session, param_count, train_gpt, window
from imo.pipeline.cli import main
from imo.pipeline.generate import SCALE, executor_settings, generate


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL trained for a few seconds (so its logits have a clear argmax), exported with external data."""
    model, report = train_gpt(SMALL, seed=0, steps=30, threads=1, progress=False)
    assert report.final_loss < report.initial_loss
    path = tmp_path_factory.mktemp("gpt") / "model.onnx"
    export_gpt_onnx(model, path)
    return path


def test_full_size_has_100m_parameters() -> None:
    assert param_count(GPTConfig()) >= 100_000_000


def test_window_right_aligns_pads_and_crops() -> None:
    w = window(b"ab", 4)
    assert w.dtype == np.int64 and w.tolist() == [[PAD, PAD, ord("a"), ord("b")]]
    assert window(b"abcdef", 4).tolist() == [[ord(c) for c in "cdef"]]


def test_export_uses_external_data_and_executor_ops(small: Path) -> None:
    assert small.with_name("model.onnx.data").stat().st_size > small.stat().st_size
    ops = {n.op_type for n in onnx.load(str(small), load_external_data=False).graph.node}
    assert ops <= {"Gather", "Add", "Mul", "Div", "Erf", "LayerNormalization", "MatMul", "Reshape", "Transpose", "Softmax",
                   "Gemm", "Constant", "Identity"}
    assert "Where" not in ops  # the causal mask is arithmetic on constants


def test_masked_scores_are_exactly_minus_mask_value() -> None:
    model = GPT(SMALL)
    scores = torch.randn(1, 1, SMALL.context, SMALL.context) * 50
    masked = scores * model.keep + model.drop
    upper = torch.triu(torch.ones(SMALL.context, SMALL.context, dtype=torch.bool), 1)
    assert torch.all(masked[0, 0][upper] == -MASK_VALUE)
    assert torch.equal(masked[0, 0][~upper], scores[0, 0][~upper])


def test_executor_agrees_with_onnxruntime(small: Path) -> None:
    """Same greedy choice and logits within the fixed-point error, on held-out text and short (padded) prompts."""
    program = FixedPointProgram(small, executor_settings())
    session = ort_session(small)
    prompts = [*held_out_texts(6, SMALL.context), b"def ", b"The for statement"]
    for text in prompts:
        x = window(text, SMALL.context)
        (q,) = program.run(x)
        (f,) = session.run(None, {"input": x})
        got = q / 2.0 ** program.output_scales[0]
        assert np.abs(got - f).max() < 0.05
        assert int(np.argmax(got)) == int(np.argmax(f))


def test_external_data_is_mapped_not_copied(small: Path) -> None:
    """The memory-mapped load computes exactly what the fully loaded proto does."""
    x = window(b"import os", SMALL.context)
    lean = FixedPointProgram(small, executor_settings()).run(x)[0]
    full = FixedPointProgram(onnx.load(str(small)), executor_settings()).run(x)[0]
    assert np.array_equal(lean, full)


def test_generate_cli_json(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(small), "--prompt", "The ", "--tokens", "3", "--json", "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["new_tokens"] == 3 and r["context"] == SMALL.context and r["params"] == param_count(SMALL)
    for engine in ("executor", "onnxruntime"):
        assert len(r[engine]["tokens"]) == 3 and r[engine]["seconds_per_token"] > 0 and r[engine]["peak_rss_mb"] > 0
    assert r["text"] == r["executor"]["text"] and r["tokens_agree"] and r["first_divergence"] is None
    assert r["executor_over_onnxruntime"] > 0 and r["settings"]["param_scale"] == SCALE


def test_generate_human_output(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(small), "--prompt", "x", "--tokens", "2", "--engine", "executor", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "executor" in out and "s/token" in out and "onnxruntime" not in out


def test_generate_crops_long_prompts(small: Path) -> None:
    prompt = "a" * (3 * SMALL.context)
    r = generate(str(small), prompt, 2, engines=("executor",), progress=False)
    same = generate(str(small), prompt[-SMALL.context:], 2, engines=("executor",), progress=False)
    assert r["executor"]["tokens"] == same["executor"]["tokens"]


@pytest.mark.parametrize(("argv", "message"), [
    (["generate", "nope", "--prompt", "hi"], "unknown model 'nope'"),
    (["generate", "SMALL", "--prompt", "hi\udcff"], "--prompt is not valid UTF-8"),
    (["generate", "NOT_LM", "--prompt", "hi"], "is not a byte-level language model"),
    (["generate", "TEXT", "--prompt", "hi"], "is not an ONNX model"),
])
def test_generate_bad_input_is_one_line(small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    not_lm = tmp_path / "float.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(not_lm), dynamo=False, opset_version=17)
    (tmp_path / "text.onnx").write_text("not a model")
    subst = {"SMALL": str(small), "NOT_LM": str(not_lm), "TEXT": str(tmp_path / "text.onnx")}
    assert main([subst.get(a, a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("imo: error:")


@pytest.mark.parametrize("tokens", ["0", "-3", "two"])
def test_generate_refuses_non_positive_tokens(small: Path, tokens: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["generate", str(small), "--prompt", "hi", "--tokens", tokens])
    assert e.value.code == 2 and "--tokens" in capsys.readouterr().err


def test_bit_exact_with_ezkl_gen_witness(tmp_path: Path) -> None:
    """A one-block model of the same architecture compiled by ezkl at the executor's scale: every logit the
    executor computes is the integer in ezkl's witness."""
    import ezkl

    from imo.circuits.fixed_point import witness_outputs

    tiny = GPTConfig(n_layer=1, d_model=32, n_head=2, vocab=256, context=8)
    model, _ = train_gpt(tiny, seed=0, steps=10, threads=1, progress=False)
    path = tmp_path / "model.onnx"
    export_gpt_onnx(model, path, external=False)
    run_args = ezkl.PyRunArgs()
    run_args.input_scale = run_args.param_scale = SCALE
    run_args.scale_rebase_multiplier = 1
    run_args.input_visibility, run_args.output_visibility, run_args.param_visibility = "public", "public", "fixed"
    settings = tmp_path / "settings.json"
    assert ezkl.gen_settings(str(path), str(settings), py_run_args=run_args)
    texts = held_out_texts(6, tiny.context) + [b"ab", b"The for"]
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps({"input_data": [np.concatenate([window(t, tiny.context).ravel() for t in texts[:4]]).tolist()]}))
    assert ezkl.calibrate_settings(str(calib), str(path), str(settings), "resources", scales=[SCALE], scale_rebase_multiplier=[1],
                                   lookup_safety_margin=8.0)
    compiled = tmp_path / "model.compiled"
    assert ezkl.compile_circuit(str(path), str(compiled), str(settings))
    program = FixedPointProgram(path, settings)
    assert program.scales.params == SCALE
    for i, text in enumerate(texts):
        x = window(text, tiny.context)
        inp = tmp_path / f"in{i}.json"
        inp.write_text(json.dumps({"input_data": [x.ravel().tolist()]}))
        witness = ezkl.gen_witness(str(inp), str(compiled), str(tmp_path / f"w{i}.json"))
        (want,) = witness_outputs(witness)
        assert np.array_equal(program.run(x)[0].ravel(), want), text


def test_bench_llm_merges_into_bench_json(small: Path, tmp_path: Path) -> None:
    """`imo bench --llm`'s part of bench.json (here on the small model, 2 tokens, no zk head) keeps what is there."""
    from imo.pipeline.generate import bench_llm

    (tmp_path / "bench.json").write_text(json.dumps({"models": ["kept"]}))
    (tmp_path / "bench.md").write_text("# imo bench\n- llm: an old line\n")
    bench = bench_llm(tmp_path, model=str(small), tokens=2, zk_head=False, progress=False)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk == bench and on_disk["models"] == ["kept"]
    llm = on_disk["llm"]
    assert llm["params"] == param_count(SMALL) and llm["native_over_onnxruntime"] > 0 and llm["peak_rss_mb"] > 0
    assert llm["seconds_2_tokens"] > 0 and llm["tokens_agree"]
    md = (tmp_path / "bench.md").read_text().splitlines()
    assert md[0] == "# imo bench" and sum(line.startswith("- llm:") for line in md) == 1 and "old line" not in md[-1]
