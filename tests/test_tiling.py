"""Tiling, key reuse and per-proof memory (issue 16): a wide layer proven as column blocks, each its own small circuit;
tiles share the input commitment, a consumer takes the tiles' outputs as separate hashed inputs (one commitment per
chunk), equal tiles share one circuit and keys, and a proof's peak RSS is its own, not its parent's."""

import json
import resource
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest
import torch
from torch import nn

from imo.circuits.graph import join_inputs, load_graph, tile_model, tileable
from imo.circuits.plan import Plan, TiledPlanError, make_plan, write_plan
from imo.errors import ProofError
from imo.models.export import export_onnx
from imo.proving import executors
from imo.proving.executors import LocalExecutor, peak_rss
from imo.proving.segments import circuit_files, compile_plan, expected_instances, prove_plan, verify_run
from imo.proving.store import ArtifactStore


WIDTH = 64  # wide enough that halving a layer lowers its logrows even with the narrow table every small segment gets
TILE_LOGROWS = 11  # the first layer tiles to 11; the second (hashed in and out: 2,628 hash rows in every tile) to 12


class Wide(nn.Module):
    """8 → 64 (ReLU) → 64 (ReLU) → 4; repeat=True makes the first layer's two column blocks equal (rows 32..63 = 0..31)."""

    def __init__(self, repeat: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 4)
        if repeat:
            half = WIDTH // 2
            with torch.no_grad():
                self.fc1.weight[half:] = self.fc1.weight[:half]
                self.fc1.bias[half:] = self.fc1.bias[:half]

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _export(tmp_path, repeat=False):
    path = tmp_path / "wide.onnx"
    export_onnx(Wide(repeat).eval(), np.zeros((1, 8), dtype=np.float32), path)
    return path


def _calibration():
    return np.random.default_rng(0).uniform(-1, 1, (4, 1, 8)).astype(np.float32)


def test_tile_models_compute_column_blocks_of_the_layer(tmp_path):
    import onnxruntime as ort

    graph = load_graph(_export(tmp_path))
    cut = graph.cut_tensors()[1]  # after fc1 + relu
    layer = graph.sub_model([graph.input_name], [cut])
    assert tileable(layer) == WIDTH
    x = np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32)

    def run(model, feeds):
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    whole = run(layer, {graph.input_name: x})
    parts = [run(tile_model(layer, lo, hi), {"x": x}) for lo, hi in ((0, 3), (3, WIDTH))]
    assert np.allclose(np.concatenate(parts, axis=-1), whole, atol=1e-6)
    joined = join_inputs(tile_model(layer, 0, 3), [5, 3])  # the input arrives as two chunks
    assert np.allclose(run(joined, {"x__chunk0": x[:, :5], "x__chunk1": x[:, 5:]}), parts[0], atol=1e-6)
    assert tile_model(layer, 0, 4).SerializeToString() != tile_model(layer, 4, 8).SerializeToString()


def test_plan_tiles_wide_zk_layers_and_chunks_the_hashed_boundaries(tmp_path):
    plan, _ = make_plan(_export(tmp_path), merge=False, tile_logrows=TILE_LOGROWS)
    assert [len(s.tiles) for s in plan.segments][:2] == [2, 2]
    assert all(t.est_logrows <= TILE_LOGROWS for t in plan.segments[0].tiles)
    assert all(t.est_logrows < s.est_logrows for s in plan.segments for t in s.tiles)  # the most blocks that lower it, if none fits
    half = WIDTH // 2
    assert plan.output_chunks(1) == [half, half] and plan.segments[1].input_chunks == [half, half]  # zk → zk after a tiled segment
    assert plan.segments[0].input_chunks == [] and plan.output_chunks(len(plan.segments)) == []  # public model input and output
    untiled, _ = make_plan(tmp_path / "wide.onnx", merge=False)
    assert not untiled.tiled and untiled.tile_decomp is None and all(not s.tiles and not s.input_chunks for s in untiled.segments)


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory):
    """A fully-zk plan of Wide with its two wide layers tiled: (plan file, run dir, plan, compile reports)."""
    root = tmp_path_factory.mktemp("tiled")
    plan_file = write_plan(*make_plan(_export(root), merge=False, tile_logrows=TILE_LOGROWS), root / "plan")
    store = ArtifactStore(root / "store")
    reports = compile_plan(plan_file, _calibration(), store=store, quiet=True)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 8))
    (root / "input.json").write_text(json.dumps({"input_data": [x.ravel().tolist()]}))
    prove_plan(plan_file, root / "input.json", root / "run", executor=LocalExecutor(2), store=store, quiet=True)
    return plan_file, root / "run", Plan.load(plan_file), reports


