"""The numpy fixed-point executor is bit-exact with ``ezkl.gen_witness`` (ezkl 23.0.5).

Every model here is exported from torch, run through ezkl's real gen_settings ->
calibrate_settings -> compile_circuit -> gen_witness, and the witness' quantized
inputs/outputs and Poseidon commitments are compared with
``imo.circuits.fixed_point`` on random (hypothesis) and edge inputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ezkl
import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from helpers import float_witness
import imo.circuits.fixed_point as fp
from imo.errors import UnprovableClaimError
from imo.circuits.fixed_point import (
    FixedPointProgram,
    dequantize,
    felt_to_int,
    int_to_felt,
    poseidon_commitment,
    quantize,
    run_fixed_point,
    witness_commitments,
    witness_inputs,
    witness_outputs,
)


# --------------------------------------------------------------------------- #
# models
# --------------------------------------------------------------------------- #
class _Residual(nn.Module):
    """MatMul + Add (3-D Linear), a residual Add of two activations, Reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)) + x).reshape(1, -1)


class _ActMatmul(nn.Module):
    """MatMul of two activations (EinSum of two runtime tensors) + Transpose."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(8, 8, bias=False)

    def forward(self, x):
        return torch.matmul(self.l1(x), x.transpose(1, 2))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "linear": (lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU()), (1, 64)),
    "mlp": (lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), (1, 64)),
    "mlp_wide": (
        lambda: nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)),
        (1, 64),
    ),
    "cnn": (_cnn, (1, 1, 8, 8)),
    "generator": (
        lambda: nn.Sequential(nn.Linear(18, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.Sigmoid()),
        (1, 18),
    ),
    # a segment that starts at a hidden layer of a bigger model
    "segment": (lambda: nn.Sequential(nn.Linear(32, 16), nn.ReLU()), (1, 32)),
    "residual": (_Residual, (1, 4, 16)),
    "act_matmul": (_ActMatmul, (1, 4, 8)),
    "sigmoid": (nn.Sigmoid, (1, 4096)),
    "tie_params": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)), (1, 1, 8, 8)),
}


def _tieify(model: nn.Module, scale: int) -> None:
    """Put every parameter exactly on a rounding tie at the scale ezkl quantizes it at
    (Conv bias: 2*scale, everything else: scale), so any other rounding rule shows."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                for pname, prm in mod.named_parameters():
                    s = 2 * scale if isinstance(mod, nn.Conv2d) and pname == "bias" else scale
                    prm.copy_((torch.floor(prm * 2**s) + 0.5) / 2**s)


@dataclass
class Circuit:
    name: str
    scale: int
    shape: tuple[int, ...]
    onnx_path: Path
    settings_path: Path
    compiled_path: Path
    settings: dict
    program: FixedPointProgram
    output_visibility: str
    workdir: Path

    def witness(self, x: np.ndarray, tag: str = "w") -> dict:
        return float_witness(self.compiled_path, self.workdir, x, tag)


