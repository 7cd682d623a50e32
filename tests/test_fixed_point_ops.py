"""Per-op bit-exactness of the numpy fixed-point executor against ``ezkl.gen_witness`` (ezkl 23.0.5).

Each model is a tiny torch module built around one op (as torch exports it), compiled by ezkl
(gen_settings -> calibrate_settings -> compile_circuit) and compared on seeded random and edge
inputs.  Default tier: 24 random + 6 edge inputs per model at scale 7; ``-m slow`` adds 180 more
(60 at each of scales 5, 8, 10; 84 for LayerNorm models).  Random inputs mix uniform floats, exact
quantization ties, f32 normals and tiny values.  Where gen_witness has no witness (a decomposition
overflow, e.g. rsqrt of a zero variance) the executor must raise UnprovableClaimError.  Lookup ops
(Tanh, Erf, Exp) are also swept exhaustively over their whole lookup table, both ends included.
Two composite models (a pre-LN transformer block and a ResNet basic block) check the ops together.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ezkl
import numpy as np
import pytest
import torch
from torch import nn

from helpers import float_witness
from imo.circuits.fixed_point import FixedPointProgram, quantize, witness_inputs, witness_outputs
from imo.errors import UnprovableClaimError


class _Fn(nn.Module):
    def __init__(self, fn: Callable, **params: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for k, v in params.items():
            self.register_buffer(k, v)

    def forward(self, x):
        return self.fn(self, x)


def _vec(n: int, seed: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(lo, hi, n).astype(np.float32))


def _ln_affine(n: int) -> nn.Module:
    ln = nn.LayerNorm(n)
    with torch.no_grad():
        ln.weight.copy_(_vec(n, 3, 0.5, 1.5))
        ln.bias.copy_(_vec(n, 4, -0.5, 0.5))
    return ln


def _bn(c: int) -> nn.Module:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.copy_(_vec(c, 5, 0.5, 1.5))
        bn.bias.copy_(_vec(c, 6, -0.5, 0.5))
        bn.running_mean.copy_(_vec(c, 7, -0.5, 0.5))
        bn.running_var.copy_(_vec(c, 8, 0.5, 2.0))
    return bn


def _ln_decomposed(x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    d = x - mu
    var = d.pow(2).mean(-1, keepdim=True)
    return d / torch.sqrt(var + 1e-5)


class _Attention(nn.Module):
    """A pre-LN transformer block: LayerNorm, q/k/v, q @ k^T / sqrt(d), Softmax, @ v, GELU MLP, residuals."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.d = d

    def forward(self, x):
        h = self.ln1(x)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / self.d**0.5, dim=-1)
        x = x + self.o(att @ self.v(h))
        return x + self.mlp(self.ln2(x))