def test_tiled_plan_proves_verifies_and_links(tiled_run):
    plan_file, run_dir, plan, reports = tiled_run
    run = json.loads((run_dir / "run.json").read_text())
    assert len(reports) == sum(len(s.units()) for s in plan.segments)
    assert all(r["executor_checked_inputs"] for r in reports if r["segment"] == 0)  # joined consumers: ezkl's witness is the reference
    assert run["boundaries"][1]["commitment"] is None and len(run["boundaries"][1]["chunk_commitments"]) == 2
    assert run["boundaries"][-1]["quantized"] is not None  # the output stays public
    tile_record = run["segments"][0]["tiles"][0]
    assert tile_record["peak_rss_bytes"] > 0 and tile_record["rss_isolated"] and run["zk_proving_seconds"] <= run["wall_seconds"]
    verified = verify_run(plan_file, run_dir)
    assert verified["linked"] and len(verified["verified"]) == sum(len(s.units()) for s in plan.segments)
    # a consumer's input instances are its producer tiles' output commitments, in order
    proof = json.loads((run_dir / "seg1" / "tile0" / "proof.json").read_text())
    assert proof["instances"][0][:2] == run["boundaries"][1]["chunk_commitments"]
    assert expected_instances(run, 1, 0, plan) == proof["instances"][0]


def _tampered(run_dir, tmp_path, edit):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    edit(copy)
    return copy


def test_a_tampered_tile_fails_verification(tiled_run, tmp_path):
    plan_file, run_dir, plan, _ = tiled_run

    def swap_tiles(d):  # tile 1's proof handed in as tile 0's: a valid proof, of the wrong chunk
        (d / "seg0" / "tile0" / "proof.json").write_bytes((d / "seg0" / "tile1" / "proof.json").read_bytes())

    def forge_chunk(d):  # a chunk commitment that no tile output hashes to
        run = json.loads((d / "run.json").read_text())
        run["boundaries"][1]["chunk_commitments"][1] = run["boundaries"][1]["chunk_commitments"][0]
        (d / "run.json").write_text(json.dumps(run))

    def forge_output(d):  # one element of a tile's public output
        run = json.loads((d / "run.json").read_text())
        run["boundaries"][-1]["quantized"][-1] += 1
        (d / "run.json").write_text(json.dumps(run))

    def drop_tile(d):
        shutil.rmtree(d / "seg1" / "tile1")

    for i, edit in enumerate((swap_tiles, forge_chunk, forge_output, drop_tile)):
        with pytest.raises(ProofError):
            verify_run(plan_file, _tampered(run_dir, tmp_path / str(i), edit))


def test_tiled_plans_are_refused_where_one_proof_per_segment_is_expected(tiled_run):
    plan_file, _, plan, _ = tiled_run
    with pytest.raises(TiledPlanError, match="cannot be registered"):
        circuit_files(plan_file.parent, plan.segments[0])  # registration, the public bundle and on-chain verify go through it
    with pytest.raises(TiledPlanError, match="cannot be registered"):
        plan.require_untiled()  # `imo register` asks first, before any transaction


def test_equal_tiles_share_one_circuit_and_keys(tmp_path):
    plan_file = write_plan(*make_plan(_export(tmp_path, repeat=True), merge=False, tile_logrows=TILE_LOGROWS), tmp_path / "plan")
    plan = Plan.load(plan_file)
    assert len(plan.segments[0].tiles) == 2
    store = ArtifactStore(tmp_path / "store")
    reports = [r for r in compile_plan(plan_file, _calibration(), store=store, quiet=True) if r["segment"] == 0]
    assert [r["cached"] for r in reports] == [False, True]  # the second tile is a cache hit: no second keygen
    index = json.loads((plan_file.parent / "circuits.json").read_text())["0"]["tiles"]
    assert index[0] == index[1]
    again = compile_plan(plan_file, _calibration(), store=store, quiet=True)
    assert all(r["cached"] for r in again)
    (tmp_path / "input.json").write_text(json.dumps({"input_data": [[0.5] * 8]}))
    run = prove_plan(plan_file, tmp_path / "input.json", tmp_path / "run", executor=LocalExecutor(1), store=store, quiet=True)
    tiles = run["segments"][0]["tiles"]
    assert not tiles[0]["proof_cached"] and tiles[1]["proof_cached"]  # one circuit, one input: one proof serves both tiles
    assert verify_run(plan_file, tmp_path / "run")["linked"]


def _child_peaks():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, peak_rss()


def test_a_spawned_workers_peak_rss_is_its_own_not_its_parents():
    ballast = np.ones(1200 << 17)  # 1.2 GB resident in this (parent) process
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        inherited, own = pool.submit(_child_peaks).result()
    assert inherited >= 1200 << 20  # ru_maxrss carries the parent's high-water mark across fork + exec
    assert own < 800 << 20  # VmHWM: the worker's own address space (this test module's imports: ~350 MB)
    assert executors.reset_peak_rss() and peak_rss() > 0
    del ballast


def test_imo_register_refuses_a_tiled_plan_in_one_line(tiled_run, capsys):
    from imo.pipeline.cli import main

    plan_file, *_ = tiled_run
    assert main(["register", str(plan_file)]) == 1
    err = capsys.readouterr().err
    assert "cannot be registered on chain" in err and err.strip().count("\n") == 0