def _build(
    root: Path, name: str, scale: int, output_visibility: str = "hashed", input_visibility: str = "hashed", seed: int = 0
) -> Circuit:
    workdir = root / f"{name}_s{scale}_{input_visibility}_{output_visibility}"
    workdir.mkdir(parents=True, exist_ok=True)
    make, shape = MODELS[name]
    torch.manual_seed(seed)
    model = make().eval()
    if name == "tie_params":
        _tieify(model, scale)
    onnx_path = workdir / "model.onnx"
    torch.onnx.export(
        model, torch.randn(*shape), str(onnx_path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["output"],
    )  # fmt: skip
    run_args = ezkl.PyRunArgs()
    run_args.input_scale = scale
    run_args.param_scale = scale
    run_args.scale_rebase_multiplier = 1
    run_args.input_visibility = input_visibility
    run_args.output_visibility = output_visibility
    run_args.param_visibility = "fixed"
    settings_path = workdir / "settings.json"
    assert ezkl.gen_settings(str(onnx_path), str(settings_path), py_run_args=run_args)
    rng = np.random.default_rng(seed)
    calib = rng.uniform(-2, 2, size=(8,) + shape[1:])
    if name == "sigmoid":  # make the lookup range cover the exhaustive sweep
        calib = np.linspace(-16, 16, 8 * 4096).reshape((8,) + shape[1:])
    cal_path = workdir / "calibration.json"
    cal_path.write_text(json.dumps({"input_data": [calib.ravel().tolist()]}))
    ezkl.calibrate_settings(
        str(cal_path), str(onnx_path), str(settings_path), "resources", scales=[scale], scale_rebase_multiplier=[1]
    )
    compiled_path = workdir / "model.compiled"
    assert ezkl.compile_circuit(str(onnx_path), str(compiled_path), str(settings_path))
    st_ = json.loads(settings_path.read_text())
    assert st_["run_args"]["input_scale"] == scale and st_["run_args"]["param_scale"] == scale
    return Circuit(
        name, scale, shape, onnx_path, settings_path, compiled_path, st_,
        FixedPointProgram(onnx_path, st_), output_visibility, workdir,
    )  # fmt: skip


@pytest.fixture(scope="module")
def circuit(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Circuit]:
    root = tmp_path_factory.mktemp("fixed_point")
    cache: dict[tuple, Circuit] = {}

    def get(name: str, scale: int, output_visibility: str = "hashed", input_visibility: str = "hashed") -> Circuit:
        key = (name, scale, output_visibility, input_visibility)
        if key not in cache:
            cache[key] = _build(root, name, scale, output_visibility, input_visibility)
        return cache[key]

    return get


def _assert_matches_witness(c: Circuit, x: np.ndarray, w: dict) -> np.ndarray:
    xq = quantize(x, c.scale)
    np.testing.assert_array_equal(witness_inputs(w)[0], xq.ravel(), err_msg="input quantization")
    y = c.program(xq)
    assert y.dtype == np.int64 and y.shape == c.program.output_shapes[0]
    np.testing.assert_array_equal(y.ravel(), witness_outputs(w)[0], err_msg=f"{c.name} S={c.scale} outputs")
    assert poseidon_commitment(xq) == witness_commitments(w, "inputs")[0]
    if c.output_visibility == "hashed":
        assert poseidon_commitment(y) == witness_commitments(w, "outputs")[0]
    else:
        assert witness_commitments(w, "outputs") is None
    return y


# --------------------------------------------------------------------------- #
# property tests against gen_witness
# --------------------------------------------------------------------------- #
def _inputs(shape: tuple[int, ...], scale: int) -> st.SearchStrategy[np.ndarray]:
    """Random inputs in roughly [-2, 2]: float32 and float64 values, exact quantization
    ties (k + 1/2) / 2**scale, and edge values (0, -0, +-2, the smallest non-zero ties)."""
    tie = 1.0 / 2 ** (scale + 1)
    element = st.one_of(
        st.floats(-2, 2, width=32),
        st.floats(-2, 2),
        st.integers(-(2 ** (scale + 2)), 2 ** (scale + 2)).map(lambda k: k * tie),
        st.sampled_from([0.0, -0.0, 2.0, -2.0, tie, -tie, 3 * tie, -3 * tie, tie - 1e-17, -(tie - 1e-17)]),
    )
    return arrays(np.float64, shape, elements=element)


_PROPERTY = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

SMALL = ["linear", "mlp", "segment", "cnn", "generator"]


def _property(c: Circuit, max_examples: int) -> None:
    @settings(_PROPERTY, max_examples=max_examples)
    @given(x=_inputs(c.shape, c.scale))
    def check(x: np.ndarray) -> None:
        _assert_matches_witness(c, x, c.witness(x))

    check()


@pytest.mark.parametrize("name", SMALL)
def test_matches_witness_scale7(circuit, name: str) -> None:
    _property(circuit(name, 7), 200)


@pytest.mark.parametrize("name", SMALL + ["residual", "act_matmul"])
def test_matches_witness_scale10(circuit, name: str) -> None:
    _property(circuit(name, 10), 40)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_matches_witness_public_output(circuit, name: str) -> None:
    _property(circuit(name, 8, "public"), 40)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [7, 8, 10])
