"""A language model served as a generation model (`imo.models.generation`): the zoo's gpt architecture at test size
rewritten into one graph whose output is the N greedy tokens (teacher forcing). Its N sequential passes and its one
teacher-forced pass agree bit for bit on the executor; the executor agrees with onnxruntime; the zk head (Gemm +
ArgMax) compiled by ezkl gives the executor's ids bit for bit; the backbone builds as a bisection step program whose
trace ends at the executor's (N, d) boundary; bad inputs fail in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from imo.circuits.fixed_point import FixedPointProgram, quantize, witness_outputs
from imo.circuits.graph import extract, load_graph
from imo.errors import InputShapeError, InvalidModelError
from imo.models.generation import OUTPUT, decode, generation_onnx, head_inputs, head_onnx, teacher_forced_input
from imo.models.gpt import GPT, PAD, GPTConfig, export_gpt_onnx, held_out_texts, ort_session
from imo.pipeline.generate import SCALE, executor_settings
from imo.proving.trace import NotBisectable, StepProgram

CFG = GPTConfig(n_layer=2, d_model=64, n_head=4, context=16)
N = 4
PROMPTS = [b"hello world", b"The for statement", b"", b"x", bytes(range(40, 90)), b"def f(a, b):\n    return"]


def step_settings() -> dict:
    """The executor's settings with the lookup range a step program's tables need (as the gpt backbone's)."""
    s = executor_settings()
    s["run_args"].update({"lookup_range": [-(1 << 16), 1 << 16], "logrows": 17})
    return s


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A seeded random gpt (head weights x 10; external data) in one directory, its generation graph in another, and the backbone and
    head segments cut from it with imo.circuits.graph."""
    root = tmp_path_factory.mktemp("generation")
    (root / "lm").mkdir()
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    with torch.no_grad():  # a decisive head, as after training: the top two logits mostly 0.1 and more apart
        model.head.weight.mul_(10.0)
    lm = root / "lm" / "model.onnx"
    export_gpt_onnx(model, lm, external=True)
    graph = generation_onnx(lm, N, root / "gen" / "model.onnx")
    g = load_graph(graph.path)
    backbone, head = root / "backbone.onnx", root / "head.onnx"
    extract(g, g.input_name, graph.head_input, backbone)
    extract(g, graph.head_input, g.output_name, head)
    return SimpleNamespace(root=root, lm=lm, graph=graph, backbone=backbone, head=head,
                           program=FixedPointProgram(graph.path, executor_settings()))


def test_generation_graph_shape_and_weights(gen: SimpleNamespace) -> None:
    """The rewritten tail, one (N,) int64 output, the weights read from a data file beside it (byte for byte the LM's)."""
    g = gen.graph
    assert (g.context, g.prompt_len, g.tokens, g.vocab, g.d_model) == (16, 13, N, 256, 64)
    proto = onnx.load(str(g.path))  # with its external data
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node][-5:] == ["Gather", "Reshape", "LayerNormalization", "Gemm", "ArgMax"]
    assert proto.graph.node[-3].output[0] == g.head_input
    (out,) = proto.graph.output
    assert out.name == OUTPUT and out.type.tensor_type.elem_type == TensorProto.INT64
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [N]
    data = g.path.with_name(g.path.name + ".data")
    assert data.read_bytes() == gen.lm.with_name("model.onnx.data").read_bytes() and not data.is_symlink()
    assert gen.program.output_shapes == [(N,)] and gen.program.output_scales == [0]


def test_sequential_passes_equal_one_teacher_forced_pass(gen: SimpleNamespace) -> None:
    """(a) N passes (pass t: prompt and t tokens, padded on the right; output t) give the ids one pass on the final
    input gives, bit for bit; the final input is the prompt's last P bytes, left-padded, then the first N - 1 ids."""
    p = gen.graph.prompt_len
    for prompt in PROMPTS:
        ids, final = decode(gen.program, prompt, N)
        assert len(ids) == N and all(0 <= i < 256 for i in ids)
        assert gen.program(final).tolist() == ids, prompt
        tail = prompt[-p:]
        want = bytes([PAD]) * (p - len(tail)) + tail + bytes(ids[: N - 1])
        assert final.shape == (1, 16) and final.dtype == np.int64 and bytes(final.ravel().tolist()) == want


def test_decode_with_a_plain_callable(gen: SimpleNamespace) -> None:
    """A callable (ids -> (N,) ids) decodes like the program, given the context."""
    ids, final = decode(lambda x: gen.program.run(x)[0], b"hello", N, context=16)
    want_ids, want_final = decode(gen.program, b"hello", N)
    assert ids == want_ids and np.array_equal(final, want_final)


def _probe(path: Path, extra: str) -> Path:
    """A weightless copy of the graph (beside it: the data resolves) that also outputs `extra`."""
    proto = onnx.load(str(path), load_external_data=False)
    proto.graph.output.append(helper.make_empty_tensor_value_info(extra))
    probe = path.with_name(f"probe-{os.getpid()}.onnx")
    onnx.save(proto, str(probe))
    return probe


def test_executor_agrees_with_onnxruntime(gen: SimpleNamespace) -> None:
    """(b) The executor's logits (scale 10) are within the fixed-point error of onnxruntime's float ones, and the ids
    agree wherever the float logits are not near a tie."""
    logits = next(n.output[0] for n in onnx.load(str(gen.graph.path), load_external_data=False).graph.node if n.op_type == "Gemm")
    probe = _probe(gen.graph.path, logits)
    try:
        fp = FixedPointProgram(probe, executor_settings())
        session = ort_session(probe)
        separated = 0
        for prompt in PROMPTS:
            _, x = decode(gen.program, prompt, N)
            ids_q, logits_q = fp.run(x)
            ids_f, logits_f = session.run(None, {"input": x})
            assert np.abs(logits_q / 2.0**SCALE - logits_f).max() < 0.05
            top2 = np.sort(logits_f, axis=1)[:, -2:]
            clear = top2[:, 1] - top2[:, 0] > 0.1
            separated += int(clear.sum())
            assert np.array_equal(ids_q[clear], ids_f[clear]), prompt
            assert np.array_equal(ids_q, gen.program(x))
        assert separated >= len(PROMPTS) * N // 2
    finally:
        probe.unlink()


def test_zk_head_witness_equals_the_executor(gen: SimpleNamespace, tmp_path: Path) -> None:
    """(c) The head segment (Gemm + ArgMax, private weights) compiled by ezkl at scale 10 and calibrated on its real
    inputs: gen_witness on the executor's (N, d) boundary gives the executor's ids, bit for bit. head_onnx (the lean
    extraction) computes what the graph tools' segment does."""
    import ezkl

    from imo.proving.circuit import CircuitFiles, write_quantized_input
    from imo.proving.native import call_ezkl

    windows = [teacher_forced_input(t, [], 16, N) for t in held_out_texts(4, 16)]
    calibration = head_inputs(gen.graph, windows)
    assert calibration.shape == (4, N, 64)
    files = CircuitFiles(tmp_path / "head")
    files.root.mkdir()
    onnx.save(onnx.load(str(gen.head)), str(files.onnx))
    run_args = ezkl.PyRunArgs()
    run_args.input_visibility, run_args.output_visibility, run_args.param_visibility = "public", "public", "private"
    call_ezkl("settings", ezkl.gen_settings, str(files.onnx), str(files.settings), py_run_args=run_args)
    (tmp_path / "cal.json").write_text(json.dumps({"input_data": [calibration.astype(np.float64).ravel().tolist()]}))
    call_ezkl("calibrate", ezkl.calibrate_settings, str(tmp_path / "cal.json"), str(files.onnx), str(files.settings), "resources",
              scales=[SCALE], scale_rebase_multiplier=[1], lookup_safety_margin=8.0)
    call_ezkl("compile", ezkl.compile_circuit, str(files.onnx), str(files.compiled), str(files.settings))
    settings = files.settings_dict()
    assert settings["run_args"]["input_scale"] == settings["run_args"]["param_scale"] == SCALE
    assert settings["model_output_scales"] == [0]
    backbone = FixedPointProgram(gen.backbone, executor_settings())
    head = FixedPointProgram(files.onnx, settings)
    lean = FixedPointProgram(head_onnx(gen.graph, tmp_path / "lean_head.onnx"), settings)
    for i, prompt in enumerate(PROMPTS):
        ids, x = decode(gen.program, prompt, N)
        boundary = backbone(x)
        assert boundary.shape == (N, 64) and backbone.output_scales == [SCALE]
        write_quantized_input(tmp_path / f"in{i}.json", boundary)
        witness = call_ezkl("witness", ezkl.gen_witness, str(tmp_path / f"in{i}.json"), str(files.compiled), str(tmp_path / f"w{i}.json"))
        (want,) = witness_outputs(witness)
        assert want.tolist() == ids == head(boundary).tolist() == lean(boundary).tolist(), prompt
    assert call_ezkl("mock", ezkl.mock, str(tmp_path / "w0.json"), str(files.compiled))  # a witness the circuit accepts


def test_argmax_ties_go_to_the_first_index_as_in_ezkl(tmp_path: Path) -> None:
    """gen_witness's ArgMax picks the lowest index among equal fixed-point maxima (also where the floats differ but
    quantize equal); the executor does the same."""
    import ezkl

    x = np.array([[1, 3, 3, 2, 0, -1], [-1] * 6, [0.5, 0.2, 0.7, 0.7, 0.7001, 0.1], [0, 0, 0, 0, 0, 0.25]])
    nodes = [helper.make_node("Gemm", ["x", "w"], ["l"], transB=1), helper.make_node("ArgMax", ["l"], ["y"], axis=1, keepdims=0)]
    graph = helper.make_graph(nodes, "argmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [len(x)])],
                              [numpy_helper.from_array(np.eye(6, dtype=np.float32), "w")])
    model = tmp_path / "argmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    run_args = ezkl.PyRunArgs()
    run_args.input_scale = run_args.param_scale = SCALE
    run_args.input_visibility, run_args.output_visibility, run_args.param_visibility = "public", "public", "private"
    settings, compiled, inp = tmp_path / "settings.json", tmp_path / "argmax.compiled", tmp_path / "input.json"
    assert ezkl.gen_settings(str(model), str(settings), py_run_args=run_args)
    inp.write_text(json.dumps({"input_data": [x.ravel().tolist()]}))
    assert ezkl.compile_circuit(str(model), str(compiled), str(settings))
    (want,) = witness_outputs(ezkl.gen_witness(str(inp), str(compiled), str(tmp_path / "witness.json")))
    assert want.tolist() == [1, 0, 2, 5]
    program = FixedPointProgram(model, json.loads(settings.read_text()))
    assert program(quantize(x, SCALE)).tolist() == want.tolist() and program.output_scales == [0]


def test_backbone_is_a_step_program(gen: SimpleNamespace) -> None:
    """(d) The backbone (up to the final LayerNorm's (N, d) output, through the Gather of the last N positions) builds
    as a step program; its trace's output is the executor's boundary. The whole graph does not: ArgMax has no step."""
    program = StepProgram.build(gen.backbone, step_settings())
    assert program.output_shape == (N, 64)
    backbone = FixedPointProgram(gen.backbone, step_settings())
    for prompt in PROMPTS[:3]:
        _, x = decode(gen.program, prompt, N)
        trace = program.execute(x)
        assert np.array_equal(trace.values[-1], backbone(x).ravel()), prompt
    with pytest.raises(NotBisectable, match="ArgMax"):
        StepProgram.build(gen.graph.path, step_settings())


def _lm_like(path: Path, *, index: int = -1, axis: int = 1, head_op: str = "Gemm") -> Path:
    """A two-node stand-in of the LM interface (embedding Gather, last-position Gather, LayerNorm, head) to break."""
    t, d, v = 6, 4, 256
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(v, d)).astype(np.float32), "emb"),
             numpy_helper.from_array(np.array(index, dtype=np.int64), "last"),
             numpy_helper.from_array(np.ones(d, np.float32), "g"), numpy_helper.from_array(np.zeros(d, np.float32), "b"),
             numpy_helper.from_array(rng.normal(size=(v, d)).astype(np.float32), "w")]
    head = helper.make_node("Gemm", ["h", "w"], ["output"], transB=1) if head_op == "Gemm" else helper.make_node("Relu", ["h"], ["output"])
    nodes = [helper.make_node("Gather", ["emb", "input"], ["e"]),
             helper.make_node("Gather", ["e", "last"], ["l"], axis=axis),
             helper.make_node("LayerNormalization", ["l", "g", "b"], ["h"], axis=-1), head]
    out_dim = v if head_op == "Gemm" else d
    graph = helper.make_graph(nodes, "lm", [helper.make_tensor_value_info("input", TensorProto.INT64, [1, t])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, out_dim])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_the_stand_in_works_and_keeps_inline_weights(tmp_path: Path) -> None:
    """An LM without external data: the generation graph holds the weights inline; ids equal onnxruntime's argmax."""
    graph = generation_onnx(_lm_like(tmp_path / "lm.onnx"), 3, tmp_path / "out" / "gen.onnx")
    assert (graph.context, graph.prompt_len, graph.tokens, graph.vocab, graph.d_model) == (6, 4, 3, 256, 4)
    assert not list((tmp_path / "out").glob("*.data"))
    x = teacher_forced_input(b"abc", [3], 6, 3)
    (want,) = ort_session(graph.path).run(None, {"input": x})
    assert want.tolist() == FixedPointProgram(graph.path, executor_settings())(x).tolist()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"index": 0}, "does not pick the last position"),
    ({"axis": 0}, "does not pick the last position"),
    ({"head_op": "Relu"}, "does not end Gather"),
])
def test_graphs_of_another_shape_are_refused_in_one_line(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidModelError, match=message) as e:
        generation_onnx(_lm_like(tmp_path / "lm.onnx", **kwargs), 2, tmp_path / "gen.onnx")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("tokens", [0, -1, 7])
