"""A hybrid plan end to end: zk input layer proven, op layer executed natively (bit-exact with the circuit), and
the fraud-proof property: an ezkl proof of the op segment agrees with an honest result and contradicts any
result one LSB off."""

import json

import ezkl
import numpy as np
import pytest

from imo.circuits.fixed_point import FixedPointProgram, int_to_felt
from imo.circuits.plan import Plan, make_plan, write_plan
from imo.models import cached_export
from imo.errors import InvalidModelError
from imo.proving import onnx_io, prover
from imo.proving.circuit import write_quantized_input
from imo.proving.native import call_ezkl
from imo.proving.segments import circuit_files, compile_plan, expected_instances, prove_plan, verify_run


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory):
    """mlp with a private input layer and a budget that sends the rest optimistic: (plan file, run dict, fraud-proof instances)."""
    exported = cached_export("mlp")
    root = tmp_path_factory.mktemp("hybrid")
    plan_file = write_plan(*make_plan(exported.onnx_path, private_input=True, budget_logrows=1), root / "plan")
    sig = onnx_io.signature(onnx_io.load_model(exported.onnx_path))
    compile_plan(plan_file, onnx_io.load_batch(exported.onnx_path.with_name("calibration.json"), sig)[:8], quiet=True)
    run = prove_plan(plan_file, exported.input_path, root / "run", quiet=True)
    plan = Plan.load(plan_file)
    op = next(s for s in plan.segments if s.mode == "op")
    # what a challenger does: prove the op segment with ezkl from the published input boundary
    files = circuit_files(plan_file.parent, op)
    write_quantized_input(root / "op-input.json", np.array(run["boundaries"][op.index]["quantized"]).reshape(op.input_shape))
    call_ezkl("witness", ezkl.gen_witness, str(root / "op-input.json"), str(files.compiled), str(root / "op-witness.json"))
    prover.prove_witness(files, root / "op-witness.json", root / "op-proof.json")
    prover.verify(files, proof_file=root / "op-proof.json")
    instances = json.loads((root / "op-proof.json").read_text())["instances"][0]
    return plan_file, root / "run", run, op, instances


def test_plan_is_zk_input_layer_then_op(hybrid_run):
    plan_file, *_ = hybrid_run
    plan = Plan.load(plan_file)
    assert [s.mode for s in plan.segments] == ["zk", "op"]
    assert plan.boundary_sizes()[0] == 0 and all(plan.boundary_sizes()[1:])  # private input hashed; next to op: public


def test_run_json_holds_no_private_tensor(hybrid_run):
    _, _, run, *_ = hybrid_run
    first = run["boundaries"][0]
    assert first["quantized"] is None and first["commitment"]  # the private input appears only as its commitment


def test_zk_proofs_of_a_hybrid_run_verify_and_link(hybrid_run):
    plan_file, run_dir, *_ = hybrid_run
    assert verify_run(plan_file, run_dir)["linked"]


def test_honest_op_result_is_not_contradicted_by_an_ezkl_proof(hybrid_run):
    _, _, run, op, instances = hybrid_run
    assert instances == expected_instances(run, op.index)


def test_a_one_lsb_change_in_any_op_output_element_is_contradicted(hybrid_run):
    _, _, run, op, instances = hybrid_run
    claimed = run["boundaries"][op.index + 1]["quantized"]
    outputs = instances[-len(claimed):]  # the op segment's input boundary is public too: its elements come first
    for i in range(len(claimed)):
        for delta in (-1, 1):
            wrong = list(claimed)
            wrong[i] += delta
            assert outputs != [int_to_felt(v) for v in wrong]
    assert outputs == [int_to_felt(v) for v in claimed]


def test_hybrid_output_matches_onnxruntime_within_tolerance(hybrid_run):
    plan_file, _, run, *_ = hybrid_run
    plan = Plan.load(plan_file)
    exported = cached_export("mlp")
    x = onnx_io.load_input(exported.input_path, onnx_io.signature(onnx_io.load_model(exported.onnx_path)))
    expected = onnx_io.run_onnxruntime(exported.onnx_path, x)[0].ravel()
    tolerance = sum(json.loads(circuit_files(plan_file.parent, s).report.read_text())["tolerance"] for s in plan.segments)
    assert np.max(np.abs(np.array(run["output"]) - expected)) <= tolerance


def test_compile_refuses_a_segment_whose_executor_is_not_bit_exact(hybrid_run, monkeypatch):
    """A safety net under every op the executor implements: compile compares it with ezkl's witness on calibration
    inputs, so an executor that drifts by one LSB is caught before any claim depends on it."""
    plan_file, *_ = hybrid_run
    exported = cached_export("mlp")
    sig = onnx_io.signature(onnx_io.load_model(exported.onnx_path))
    calibration = onnx_io.load_batch(exported.onnx_path.with_name("calibration.json"), sig)[:8]
    honest = FixedPointProgram.__call__
    monkeypatch.setattr(FixedPointProgram, "__call__", lambda self, q: honest(self, q) + 1)
    with pytest.raises(InvalidModelError, match=r"segment 0 .*not bit-exact with ezkl"):
        compile_plan(plan_file, calibration, quiet=True)