@pytest.mark.parametrize("name", SMALL + ["residual", "act_matmul"])
def test_matches_witness_all_scales_slow(circuit, name: str, scale: int) -> None:
    _property(circuit(name, scale), 200)


def test_mlp_wide_matches_witness(circuit) -> None:
    _property(circuit("mlp_wide", 7), 5)  # ~0.5 s per witness; more examples under -m slow


@pytest.mark.slow
@pytest.mark.parametrize("scale", [7, 8, 10])
def test_mlp_wide_matches_witness_slow(circuit, scale: int) -> None:
    _property(circuit("mlp_wide", scale), 60)


EDGE_CASES: dict[str, Callable[[int, int], np.ndarray]] = {
    "zeros": lambda n, s: np.zeros(n),
    "max": lambda n, s: np.full(n, 2.0),
    "min": lambda n, s: np.full(n, -2.0),
    "alternating": lambda n, s: np.where(np.arange(n) % 2, 2.0, -2.0),
    "ties": lambda n, s: (np.arange(n) - n / 2 + 0.5) / 2**s,
    "f32_rounds_to_tie": lambda n, s: np.where(np.arange(n) % 2, 1, -1) * (1.0 / 2 ** (s + 1) - 1e-17),
    "tiny": lambda n, s: np.full(n, 1e-30),
    "out_of_range": lambda n, s: np.where(np.arange(n) % 3, 50.0, -50.0),
}


@pytest.mark.parametrize("edge", list(EDGE_CASES))
@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("scale", [7, 10])
def test_edge_inputs(circuit, name: str, scale: int, edge: str) -> None:
    c = circuit(name, scale)
    x = EDGE_CASES[edge](int(np.prod(c.shape)), scale).reshape(c.shape)
    w = c.witness(x)
    if name == "generator" and edge == "out_of_range":  # a witness, but no proof: Sigmoid inputs below the table
        with pytest.raises(UnprovableClaimError, match=r"op Sigmoid"):
            c.program(quantize(x, scale))
        with pytest.raises(RuntimeError, match="not satisfied"):
            ezkl.mock(str(c.workdir / "w_witness.json"), str(c.compiled_path))
        return
    _assert_matches_witness(c, x, w)


# --------------------------------------------------------------------------- #
# rules that random inputs alone would not pin down
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("scale", [7, 10])
def test_parameter_ties(circuit, scale: int) -> None:
    """Weights/biases exactly on rounding ties: round half away from zero, Conv bias at 2S."""
    c = circuit("tie_params", scale)
    rng = np.random.default_rng(scale)
    for i in range(20):
        x = rng.uniform(-2, 2, size=c.shape)
        _assert_matches_witness(c, x, c.witness(x))


@pytest.mark.parametrize("scale", [7, 10])
def test_sigmoid_lookup_exhaustive(circuit, scale: int) -> None:
    """Every integer input of the sigmoid lookup (through saturation on both sides).
    Public visibility only to skip hashing 4096-element tensors; values do not depend on it."""
    c = circuit("sigmoid", scale, "public", "public")
    m = 2**scale
    half = int(m * (np.log(2 * m) + 3))
    for start in range(-half, half, 4096):
        q = np.arange(start, start + 4096)
        w = c.witness(q / m)
        np.testing.assert_array_equal(witness_inputs(w)[0], q)
        np.testing.assert_array_equal(c.program(q).ravel(), witness_outputs(w)[0])
    assert c.program(np.full((1, 4096), half)).max() == m
    assert c.program(np.full((1, 4096), -half)).max() == 0