def test_token_counts_out_of_range_are_refused(tmp_path: Path, tokens: int) -> None:
    with pytest.raises(InputShapeError) as e:
        generation_onnx(_lm_like(tmp_path / "lm.onnx"), tokens, tmp_path / "gen.onnx")
    assert "\n" not in str(e.value) and not (tmp_path / "gen.onnx").exists()


def test_bad_files_and_inputs_are_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for path, error in ((tmp_path / "junk.onnx", InvalidModelError), (tmp_path / "missing.onnx", InvalidModelError)):
        with pytest.raises(error) as e:
            generation_onnx(path, 2, tmp_path / "gen.onnx")
        assert "\n" not in str(e.value)
    lm = _lm_like(tmp_path / "lm.onnx")
    with pytest.raises(InvalidModelError, match="overwrite"):
        generation_onnx(lm, 2, lm)
    with pytest.raises(InputShapeError, match="at most 2 generated"):
        teacher_forced_input(b"abc", [1, 2, 3], 6, 3)
    with pytest.raises(InputShapeError, match="byte ids"):
        teacher_forced_input(b"abc", [300], 6, 3)
    with pytest.raises(InputShapeError, match="context length"):
        decode(lambda x: np.zeros(3, np.int64), b"abc", 3)
    with pytest.raises(InputShapeError, match="returned 2 ids"):
        decode(lambda x: np.zeros(2, np.int64), b"abc", 3, context=6)
