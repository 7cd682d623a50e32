"""The planner on graphs as torch exports them (opset 17, fixed shapes): constants folded into the weights (Constant,
Identity over weights, Shape/ConstantOfShape), residual connections and tensors with several consumers kept inside
one segment, cuts only where one activation tensor is live, and plan-time refusals in one line naming node and op."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from imo.circuits.graph import load_graph
from imo.circuits.plan import Plan, executor_ops, make_plan, write_plan
from imo.errors import InvalidModelError
from imo.models.export import export_onnx
from imo.pipeline.cli import main
from imo.proving import onnx_io
from imo.proving.segments import circuit_files, compile_plan


class ResidualMLP(nn.Module):
    """x + relu(W x), then a linear head."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.out(x + torch.relu(self.fc(x)))


class TwoLayerNorms(nn.Module):
    """Two LayerNorms with equal (default) parameters: torch keeps one copy and emits Identity nodes over it first."""

    def __init__(self):
        super().__init__()
        self.fc1, self.ln1, self.fc2, self.ln2, self.out = nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 4)

    def forward(self, x):
        return self.out(self.ln2(self.fc2(self.ln1(self.fc1(x)))))


class ConstantFirst(nn.Module):
    """Starts with Constant nodes (the operands of the Mul and the Add)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(x * 0.5 + 1.0))


class TanhMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(x)))


class ConvResidual(nn.Module):
    """conv-relu, then a residual conv block h + relu(conv(h)) (h has two consumers), then a linear head."""

    def __init__(self):
        super().__init__()
        self.c0, self.c1, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.Linear(2 * 6 * 6, 4)

    def forward(self, x):
        h = torch.relu(self.c0(x))
        h = h + torch.relu(self.c1(h))
        return self.fc(h.flatten(1))


MODELS = {"residual": (ResidualMLP, (1, 8)), "layernorm": (TwoLayerNorms, (1, 8)), "constant": (ConstantFirst, (1, 8)),
          "tanh": (TanhMLP, (1, 8)), "conv-residual": (ConvResidual, (1, 1, 6, 6))}
RESIDUAL_BLOCKS = {"residual": ["/fc/Gemm", "/Relu", "/Add"], "conv-residual": ["/c1/Conv", "/Relu_1", "/Add"]}


def _shape_model(path):
    """What an exporter emits for `x + ones_like(x)` without constant folding: Shape -> ConstantOfShape -> Add; then a
    MatMul with a weight. Written by hand: torch's exporter folds these at fixed shapes."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), "w")
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [helper.make_node("Shape", ["input"], ["s"], name="shape"),
             helper.make_node("ConstantOfShape", ["s"], ["ones"], name="ones", value=one),
             helper.make_node("Add", ["input", "ones"], ["h"], name="add"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w"], ["output"], name="matmul")]
    graph = helper.make_graph(nodes, "shape", [x], [y], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> exported ONNX path (torch, opset 17, dynamo=False, fixed batch 1)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("dag-models")
    paths = {}
    for name, (cls, shape) in MODELS.items():
        paths[name] = root / f"{name}.onnx"
        export_onnx(cls().eval(), np.zeros(shape, np.float32), paths[name])
    paths["shape"] = _shape_model(root / "shape.onnx")
    return paths


def _calibration(path, n=2):
    sig = onnx_io.signature(onnx_io.load_model(path))
    return np.random.default_rng(1).uniform(-1, 1, size=(n, *sig.input_shape)).astype(np.float32)


@pytest.mark.parametrize("name", [*MODELS, "shape"])
@pytest.mark.parametrize("merge", [False, True])
def test_plan_cuts_only_where_one_activation_is_live_and_the_segments_recompute_the_model(name, merge, models, tmp_path, monkeypatch):
    if _executor_lacks(models[name]):  # refused by make_plan (tested below); here: the structure of the plan
        monkeypatch.setattr("imo.circuits.plan._check_executor", lambda *args: None)
    plan, graph = make_plan(models[name], merge=merge)
    live = graph.live_tensors()
    position = {n.name: n.index for n in graph.nodes}
    for before, after in zip(plan.segments, plan.segments[1:]):
        cut = position[before.nodes[-1]]
        assert live[cut] == [before.output] == [after.input] and position[after.nodes[0]] == cut + 1
    assert [n for s in plan.segments for n in s.nodes] == [n.name for n in graph.nodes]
    assert plan.segments[0].input == "input" and plan.segments[-1].output == "output"
    if name in RESIDUAL_BLOCKS:  # a residual block is never split
        assert len({s.index for s in plan.segments for n in s.nodes if n in RESIDUAL_BLOCKS[name]}) == 1

    plan_file = write_plan(plan, graph, tmp_path / "plan")
    x = _calibration(models[name], 1)[0]
    value = x
    for segment in Plan.load(plan_file).segments:
        sub = onnx.load(str(plan_file.parent / segment.onnx))
        onnx.checker.check_model(sub, full_check=True)
        assert [n.op_type for n in sub.graph.node] == segment.ops
        value = onnx_io.run_onnxruntime(plan_file.parent / segment.onnx, value)[0]
        assert list(value.shape) == segment.output_shape
    np.testing.assert_allclose(value, onnx_io.run_onnxruntime(models[name], x)[0], rtol=1e-6, atol=1e-6)


def test_residual_block_is_one_atom_and_the_fork_is_a_cut(models):
    graph = load_graph(models["conv-residual"])
    cuts = dict(zip((n.name for n in graph.nodes), graph.cut_tensors()))
    assert cuts["/Relu"] == "/Relu_output_0"  # the tensor the residual block reads twice: the block starts after it
    assert cuts["/c1/Conv"] is None and cuts["/Relu_1"] is None  # inside the block: h and the branch are both live
    assert graph.node("/Add").inputs == ("/Relu_output_0", "/Relu_1_output_0")
    plan, _ = make_plan(models["conv-residual"], merge=False)
    assert [s.nodes for s in plan.segments] == [["/c0/Conv", "/Relu"], ["/c1/Conv", "/Relu_1", "/Add", "/Flatten"], ["/fc/Gemm"]]
    residual, _ = make_plan(models["residual"], merge=False)
    assert [s.nodes for s in residual.segments] == [["/fc/Gemm", "/Relu", "/Add"], ["/out/Gemm"]]


def test_constant_subgraphs_are_folded_into_the_weights(models):
    layernorm = load_graph(models["layernorm"])
    raw = onnx.load(str(models["layernorm"])).graph.node
    assert [n.op_type for n in raw[:2]] == ["Identity", "Identity"] and not raw[0].input[0].startswith("input")  # torch's shared LN params
    assert [n.op_type for n in layernorm.nodes] == ["Gemm", "LayerNormalization", "Gemm", "LayerNormalization", "Gemm"]
    assert len(layernorm.folded) == 2 and all(n.params for n in layernorm.nodes)
    constant = load_graph(models["constant"])
    assert [n.op_type for n in onnx.load(str(models["constant"])).graph.node][0] == "Constant"
    assert [n.op_type for n in constant.nodes] == ["Mul", "Add", "Relu", "Gemm"] and set(constant.folded) == {"/Constant", "/Constant_1"}
    shape = load_graph(models["shape"])
    assert [n.name for n in shape.nodes] == ["add", "relu", "matmul"] and shape.folded == ("shape", "ones")
    assert shape.node("add").inputs == ("input",) and shape.node("add").params == 8
    with pytest.raises(InvalidModelError, match="node 'ones' computes a constant"):
        make_plan(models["shape"], private=["ones"])


@pytest.mark.parametrize("name, policy", [("residual", {}),  # two zk segments: the boundary between them is hashed
                                          ("conv-residual", {"private_input": True, "budget_logrows": 1})])  # hashed input, zk then op
def test_estimated_logrows_are_ezkls_logrows_of_the_compiled_segments(name, policy, models, tmp_path):
    plan, graph = make_plan(models[name], merge=False, **policy)
    assert len(plan.segments) >= 2 and plan.segments[0].mode == "zk"
    plan_file = write_plan(plan, graph, tmp_path / "plan")
    compile_plan(plan_file, _calibration(models[name]), quiet=True)
    for segment in Plan.load(plan_file).segments:
        settings = circuit_files(plan_file.parent, segment).settings_dict()
        assert segment.est_logrows == settings["run_args"]["logrows"] <= 15
        assert abs(segment.est_rows - settings["num_rows"]) <= 0.15 * settings["num_rows"]


def _executor_lacks(path) -> list:
    """The nodes of the model whose op the fixed-point executor does not implement (yet)."""
    return [n for n in load_graph(path).nodes if n.op_type not in executor_ops()]


@pytest.mark.parametrize("name", [*MODELS, "shape"])
def test_every_segment_runs_on_the_executor_or_the_plan_is_refused(name, models):
    assert {"Gemm", "Relu", "Add", "Conv", "Flatten", "Identity"} <= executor_ops()
    for policy in ({}, {"budget_logrows": 1}):  # fully zk; all op (no segment fits 2^1 rows)
        lacking = _executor_lacks(models[name])
        if lacking:
            with pytest.raises(InvalidModelError, match=rf"node '{lacking[0].name}' \({lacking[0].op_type}\) in (zk|op) segment 0: the fixed-point executor cannot run"):
                make_plan(models[name], **policy)
        else:
            plan, _ = make_plan(models[name], **policy)
            assert {s.mode for s in plan.segments} == ({"op"} if policy else {"zk"})


@pytest.mark.parametrize("policy", [[], ["--budget-logrows", "1"]])
def test_a_node_the_executor_cannot_run_is_refused_in_one_line(policy, models, monkeypatch, capsys, tmp_path):
    real = executor_ops()
    monkeypatch.setattr("imo.circuits.plan.executor_ops", lambda: real - {"Tanh"})  # an executor without Tanh
    assert main(["plan", str(models["tanh"]), *policy, "--out", str(tmp_path / "plan")]) == 1
    err = capsys.readouterr().err.strip()
    mode = "op" if policy else "zk"
    assert err.count("\n") == 0 and err.startswith(f"imo: error: node '/Tanh' (Tanh) in {mode} segment 0: the fixed-point executor cannot run Tanh"), err
    assert not (tmp_path / "plan").exists()


def _imo(*args):
    return subprocess.run([sys.executable, "-m", "imo.pipeline.cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def _one_line_error(proc, *mentions):
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imo: error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert "unexpected" not in lines[0], lines[0]
    for text in mentions:
        assert text in lines[0], lines[0]
    return lines[0]


def test_cli_plans_torch_graphs_or_refuses_them_in_one_line(models, tmp_path):
    """These used to stop with an IndexError in the estimate (a first node with no activation input, a residual)."""
    for name in ("layernorm", "constant", "residual", "shape"):
        proc = _imo("plan", models[name], "--out", tmp_path / name)
        lacking = _executor_lacks(models[name])
        if lacking:
            _one_line_error(proc, f"node '{lacking[0].name}' ({lacking[0].op_type})", "executor")
        else:
            assert proc.returncode == 0, proc.stderr
            assert Plan.load(tmp_path / name / "plan.json").segments


def test_cli_refuses_an_op_ezkl_cannot_prove_in_one_line(tmp_path):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["h"], name="relu"), helper.make_node("Det", ["h"], ["output"], name="det")], "g", [x], [y])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    _one_line_error(_imo("plan", path), "node 'det' (Det)", "cannot prove")