@pytest.mark.parametrize(
    "patch",
    [
        {"_F32_LIMIT": 0.0},  # force float64 BLAS
        {"_F32_LIMIT": 0.0, "_F64_LIMIT": 0.0},  # force exact int64 everywhere
        {"DENSE_CONV_MAX": 0},  # im2col convolution instead of the dense matrix
    ],
    ids=["f64", "int64", "im2col"],
)
def test_every_numeric_path_is_exact(circuit, monkeypatch: pytest.MonkeyPatch, patch: dict) -> None:
    cases = [(n, s) for n in SMALL + ["residual", "act_matmul", "mlp_wide"] for s in (7, 10)]
    circuits = [circuit(n, s) for n, s in cases if n != "mlp_wide" or s == 7]
    for key, value in patch.items():
        target = FixedPointProgram if key == "DENSE_CONV_MAX" else fp
        monkeypatch.setattr(target, key, value)
    rng = np.random.default_rng(1)
    for c in circuits:
        prog = FixedPointProgram(c.onnx_path, c.settings)
        for i in range(3):
            x = rng.uniform(-3, 3, size=c.shape)
            w = c.witness(x)
            np.testing.assert_array_equal(prog(quantize(x, c.scale)).ravel(), witness_outputs(w)[0], err_msg=c.name)


def test_segments_chain_to_the_full_model(circuit, tmp_path: Path) -> None:
    """Cut the mlp after its first ReLU: each segment matches its own ezkl witness, and
    feeding segment 1's quantized output to segment 2 reproduces the full model exactly."""
    full = circuit("mlp", 7)
    model = onnx.load(str(full.onnx_path))
    hidden = next(n.output[0] for n in model.graph.node if n.op_type == "Relu")
    seg_paths = [tmp_path / "seg1.onnx", tmp_path / "seg2.onnx"]
    onnx.utils.extract_model(str(full.onnx_path), str(seg_paths[0]), ["input"], [hidden])
    onnx.utils.extract_model(str(full.onnx_path), str(seg_paths[1]), [hidden], ["output"])
    segs = []
    for i, p in enumerate(seg_paths):
        d = tmp_path / f"seg{i}"
        d.mkdir()
        run_args = ezkl.PyRunArgs()
        run_args.input_scale = run_args.param_scale = 7
        run_args.scale_rebase_multiplier = 1
        run_args.input_visibility, run_args.output_visibility, run_args.param_visibility = "hashed", "hashed", "fixed"
        assert ezkl.gen_settings(str(p), str(d / "settings.json"), py_run_args=run_args)
        shape = FixedPointProgram(p, d / "settings.json").input_shapes[0]
        (d / "cal.json").write_text(json.dumps({"input_data": [np.random.default_rng(0).uniform(0, 2, (8,) + shape[1:]).ravel().tolist()]}))
        ezkl.calibrate_settings(str(d / "cal.json"), str(p), str(d / "settings.json"), "resources", scales=[7], scale_rebase_multiplier=[1])
        assert ezkl.compile_circuit(str(p), str(d / "model.compiled"), str(d / "settings.json"))
        st_ = json.loads((d / "settings.json").read_text())
        segs.append(Circuit(f"seg{i}", 7, shape, p, d / "settings.json", d / "model.compiled", st_, FixedPointProgram(p, st_), "hashed", d))
    rng = np.random.default_rng(2)
    for _ in range(10):
        x = rng.uniform(-2, 2, size=full.shape)
        h = _assert_matches_witness(segs[0], x, segs[0].witness(x))
        h_float = dequantize(h, 7)  # what the next segment's prover is given
        y = _assert_matches_witness(segs[1], h_float, segs[1].witness(h_float))
        np.testing.assert_array_equal(y.ravel(), witness_outputs(full.witness(x))[0])
        # the boundary commitment is the same value on both sides of the cut
        assert poseidon_commitment(h) == witness_commitments(segs[1].witness(h_float), "inputs")[0]


# --------------------------------------------------------------------------- #
# commitments, field encoding, quantization
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", ["mlp", "generator"])
def test_one_lsb_change_changes_the_commitment(circuit, name: str) -> None:
    c = circuit(name, 7)
    x = np.random.default_rng(3).uniform(-2, 2, size=c.shape)
    w = c.witness(x)
    y = _assert_matches_witness(c, x, w).ravel()
    reference = witness_commitments(w, "outputs")[0]
    seen = {reference}
    for i in range(y.size):
        for delta in (1, -1):
            z = y.copy()
            z[i] += delta
            h = poseidon_commitment(z)
            assert h != reference, (i, delta)
            seen.add(h)
    assert len(seen) == 2 * y.size + 1
    # same for the input commitment
    xq = quantize(x, c.scale).ravel()
    for i in range(xq.size):
        z = xq.copy()
        z[i] += 1
        assert poseidon_commitment(z) != witness_commitments(w, "inputs")[0]


