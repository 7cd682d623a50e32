"""The partitioner: graph analysis, cut points, zk/op policy, and segments linked by Poseidon commitments."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from imo.circuits.graph import load_graph
from imo.circuits.plan import Plan, make_plan, write_plan
from imo.errors import InvalidModelError, ProofError
from imo.models import cached_export
from imo.pipeline.cli import main
from imo.proving import onnx_io
from imo.proving.segments import circuit_files, compile_plan, prove_plan, verify_run


def _calibration(model_name: str) -> np.ndarray:
    exported = cached_export(model_name)
    sig = onnx_io.signature(onnx_io.load_model(exported.onnx_path))
    return onnx_io.load_batch(exported.onnx_path.with_name("calibration.json"), sig)[:8]


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def fully_zk_run(request, tmp_path_factory):
    """A fully-zk, one-segment-per-layer plan of a zoo model: compiled, proven, verified; returns (plan file, run dir)."""
    exported = cached_export(request.param)
    plan, graph = make_plan(exported.onnx_path, merge=False)
    root = tmp_path_factory.mktemp(f"plan-{request.param}")
    plan_file = write_plan(plan, graph, root / "plan")
    compile_plan(plan_file, _calibration(request.param), quiet=True)
    prove_plan(plan_file, exported.input_path, root / "run", quiet=True)
    return plan_file, root / "run"


def test_graph_lists_nodes_with_ops_params_and_shapes():
    graph = load_graph(cached_export("mlp-wide").onnx_path)
    assert [n.op_type for n in graph.nodes] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert sum(n.params for n in graph.nodes) == 64 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert [n.output_shape for n in graph.nodes] == [(1, 512)] * 4 + [(1, 10)]
    assert all(cut is not None for cut in graph.cut_tensors())


def test_hybrid_plan_of_mlp_wide_has_zk_input_layer_and_op_wide_layer(capsys):
    assert main(["plan", "mlp-wide", "--private-input", "--budget-logrows", "17", "--json"]) == 0
    segments = json.loads(capsys.readouterr().out)["segments"]
    assert segments[0]["mode"] == "zk" and "/0/Gemm" in segments[0]["nodes"] and segments[0]["reason"].startswith("private")
    wide = [s for s in segments if "/2/Gemm" in s["nodes"]][0]
    assert wide["mode"] == "op" and wide["est_logrows"] > 17


def test_plans_are_deterministic(tmp_path):
    onnx_path = cached_export("cnn").onnx_path
    hashes = {write_plan(*make_plan(onnx_path, budget_logrows=15, private_input=True), tmp_path / f"p{i}") and Plan.load(tmp_path / f"p{i}" / "plan.json").plan_hash for i in range(2)}
    assert len(hashes) == 1


def test_a_plan_directory_with_its_derived_caches_can_be_rewritten(tmp_path):
    """`imo demo` run twice in one workdir: registering writes step_programs.json (and compiling circuits.json) into
    the plan directory, and writing the plan again must replace them, not refuse the directory."""
    onnx_path = cached_export("mlp").onnx_path
    write_plan(*make_plan(onnx_path, budget_logrows=15, private_input=True), tmp_path / "p")
    for derived in ("circuits.json", "step_programs.json"):
        (tmp_path / "p" / derived).write_text("{}")
    write_plan(*make_plan(onnx_path, budget_logrows=15, private_input=True), tmp_path / "p")
    assert not (tmp_path / "p" / "step_programs.json").exists() and Plan.load(tmp_path / "p" / "plan.json").segments


@pytest.mark.parametrize("name", ["mlp", "cnn", "mlp-wide"])
def test_segment_chain_reproduces_the_model_output_exactly_in_float(name, tmp_path):
    exported = cached_export(name)
    plan_file = write_plan(*make_plan(exported.onnx_path, merge=False), tmp_path)
    x = _calibration(name)[0]
    value = x
    for segment in Plan.load(plan_file).segments:
        value = onnx_io.run_onnxruntime(tmp_path / segment.onnx, value)[0]
    np.testing.assert_array_equal(value, onnx_io.run_onnxruntime(exported.onnx_path, x)[0])


def test_unknown_private_node_is_an_error():
    with pytest.raises(InvalidModelError, match="no node named '/9/Gemm'"):
        make_plan(cached_export("mlp").onnx_path, private=["/9/Gemm"])


def test_dynamic_input_dims_ask_for_a_fixed_shape(tmp_path):
    path = tmp_path / "dynamic.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), torch.zeros(1, 4), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    with pytest.raises(InvalidModelError, match="dynamic shape; export the model with a fixed shape"):
        make_plan(path)


def test_private_node_that_ezkl_cannot_prove_names_node_and_op(tmp_path):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["h"], name="relu"), helper.make_node("Det", ["h"], ["output"], name="det")], "g", [x], [y])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(InvalidModelError, match=r"node 'det' \(Det\) must be zk \(private\) but ezkl .* cannot prove it"):
        make_plan(path, private=["det"])
    with pytest.raises(InvalidModelError, match=r"node 'det' \(Det\): ezkl .* cannot prove it"):  # not as an op segment either: compile makes every segment a circuit
        make_plan(path)


def test_fully_zk_segments_link_and_verify(fully_zk_run):
    plan_file, run_dir = fully_zk_run
    result = verify_run(plan_file, run_dir)
    assert result["linked"] and len(result["verified"]) == len(Plan.load(plan_file).segments) >= 2


def test_final_output_matches_onnxruntime_within_tolerance(fully_zk_run):
    plan_file, run_dir = fully_zk_run
    plan = Plan.load(plan_file)
    run = json.loads((run_dir / "run.json").read_text())
    x = onnx_io.load_input(cached_export("mlp" if "mlp" in plan.model else "cnn").input_path, onnx_io.signature(onnx_io.load_model(plan.model)))
    expected = onnx_io.run_onnxruntime(plan.model, x)[0].ravel()
    tolerance = json.loads(circuit_files(plan_file.parent, plan.segments[-1]).report.read_text())["tolerance"] * len(plan.segments)
    assert np.max(np.abs(np.array(run["output"]) - expected)) <= tolerance


def test_cost_estimate_is_close_to_ezkl_settings_of_real_segments(fully_zk_run):
    plan_file, _ = fully_zk_run
    for segment in Plan.load(plan_file).segments:
        settings = circuit_files(plan_file.parent, segment).settings_dict()
        assert abs(segment.est_rows - settings["num_rows"]) <= 0.15 * settings["num_rows"]
        assert segment.est_logrows == settings["run_args"]["logrows"]


def test_proof_presented_with_a_different_input_commitment_does_not_link(fully_zk_run, tmp_path):
    plan_file, run_dir = fully_zk_run
    tampered = tmp_path / "run"
    shutil.copytree(run_dir, tampered)
    run = json.loads((tampered / "run.json").read_text())
    other = json.loads((tampered / "seg0" / "proof.json").read_text())["instances"][0][0]
    run["boundaries"][1]["commitment"] = other  # claim C_1 is something else: segment 1's proof starts from the real C_1
    (tampered / "run.json").write_text(json.dumps(run))
    with pytest.raises(ProofError, match="does not link"):
        verify_run(plan_file, tampered)


def _partitions(n: int):
    """Every way to cut n atoms into contiguous segments, as lists of (start, end)."""
    for mask in range(2 ** (n - 1)):
        cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        yield list(zip(cuts, cuts[1:]))


@pytest.mark.parametrize("seed", range(6))
def test_cut_selection_finds_the_cheapest_partition_of_a_zk_run(seed):
    """`_cheapest_cuts` against brute force over every partition, with hashed boundaries priced (Poseidon rows and the
    hash columns' factor): random atom sizes, a private first atom (hashed input), a budget that forbids some unions."""
    from imo.circuits.cost import logrows_for, prove_cost
    from imo.circuits.plan import _cheapest_cuts

    rng = np.random.default_rng(seed)
    n, width = 6, 64
    rows = rng.integers(500, 20_000, size=n)

    def estimate(nodes, in_hashed=False, out_hashed=False, narrow=True):
        total = int(sum(rows[i] for i in nodes)) + 41 * width * (in_hashed + out_hashed)
        return total, logrows_for(total), None

    run = [([i], "zk", "private: x" if i == 0 else "within budget") for i in range(n)]
    budget = 16

    def cost(parts):
        total = 0.0
        for i, j in parts:
            hashed_in, hashed_out = True, j < n  # the run reads the private input; every cut inside it is hashed
            est = estimate(list(range(i, j)), hashed_in, hashed_out)
            if j - i > 1 and est[1] > budget and i != 0:
                return float("inf")
            total += prove_cost(est[1], hashed_in or hashed_out)
        return total

    best = min(_partitions(n), key=cost)
    chosen = _cheapest_cuts(estimate, run, budget, in_hashed=True)
    assert [node for nodes, _, _ in chosen for node in nodes] == list(range(n))
    parts = [(nodes[0], nodes[-1] + 1) for nodes, _, _ in chosen]
    assert cost(parts) == cost(best)


def test_small_zk_segments_take_the_narrow_table_and_greedy_merging_is_not_enough():
    """gen with a private input and budget 14: three layers; the first two alone cost more than all three in one circuit
    (2^13 + 2^13 hashed vs 2^14 hashed, a tie broken to fewer proofs), which left-to-right merging never saw."""
    plan, _ = make_plan(cached_export("gen").onnx_path, private_input=True, budget_logrows=14)
    assert [s.mode for s in plan.segments] == ["zk"] and plan.segments[0].est_logrows <= 14 and plan.segments[0].decomp == [1024, 3]
    wide, _ = make_plan(cached_export("mlp-wide").onnx_path, private_input=True, budget_logrows=1)
    assert wide.segments[0].decomp is None and wide.segments[0].est_logrows == 16  # 38k rows: the narrow table cannot lower it
