"""The operator's and the dapp's commands as a user runs them, in subprocesses against a real anvil, every one
signing locally with fresh keys (from $IMO_PRIVATE_KEY or an encrypted keystore) that the chain never unlocked:
deploy → register → request → oracle node → challenger node → status → claim. The subprocesses are out of reach of
conftest.py's guard, so `imo()` refuses to run a command that sends transactions without a key."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ANVIL_DEV_KEY, advance, funded_accounts, tiny_hybrid_plan
from imo.pipeline.keys import PASSWORD_ENV, PRIVATE_KEY_ENV, write_keystore
from imo.verifier_contracts.contracts import Deployment, TokenConfig, transact

ETH = 10**18
SIGNING_COMMANDS = {"deploy", "register", "request", "node", "claim"}  # the commands that send transactions


def imo(*args: str, key: str | None = None, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    if args[0] in SIGNING_COMMANDS:  # a node account (--account, or the local chain's default) would be unlocked
        assert (key or "--keystore" in args) and "--account" not in args, f"imo {args[0]} must sign with a key or --keystore"
    full_env = {k: v for k, v in os.environ.items() if k not in (PRIVATE_KEY_ENV, PASSWORD_ENV)}
    if key:
        full_env[PRIVATE_KEY_ENV] = key
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "imo.pipeline.cli", *args], capture_output=True, text=True, env=full_env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"imo {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    return tiny_hybrid_plan(tmp_path_factory.mktemp("operator-model"))


@pytest.fixture(scope="module")
def keys(chain):
    """Fresh accounts funded by anvil_setBalance: none of them is unlocked on the node."""
    names = ("deployer", "oracle", "challenger", "user")
    accounts = dict(zip(names, funded_accounts(chain.w3, len(names), wei=100 * ETH)))
    assert not set(a.address for a in accounts.values()) & set(chain.w3.eth.accounts)
    return accounts


def test_the_whole_operator_and_dapp_flow_signs_locally(chain, plan_file, keys, tmp_path):
    w3, url = chain.w3, chain.rpc_url
    k = {n: "0x" + a.key.hex().removeprefix("0x") for n, a in keys.items()}
    out = tmp_path / "deploy"
    deployed = json.loads(imo("deploy", "--rpc-url", url, "--out", str(out), "--json", key=k["deployer"]).stdout)
    dep_file = str(out / "deployment.json")
    assert deployed["deployer"] == keys["deployer"].address and Deployment.read(out / "deployment.json").rpc_url == url

    reg = json.loads(imo("register", str(plan_file), "--deployment", dep_file, "--name", "mlp3", "--json", key=k["deployer"]).stdout)
    assert reg["model_id"] == 1 and reg["digest"].startswith("0x") and reg["boundary_sizes"][0] == 0

    keystore = tmp_path / "oracle.keystore"
    write_keystore(keystore, k["oracle"], "hunter2")
    assert oct(keystore.stat().st_mode & 0o777) == "0o600"
    oracle_env = {PASSWORD_ENV: "hunter2"}
    inbox = tmp_path / "inbox"
    node_args = ("--deployment", dep_file, "--plan", str(plan_file), "--once", "--json")
    report = json.loads(imo("node", "oracle", *node_args, "--keystore", str(keystore), "--inbox", str(inbox), "--state", str(tmp_path / "o.sqlite"), env=oracle_env).stdout)
    assert report["account"] == keys["oracle"].address and report["models"] == [1]

    (tmp_path / "in.json").write_text(json.dumps({"input_data": [[0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8]]}))
    req = json.loads(imo("request", "1", str(tmp_path / "in.json"), "--deployment", dep_file, "--inbox", str(inbox), "--json", key=k["user"]).stdout)
    assert req["request_id"] == 1 and any(inbox.iterdir())

    report = json.loads(imo("node", "oracle", *node_args, "--keystore", str(keystore), "--inbox", str(inbox), "--state", str(tmp_path / "o.sqlite"), env=oracle_env).stdout)
    assert report["requests"] == {"submitted": 1}, report
    challenger = ("node", "challenger", *node_args, "--state", str(tmp_path / "c.sqlite"))
    assert json.loads(imo(*challenger, key=k["challenger"]).stdout)["requests"] == {"ok": 1}
    advance(w3, 601)
    assert json.loads(imo(*challenger, key=k["challenger"]).stdout)["requests"] == {"finalized": 1}

    status = json.loads(imo("status", "1", "--deployment", dep_file, "--json").stdout)
    assert status["status"] == "finalized" and status["submitter"] == keys["oracle"].address and len(status["result"]["output"]) == 4

    deployment = Deployment.read(out / "deployment.json")
    advance(w3, TokenConfig().snapshot_interval_s)
    transact(deployment.contract(w3, "RevShareToken").functions.snapshot(), keys["user"])
    claimed = json.loads(imo("claim", "--deployment", dep_file, "--json", key=k["deployer"]).stdout)
    assert claimed["claimed_wei"] > 0 and claimed["account"] == keys["deployer"].address
    withdrawn = json.loads(imo("claim", "--withdraw", "--deployment", dep_file, "--json", key=k["oracle"]).stdout)
    assert withdrawn["withdrawn_wei"] >= reg["terms"]["bond_wei"]


def test_deploy_without_a_url_leaves_a_local_chain_the_next_commands_use(plan_file, tmp_path):
    deployed = json.loads(imo("deploy", "--out", str(tmp_path), "--json", key=ANVIL_DEV_KEY).stdout)  # its chain is new: a genesis key
    try:
        assert deployed["local_chain"]["pid"] > 0 and deployed["rpc_url"].startswith("http://127.0.0.1:")
        status = imo("status", "--deployment", str(tmp_path / "deployment.json"))
        assert status.stdout.strip() == "no requests"
    finally:
        os.kill(deployed["local_chain"]["pid"], signal.SIGTERM)


@pytest.mark.parametrize("content", ["", "{", '{"chain_id": 1}', '{"chain_id": 1, "deployer": "x", "token": "nope", "oracle": "x", "consumer": "x"}'])
def test_a_malformed_deployment_file_is_one_line(tmp_path, content):
    bad = tmp_path / "deployment.json"
    bad.write_text(content)
    proc = imo("status", "--deployment", str(bad), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "not a deployment" in proc.stderr


def test_a_bad_key_or_keystore_password_is_one_line(chain, tmp_path):
    bad = imo("deploy", "--rpc-url", chain.rpc_url, "--out", str(tmp_path), key="0x1234", check=False)
    assert bad.returncode == 1 and "IMO_PRIVATE_KEY" in bad.stderr and "Traceback" not in bad.stderr
    keystore = tmp_path / "k.json"
    write_keystore(keystore, "0x" + "11" * 32, "right")
    wrong = imo("deploy", "--rpc-url", chain.rpc_url, "--out", str(tmp_path), "--keystore", str(keystore), env={PASSWORD_ENV: "wrong"}, check=False)
    assert wrong.returncode == 1 and "cannot decrypt" in wrong.stderr and "Traceback" not in wrong.stderr
    assert not (tmp_path / "deployment.json").exists()


def test_an_unreachable_rpc_is_one_line(tmp_path):
    proc = imo("deploy", "--rpc-url", "http://127.0.0.1:9", "--out", str(tmp_path), key="0x" + "11" * 32, check=False)
    assert proc.returncode == 1 and "no JSON-RPC node answers" in proc.stderr and "Traceback" not in proc.stderr