class _ResBlock(nn.Module):
    """Conv-BN-ReLU, Conv-BN + identity, ReLU, MaxPool, GlobalAveragePool, Linear."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1), _bn(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1), _bn(c)
        self.pool, self.fc = nn.MaxPool2d(3, stride=2, padding=1), nn.Linear(c, 3)

    def forward(self, x):
        x = self.pool(torch.relu(self.stem(x)))
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        y = torch.relu(y + x)
        return self.fc(y.mean((2, 3)))


N = 64
#: ops whose model input is int64 token ids (-> ezkl scale 0): name -> vocabulary size
VOCAB = {"embedding": 50}
#: name -> (module factory, input shape, calibration half-width)
OPS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], float]] = {
    "tanh": (lambda: nn.Tanh(), (1, N), 4.0),
    # const (param scale + rebase), 0.25 (ezkl: Identity raising the scale by 2), act x act of
    # different scales (9 + 7), negative const
    "mul": (lambda: _Fn(lambda m, x: ((x * 1.7) * 0.25) * x * -0.3), (1, N), 2.0),
    "mul_vec": (lambda: _Fn(lambda m, x: x * m.w, w=_vec(N, 1, -2, 2)), (1, N), 2.0),
    "square": (lambda: _Fn(lambda m, x: x * x), (1, N), 2.0),
    "mul_acts": (lambda: _Fn(lambda m, x: x * torch.tanh(x)), (1, N), 4.0),
    # act - const vector, const - act, act - act, act - act of a different scale (x * 0.5: scale+1)
    "sub": (lambda: _Fn(lambda m, x: ((0.7 - (x - m.c)) - torch.tanh(x)) - x * 0.5, c=_vec(N, 2)), (1, N), 4.0),
    # Div by a constant: tract turns it into Mul by the f32 reciprocal (/2 -> Identity scale+1)
    "div": (lambda: _Fn(lambda m, x: x / 3.0 + x / 1.4142135 + x / 2.0 + x / 0.3 + x / -7.0), (1, N), 2.0),
    "erf": (lambda: _Fn(lambda m, x: torch.erf(x)), (1, N), 4.0),
    "gelu": (lambda: nn.GELU(), (1, N), 4.0),
    "gelu_tanh": (lambda: nn.GELU(approximate="tanh"), (1, N), 4.0),
    "exp": (lambda: _Fn(lambda m, x: torch.exp(x)), (1, N), 3.0),
    "softmax": (lambda: nn.Softmax(-1), (1, 4, 16), 4.0),
    "softmax_scaled": (lambda: _Fn(lambda m, x: torch.softmax(x * 3.0, dim=-1)), (1, 8, 8), 3.0),
    "reduce_sum": (lambda: _Fn(lambda m, x: x.sum(-1, keepdim=True) + x.sum(1).sum(-1)), (1, 4, 8), 2.0),
    "reduce_mean": (lambda: _Fn(lambda m, x: x.mean(-1)), (1, 4, 8), 2.0),
    "reduce_mean_odd": (lambda: _Fn(lambda m, x: x.mean(-1, keepdim=True) + x.mean(1, keepdim=True)), (1, 6, 12), 2.0),
    "global_avg_pool": (lambda: nn.AdaptiveAvgPool2d(1), (1, 3, 4, 4), 2.0),
    "global_avg_pool_odd": (lambda: nn.AdaptiveAvgPool2d(1), (1, 3, 7, 7), 2.0),
    "max_pool": (lambda: nn.MaxPool2d(2), (1, 3, 6, 6), 2.0),
    "max_pool_pad": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 7, 7), 2.0),
    "avg_pool": (lambda: nn.AvgPool2d(2), (1, 3, 6, 6), 2.0),
    "avg_pool_pad": (lambda: nn.AvgPool2d(3, stride=1, padding=1), (1, 2, 5, 5), 2.0),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), (1, N), 2.0),
    "leaky_relu_big": (lambda: nn.LeakyReLU(0.37), (1, N), 2.0),
    "clip": (lambda: _Fn(lambda m, x: torch.clamp(x, -1.0, 0.5)), (1, N), 2.0),
    "relu6": (lambda: _Fn(lambda m, x: nn.functional.relu6(x * 4.0)), (1, N), 2.0),
    "layer_norm": (lambda: nn.LayerNorm(8), (1, 4, 8), 3.0),
    "layer_norm_affine": (lambda: _ln_affine(12), (1, 3, 12), 3.0),
    "concat": (lambda: _Fn(lambda m, x: torch.cat([x, x * 0.5, torch.tanh(x), m.c], -1), c=_vec(16, 9).reshape(1, 2, 8)), (1, 2, 8), 2.0),
    "slice": (lambda: _Fn(lambda m, x: x[:, 1:5] + x[:, ::2][:, :4] - x[:, -4:]), (1, 16), 2.0),
    # Split (sizes as a constant input): q, k, v recombined; an even split of a scale-8 tensor (x * 0.5:
    # ezkl does not rebase the pieces, so a * b is at scale 16, rounded once) and an uneven one on another axis
    "split": (lambda: _Fn(lambda m, x: (lambda q, k, v: q * k + v)(*x.split(8, dim=-1))), (1, 2, 24), 2.0),
    "split_axes": (lambda: _Fn(lambda m, x: (lambda a, b, c, d: torch.cat([a * b, b], 1) + torch.cat([d, c], -1))(
        *(x * 0.5).split(4, dim=1), *x.split([3, 1], dim=-1))), (1, 8, 4), 2.0),
    "squeeze": (lambda: _Fn(lambda m, x: (x * 0.5).unsqueeze(1).squeeze(0) + x.unsqueeze(-1).squeeze(-1)), (1, 8), 2.0),
    "expand": (lambda: _Fn(lambda m, x: x.unsqueeze(1).expand(1, 3, 8) * m.w, w=_vec(24, 10).reshape(1, 3, 8)), (1, 8), 2.0),
    "batch_norm": (lambda: _bn(3), (1, 3, 4, 4), 2.0),
    "layer_norm_decomposed": (lambda: _Fn(lambda m, x: _ln_decomposed(x)), (1, 4, 8), 3.0),
    "layer_norm_decomposed_odd": (lambda: _Fn(lambda m, x: _ln_decomposed(x) * m.g, g=_vec(12, 11)), (1, 3, 12), 3.0),
    "sqrt": (lambda: _Fn(lambda m, x: torch.sqrt(x * x + 0.1)), (1, N), 2.0),
    "div_acts": (lambda: _Fn(lambda m, x: x / (x * x + 1.0)), (1, N), 2.0),
    "embedding": (lambda: nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 4)), (1, 6), 0.0),
    "gather_const_idx": (lambda: _Fn(lambda m, x: x[:, 0] * 0.5 + x[:, 2] + x[:, -1, 3:5].sum(-1, keepdim=True)), (1, 3, 8), 2.0),
    "where": (lambda: _Fn(lambda m, x: torch.where(x > 0.2, x, m.w) + torch.where(x <= -0.5, x * 0.5, torch.tanh(x)), w=_vec(N, 12)), (1, N), 2.0),
    # Reciprocal, GreaterOrEqual / Equal masks cast to float (scale 0) and used arithmetically
    "masks_recip": (lambda: _Fn(lambda m, x: torch.reciprocal(x * x + 0.5) + (x >= 0.25).float() * x + (x == 0.5).float()), (1, N), 2.0),
    "transformer_block": (lambda: _Attention(), (1, 4, 8), 2.0),
    "resnet_block": (lambda: _ResBlock(), (1, 1, 8, 8), 2.0),
    "matmul_acts": (lambda: _Fn(lambda m, x: torch.matmul(x, x.transpose(1, 2))), (1, 4, 8), 2.0),
}


@dataclass
class Circuit:
    name: str
    scale: int
    shape: tuple[int, ...]
    compiled_path: Path
    settings: dict
    program: FixedPointProgram
    workdir: Path

    def witness(self, x: np.ndarray, tag: str = "w") -> dict:
        return float_witness(self.compiled_path, self.workdir, x, tag)


def _build(root: Path, name: str, scale: int, make: Callable[[], nn.Module], shape: tuple[int, ...], span: float) -> Circuit:
    workdir = root / f"{name}_s{scale}"
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = make().eval()
    onnx_path = workdir / "model.onnx"
    vocab = VOCAB.get(name.rsplit("_", 1)[0])
    dummy = torch.randint(0, vocab, shape) if vocab else torch.randn(*shape)
    torch.onnx.export(model, dummy, str(onnx_path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])  # fmt: skip
    run_args = ezkl.PyRunArgs()
    run_args.input_scale = run_args.param_scale = scale
    run_args.scale_rebase_multiplier = 1
    # public in/out: no Poseidon hashing (commitments are covered by test_fixed_point.py); public
    # outputs are range-checked, which the executor enforces too
    run_args.input_visibility, run_args.output_visibility, run_args.param_visibility = "public", "public", "fixed"
    settings_path = workdir / "settings.json"
    assert ezkl.gen_settings(str(onnx_path), str(settings_path), py_run_args=run_args)
    calib = np.random.default_rng(0).uniform(-span, span, size=(8,) + shape[1:])
    calib.reshape(8, -1)[0, :2] = (-span, span)
    if vocab:
        calib = np.random.default_rng(0).integers(0, vocab, size=(8,) + shape[1:]).astype(np.float64)
    cal_path = workdir / "calibration.json"
    cal_path.write_text(json.dumps({"input_data": [calib.ravel().tolist()]}))
    ezkl.calibrate_settings(str(cal_path), str(onnx_path), str(settings_path), "resources", scales=[scale], scale_rebase_multiplier=[1])
    compiled_path = workdir / "model.compiled"
    assert ezkl.compile_circuit(str(onnx_path), str(compiled_path), str(settings_path))
    st = json.loads(settings_path.read_text())
    assert st["run_args"]["param_scale"] == scale and (vocab or st["run_args"]["input_scale"] == scale)
    assert st["model_input_scales"] == [0 if vocab else scale]
    return Circuit(name, scale, shape, compiled_path, st, FixedPointProgram(onnx_path, st), workdir)


@pytest.fixture(scope="module")
def circuit(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Circuit]:
    root = tmp_path_factory.mktemp("fixed_point_ops")
    cache: dict[tuple, Circuit] = {}

    def get(name: str, scale: int, shape: tuple[int, ...] | None = None, span: float | None = None) -> Circuit:
        make, shape0, span0 = OPS[name]
        key = (name, scale, shape, span)
        if key not in cache:
            cache[key] = _build(root, f"{name}_{len(cache)}", scale, make, shape or shape0, span or span0)
        return cache[key]

    return get


def _assert_matches(c: Circuit, x: np.ndarray) -> np.ndarray | None:
    """The executor's output equals the witness' -- or, where gen_witness finds no witness (a value
    over the decomposition range), the executor raises UnprovableClaimError."""
    xq = quantize(x, c.program.input_scales[0])
    try:
        w = c.witness(x)
    except RuntimeError as e:
        assert "synthesis" in str(e), e
        with pytest.raises(UnprovableClaimError):
            c.program(xq)
        return None
    np.testing.assert_array_equal(witness_inputs(w)[0], xq.ravel(), err_msg="input quantization")
    y = c.program(xq)
    assert y.dtype == np.int64 and y.shape == c.program.output_shapes[0]
    np.testing.assert_array_equal(y.ravel(), witness_outputs(w)[0], err_msg=f"{c.name} S={c.scale}")
    return y


def _random_inputs(shape: tuple[int, ...], scale: int, n: int, seed: int, span: float = 2.0, vocab: int | None = None):
    """Mixed random inputs: uniform floats, exact quantization ties (k + 1/2) / 2**scale, small values
    (token ids in [0, vocab) for integer-input models)."""
    rng = np.random.default_rng(seed)
    if vocab:
        for i in range(n):
            yield rng.integers(0, vocab, shape).astype(np.float64)
        return
    tie = 1.0 / 2 ** (scale + 1)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            yield rng.uniform(-span, span, shape)
        elif kind == 1:
            yield (2 * rng.integers(-int(span * 2**scale), int(span * 2**scale), shape) + 1) * tie
        elif kind == 2:
            yield rng.normal(0, span / 3, shape).clip(-span, span).astype(np.float32).astype(np.float64)
        else:
            yield rng.integers(-8, 8, shape) * tie


EDGES: dict[str, Callable[[int, int], np.ndarray]] = {
    "zeros": lambda n, s: np.zeros(n),
    "max": lambda n, s: np.full(n, 2.0),
    "min": lambda n, s: np.full(n, -2.0),
    "ties": lambda n, s: (np.arange(n) - n / 2 + 0.5) / 2**s,
    "tiny": lambda n, s: np.full(n, 1e-30),
    "ladder": lambda n, s: np.linspace(-2, 2, n),
}

DEFAULT_SCALE = 7
#: models where some random inputs have no witness (rsqrt of a variance that rounds to 0)
UNPROVABLE_SOMETIMES = {"layer_norm", "layer_norm_affine", "layer_norm_decomposed", "layer_norm_decomposed_odd", "transformer_block"}


@pytest.mark.parametrize("name", list(OPS))
def test_op_matches_witness(circuit, name: str) -> None:
    c = circuit(name, DEFAULT_SCALE)
    n = int(np.prod(c.shape))
    vocab = VOCAB.get(name)
    inputs = _random_inputs(c.shape, c.scale, 24, seed=zlib.crc32(name.encode()), vocab=vocab)
    matched = sum(_assert_matches(c, x) is not None for x in inputs)
    assert matched >= 12, f"only {matched} of 24 random inputs had a witness"
    edges = [np.zeros(n), np.full(n, vocab - 1.0), np.arange(n) % vocab] if vocab else [e(n, c.scale) for e in EDGES.values()]
    for x in edges:
        _assert_matches(c, x.reshape(c.shape))


@pytest.mark.slow
@pytest.mark.parametrize("scale", [5, 8, 10])
@pytest.mark.parametrize("name", list(OPS))
def test_op_matches_witness_slow(circuit, name: str, scale: int) -> None:
    c = circuit(name, scale)
    # LayerNorm models: a quarter of the inputs (tiny values) have variance 0 -> no witness; run more
    n = 84 if name in UNPROVABLE_SOMETIMES else 60
    inputs = _random_inputs(c.shape, c.scale, n, seed=scale, vocab=VOCAB.get(name))
    matched = sum(_assert_matches(c, x) is not None for x in inputs)
    assert matched >= n // 2, f"only {matched} of {n} random inputs had a witness"


LOOKUPS = ["tanh", "erf", "exp"]


@pytest.mark.parametrize("scale", [7, 10])
@pytest.mark.parametrize("name", LOOKUPS)
def test_lookup_exhaustive(circuit, name: str, scale: int) -> None:
    """Every integer in the circuit's lookup table (both ends included), through saturation."""
    n = 4096
    c = circuit(name, scale, (1, n), 3.0 if name == "exp" else 6.0)
    lo, top = c.program.limits.lookup
    ra_lo, ra_hi = c.settings["run_args"]["lookup_range"]
    assert lo == ra_lo and top >= ra_hi
    q_all = np.arange(lo, ra_hi + 1)
    for start in range(0, q_all.size, n):
        q = q_all[start : start + n]
        q = np.concatenate([q, np.full(n - q.size, ra_hi)])
        w = c.witness(q / 2.0**scale)
        np.testing.assert_array_equal(witness_inputs(w)[0], q)
        np.testing.assert_array_equal(c.program(q.reshape(1, n)).ravel(), witness_outputs(w)[0])
    # the last table entry is fine (exp of it overflows int64: unsupported), one past it has no proof
    if name == "exp":
        with pytest.raises(OverflowError):
            c.program(np.full((1, n), top))
    else:
        c.program(np.full((1, n), top))
    with pytest.raises(UnprovableClaimError, match=rf"op {name.capitalize()}.*lookup input"):
        c.program(np.full((1, n), top + 1))
    with pytest.raises(UnprovableClaimError, match="lookup input"):
        c.program(np.full((1, n), lo - 1))


def test_mul_by_power_of_two_fraction_only_raises_the_scale(circuit) -> None:
    """ezkl loads ``x * 2**-k`` (and ``x / 2**k``) as an Identity with out_scale + k: no rounding."""
    c = circuit("gelu", DEFAULT_SCALE)
    assert c.program.output_scales == [DEFAULT_SCALE + 1] == c.settings["model_output_scales"]


@pytest.mark.parametrize("name", ["softmax", "tanh"])
def test_lookup_input_outside_the_table_is_unprovable(circuit, name: str) -> None:
    """Out of the calibrated range gen_witness still writes a witness, but no proof exists (mock
    fails on the lookup); the executor refuses instead of returning a value."""
    c = circuit(name, DEFAULT_SCALE)
    n = int(np.prod(c.shape))
    x = np.where(np.arange(n) % 2, 50.0, -50.0).reshape(c.shape)
    c.witness(x)
    with pytest.raises(UnprovableClaimError, match=rf"op {name.capitalize()}.*lookup input"):
        c.program(quantize(x, c.scale))
    with pytest.raises(RuntimeError, match="not satisfied"):
        ezkl.mock(str(c.workdir / "w_witness.json"), str(c.compiled_path))
