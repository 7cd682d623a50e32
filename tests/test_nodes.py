"""Oracle and challenger nodes against a real anvil with real ezkl proofs: honest answers are finalized and never
slashed, randomized dishonest answers (op boundary, output, commitment) are all caught with fraud proofs and
slashed, ETH is conserved, and a node killed mid-work finishes after a restart without submitting twice.

The model is a 3-layer MLP (8→8→8→4) planned as zk (private input layer) → op → op, so there is an op→op boundary
to corrupt. Proofs (~15 s each at logrows 15 on a loaded CPU) are content-addressed in the artifact store: the
answers use two inputs, so the whole module proves at most 2 zk + 4 fraud proofs (+1 for the subprocess crash test)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from web3.logs import DISCARD

from imo.circuits.plan import Plan, make_plan, write_plan
from imo.models.export import export_onnx
from imo.pipeline.nodes import (
    ChallengerNode,
    Inbox,
    OracleNode,
    decode_boundaries,
    encode_boundaries,
    input_commitment,
    published_boundaries,
    register_plan,
)
from imo.pipeline.state import NodeState
from imo.proving.segments import compile_plan
from imo.verifier_contracts.contracts import deploy_protocol, transact

FEE = 10**15
OPERATOR_BPS = 2_000
WINDOW = 600
MIN_BOND = 10**16
REQUESTER, HONEST, DISHONEST, CHALLENGER = 5, 6, 7, 8


def advance(w3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    """The zk → op → op plan, compiled (circuits come from the artifact store after the first run)."""
    root = tmp_path_factory.mktemp("nodes-model")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 8)).astype(np.float32)
    export_onnx(model, x, root / "model.onnx")
    plan_file = write_plan(*make_plan(root / "model.onnx", private_input=True, budget_logrows=14, merge=False), root / "plan")
    compile_plan(plan_file, rng.uniform(-1, 1, (8, 1, 8)).astype(np.float32), quiet=True)
    return plan_file


def inputs(count: int, seed: int) -> list[np.ndarray]:
    return [np.random.default_rng(seed + i).uniform(-1, 1, (1, 8)).astype(np.float32) for i in range(count)]


@pytest.fixture(scope="module")
def net(chain, plan_file, tmp_path_factory):
    w3 = chain.w3
    owner = w3.eth.accounts[0]
    deployment = deploy_protocol(w3, owner, sale=None)
    model_id = register_plan(w3, owner, deployment, plan_file, "mlp3", FEE, OPERATOR_BPS, WINDOW)
    root = tmp_path_factory.mktemp("nodes")
    deployment.write(root / "deployment.json")
    return SimpleNamespace(w3=w3, rpc_url=chain.rpc_url, deployment=deployment, model_id=model_id, root=root,
                           plan=Plan.load(plan_file), plan_file=plan_file, oracle=deployment.contract(w3, "AIOracle"),
                           token=deployment.contract(w3, "RevShareToken"), accounts=w3.eth.accounts)


def request(net, c0: int) -> int:
    receipt = transact(net.oracle.functions.requestCallback(net.model_id, c0.to_bytes(32, "big"), "0x" + "00" * 20, 0, b""),
                       net.accounts[REQUESTER], value=FEE)
    return net.oracle.events.AICallbackRequest().process_receipt(receipt, errors=DISCARD)[0]["args"]["requestId"]


def oracle_node(net, account: int, xs, **kwargs) -> OracleNode:
    inbox = Inbox({})
    for x in xs:
        inbox.put(net.plan, x)
    kwargs.setdefault("state", NodeState())
    return OracleNode(net.rpc_url, net.deployment, net.plan_file, net.accounts[account], inbox=inbox, **kwargs)


def events(net, name: str, from_block: int) -> list:
    return getattr(net.oracle.events, name)().get_logs(from_block=from_block, to_block="latest")


# ---------------------------------------------------------------- units


def test_boundary_encoding_round_trips_in_the_narrowest_width():
    tensors = {1: np.array([-300, 5, 127]), 2: np.array([1 << 40, -1]), 3: np.array([-1, 0, 1] * 100)}
    data = encode_boundaries(tensors)
    back = decode_boundaries(data)
    assert set(back) == {1, 2, 3} and all(np.array_equal(back[k], tensors[k]) for k in tensors)
    assert len(data) < 60
    with pytest.raises(ValueError):
        decode_boundaries(b"not zlib")


def test_plan_has_an_op_to_op_boundary_and_publishes_only_op_boundaries(net):
    assert [s.mode for s in net.plan.segments] == ["zk", "op", "op"]
    assert published_boundaries(net.plan) == [1, 2]  # not the private input, not the public output


def test_state_survives_reopening_and_keeps_the_cursor(tmp_path):
    state = NodeState(tmp_path / "s.sqlite")
    state.record_scan(7, [(1, 1, "ab"), (2, 1, "cd")])
    state.set_status(1, "proving")
    state.record_scan(9, [(1, 1, "ab")])  # a rescan does not reset a request
    state.close()
    again = NodeState(tmp_path / "s.sqlite")
    assert again.cursor == 9
    assert [(r.request_id, r.status) for r in again.requests()] == [(1, "proving"), (2, "seen")]
    assert [s for s, _ in again.history(1)] == ["seen", "proving"]


# ---------------------------------------------------------------- fault injection


def test_randomized_dishonest_answers_are_slashed_and_honest_ones_finalized(net):
    w3, accounts = net.w3, net.accounts
    xs = inputs(2, seed=100)
    tracked = [accounts[i] for i in (0, REQUESTER, HONEST, DISHONEST, CHALLENGER)] + [net.deployment.oracle, net.deployment.token]
    start_block = w3.eth.block_number
    before = sum(w3.eth.get_balance(a) for a in tracked)
    credits_before = {i: net.oracle.functions.credits(accounts[i]).call() for i in (REQUESTER, HONEST, CHALLENGER)}
    token_before = w3.eth.get_balance(net.deployment.token)

    dishonest = oracle_node(net, DISHONEST, xs, dishonest="random", seed=7)
    challenger = ChallengerNode(net.rpc_url, net.deployment, net.plan_file, accounts[CHALLENGER], state=NodeState())
    honest = oracle_node(net, HONEST, xs)

    # phase 1: 20 requests answered dishonestly, each caught within its window
    bad = [request(net, input_commitment(net.plan, xs[i % 2])) for i in range(20)]
    t0 = time.perf_counter()
    dishonest.step()
    submit_seconds = (time.perf_counter() - t0) / len(bad)
    challenger.step()
    modes = Counter(dishonest.state.request(r).detail["dishonest"] for r in bad)
    assert set(modes) == {"boundary", "output", "commitment"}, modes
    assert all(challenger.state.request(r).status == "challenged" for r in bad)
    assert all(dishonest.state.request(r).status == "submitted" for r in bad)
    dishonest.step()
    assert all(dishonest.state.request(r).status == "challenged" for r in bad)
    slashed = events(net, "AIResultChallenged", start_block)
    assert sorted(e["args"]["requestId"] for e in slashed) == sorted(bad)
    assert {e["args"]["segment"] for e in slashed} == {2, 3}  # the op→op boundary/commitment, and the output

    # phase 2: the honest node answers 20 fresh requests and re-answers the 20 reopened ones; nothing is challenged
    good = [request(net, input_commitment(net.plan, xs[i % 2])) for i in range(20)]
    honest.step()
    assert all(honest.state.request(r).status == "submitted" for r in bad + good)
    challenger.step()
    assert all(challenger.state.request(r).status == "ok" for r in bad + good)
    advance(w3, WINDOW)
    challenger.step()
    assert all(challenger.state.request(r).status == "finalized" for r in bad + good)
    assert all(net.oracle.functions.isFinalized(r).call() for r in bad + good)
    assert len(events(net, "AIResultChallenged", start_block)) == 20  # no honest answer was ever challenged
    honest.step()
    assert all(honest.state.request(r).status == "finalized" for r in bad + good)

    # money: slashed bonds to the challenger, fees back to the requester, revenue to the token, payouts to the operator
    credits = {i: net.oracle.functions.credits(accounts[i]).call() - credits_before[i] for i in (REQUESTER, HONEST, CHALLENGER)}
    assert credits[CHALLENGER] == 20 * MIN_BOND
    assert credits[REQUESTER] == 20 * FEE
    revenue = FEE * (10_000 - OPERATOR_BPS) // 10_000
    assert w3.eth.get_balance(net.deployment.token) - token_before == 20 * revenue
    assert credits[HONEST] == 40 * MIN_BOND + 20 * (FEE - revenue)  # reopened requests carry no fee any more

    # ETH conserved: what left the tracked accounts is exactly the gas paid
    gas_paid = 0
    for number in range(start_block + 1, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number)["transactions"]:
            receipt = w3.eth.get_transaction_receipt(tx)
            gas_paid += receipt.gasUsed * receipt.effectiveGasPrice
    assert before - sum(w3.eth.get_balance(a) for a in tracked) == gas_paid

    gas = {step: int(np.mean([t["gas_used"] for t in node.state.txs(step)]))
           for node, step in ((dishonest, "submit"), (challenger, "challenge"), (challenger, "finalize"))}
    print(f"\nmean gas: {gas}; oracle step per request (proofs cached): {submit_seconds:.2f} s")


# ---------------------------------------------------------------- crash safety


def test_oracle_crash_after_the_submit_transaction_does_not_submit_twice(net, tmp_path):
    xs = inputs(1, seed=100)
    node = oracle_node(net, HONEST, xs, state=NodeState(tmp_path / "oracle.sqlite"))
    request_id = request(net, input_commitment(net.plan, xs[0]))
    start = net.w3.eth.block_number

    def die(*_):
        raise SystemExit("killed after the submit transaction, before recording it")

    node.state.record_tx = die
    with pytest.raises(SystemExit):
        node.step()
    assert NodeState(tmp_path / "oracle.sqlite").request(request_id).status == "proving"
    restarted = oracle_node(net, HONEST, xs, state=NodeState(tmp_path / "oracle.sqlite"))
    restarted.step()
    restarted.step()
    assert restarted.state.request(request_id).status == "submitted"
    assert [e["args"]["requestId"] for e in events(net, "AIResultSubmitted", start)] == [request_id]


def test_challenger_crash_while_proving_still_challenges_in_the_window(net, tmp_path):
    xs = inputs(1, seed=101)
    request_id = request(net, input_commitment(net.plan, xs[0]))
    oracle_node(net, DISHONEST, xs, dishonest="output").step()
    challenger = ChallengerNode(net.rpc_url, net.deployment, net.plan_file, net.accounts[CHALLENGER], state=tmp_path / "c.sqlite")

    def die(*_):
        raise SystemExit("killed while proving")

    challenger.fraud_proof = die
    with pytest.raises(SystemExit):
        challenger.step()
    assert NodeState(tmp_path / "c.sqlite").request(request_id).status == "challenging"
    restarted = ChallengerNode(net.rpc_url, net.deployment, net.plan_file, net.accounts[CHALLENGER], state=tmp_path / "c.sqlite")
    restarted.step()
    assert restarted.state.request(request_id).status == "challenged"
    assert net.oracle.functions.getRequest(request_id).call()[0][6] == 1  # Pending again


def test_killed_oracle_process_resumes_and_submits_once(net, tmp_path):
    """`imo node oracle` killed with SIGKILL while proving a fresh input; the restarted process submits exactly once."""
    x = inputs(1, seed=int.from_bytes(os.urandom(4), "little"))[0]  # never proven before: the kill lands mid-proof
    inbox = Inbox(tmp_path / "inbox")
    request_id = request(net, inbox.put(net.plan, x))
    start = net.w3.eth.block_number
    state_file = tmp_path / "oracle.sqlite"
    cmd = [str(Path(sys.executable).with_name("imo")), "node", "oracle", "--rpc-url", net.rpc_url,
           "--deployment", str(net.root / "deployment.json"), "--plan", str(net.plan_file), "--state", str(state_file),
           "--inbox", str(tmp_path / "inbox"), "--account", str(HONEST), "--poll", "0.2", "--quiet"]

    def status() -> str | None:
        if not state_file.is_file():
            return None
        try:
            row = sqlite3.connect(state_file).execute("SELECT status FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        except sqlite3.Error:
            return None
        return row and row[0]

    def run_until(wanted: str, timeout: float = 240) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while status() != wanted:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"status {status()} after {timeout} s"
            time.sleep(0.05)
        return proc

    first = run_until("proving")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert not events(net, "AIResultSubmitted", start)
    second = run_until("submitted")
    time.sleep(1.0)  # a few more polls: nothing is sent again
    second.send_signal(signal.SIGINT)
    second.wait(timeout=30)
    assert [e["args"]["requestId"] for e in events(net, "AIResultSubmitted", start)] == [request_id]