@settings(max_examples=500, deadline=None, database=None)
@given(x=st.one_of(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6, width=32), st.integers(-(2**20), 2**20).map(lambda k: k / 2**11)), scale=st.integers(0, 16))
def test_quantize_matches_ezkl_float_to_felt(x: float, scale: int) -> None:
    expected = ezkl.felt_to_int(ezkl.float_to_felt(x, scale, ezkl.PyInputType.F32))
    assert int(quantize(np.array([x]), scale)[0]) == expected


def test_quantize_rounds_half_away_from_zero_after_f32() -> None:
    np.testing.assert_array_equal(quantize(np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49]) / 128, 7), [1, -1, 2, -2, 3, -3, 0])
    # 1/256 - 1e-17 is below the tie in float64 but exactly the tie in float32
    assert quantize(np.array([-(1 / 256 - 1e-17)]), 7)[0] == -1
    np.testing.assert_array_equal(dequantize(np.array([-3, 128]), 7), [-3 / 128, 1.0])


@settings(max_examples=300, deadline=None, database=None)
@given(v=st.integers(-(2**126), 2**126))
def test_felt_encoding_matches_ezkl(v: int) -> None:
    felt = int_to_felt(v)
    assert ezkl.felt_to_int(felt) == v == felt_to_int(felt)
    assert felt_to_int(ezkl.felt_to_big_endian(felt)) == v


def test_poseidon_commitment_encoding() -> None:
    q = np.array([[3, -1], [0, 200]])
    assert poseidon_commitment(q) == ezkl.poseidon_hash([int_to_felt(v) for v in (3, -1, 0, 200)])[0]
    assert poseidon_commitment(q) != poseidon_commitment(q.T)


# --------------------------------------------------------------------------- #
# API surface
# --------------------------------------------------------------------------- #
def test_run_fixed_point_accepts_paths_and_protos(circuit) -> None:
    c = circuit("cnn", 7)
    xq = quantize(np.random.default_rng(4).uniform(-2, 2, size=c.shape), 7)
    expected = c.program(xq)
    np.testing.assert_array_equal(run_fixed_point(c.onnx_path, c.settings_path, xq), expected)
    np.testing.assert_array_equal(run_fixed_point(onnx.load(str(c.onnx_path)), c.settings, xq.ravel()), expected)
    assert c.program.output_scales == [7] and c.program.input_shapes == [c.shape]
    with pytest.raises(TypeError):
        c.program(xq.astype(np.float64))
    with pytest.raises(ValueError):
        c.program(xq.ravel()[:-1])


def test_unsupported_op_names_node_and_op(tmp_path: Path) -> None:
    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    path = tmp_path / "sin.onnx"
    torch.onnx.export(nn.Sequential(nn.Linear(4, 4), Sine()), torch.randn(1, 4), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["output"])  # fmt: skip
    node = next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Sin")
    settings_ = {"run_args": {"input_scale": 7, "param_scale": 7, "scale_rebase_multiplier": 1}}
    with pytest.raises(NotImplementedError, match=rf"{node}.*Sin"):
        FixedPointProgram(path, settings_)


@pytest.mark.slow
def test_speed_vs_onnxruntime(circuit) -> None:
    """Target: the numpy executor is at most 3x onnxruntime's float time on mlp_wide."""
    import onnxruntime as ort

    c = circuit("mlp_wide", 7)
    x = np.random.default_rng(0).uniform(-2, 2, size=c.shape).astype(np.float32)
    xq = quantize(x, 7)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(c.onnx_path), opts, providers=["CPUExecutionProvider"])

    def best(f, n=300, reps=7):
        f()
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(n):
                f()
            out.append((time.perf_counter() - t) / n)
        return min(out)

    t_ort = best(lambda: sess.run(None, {"input": x}))
    t_np = best(lambda: c.program(xq))
    assert t_np <= 3 * t_ort, (t_np, t_ort)
