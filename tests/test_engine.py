"""The proving engine: content-addressed store (hit, miss, corruption), resume after kill -9, the local
executor's parallelism and memory awareness, and a real two-node Ray cluster on 127.0.0.1."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imo.circuits.plan import make_plan, write_plan
from imo.models import cached_export
from imo.proving import onnx_io
from imo.proving.executors import LocalExecutor, RayExecutor
from imo.proving.segments import compile_plan, prove_plan, verify_run
from imo.proving.store import ArtifactStore


@pytest.fixture(scope="module")
def cnn_plan(tmp_path_factory):
    """cnn, one zk segment per layer, compiled into a fresh store: (plan file, store)."""
    root = tmp_path_factory.mktemp("engine")
    store = ArtifactStore(root / "store")
    exported = cached_export("cnn")
    plan_file = write_plan(*make_plan(exported.onnx_path, merge=False), root / "plan")
    sig = onnx_io.signature(onnx_io.load_model(exported.onnx_path))
    compile_plan(plan_file, onnx_io.load_batch(exported.onnx_path.with_name("calibration.json"), sig)[:4], store=store, quiet=True)
    return plan_file, store


def _calibration():
    exported = cached_export("cnn")
    sig = onnx_io.signature(onnx_io.load_model(exported.onnx_path))
    return onnx_io.load_batch(exported.onnx_path.with_name("calibration.json"), sig)[:4]


def test_store_miss_then_hit_builds_once(tmp_path):
    store, builds = ArtifactStore(tmp_path), []
    build = lambda d: (builds.append(1), (d / "a.bin").write_bytes(b"artifact"))  # noqa: E731
    first, hit1 = store.get_or_put("things", "k1", build)
    second, hit2 = store.get_or_put("things", "k1", build)
    assert (hit1, hit2, len(builds), first) == (False, True, 1, second)


def test_corrupted_artifact_is_detected_and_rebuilt(tmp_path):
    store = ArtifactStore(tmp_path)
    entry = store.put("things", "k1", lambda d: (d / "a.bin").write_bytes(b"artifact"))
    (entry / "a.bin").write_bytes(b"artifacT")
    assert store.get("things", "k1") is None and store.rebuilt == ["k1"]
    rebuilt, hit = store.get_or_put("things", "k1", lambda d: (d / "a.bin").write_bytes(b"artifact"))
    assert not hit and (rebuilt / "a.bin").read_bytes() == b"artifact"


def test_failed_build_leaves_no_entry(tmp_path):
    store = ArtifactStore(tmp_path)

    def build(d: Path) -> None:
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("build interrupted")

    with pytest.raises(RuntimeError):
        store.put("things", "k1", build)
    assert store.get("things", "k1") is None and list((tmp_path / "things").iterdir()) == []


def test_recompiling_an_unchanged_plan_is_free(cnn_plan):
    plan_file, store = cnn_plan
    start = time.perf_counter()
    reports = compile_plan(plan_file, _calibration(), store=store, quiet=True)
    assert all(r["cached"] for r in reports) and time.perf_counter() - start < 10


def test_corrupted_proving_key_is_rebuilt_not_used(cnn_plan, tmp_path):
    plan_file, store = cnn_plan
    private = ArtifactStore(tmp_path / "store")
    shutil.copytree(store.root / "circuits", private.root / "circuits")
    circuit = json.loads((plan_file.parent / "circuits.json").read_text())["0"]["key"]
    pk = private.path("circuits", circuit) / "pk.key"
    with open(pk, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    reports = compile_plan(plan_file, _calibration(), store=private, quiet=True)
    assert [r["cached"] for r in reports] == [False, True, True] and private.rebuilt == [circuit]
    compile_plan(plan_file, _calibration(), store=store, quiet=True)  # point the plan back at the shared store


def test_parallel_local_executor_overlaps_jobs_and_results_verify(cnn_plan, tmp_path):
    plan_file, store = cnn_plan
    run = prove_plan(plan_file, cached_export("cnn").input_path, tmp_path / "run", executor=LocalExecutor(workers=2), store=store, quiet=True)
    assert len({s["worker"] for s in run["segments"]}) == 3  # one fresh process per job
    spans = sorted(s["prove_span"] for s in run["segments"])
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))  # two proofs ran at the same time
    assert verify_run(plan_file, tmp_path / "run")["linked"]


def test_warm_pool_reuses_workers_and_measures_each_proof_alone(cnn_plan, tmp_path):
    plan_file, store = cnn_plan
    fresh = ArtifactStore(tmp_path / "store")
    shutil.copytree(store.root / "circuits", fresh.root / "circuits")
    with LocalExecutor(workers=2) as warm:  # started before the request: workers up, ezkl imported
        run = prove_plan(plan_file, cached_export("cnn").input_path, tmp_path / "run", executor=warm, store=fresh, quiet=True)
    assert len({s["worker"] for s in run["segments"]}) <= 2 < len(run["segments"])  # 3 proofs, 2 reused workers
    assert all(s["rss_isolated"] and 0 < s["peak_rss_bytes"] < 4 << 30 for s in run["segments"])
    assert 0 < run["zk_proving_seconds"] <= run["wall_seconds"]
    shutil.rmtree(fresh.root / "proofs")
    in_process = prove_plan(plan_file, cached_export("cnn").input_path, tmp_path / "run1", executor=LocalExecutor(workers=1), store=fresh, quiet=True)
    assert not any(s["rss_isolated"] for s in in_process["segments"])  # the caller's process: its whole life's peak


def test_memory_limit_serialises_jobs(cnn_plan, tmp_path, monkeypatch):
    plan_file, store = cnn_plan
    seen = []
    import imo.proving.executors as executors

    real_wait = executors.wait

    def spy(running, **kwargs):
        seen.append(len(running))
        return real_wait(running, **kwargs)

    monkeypatch.setattr(executors, "wait", spy)
    fresh = ArtifactStore(tmp_path / "store")
    shutil.copytree(store.root / "circuits", fresh.root / "circuits")
    prove_plan(plan_file, cached_export("cnn").input_path, tmp_path / "run", executor=LocalExecutor(workers=2, memory_limit=1), store=fresh, quiet=True)
    assert seen and max(seen) == 1


def test_resume_after_kill_redoes_no_finished_segment(cnn_plan, tmp_path):
    plan_file, store = cnn_plan
    fresh = ArtifactStore(tmp_path / "store")
    shutil.copytree(store.root / "circuits", fresh.root / "circuits")
    env = {**os.environ, "IMO_CACHE": str(tmp_path)}  # the store lives at $IMO_CACHE/store
    cmd = [sys.executable, "-m", "imo.pipeline.cli", "prove", str(plan_file), str(cached_export("cnn").input_path), "--out", str(tmp_path / "run"), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((fresh.root / "proofs").glob("*/manifest.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list((fresh.root / "proofs").glob("*/manifest.json")))
    assert 1 <= finished < 3 and not (tmp_path / "run").exists()
    subprocess.run(cmd, env=env, check=True)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert sum(s["proof_cached"] for s in run["segments"]) == finished
    assert verify_run(plan_file, tmp_path / "run")["linked"]


@pytest.fixture(scope="module")
def ray_cluster():
    """A real Ray cluster on 127.0.0.1: a head and a worker node, one CPU each; stopped afterwards."""
    from imo.pipeline.chain import free_port

    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    try:
        subprocess.run([ray_bin, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--include-dashboard=false", *common], env=env, check=True, capture_output=True)
        subprocess.run([ray_bin, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", *common], env=env, check=True, capture_output=True)
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)


def test_ray_cluster_results_match_local_executor(cnn_plan, ray_cluster, tmp_path):
    plan_file, store = cnn_plan
    input_path = cached_export("cnn").input_path
    fresh = ArtifactStore(tmp_path / "store")
    shutil.copytree(store.root / "circuits", fresh.root / "circuits")
    local = prove_plan(plan_file, input_path, tmp_path / "local", executor=LocalExecutor(workers=1), store=fresh, quiet=True)
    shutil.rmtree(fresh.root / "proofs")
    remote = prove_plan(plan_file, input_path, tmp_path / "ray", executor=RayExecutor(ray_cluster), store=fresh, quiet=True)
    assert not any(s["proof_cached"] for s in remote["segments"])
    assert remote["boundaries"] == local["boundaries"]
    for k in range(3):
        proofs = [json.loads((tmp_path / d / f"seg{k}" / "proof.json").read_text()) for d in ("local", "ray")]
        assert proofs[0]["instances"] == proofs[1]["instances"]  # halo2 proofs are blinded: the statements match, not the bytes
    assert verify_run(plan_file, tmp_path / "ray")["linked"]
    assert len({s["worker"].split(" pid ")[1] for s in remote["segments"]}) >= 2  # spread over more than one worker process
