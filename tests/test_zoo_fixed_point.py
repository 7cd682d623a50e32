"""The native executor is bit-exact with ezkl's witness on every layer segment of the zoo's mlp, cnn and mlp-wide,
as compiled by the planner (hashed boundaries at the plan's scale), and their commitments are equal."""

import json

import ezkl
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imo.circuits.cost import run_args
from imo.circuits.fixed_point import FixedPointProgram, poseidon_commitment, quantize, witness_commitments, witness_inputs, witness_outputs
from imo.circuits.plan import Plan, make_plan, write_plan
from imo.models import cached_export
from imo.proving.circuit import write_input
from imo.proving.native import call_ezkl

EXAMPLES = {"mlp": 200, "cnn": 60, "mlp-wide": 20}  # per segment; each witness costs 40–300 ms: 200 for all under -m slow


def compile_segments(name: str, root):
    """Every layer segment of the zoo model compiled for witness generation (no keys needed)."""
    plan_file = write_plan(*make_plan(cached_export(name).onnx_path, merge=False), root / "plan")
    plan = Plan.load(plan_file)
    segments = []
    for seg in plan.segments:
        onnx_path, settings_path, compiled = plan_file.parent / seg.onnx, root / f"s{seg.index}.json", root / f"s{seg.index}.compiled"
        last = seg.index == len(plan.segments) - 1
        call_ezkl("settings", ezkl.gen_settings, str(onnx_path), str(settings_path), py_run_args=run_args(plan.scale, "hashed", "public" if last else "hashed"))
        write_input(root / "calibration.json", np.random.default_rng(0).uniform(-2, 2, (4, *seg.input_shape)))
        call_ezkl("calibrate", ezkl.calibrate_settings, str(root / "calibration.json"), str(onnx_path), str(settings_path), "resources", scales=[plan.scale], scale_rebase_multiplier=[1])
        call_ezkl("compile", ezkl.compile_circuit, str(onnx_path), str(compiled), str(settings_path))
        settings_dict = json.loads(settings_path.read_text())
        segments.append((seg, compiled, FixedPointProgram(onnx_path, settings_dict), plan.scale))
    return segments


def check_segment(seg, compiled, program, scale, x, tmp) -> None:
    write_input(tmp / "x.json", x)
    witness = call_ezkl("witness", ezkl.gen_witness, str(tmp / "x.json"), str(compiled), str(tmp / "w.json"))
    q_in = quantize(x, scale)
    np.testing.assert_array_equal(witness_inputs(witness)[0], q_in.ravel())
    q_out = program(q_in).ravel()
    np.testing.assert_array_equal(q_out, witness_outputs(witness)[0])
    assert poseidon_commitment(q_in) == witness_commitments(witness, "inputs")[0]
    hashed_out = witness_commitments(witness, "outputs")
    if hashed_out:
        assert poseidon_commitment(q_out) == hashed_out[0]


def _property(name: str, examples: int, tmp_path_factory) -> None:
    root = tmp_path_factory.mktemp(f"fp-{name}")
    segments = compile_segments(name, root)
    for seg, compiled, program, scale in segments:
        size = int(np.prod(seg.input_shape))
        edges = [np.zeros(size), np.full(size, 2.0), np.full(size, -2.0), np.where(np.arange(size) % 2, 4.0, -4.0)]
        for x in edges:
            check_segment(seg, compiled, program, scale, x.reshape(seg.input_shape), root)

        @settings(max_examples=examples - len(edges), deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=size, max_size=size))
        def random_inputs(values):
            check_segment(seg, compiled, program, scale, np.array(values, np.float32).reshape(seg.input_shape), root)

        random_inputs()


@pytest.mark.parametrize("name", ["mlp", "cnn", "mlp-wide"])
def test_native_executor_is_bit_exact_on_every_zoo_segment(name, tmp_path_factory):
    _property(name, EXAMPLES[name], tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "mlp-wide"])
def test_native_executor_is_bit_exact_on_every_zoo_segment_200_inputs(name, tmp_path_factory):
    _property(name, 200, tmp_path_factory)
