"""Every claim the native executor accepts is provable by ezkl, and boundaries reach ezkl exactly.

* ``write_quantized_input`` hands ezkl already-quantized field elements: same witness as the float
  path for small values, the exact value (and commitment) for ``|q| >= 2**24`` where floats round
  through f32; for hashed and public input visibility.
* The executor enforces the circuit's limits (``CircuitLimits``): it raises ``UnprovableClaimError``
  exactly where ``gen_witness`` (range-check decomposition) or ``mock`` (lookup table) fails.
* ``call_ezkl`` turns a Rust panic (pyo3 ``PanicException``, a ``BaseException``) into ``ProofError``.
* Calibration leaves a lookup margin wide enough for the gen model's in-distribution inputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import ezkl
import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fixed_point import MODELS, Circuit
from torch import nn

from imo.circuits.fixed_point import (
    FixedPointProgram,
    int_to_felt,
    limits_from_settings,
    poseidon_commitment,
    quantize,
    witness_commitments,
    witness_inputs,
    witness_outputs,
)
from imo.errors import ProofError, UnprovableClaimError
from imo.proving.circuit import LOOKUP_SAFETY_MARGIN, write_input, write_quantized_input
from imo.proving.native import call_ezkl

B = 16384**2 - 1  # ezkl 23's default decomposition range: 2 legs of base 16384


# --------------------------------------------------------------------------- #
# circuits: the test_fixed_point models plus tiny ones that put each limit on a known input
# --------------------------------------------------------------------------- #
class _AddThen(nn.Module):
    """``l(x) + x`` with ``l`` the identity: an Add (no rebase) doubles the input; optionally a ReLU after it."""

    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.l, self.relu = nn.Linear(4, 4), relu
        with torch.no_grad():
            self.l.weight.copy_(torch.eye(4))
            self.l.bias.zero_()

    def forward(self, x):
        y = self.l(x) + x
        return torch.relu(y) if self.relu else y


def _scaled_identity(k: float, then: nn.Module | None = None) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        lin = nn.Linear(4, 4)
        with torch.no_grad():
            lin.weight.copy_(torch.eye(4) * k)
            lin.bias.zero_()
        return nn.Sequential(lin, then) if then is not None else lin

    return make


CUSTOM: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "add_relu": (lambda: _AddThen(relu=True), (1, 4)),  # ReLU input 2x, never rebased
    "add_out": (lambda: _AddThen(relu=False), (1, 4)),  # output 2x, never rebased
    "gemm8": (_scaled_identity(8.0), (1, 4)),  # rebase quotient 8x
    "gemm_sigmoid": (_scaled_identity(1.0, nn.Sigmoid()), (1, 4)),  # Sigmoid lookup of x
}


def _compile(root: Path, name: str, input_visibility: str, output_visibility: str, scale: int = 7) -> Circuit:
    make, shape = {**MODELS, **CUSTOM}[name]
    workdir = root / f"{name}_{input_visibility}_{output_visibility}"
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    onnx_path = workdir / "model.onnx"
    torch.onnx.export(make().eval(), torch.randn(*shape), str(onnx_path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])  # fmt: skip
    run_args = ezkl.PyRunArgs()
    run_args.input_scale = run_args.param_scale = scale
    run_args.scale_rebase_multiplier = 1
    run_args.input_visibility, run_args.output_visibility, run_args.param_visibility = input_visibility, output_visibility, "fixed"
    settings_path = workdir / "settings.json"
    call_ezkl("settings", ezkl.gen_settings, str(onnx_path), str(settings_path), py_run_args=run_args)
    calibration = np.random.default_rng(0).uniform(-1 if name in CUSTOM else -2, 1 if name in CUSTOM else 2, (8,) + shape[1:])
    write_input(workdir / "calibration.json", calibration)
    call_ezkl("calibrate", ezkl.calibrate_settings, str(workdir / "calibration.json"), str(onnx_path), str(settings_path), "resources",
              scales=[scale], scale_rebase_multiplier=[1])  # fmt: skip
    compiled = workdir / "model.compiled"
    call_ezkl("compile", ezkl.compile_circuit, str(onnx_path), str(compiled), str(settings_path))
    st_ = json.loads(settings_path.read_text())
    return Circuit(name, scale, shape, onnx_path, settings_path, compiled, st_, FixedPointProgram(onnx_path, st_), output_visibility, workdir)


@pytest.fixture(scope="module")
def circuit(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Circuit]:
    root = tmp_path_factory.mktemp("provable")
    cache: dict[tuple, Circuit] = {}

    def get(name: str, input_visibility: str = "hashed", output_visibility: str = "hashed") -> Circuit:
        key = (name, input_visibility, output_visibility)
        if key not in cache:
            cache[key] = _compile(root, name, input_visibility, output_visibility)
        return cache[key]

    return get


def _witness(c: Circuit, q: np.ndarray, tag: str = "q") -> dict:
    """gen_witness from quantized field elements, as the prover and the fraud proof get them."""
    write_quantized_input(c.workdir / f"{tag}_input.json", q)
    return call_ezkl("witness", ezkl.gen_witness, str(c.workdir / f"{tag}_input.json"), str(c.compiled_path), str(c.workdir / f"{tag}_witness.json"))


def _mock(c: Circuit, tag: str = "q") -> None:
    assert call_ezkl("mock", ezkl.mock, str(c.workdir / f"{tag}_witness.json"), str(c.compiled_path)) is True


def _provable(c: Circuit, q: np.ndarray) -> tuple[dict | None, str]:
    """(witness, "") if ezkl can prove q, else (witness or None, why not)."""
    try:
        w = _witness(c, q)
    except ProofError as exc:
        return None, str(exc)
    try:
        _mock(c)
    except ProofError as exc:
        return w, str(exc)
    return w, ""


# --------------------------------------------------------------------------- #
# 12: boundaries cross into ezkl as exact field elements
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("visibility", ["hashed", "public"])
def test_quantized_input_reaches_ezkl_exactly(circuit, visibility: str) -> None:
    c = circuit("segment", visibility, "hashed")
    rng = np.random.default_rng(5)
    # small values: the field-element file gives exactly the float path's witness (no rescaling)
    for _ in range(3):
        x = rng.uniform(-2, 2, size=c.shape)
        write_input(c.workdir / "f_input.json", x)
        w_float = call_ezkl("witness", ezkl.gen_witness, str(c.workdir / "f_input.json"), str(c.compiled_path), str(c.workdir / "f_witness.json"))
        assert _witness(c, quantize(x, c.scale)) == w_float
    # |q| >= 2**24: the float path rounds through f32, the field elements arrive exactly
    q = rng.integers(-300, 300, size=c.shape)
    q.flat[:4] = [26454289, -(2**24 + 1), B, -B]
    write_input(c.workdir / "f_input.json", q / 2.0**c.scale)
    with pytest.raises(ProofError, match="ezkl witness failed"):  # B rounds up to 2**28 in f32: out of range
        call_ezkl("witness", ezkl.gen_witness, str(c.workdir / "f_input.json"), str(c.compiled_path), str(c.workdir / "f_witness.json"))
    write_input(c.workdir / "f_input.json", np.where(np.abs(q) == B, 0, q) / 2.0**c.scale)
    w_float = call_ezkl("witness", ezkl.gen_witness, str(c.workdir / "f_input.json"), str(c.compiled_path), str(c.workdir / "f_witness.json"))
    np.testing.assert_array_equal(witness_inputs(w_float)[0][:2], [26454288, -(2**24)])  # what floats make of them
    w = _witness(c, q)
    _mock(c)
    np.testing.assert_array_equal(witness_inputs(w)[0], q.ravel())
    np.testing.assert_array_equal(witness_outputs(w)[0], c.program(q).ravel())
    if visibility == "hashed":
        assert witness_commitments(w, "inputs")[0] == poseidon_commitment(q) != witness_commitments(w_float, "inputs")[0]
    assert poseidon_commitment(c.program(q)) == witness_commitments(w, "outputs")[0]


def test_write_quantized_input_format(tmp_path: Path) -> None:
    write_quantized_input(tmp_path / "q.json", np.array([[3, -1], [0, 2**40]]))
    (row,) = json.loads((tmp_path / "q.json").read_text())["input_data"]
    assert row == [int_to_felt(v) for v in (3, -1, 0, 2**40)]
    assert [ezkl.felt_to_int(f) for f in row] == [3, -1, 0, 2**40]
    with pytest.raises(TypeError):
        write_quantized_input(tmp_path / "q.json", np.array([0.5]))


# --------------------------------------------------------------------------- #
# 13: the executor refuses exactly what ezkl cannot prove
# --------------------------------------------------------------------------- #
def test_limits_from_a_real_settings_file(circuit) -> None:
    c = circuit("gemm_sigmoid")
    ra = c.settings["run_args"]
    assert (ra["decomp_base"], ra["decomp_legs"], ra["ignore_range_check_inputs_outputs"]) == (16384, 2, False)
    limits = limits_from_settings(c.settings_path)
    assert limits.decomp_bound == B and limits.range_check_inputs and not limits.range_check_outputs
    lo, hi = ra["lookup_range"]
    assert limits.lookup == (lo, lo + 2 ** ra["logrows"] - 8 - 1) and limits.lookup[1] > hi  # the table is filled past hi
    assert limits_from_settings(circuit("add_out", "hashed", "public").settings).range_check_outputs


# (circuit, visibility, input that crosses the limit by one, the limit's message)
REFUSED = [
    ("add_out", ("hashed", "hashed"), [B + 1, 0, 0, 0], r"model input 'input': value at element 0 is 268435456, outside \[-268435455, 268435455\]"),
    ("add_out", ("public", "hashed"), [0, -(B + 1), 0, 0], r"model input 'input': value at element 1 is -268435456"),
    ("gemm8", ("hashed", "hashed"), [0, 0, 2**25, 0], r"node '[^']*Gemm[^']*' \(op Gemm\): rebased value \(divided by 2\^7\) at element 2 is 268435456"),
    ("add_relu", ("hashed", "hashed"), [-(2**27), 0, 0, 0], r"node '[^']*Relu[^']*' \(op Relu\): input at element 0 is -268435456"),
    ("add_out", ("hashed", "public"), [0, 0, 0, 2**27], r"model output 'output': value at element 3 is 268435456"),
]


@pytest.mark.parametrize(("name", "visibility", "q", "message"), REFUSED, ids=[f"{r[0]}-{'-'.join(r[1])}-{i}" for i, r in enumerate(REFUSED)])
def test_executor_refuses_what_gen_witness_refuses(circuit, name: str, visibility: tuple[str, str], q: list[int], message: str) -> None:
    c = circuit(name, *visibility)
    over = np.array([q], dtype=np.int64)
    under = over - np.sign(over)  # one step back inside the limit
    with pytest.raises(UnprovableClaimError, match=message) as err:
        c.program(over)
    assert "no proof of this claim can exist" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ProofError, match="ezkl witness failed"):
        _witness(c, over)
    w = _witness(c, under)  # and the value next to it is accepted and provable
    _mock(c)
    np.testing.assert_array_equal(witness_outputs(w)[0], c.program(under).ravel())


def test_executor_refuses_lookups_outside_the_table(circuit) -> None:
    """gen_witness fills in any lookup, mock finds it unsatisfied: both ends of the table, to the element."""
    c = circuit("gemm_sigmoid")
    lo, top = c.program.limits.lookup
    for inside, outside in ((lo, lo - 1), (top, top + 1)):
        c.program(np.array([[0, inside, 0, 0]]))
        _witness(c, np.array([[0, inside, 0, 0]]))
        _mock(c)
        with pytest.raises(UnprovableClaimError, match=rf"\(op Sigmoid\): lookup input at element 1 is {outside}, outside \[{lo}, {top}\]"):
            c.program(np.array([[0, outside, 0, 0]]))
        _witness(c, np.array([[0, outside, 0, 0]]))  # the witness exists ...
        with pytest.raises(ProofError, match="ezkl mock failed"):
            _mock(c)  # ... but no proof does


SPECIAL = [0, 1, -1, B, -B, B + 1, -(B + 1), 2**27, -(2**27), 2**27 - 1, 2**25, -(2**25), 2**24 + 1, 26454289]


@st.composite
def _quantized_inputs(draw: st.DrawFn, size: int) -> np.ndarray:
    """Integers of one magnitude 2**k per example (k up to 31, so every limit is crossed both ways, small k
    more often), with up to two elements set to the exact limits or to values floats could not carry."""
    k = draw(st.one_of(st.integers(0, 12), st.integers(0, 31)))
    q = draw(st.lists(st.integers(-(2**k), 2**k), min_size=size, max_size=size))
    for _ in range(draw(st.integers(0, 2))):
        q[draw(st.integers(0, size - 1))] = draw(st.sampled_from(SPECIAL))
    return np.array(q, dtype=np.int64)


def _every_accepted_claim_is_provable(c: Circuit, max_examples: int, derandomize: bool) -> dict[str, int]:
    seen = {"accepted": 0, "refused": 0}

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(q=_quantized_inputs(int(np.prod(c.shape))))
    def check(q: np.ndarray) -> None:
        q = q.reshape(c.shape)
        try:
            y = c.program(q)
        except UnprovableClaimError as exc:
            w, why = _provable(c, q)
            assert why, f"executor refused a provable input: {exc}"
            seen["refused"] += 1
            return
        w, why = _provable(c, q)
        assert not why, f"executor accepted an unprovable input: {why}"
        np.testing.assert_array_equal(witness_inputs(w)[0], q.ravel())
        np.testing.assert_array_equal(witness_outputs(w)[0], y.ravel())
        if c.output_visibility == "hashed":
            assert witness_commitments(w, "outputs")[0] == poseidon_commitment(y)
        seen["accepted"] += 1

    check()
    return seen


PROPERTY_CIRCUITS = [("add_relu", "hashed", "hashed"), ("add_out", "hashed", "public"), ("gemm8", "public", "hashed"),
                     ("gemm_sigmoid", "hashed", "hashed"), ("generator", "hashed", "public")]  # fmt: skip


@pytest.mark.parametrize(("name", "iv", "ov"), PROPERTY_CIRCUITS)
def test_every_accepted_claim_is_provable(circuit, name: str, iv: str, ov: str) -> None:
    seen = _every_accepted_claim_is_provable(circuit(name, iv, ov), 30, derandomize=True)
    assert seen["accepted"] and seen["refused"], seen


@pytest.mark.slow
@pytest.mark.parametrize(("name", "iv", "ov"), PROPERTY_CIRCUITS + [("mlp", "hashed", "hashed"), ("cnn", "hashed", "public"), ("residual", "public", "hashed"), ("act_matmul", "hashed", "hashed")])
def test_every_accepted_claim_is_provable_slow(circuit, name: str, iv: str, ov: str) -> None:
    seen = _every_accepted_claim_is_provable(circuit(name, iv, ov), 150, derandomize=False)
    assert seen["accepted"] and seen["refused"], seen


# --------------------------------------------------------------------------- #
# ezkl panics
# --------------------------------------------------------------------------- #
def test_call_ezkl_turns_a_rust_panic_into_one_proof_error(circuit) -> None:
    with pytest.raises(ProofError, match=r"^ezkl felt_to_int failed: ezkl panicked: .*Invalid string length.*$") as err:
        call_ezkl("felt_to_int", ezkl.felt_to_int, "zz")
    assert "\n" not in str(err.value)
    c = circuit("add_out")
    write_input(c.workdir / "panic.json", np.array([1e38, 0, 0, 0]))  # overflows ezkl's i128 quantization: a panic
    with pytest.raises(ProofError, match="^ezkl witness failed: ezkl panicked: "):
        call_ezkl("witness", ezkl.gen_witness, str(c.workdir / "panic.json"), str(c.compiled_path), str(c.workdir / "panic_w.json"))

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # other BaseExceptions pass through
        call_ezkl("x", interrupted)


# --------------------------------------------------------------------------- #
# calibration margin: in-distribution inputs of the gen model stay provable
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_gen_sigmoid_segment_keeps_calibration_range_provable(tmp_path: Path) -> None:
    """The gen model cut per layer; its Sigmoid segment built with build_circuit (LOOKUP_SAFETY_MARGIN).
    Inputs drawn uniformly inside the calibration batch's range: the executor accepts every one, a sample
    passes ezkl.mock; with ezkl's default margin (2) a good share of them would have no proof."""
    from imo.circuits.plan import Plan, make_plan, write_plan
    from imo.models import cached_export
    from imo.proving import onnx_io
    from imo.proving.circuit import CircuitFiles, Visibility, build_circuit

    exported = cached_export("gen")
    plan_file = write_plan(*make_plan(exported.onnx_path, merge=False), tmp_path / "plan")
    plan = Plan.load(plan_file)
    calibration = onnx_io.load_batch(exported.onnx_path.with_name("calibration.json"), plan.input_signature()).astype(np.float32)
    sigmoid = next(s for s in plan.segments if "Sigmoid" in {n.op_type for n in onnx.load(str(plan_file.parent / s.onnx)).graph.node})
    before = plan.segments[: sigmoid.index]
    batch = calibration
    for s in before:
        batch = np.stack([onnx_io.run_onnxruntime(plan_file.parent / s.onnx, x)[0] for x in batch])
    files = CircuitFiles(tmp_path / "sigmoid")
    report = build_circuit(plan_file.parent / sigmoid.onnx, batch, files, Visibility("hashed", "public"), scales=[plan.scale], quiet=True)
    assert report.lookup_safety_margin == LOOKUP_SAFETY_MARGIN == 8
    print(f"gen Sigmoid segment: lookup_range {report.lookup_range}, logrows {report.logrows}")
    bare = {"run_args": {"input_scale": plan.scale, "param_scale": plan.scale, "scale_rebase_multiplier": 1}}
    prefix = [FixedPointProgram(plan_file.parent / s.onnx, bare) for s in before]
    program = FixedPointProgram(plan_file.parent / sigmoid.onnx, files.settings_dict())
    # the same segment calibrated with ezkl's default margin, for comparison
    narrow = json.loads(files.settings.read_text())
    write_input(tmp_path / "cal.json", batch)
    (tmp_path / "narrow.json").write_text(json.dumps(narrow))
    call_ezkl("calibrate", ezkl.calibrate_settings, str(tmp_path / "cal.json"), str(files.onnx), str(tmp_path / "narrow.json"), "resources",
              lookup_safety_margin=2, scales=[plan.scale], scale_rebase_multiplier=[1])  # fmt: skip
    narrow_program = FixedPointProgram(plan_file.parent / sigmoid.onnx, tmp_path / "narrow.json")

    rng = np.random.default_rng(0)
    xs = rng.uniform(calibration.min(), calibration.max(), size=(300, *calibration.shape[1:])).astype(np.float32)
    refused_narrow = 0
    for i, x in enumerate(xs):
        q = quantize(x, plan.scale)
        for p in prefix:
            q = p(q)
        y = program(q)  # raises UnprovableClaimError if the table were too narrow
        try:
            narrow_program(q)
        except UnprovableClaimError:
            refused_narrow += 1
        if i < 4:
            write_quantized_input(tmp_path / "in.json", q)
            w = call_ezkl("witness", ezkl.gen_witness, str(tmp_path / "in.json"), str(files.compiled), str(tmp_path / "w.json"))
            assert call_ezkl("mock", ezkl.mock, str(tmp_path / "w.json"), str(files.compiled)) is True
            np.testing.assert_array_equal(witness_outputs(w)[0], y.ravel())
    assert refused_narrow > len(xs) // 10, refused_narrow
