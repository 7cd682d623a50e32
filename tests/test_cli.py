"""The CLI does what it says: every command given the wrong kind of artifact says so in one line (exit 1, no
traceback), every flag either works or is refused in one line, private data stays out of shareable artifacts, and
artifacts find their neighbours relative to themselves, so every command works from any directory.

The plan run is a tiny 4→4→2 MLP, fully zk per layer with a private input (two zk proofs, two hashed boundaries),
made by the CLI itself from four different working directories; its circuits and proofs come from the artifact store
after the first run. The wrong-artifact matrix runs each command in a fresh process and fails before any heavy work."""

import json
import os
import shutil
import stat
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from imo import artifacts
from imo.circuits.fixed_point import int_to_felt, quantize
from imo.circuits.plan import Plan, make_plan, write_plan
from imo.models import cached_export
from imo.pipeline import cli
from imo.pipeline.chain import free_port
from imo.proving import onnx_io

ADDRESS = "0x" + "11" * 20


def imo(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "imo.pipeline.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, mentions: str = "") -> str:
    err = proc.stderr
    assert proc.returncode == 1, (proc.returncode, err)
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imo: error: "), err
    assert mentions in lines[0], (mentions, lines[0])
    assert proc.stdout == ""
    return lines[0]


# ------------------------------------------------------------------ every kind of artifact, and a few non-artifacts


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> dict[str, Path]:
    """One path of every kind a command might be handed by mistake (cheap: the plan is written, not compiled)."""
    root = tmp_path_factory.mktemp("kinds")
    exported = cached_export("mlp")
    plan_file = write_plan(*make_plan(exported.onnx_path, private_input=True, budget_logrows=1), root / "plan")
    paths = {
        "onnx": exported.onnx_path,
        "input": exported.input_path,
        "plan": plan_file,
        "plan-dir": plan_file.parent,
        "empty": root / "empty.json",
        "dir": root / "empty-dir",
        "text": root / "notes.txt",
        "binary": root / "blob.bin",
        "truncated-onnx": root / "truncated.onnx",
        "missing": root / "no-such-file.json",
        "bad-deployment": root / "bad-deployment.json",
        "deployment": root / "deployment.json",
        "run": root / "run" / "run.json",
        "run-dir": root / "run",
        "other-json": root / "card.json",
        "input-not-a-list": root / "input-str.json",
        "proof-dir": root / "proof",
    }
    paths["empty"].write_text("")
    paths["dir"].mkdir()
    paths["text"].write_text("not json\n")
    paths["binary"].write_bytes(bytes(range(256)) * 4)
    paths["truncated-onnx"].write_bytes(exported.onnx_path.read_bytes()[:200])
    paths["bad-deployment"].write_text(json.dumps({"chain_id": 31337, "token": "not an address", "oracle": ADDRESS}))
    paths["deployment"].write_text(json.dumps({"chain_id": 31337, "deployer": ADDRESS, "token": ADDRESS, "oracle": ADDRESS, "consumer": ADDRESS,
                                               "rpc_url": f"http://127.0.0.1:{free_port()}"}))
    paths["run-dir"].mkdir()
    paths["run"].write_text(json.dumps({"plan": "../plan/plan.json", "plan_hash": Plan.load(plan_file).plan_hash, "boundaries": []}))
    paths["other-json"].write_text(json.dumps({"name": "mlp", "params": 1}))
    paths["input-not-a-list"].write_text(json.dumps({"input_data": "nope"}))
    paths["proof-dir"].mkdir()
    (paths["proof-dir"] / "proof.json").write_text(json.dumps({"instances": [], "proof": []}))
    return paths


def test_artifacts_are_recognised_by_content_not_name(kinds, tmp_path):
    expected = {"onnx": artifacts.ONNX, "input": artifacts.INPUT, "plan": artifacts.PLAN, "plan-dir": artifacts.PLAN_DIR,
                "empty": artifacts.EMPTY, "dir": artifacts.DIRECTORY, "text": artifacts.TEXT, "binary": artifacts.BINARY,
                "truncated-onnx": artifacts.BINARY, "missing": artifacts.MISSING, "bad-deployment": artifacts.DEPLOYMENT,
                "deployment": artifacts.DEPLOYMENT, "run": artifacts.RUN, "run-dir": artifacts.RUN_DIR,
                "other-json": artifacts.OTHER_JSON, "input-not-a-list": artifacts.OTHER_JSON, "proof-dir": artifacts.PROOF_DIR}
    assert {name: artifacts.kind_of(path) for name, path in kinds.items()} == expected
    disguised = tmp_path / "plan.json"  # an ONNX model named like a plan is still a model
    shutil.copy(kinds["onnx"], disguised)
    assert artifacts.kind_of(disguised) == artifacts.ONNX


# Every command that takes a file, fed every wrong kind: (command line with {} for the bad path, kinds to feed it).
# Arguments that are not under test get a valid artifact (or one that is never reached: checks run in argument order).
WRONG = ["empty", "dir", "missing"]
MATRIX = {
    "plan MODEL": (["plan", "{}"], ["input", "plan", "run", "bad-deployment", "text", "binary", "truncated-onnx", "plan-dir", *WRONG]),
    "compile PLAN": (["compile", "{}"], ["onnx", "input", "run", "bad-deployment", "text", "binary", "plan-dir", *WRONG]),
    "compile --calibration": (["compile", "{plan}", "--calibration", "{}"], ["onnx", "plan", "run", "input-not-a-list", *WRONG]),
    "prove MODEL|PLAN": (["prove", "{}", "{input}", "--out", "{out}"], ["input", "run", "bad-deployment", "other-json", "text", "binary", "truncated-onnx", "plan-dir", *WRONG]),
    "prove INPUT": (["prove", "{onnx}", "{}", "--out", "{out}"], ["onnx", "plan", "run", "other-json", "input-not-a-list", *WRONG]),
    "prove PLAN INPUT": (["prove", "{plan}", "{}", "--out", "{out}"], ["onnx", "plan", "run", *WRONG]),
    "prove --calibration": (["prove", "{onnx}", "{input}", "--out", "{out}", "--calibration", "{}"], ["onnx", "plan", *WRONG]),
    "verify DIR": (["verify", "{}"], ["onnx", "input", "plan", "plan-dir", "run", "bad-deployment", *WRONG]),
    "verify --plan": (["verify", "{run-dir}", "--plan", "{}"], ["onnx", "input", "run", "plan-dir", *WRONG]),
    "register PLAN": (["register", "{}", "--deployment", "{deployment}"], ["onnx", "input", "run", "bad-deployment", "plan-dir", *WRONG]),
    "register --deployment": (["register", "{plan}", "--deployment", "{}"], ["bad-deployment", "onnx", "input", "plan", *WRONG]),
    "register --keystore": (["register", "{plan}", "--deployment", "{deployment}", "--keystore", "{}"], ["input", "plan", *WRONG]),
    "request INPUT": (["request", "1", "{}", "--deployment", "{deployment}"], ["onnx", "plan", "run", "input-not-a-list", *WRONG]),
    "request --deployment": (["request", "1", "{input}", "--deployment", "{}"], ["bad-deployment", "plan", *WRONG]),
    "status --deployment": (["status", "--deployment", "{}"], ["bad-deployment", "input", *WRONG]),
    "claim --deployment": (["claim", "--deployment", "{}"], ["bad-deployment", "onnx", *WRONG]),
    "node --plan": (["node", "oracle", "--plan", "{}", "--deployment", "{deployment}", "--once"], ["onnx", "input", "run", "bad-deployment", "plan-dir", *WRONG]),
    "node --deployment": (["node", "challenger", "--plan", "{plan}", "--deployment", "{}", "--once"], ["bad-deployment", "onnx", "plan", *WRONG]),
}
CASES = [pytest.param(argv, kind, id=f"{name}:{kind}") for name, (argv, feed) in MATRIX.items() for kind in feed]


@pytest.mark.parametrize("argv,kind", CASES)
def test_every_command_refuses_every_wrong_artifact_in_one_line(argv, kind, kinds, tmp_path):
    bad = kinds[kind]
    fill = {"{plan}": kinds["plan"], "{input}": kinds["input"], "{onnx}": kinds["onnx"], "{deployment}": kinds["deployment"],
            "{run-dir}": kinds["run-dir"], "{out}": tmp_path / "out", "{}": bad}
    proc = imo(*[fill.get(a, a) for a in argv], cwd=tmp_path)
    assert_one_line_error(proc, mentions=bad.name)
    assert not (tmp_path / "out").exists()


def test_the_reported_tracebacks_are_one_line_now(kinds, tmp_path):
    line = assert_one_line_error(imo("prove", kinds["input"], kinds["input"], "--out", tmp_path / "x"))
    assert "input file in ezkl's format" in line and "not an ONNX model or a plan.json" in line
    line = assert_one_line_error(imo("compile", kinds["onnx"]))
    assert "is an ONNX model, not a plan.json" in line
    assert "pass " + str(kinds["plan"]) in assert_one_line_error(imo("compile", kinds["plan-dir"]))  # a hint, not just a no
    assert "not a valid ONNX model" in assert_one_line_error(imo("plan", kinds["truncated-onnx"]))


def test_command_line_misuse_is_argparse_usage_and_exit_2(kinds, tmp_path):
    for argv in (["prove", kinds["plan"], kinds["input"], "--out", tmp_path / "o", "--workers", "0"],
                 ["register", kinds["plan"], "--operator-share-bps", "10001"], ["node", "oracle", "--plan", kinds["plan"], "--poll", "-1"]):
        proc = imo(*argv)
        assert proc.returncode == 2 and "usage: imo" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unexpected_exception_is_still_one_line(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("first\nsecond")

    monkeypatch.setattr(cli, "cmd_models", boom)
    monkeypatch.delenv("IMO_DEBUG", raising=False)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("imo: error: unexpected RuntimeError: first second at test_cli.py:")
    assert "IMO_DEBUG=1 shows the traceback" in err
    monkeypatch.setenv("IMO_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["models"])


# ------------------------------------------------------------------ flags do what they say, or are refused


@pytest.mark.parametrize("argv,refused", [
    (["prove", "{plan}", "{input}", "--calibration", "{input}"], "--calibration: a plan's circuits are calibrated when compiled"),
    (["prove", "{plan}", "{input}", "--srs", "{input}"], "--srs: a plan's segments prove with the SRS"),
    (["prove", "{plan}", "{input}", "--address", "127.0.0.1:6379"], "--address: is the Ray cluster's address; add --executor ray"),
    (["prove", "{plan}", "{input}", "--executor", "ray", "--workers", "2"], "--workers: sets the local executor's pool size"),
    (["prove", "{plan}", "{input}", "--executor", "ray", "--gpu"], "--gpu: turns on the GPU prover of this machine"),
    (["prove", "{onnx}", "{input}", "--workers", "2"], "--workers: applies to plans"),
    (["prove", "{onnx}", "{input}", "--executor", "local"], "--executor: applies to plans"),
    (["prove", "{onnx}", "{input}", "--address", "127.0.0.1:6379"], "--address: applies to plans"),
    (["verify", "{run-dir}", "--rpc-url", "http://127.0.0.1:8545"], "--rpc-url: is the chain --onchain verifies on"),
    (["verify", "{proof-dir}", "--plan", "{plan}"], "--plan: applies to plan runs"),
    (["deploy", "--out", "{dir}", "--account", "0"], "--account: $IMO_PRIVATE_KEY already names the signing key"),
    (["register", "{zk-plan}", "--deployment", "{deployment}", "--window", "900"], "--window: "),
    (["request", "1", "{input}", "--deployment", "{deployment}", "--timeout", "5"], "--timeout: bounds --wait; add --wait"),
    (["request", "1", "{input}", "--deployment", "{deployment}", "--gas-limit", "100000"], "--gas-limit: is the gas of the --callback call"),
    (["request", "1", "{input}", "--deployment", "{deployment}", "--inbox", "{input}"], "--inbox: "),
    (["node", "challenger", "--plan", "{plan}", "--deployment", "{deployment}", "--inbox", "{dir}"], "--inbox: is an oracle option"),
    (["node", "challenger", "--plan", "{plan}", "--deployment", "{deployment}", "--dishonest", "output"], "--dishonest: is an oracle option"),
    (["node", "oracle", "--plan", "{plan}", "--deployment", "{deployment}", "--seed", "3"], "--seed: seeds the --dishonest choices"),
    (["node", "oracle", "--plan", "{plan}", "--deployment", "{deployment}", "--once", "--poll", "2"], "--poll: sets the time between polls; --once polls once"),
    (["deploy", "--out", "{input}"], "--out: "),
    (["bench", "--out", "{dir}", "--models", "nope"], "--models: unknown model(s) nope"),
])
def test_flags_that_would_do_nothing_are_refused(argv, refused, kinds, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMO_PRIVATE_KEY", "0x" + "22" * 32)
    zk_plan = tmp_path / "zk-plan"
    if "{zk-plan}" in argv:
        write_plan(*make_plan(cached_export("mlp").onnx_path), zk_plan)  # fully zk: nothing to dispute, no window
    fill = {"{plan}": kinds["plan"], "{input}": kinds["input"], "{onnx}": kinds["onnx"], "{deployment}": kinds["deployment"],
            "{run-dir}": kinds["run-dir"], "{dir}": kinds["dir"], "{zk-plan}": zk_plan / "plan.json", "{proof-dir}": kinds["proof-dir"]}
    argv = [str(fill.get(a, a)) for a in argv]
    if argv[0] == "prove":
        argv += ["--out", str(tmp_path / "out")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"imo: error: {refused}"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(any(d.metadata["Name"] == "ezkl-gpu" for d in metadata.distributions()), reason="a GPU build of ezkl is installed")
@pytest.mark.parametrize("model", ["onnx", "plan"])
def test_gpu_without_a_gpu_prover_is_an_error_before_any_work(model, kinds, tmp_path, capsys):
    assert cli.main(["prove", str(kinds[model]), str(kinds["input"]), "--out", str(tmp_path / "out"), "--gpu", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gpu: no GPU build of ezkl is installed" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ paths: relative to the artifact, from any directory


def test_plan_records_its_model_relative_to_itself_and_loads_it_absolute(tmp_path, monkeypatch):
    model = tmp_path / "models" / "model.onnx"
    model.parent.mkdir()
    shutil.copy(cached_export("mlp").onnx_path, model)
    monkeypatch.chdir(tmp_path)
    plan_file = write_plan(*make_plan(Path("models/model.onnx")), Path("plans/p"))
    assert json.loads(plan_file.read_text())["model"] == "../../models/model.onnx"
    monkeypatch.chdir(model.parent)
    assert Plan.load(tmp_path / plan_file).model == str(model.resolve())
    body = json.loads((tmp_path / plan_file).read_text())
    body["model"] = str(model)  # an absolute path, as older plans hold, still works
    (tmp_path / plan_file).write_text(json.dumps(body))
    assert Plan.load(tmp_path / plan_file).model == str(model)


TINY_SEED = 0


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The whole plan pipeline through the CLI, each command from a different working directory and with relative
    paths: plan (from a/), compile (from b/, the default calibration beside the model), prove (from c/). The model is
    a tiny 4→4→2 MLP planned fully zk per layer with a private input, so both boundaries before the output are
    hashed (the private input, and the tensor between two zk segments) and there are two zk proofs (deterministic:
    after the first run they come from the artifact store). Returns (root, run directory, the prove command's JSON)."""
    import torch
    from torch import nn

    from imo.models.export import export_onnx

    root = tmp_path_factory.mktemp("cli")
    model_dir = root / "work" / "models" / "tiny"
    model_dir.mkdir(parents=True)
    torch.manual_seed(TINY_SEED)
    rng = np.random.default_rng(TINY_SEED)
    x = rng.uniform(-1, 1, (1, 4)).astype(np.float32)
    export_onnx(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval(), x, model_dir / "model.onnx")
    (model_dir / "input.json").write_text(json.dumps({"input_data": [x.ravel().tolist()]}))
    (model_dir / "calibration.json").write_text(json.dumps({"input_data": [rng.uniform(-1, 1, (8, 4)).astype(np.float32).ravel().tolist()]}))
    for d in "abcd":
        (root / d).mkdir()
    proc = imo("plan", "../work/models/tiny/model.onnx", "--private-input", "--no-merge", "--out", "../work/plans/tiny", cwd=root / "a")
    assert proc.returncode == 0, proc.stderr
    proc = imo("compile", "../work/plans/tiny/plan.json", "--quiet", cwd=root / "b")
    assert proc.returncode == 0, proc.stderr
    proc = imo("prove", "../work/plans/tiny/plan.json", "../work/models/tiny/input.json", "--out", "../work/runs/r1", "--quiet", "--json", cwd=root / "c")
    assert proc.returncode == 0, proc.stderr
    return root, root / "work" / "runs" / "r1", json.loads(proc.stdout)


def test_plan_and_run_refer_to_their_neighbours_relative_to_themselves(cli_run):
    root, run_dir, _ = cli_run
    plan = json.loads((root / "work" / "plans" / "tiny" / "plan.json").read_text())
    assert plan["model"] == "../../models/tiny/model.onnx" and [s["mode"] for s in plan["segments"]] == ["zk", "zk"]
    assert json.loads((run_dir / "run.json").read_text())["plan"] == "../../plans/tiny/plan.json"


def test_verify_works_from_any_directory_and_after_the_tree_moves(cli_run, tmp_path):
    root, run_dir, _ = cli_run
    proc = imo("verify", "../work/runs/r1", "--json", cwd=root / "d")
    assert proc.returncode == 0 and [v["segment"] for v in json.loads(proc.stdout)["verified"]] == [0, 1], proc.stderr
    moved = tmp_path / "elsewhere"
    shutil.copytree(root / "work", moved)  # model, plan and run travel together
    (tmp_path / "cwd").mkdir()
    proc = imo("verify", moved / "runs" / "r1", "--json", cwd=tmp_path / "cwd")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["plan"] == str((moved / "plans" / "tiny" / "plan.json").resolve())
    proc = imo("compile", moved / "plans" / "tiny" / "plan.json", "--quiet", "--json", cwd=tmp_path / "cwd")  # finds its model's calibration
    assert proc.returncode == 0 and all(r["cached"] for r in json.loads(proc.stdout)), proc.stderr


def test_verify_onchain_checks_every_zk_segment_with_its_verifier_and_prints_gas(cli_run):
    root, _, _ = cli_run
    proc = imo("verify", "../work/runs/r1", "--onchain", cwd=root / "d")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(" verifies on-chain")[0] for line in lines if " verifies on-chain at 0x" in line] == ["seg 0", "seg 1"]
    assert lines[-1].startswith("total verify gas ")
    gas = [int(line.rsplit("verify ", 1)[1].split(" gas")[0].replace(",", "")) for line in lines if " verifies on-chain at 0x" in line]
    assert all(100_000 < g < 1_000_000 for g in gas), gas


def test_verify_onchain_fails_when_a_segment_verifier_rejects_its_proof(cli_run, tmp_path):
    from imo.errors import ProofError
    from imo.pipeline.chain import anvil
    from imo.pipeline.slice import verify_run_onchain

    root, _, _ = cli_run
    tree = tmp_path / "work"
    shutil.copytree(root / "work", tree)
    proof_file = tree / "runs" / "r1" / "seg1" / "proof.json"
    proof = json.loads(proof_file.read_text())
    felt = bytearray(bytes.fromhex(proof["instances"][0][-1]))
    felt[0] ^= 1  # the lowest bit of the last public output
    proof["instances"][0][-1] = felt.hex()
    proof_file.write_text(json.dumps(proof))
    with anvil() as chain:
        results = verify_run_onchain(tree / "plans" / "tiny" / "plan.json", root / "work" / "runs" / "r1", chain)
        assert [r.segment for r in results] == [0, 1] and all(r.accepted for r in results)
        with pytest.raises(ProofError, match=r"segment 1's on-chain verifier at 0x[0-9a-fA-F]+ rejected the proof"):
            verify_run_onchain(tree / "plans" / "tiny" / "plan.json", tree / "runs" / "r1", chain)


def test_verify_onchain_of_a_run_with_no_zk_segment_is_refused(tmp_path, capsys):
    from imo.circuits.plan import Segment

    plan = Plan("m.onnx", "00", "0", 7, 1, {"input": "public"}, 1, [], [Segment(0, "op", "budget", ["n"], ["Gemm"], "input", "output", [1, 4], [1, 2], 1, 1, "segments/seg0.onnx")])
    plan.plan_hash = plan.compute_hash()
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "plan.json").write_text(plan.to_json())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"plan": "../plan/plan.json", "plan_hash": plan.plan_hash, "boundaries": [
        {"index": 0, "name": "input", "shape": [1, 4], "quantized": [1, 2, 3, 4], "commitment": None},
        {"index": 1, "name": "output", "shape": [1, 2], "quantized": [5, 6], "commitment": None}]}))
    assert cli.main(["verify", str(tmp_path / "run"), "--onchain"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--onchain: plan" in err and "has no zk segment" in err


# ------------------------------------------------------------------ private data stays out of shareable artifacts


def test_the_run_directory_shares_only_run_json_and_proofs(cli_run):
    _, run_dir, _ = cli_run
    public = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and "private" not in p.relative_to(run_dir).parts)
    assert public == ["run.json", "seg0/proof.json", "seg1/proof.json"]  # no input copies, no witnesses (segment internals)
    assert not list(run_dir.rglob("*witness*")) and not list(run_dir.rglob("*input*"))


def test_private_tensors_are_only_in_the_owner_only_private_folder(cli_run):
    root, run_dir, printed = cli_run
    x = onnx_io.load_input(root / "work" / "models" / "tiny" / "input.json", Plan.load(root / "work" / "plans" / "tiny" / "plan.json").input_signature())
    q = quantize(x, 7).ravel()
    run = json.loads((run_dir / "run.json").read_text())
    assert [b["quantized"] is None for b in run["boundaries"]] == [True, True, False]  # the input, and the tensor between zk segments
    assert all(b["commitment"] for b in run["boundaries"][:2])
    assert printed["boundaries"] == run["boundaries"]  # what `imo prove --json` prints is as public as run.json
    # the operator keeps the hashed tensors, readable by nobody else
    private = run_dir / "private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert [p.name for p in private.iterdir()] == ["boundaries.json"]
    assert stat.S_IMODE((private / "boundaries.json").stat().st_mode) == 0o600
    hidden = json.loads((private / "boundaries.json").read_text())["boundaries"]
    assert [b["index"] for b in hidden] == [0, 1] and hidden[0]["quantized"] == q.tolist()
    assert [b["commitment"] for b in hidden] == [b["commitment"] for b in run["boundaries"][:2]]
    # no public file holds a hashed tensor: not as floats, not quantized, not as field elements
    needles = ["input_data", json.dumps(x.ravel().tolist())]
    for b in hidden:
        values = b["quantized"]
        needles += [json.dumps(values), json.dumps(values, separators=(",", ":")), json.dumps([int_to_felt(v) for v in values])]
    for path in (run_dir / "run.json", run_dir / "seg0" / "proof.json", run_dir / "seg1" / "proof.json"):
        text = path.read_text()
        assert not any(n in text or n in json.dumps(json.loads(text)) for n in needles), path
        if path.name == "proof.json":
            pretty = json.loads(text)["pretty_public_inputs"]
            assert pretty["inputs"] == [] and pretty["rescaled_inputs"] == []
