"""The oracle node and the challenger node (imo.pipeline.oracle_node / challenger_node) on a real anvil with real ezkl
proofs: honest answers are finalized and never challenged, randomized dishonest answers are all slashed and then
answered honestly, one bad request never blinds the challenger, registrations that do not match the compiled plan are
not served, unprovable requests are declined, and a node killed (or cut off from its RPC) at any point finishes the
game after a restart without sending anything twice.

The model is a 3-layer MLP (8→8→8→4) planned zk (private input layer) → op → op, so there is an op→op boundary to
corrupt and a zk proof to forge. Proofs are content-addressed in the artifact store and the answers draw their inputs
from a fixed pool of two, so the default tier proves at most 2 zk + 4 fraud proofs once, ever (plus one fresh input
in the subprocess kill test). Every test deploys its own AIOracle on the session's anvil (a quarter of a second), so
request ids, scans and balances are its own; its parties (the nodes too) are fresh funded accounts that sign locally."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from eth_abi import decode

from helpers import RestartableAnvil, advance, calls_to, funded_accounts, gas_paid, tiny_hybrid_plan
from imo.circuits.fixed_point import quantize
from imo.circuits.plan import Plan
from imo.errors import ImoError, UnprovableClaimError
from imo.pipeline import oracle_node as oracle_node_module
from imo.pipeline.challenger_node import ChallengerNode
from imo.pipeline.faults import FAULTS
from imo.pipeline.oracle_node import Inbox, OracleNode
from imo.pipeline.state import NodeState
from imo.proving.protocol import PlanRuntime, SegmentSpec, request_input
from imo.verifier_contracts.contracts import ContractRevertError, deploy_protocol
from imo.verifier_contracts.oracle_client import OracleClient, Status
from imo.verifier_contracts.registration import Terms, dispute_costs, register_plan

OWNER, REQUESTER, HONEST, DISHONEST, CHALLENGER = 0, 5, 6, 7, 8
CALLBACK_GAS = 300_000  # OracleConsumer.CALLBACK_GAS


def pool(count: int) -> list[np.ndarray]:
    """The fixed inputs answers are drawn from (their proofs stay in the artifact store across runs)."""
    return [np.random.default_rng(i).uniform(-1, 1, (1, 8)).astype(np.float32) for i in range(count)]


POOL = pool(2)


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    """The zk → op → op plan, compiled (its circuits come from the artifact store after the first run)."""
    return tiny_hybrid_plan(tmp_path_factory.mktemp("nodes-model"))


@pytest.fixture(scope="module")
def window(plan_file) -> int:
    """Challenge and response window: what a dispute of this plan needs, at least ten minutes."""
    return max(600, dispute_costs(plan_file).min_window_s)


class Market:
    """One AIOracle deployment on a chain with the plan registered as model `model_id`, and shorthands for the test."""

    def __init__(self, w3, rpc_url: str, plan_file: Path, root: Path, window: int, register: bool = True):
        self.w3, self.rpc_url, self.plan_file, self.root, self.window = w3, rpc_url, plan_file, root, window
        self.plan = Plan.load(plan_file)
        self.signers = funded_accounts(w3, CHALLENGER + 1)  # by role (OWNER … CHALLENGER): fresh keys, signing locally
        self.accounts = [signer.address for signer in self.signers]
        self.deployment = deploy_protocol(w3, self.signers[OWNER], sale=None)
        self.client = OracleClient(w3, self.deployment.oracle, self.signers[OWNER])
        self.model_id = None
        if register:
            self.register()
        self.start = w3.eth.block_number

    def register(self) -> int:
        terms = Terms(challenge_window_s=self.window, response_window_s=self.window)
        self.model_id, _, _ = register_plan(self.client, self.deployment, self.plan_file, "mlp3", terms)
        self.bond = self.client.model(self.model_id).spec.bond_wei
        self.deployment_file = self.deployment.write(self.root / "deployment.json")
        return self.model_id

    def request(self, x: np.ndarray | None = None, key: bytes | None = None, callback: bool = False, model_id: int | None = None) -> int:
        user = self.client.as_sender(self.signers[REQUESTER])
        key = request_input(self.plan, x) if key is None else key
        if callback:
            rid, _ = user.request_callback(model_id or self.model_id, key, self.deployment.consumer, CALLBACK_GAS)
        else:
            rid, _ = user.request_callback(model_id or self.model_id, key)
        return rid

    def oracle_node(self, account: int = HONEST, xs=POOL, **kwargs) -> OracleNode:
        if "inbox" not in kwargs:
            kwargs["inbox"] = Inbox({})
            for x in xs:
                kwargs["inbox"].put(self.plan, x)
        kwargs.setdefault("state", NodeState())
        return OracleNode(self.rpc_url, self.deployment, self.plan_file, self.signers[account], **kwargs)

    def challenger(self, **kwargs) -> ChallengerNode:
        kwargs.setdefault("state", NodeState())
        return ChallengerNode(self.rpc_url, self.deployment, self.plan_file, self.signers[CHALLENGER], **kwargs)

    def events(self, name: str, rid: int | None = None) -> list[dict]:
        logs = getattr(self.client.contract.events, name)().get_logs(from_block=self.start + 1)
        return [e["args"] for e in logs if rid is None or e["args"]["requestId"] == rid]

    def calls(self, account: int) -> Counter:
        """How many times `account` called each oracle function since the market opened."""
        return Counter(name for name, _ in calls_to(self.client.contract, self.start, self.accounts[account]))

    def status(self, rid: int) -> Status:
        return self.client.request(rid).status

    def wealth(self, who: str) -> int:
        """Balance plus what the oracle owes it."""
        return self.w3.eth.get_balance(who) + self.client.credits(who)


@pytest.fixture
def market(chain, plan_file, window, tmp_path) -> Market:
    return Market(chain.w3, chain.rpc_url, plan_file, tmp_path, window)


def native_output(m: Market, x: np.ndarray) -> list[int]:
    """y of x on the canonical fixed-point executor (bit-exact with the circuits)."""
    runtime = PlanRuntime(m.plan_file)
    q = quantize(x, m.plan.scale)
    for k in range(1, runtime.n + 1):
        q = runtime.run_op(k, q)
    return [int(v) for v in q]


def finish(m: Market, challenger: ChallengerNode, *oracles: OracleNode) -> None:
    """Let the challenge window pass; the challenger finalizes what it checked, the oracles record it."""
    advance(m.w3, m.window + 1)
    challenger.step()
    for node in oracles:
        node.step()


# ---------------------------------------------------------------- units


def test_plan_is_zk_then_op_op_with_public_op_boundaries(plan_file):
    plan = Plan.load(plan_file)
    assert [s.mode for s in plan.segments] == ["zk", "op", "op"]
    assert plan.boundary_sizes() == [0, 8, 8, 4]  # the private input is hashed; every boundary an op touches is public


def test_state_survives_reopening_and_keeps_the_cursor(tmp_path):
    state = NodeState(tmp_path / "s.sqlite")
    state.record_scan(7, [(1, 1, "ab"), (2, 1, "cd")])
    state.set_status(1, "executing", note="x")
    state.set_status(1, "committed", gas=5)
    state.record_scan(9, [(1, 1, "ab")])  # a rescan does not reset a request
    state.close()
    again = NodeState(tmp_path / "s.sqlite")
    assert again.cursor == 9
    assert [(r.request_id, r.status) for r in again.requests()] == [(1, "committed"), (2, "seen")]
    assert again.request(1).detail == {"note": "x", "gas": 5}
    assert [s for s, _ in again.history(1)] == ["seen", "executing", "committed"]
    assert [r.request_id for r in again.requests("seen")] == [2]
    with pytest.raises(KeyError):
        again.set_status(3, "seen")


# ---------------------------------------------------------------- the honest path


def test_honest_answers_are_finalized_never_challenged_and_eth_is_conserved(market):
    m = market
    w3, a = m.w3, m.accounts
    people = [a[REQUESTER], a[HONEST], a[CHALLENGER]]
    tracked = people + [m.deployment.oracle, m.deployment.token, m.deployment.consumer]
    before = {who: w3.eth.get_balance(who) for who in tracked}
    wealth = {who: m.wealth(who) for who in people}
    start = w3.eth.block_number

    oracle, challenger = m.oracle_node(HONEST), m.challenger()
    rids = [m.request(x, callback=True) for x in POOL]
    fees = [m.client.request(r).fee for r in rids]
    assert fees == [m.client.estimate_fee(m.model_id, CALLBACK_GAS)] * 2
    oracle.step()
    assert [oracle.state.request(r).status for r in rids] == ["submitted"] * 2
    challenger.step()
    assert [challenger.state.request(r).status for r in rids] == ["ok"] * 2
    challenger.step()  # the window is still open: nothing to finalize yet
    assert [m.status(r) for r in rids] == [Status.SUBMITTED] * 2
    finish(m, challenger, oracle)
    assert [m.status(r) for r in rids] == [Status.FINALIZED] * 2
    assert [challenger.state.request(r).status for r in rids] == ["finalized"] * 2
    assert [oracle.state.request(r).status for r in rids] == ["finalized"] * 2
    assert not m.events("AIResultChallenged") and not m.events("AIResultSlashed") and not m.events("AIRequestDeclined")
    assert oracle.warnings.items == [] and challenger.warnings.items == []

    # the requester's callback got y, exactly what the circuits compute, at the plan's scale
    consumer = m.deployment.contract(w3, "OracleConsumer")
    for rid, x in zip(rids, POOL):
        values, scale = decode(["int256[]", "uint256"], consumer.functions.outputOf(rid).call())
        assert list(values) == native_output(m, x) and scale == m.plan.scale

    # money: revenue to the token, operator share and bond back to the oracle, callback gas to the finalizer
    split = {e["requestId"]: e for e in m.events("AIRequestFinalized")}
    assert sorted(split) == rids
    spec = m.client.model(m.model_id).spec
    revenue = sum(e["modelRevenue"] for e in split.values())
    assert revenue == 2 * spec.fee_wei * (10_000 - spec.operator_share_bps) // 10_000
    assert w3.eth.get_balance(m.deployment.token) - before[m.deployment.token] == revenue
    assert m.wealth(a[HONEST]) - wealth[a[HONEST]] == sum(e["operatorPayout"] for e in split.values()) - gas_paid(w3, start, a[HONEST])
    assert m.wealth(a[CHALLENGER]) - wealth[a[CHALLENGER]] == sum(e["finalizerPayout"] for e in split.values()) - gas_paid(w3, start, a[CHALLENGER])
    assert all(e["finalizerPayout"] == CALLBACK_GAS * m.client.fn.callbackGasPrice().call() for e in split.values())
    for who in (HONEST, CHALLENGER):
        m.client.as_sender(m.signers[who]).withdraw()
    assert m.client.credits(a[HONEST]) == m.client.credits(a[CHALLENGER]) == 0

    # ETH conserved: what left the accounts involved is exactly the gas they paid
    assert sum(before.values()) - sum(w3.eth.get_balance(who) for who in tracked) == gas_paid(w3, start)


# ---------------------------------------------------------------- fault injection


@pytest.mark.parametrize("count, inputs, seed", [
    pytest.param(20, 2, 3, id="20-requests"),
    pytest.param(60, 4, 11, id="60-requests", marks=pytest.mark.slow),
])
def test_randomized_dishonest_answers_are_all_slashed_then_answered_honestly(market, monkeypatch, count, inputs, seed):
    m = market
    w3, a = m.w3, m.accounts
    rng = random.Random(seed)
    xs = pool(inputs)
    asked = []

    def spy(runtime, claim, fault, r):
        asked.append(fault)
        return real_corrupt(runtime, claim, fault, r)

    real_corrupt = oracle_node_module.corrupt
    monkeypatch.setattr(oracle_node_module, "corrupt", spy)

    people = [a[REQUESTER], a[HONEST], a[DISHONEST], a[CHALLENGER]]
    tracked = people + [m.deployment.oracle, m.deployment.token]
    before = sum(w3.eth.get_balance(who) for who in tracked)
    wealth = {who: m.wealth(who) for who in people}
    token_before = w3.eth.get_balance(m.deployment.token)
    start = w3.eth.block_number

    liar = m.oracle_node(DISHONEST, xs, dishonest="random", seed=seed)
    honest = m.oracle_node(HONEST, xs)
    challenger = m.challenger()
    rids = [m.request(rng.choice(xs)) for _ in range(count)]
    fees = {r: m.client.request(r).fee for r in rids}

    # the liar answers first; the honest node sees every request taken
    liar.step()
    honest.step()
    assert all(liar.state.request(r).status == "submitted" for r in rids)
    assert all(honest.state.request(r).status == "answered_by_other" for r in rids)
    applied = {r: liar.state.request(r).detail["dishonest"] for r in rids}
    assert set(asked) == set(FAULTS), asked
    assert set(applied.values()) == {"boundary", "output", "proof"}  # this plan has no hashed inner boundary: commitment → proof

    # every lie is caught in its window: a forged proof slashes at once, a wrong op segment is disputed with a proof
    challenger.step()
    expected = {r: {"proof": ("slashed", 1), "boundary": ("disputing", 2), "output": ("disputing", 3)}[applied[r]] for r in rids}
    assert {r: (challenger.state.request(r).status, challenger.state.request(r).detail["segment"]) for r in rids} == expected
    liar.step()  # it cannot answer any dispute: its claims are not what the circuits compute
    disputed = [r for r in rids if applied[r] != "proof"]
    assert all(any(f"request {r}: our claim for segment" in w for w in liar.warnings.items) for r in disputed)
    assert not m.events("AIDisputeAnswered")
    advance(w3, m.window + 1)
    challenger.step()  # the unanswered disputes are resolved
    liar.step()
    assert all(challenger.state.request(r).status == "slashed" for r in rids)
    assert all(liar.state.request(r).status == "slashed" for r in rids)

    # every liar lost its bond, half to the challenger and half to the token; each request reopened with its fee
    slashed = m.events("AIResultSlashed")
    assert sorted(e["requestId"] for e in slashed) == rids
    assert all(e["challenger"] == a[CHALLENGER] and e["reward"] == m.bond // 2 and e["toToken"] == m.bond - m.bond // 2
               and e["segment"] == expected[e["requestId"]][1] for e in slashed)
    assert sorted(e["requestId"] for e in m.events("AIResultChallenged")) == disputed
    for r in rids:
        request = m.client.request(r)
        assert request.status == Status.PENDING and request.fee == fees[r] and not m.client.claim(r).exists
    assert m.wealth(a[DISHONEST]) - wealth[a[DISHONEST]] == -count * m.bond - gas_paid(w3, start, a[DISHONEST])
    profit = m.wealth(a[CHALLENGER]) - wealth[a[CHALLENGER]]
    assert profit == count * (m.bond // 2) - gas_paid(w3, start, a[CHALLENGER]) and profit > 0

    # the honest node answers the reopened requests and they finalize, unchallenged
    honest.step()
    assert all(honest.state.request(r).status == "submitted" for r in rids)
    challenger.step()
    assert all(challenger.state.request(r).status == "ok" for r in rids)
    finish(m, challenger, honest, liar)
    assert all(m.status(r) == Status.FINALIZED for r in rids)
    assert all(honest.state.request(r).status == "finalized" for r in rids)
    assert all(challenger.state.request(r).status == "finalized" for r in rids)
    assert len(m.events("AIResultChallenged")) == len(disputed) and len(m.events("AIResultSlashed")) == count
    assert challenger.warnings.items == []
    assert m.calls(HONEST) == Counter(commit=count, submit=count)
    assert m.calls(DISHONEST) == Counter(commit=count, submit=count)

    # money: fees went to the token and the honest operator; slashed bonds to the challenger and the token
    split = {e["requestId"]: e for e in m.events("AIRequestFinalized")}
    assert sorted(split) == rids and sum(e["modelRevenue"] + e["operatorPayout"] for e in split.values()) == sum(fees.values())
    revenue = sum(e["modelRevenue"] for e in split.values())
    assert w3.eth.get_balance(m.deployment.token) - token_before == count * (m.bond - m.bond // 2) + revenue
    assert m.wealth(a[HONEST]) - wealth[a[HONEST]] == sum(e["operatorPayout"] for e in split.values()) - gas_paid(w3, start, a[HONEST])
    assert m.wealth(a[REQUESTER]) - wealth[a[REQUESTER]] == -sum(fees.values()) - gas_paid(w3, start, a[REQUESTER])
    assert before - sum(w3.eth.get_balance(who) for who in tracked) == gas_paid(w3, start)


@pytest.mark.parametrize("poison", ["check raises", "finalize reverts"])
def test_one_poisoned_request_does_not_blind_the_challenger(market, monkeypatch, poison):
    """Finding 4: the first request in the step fails (its check raises, or its finalize reverts); the challenger still
    catches the fraud on the next request in the same step, and the failure is in its warnings."""
    m = market
    node, challenger = m.oracle_node(DISHONEST), m.challenger()
    poisoned = m.request(POOL[0])
    node.step()  # an honest answer first
    if poison == "finalize reverts":
        challenger.step()
        advance(m.w3, m.window + 1)  # its window closes: it is finalized in the same step as the fraud is disputed

        def finalize(*_, **__):
            raise ContractRevertError("finalize", "AIOracleInsufficientGas", (1, 0))
        monkeypatch.setattr(challenger.oracle, "finalize", finalize)
    else:
        advance(m.w3, 5)
        poisoned_hash = m.client.claim(poisoned).claim_hash
        real = challenger.runtime.find_dispute

        def find_dispute(claim, *args, **kwargs):
            if claim.claim_hash == poisoned_hash:
                raise RuntimeError("poisoned claim")
            return real(claim, *args, **kwargs)
        monkeypatch.setattr(challenger.runtime, "find_dispute", find_dispute)
    node.dishonest = "output"
    fraud = m.request(POOL[1])
    node.step()
    order = []
    real_advance = challenger.advance
    monkeypatch.setattr(challenger, "advance", lambda record: (order.append(record.request_id), real_advance(record)))

    challenger.step()
    assert order == [poisoned, fraud]  # the poisoned request came first
    assert challenger.state.request(fraud).status == "disputing"
    assert [e["requestId"] for e in m.events("AIResultChallenged")] == [fraud]
    reason = "poisoned claim" if poison == "check raises" else "AIOracleInsufficientGas"
    assert any(f"request {poisoned}:" in w and reason in w for w in challenger.warnings.items), challenger.warnings.items
    assert m.status(poisoned) == Status.SUBMITTED and challenger.state.request(poisoned).status in ("submitted", "ok")

    monkeypatch.undo()  # the cause goes away: the next steps finish both
    finish(m, challenger, node)
    if m.status(poisoned) != Status.FINALIZED:  # first checked now: finalized one window later
        finish(m, challenger, node)
    assert m.status(poisoned) == Status.FINALIZED
    assert challenger.state.request(fraud).status == "slashed" and m.status(fraud) == Status.PENDING


def test_challenger_advances_records_in_order_of_their_deadlines(market, monkeypatch):
    m = market
    node, challenger = m.oracle_node(HONEST), m.challenger()
    rids = [m.request(POOL[i % 2]) for i in range(3)]
    real_answer = node.answer
    for held in ({rids[0], rids[1]}, {rids[0]}, set()):  # answered in the order 3, 2, 1, five seconds apart
        monkeypatch.setattr(node, "answer", lambda record, held=held: None if record.request_id in held else real_answer(record))
        node.step()
        advance(m.w3, 5)
    deadlines = {r: m.client.request(r).deadline for r in rids}
    assert deadlines[rids[2]] < deadlines[rids[1]] < deadlines[rids[0]]
    order = []
    real_advance = challenger.advance
    monkeypatch.setattr(challenger, "advance", lambda record: (order.append(record.request_id), real_advance(record)))
    challenger.step()
    assert order == [rids[2], rids[1], rids[0]]


def test_challenger_never_finalizes_what_it_could_not_re_execute(market, monkeypatch):
    m = market
    node, challenger = m.oracle_node(HONEST), m.challenger()
    blind, fine = m.request(POOL[0]), m.request(POOL[1])
    node.step()
    blind_boundary = _claim_of(m, node, blind).tensors(node.runtime.sizes)[1]
    real_run_op = challenger.runtime.run_op

    def run_op(k, q_in):
        if k == 2 and np.array_equal(np.ravel(q_in), blind_boundary):
            raise UnprovableClaimError("segment 2 cannot hold this input")
        return real_run_op(k, q_in)
    monkeypatch.setattr(challenger.runtime, "run_op", run_op)
    challenger.step()
    assert challenger.state.request(blind).status == "unverifiable"
    assert challenger.state.request(fine).status == "ok"
    assert any(f"request {blind} cannot be re-executed" in w and "NOT finalized" in w for w in challenger.warnings.items)
    finish(m, challenger)
    finish(m, challenger)
    assert m.status(fine) == Status.FINALIZED and m.status(blind) == Status.SUBMITTED
    assert challenger.state.request(blind).status == "unverifiable"
    assert [e["requestId"] for e in m.events("AIRequestFinalized")] == [fine]


def _claim_of(m: Market, node: OracleNode, rid: int):
    return m.client.submitted_claim(node.state.request(rid).detail["tx"])[1]


# ---------------------------------------------------------------- registrations and requests a node does not serve


@pytest.mark.parametrize("swap", ["op verifier → zk segment's", "zk verifier → another contract"])
def test_a_copycat_registration_is_not_served(market, swap):
    m = market
    reg = m.client.model(m.model_id).registration
    segments = list(reg.segments)
    if swap.startswith("op"):  # segment 2's verifier replaced by the verifier of segment 1
        k, segments[1] = 2, SegmentSpec(segments[0].verifier, segments[1].zk)
    else:  # segment 1's verifier replaced by a contract that is no verifier at all
        k, segments[0] = 1, SegmentSpec(m.deployment.consumer, segments[0].zk)
    copy_id, digest, _ = m.client.register(reg.spec, segments, list(reg.boundary_sizes))
    assert digest != m.client.model(m.model_id).digest
    copied = m.request(POOL[0], model_id=copy_id)
    node, challenger = m.oracle_node(HONEST), m.challenger()
    for n in (node, challenger):
        assert n.model_ids == {m.model_id}
        warning = [w for w in n.warnings.items if f"model {copy_id}:" in w]
        assert len(warning) == 1 and f"verifier code of segment(s) [{k}]" in warning[0], n.warnings.items
    node.step()
    assert node.state.request(copied) is None and m.status(copied) == Status.PENDING


def test_windows_shorter_than_a_dispute_are_refused_and_not_served(market, plan_file):
    m = market
    costs = dispute_costs(plan_file)
    count = m.client.model_count()
    with pytest.raises(ImoError) as refused:
        register_plan(m.client, m.deployment, plan_file, "short", Terms(challenge_window_s=costs.min_window_s - 1,
                                                                         response_window_s=m.window))
    assert "\n" not in str(refused.value) and f"at least {costs.min_window_s} s" in str(refused.value)
    assert m.client.model_count() == count
    reg = m.client.model(m.model_id).registration
    short = {}
    for which in ("challenge_window_s", "response_window_s"):
        spec = replace(reg.spec, **{which: costs.min_window_s - 1})
        short[which], _, _ = m.client.register(spec, list(reg.segments), list(reg.boundary_sizes))
    node = m.oracle_node(HONEST)
    assert node.model_ids == {m.model_id}
    for model_id in short.values():
        assert any(f"model {model_id}:" in w and "shorter than a dispute needs" in w for w in node.warnings.items), node.warnings.items


def test_a_plan_not_yet_registered_warns_then_is_served_once_registered(chain, plan_file, window, tmp_path):
    m = Market(chain.w3, chain.rpc_url, plan_file, tmp_path, window, register=False)
    node = m.oracle_node(HONEST)
    assert node.model_ids == set()
    assert any("register it with `imo register" in w and str(plan_file) in w for w in node.warnings.items), node.warnings.items
    m.register()
    rid = m.request(POOL[0])
    node.step()  # a running node picks up a registration made after it started
    assert node.model_ids == {m.model_id} and node.state.request(rid).status == "submitted"


def test_a_request_whose_private_input_is_not_in_the_inbox_waits_and_names_the_file(market, tmp_path):
    m = market
    inbox = Inbox(tmp_path / "inbox")
    key = request_input(m.plan, POOL[0])
    rid = m.request(key=key)
    node = m.oracle_node(HONEST, inbox=inbox)
    node.step()
    assert node.state.request(rid).status == "seen"
    assert any(f"request {rid}" in w and str(inbox.path(key)) in w for w in node.warnings.items), node.warnings.items
    assert inbox.put(m.plan, POOL[0]) == key
    node.step()
    assert node.state.request(rid).status == "submitted"


def test_an_unprovable_request_is_declined_and_the_requester_gets_the_whole_fee_back_at_once(market):
    m = market
    w3, a = m.w3, m.accounts
    x = np.full((1, 8), 1e8, dtype=np.float32)  # |q| = 1.28e10: beyond what the zk segment's range check can hold
    node = m.oracle_node(HONEST, [x])
    with pytest.raises(UnprovableClaimError):
        node.runtime.run_op(1, quantize(x, m.plan.scale))
    rid = m.request(x)
    fee = m.client.request(rid).fee
    node.step()
    record = node.state.request(rid)
    assert record.status == "declined" and "outside" in record.detail["reason"]
    declined = m.events("AIRequestDeclined", rid)
    assert len(declined) == 1 and declined[0]["operator"] == a[HONEST] and "outside" in declined[0]["reason"]
    assert m.calls(HONEST) == Counter(decline=1)  # no claim nobody could ever contradict
    start, wealth = w3.eth.block_number, m.wealth(a[REQUESTER])
    requester = m.client.as_sender(m.signers[REQUESTER])
    requester.cancel(rid)  # at once: no request timeout to wait for
    assert m.status(rid) == Status.CANCELLED and m.client.credits(a[REQUESTER]) == fee
    requester.withdraw()
    assert w3.eth.get_balance(a[REQUESTER]) - wealth == fee - gas_paid(w3, start, a[REQUESTER])
    node.step()
    assert node.state.request(rid).status == "declined" and m.calls(HONEST) == Counter(decline=1)


# ---------------------------------------------------------------- crash safety


def die(*_, **__):
    raise SystemExit("killed")


ORACLE_KILLS = ["while executing", "after the commit tx, before recording it", "after commit, before reveal",
                "after reveal, before the state update"]


@pytest.mark.parametrize("kill", ORACLE_KILLS)
def test_oracle_killed_at_any_point_submits_exactly_once_after_restart(market, monkeypatch, tmp_path, kill):
    m = market
    path = tmp_path / "oracle.sqlite"
    rid = m.request(POOL[0])
    node = m.oracle_node(HONEST, state=path)
    if kill == "while executing":
        monkeypatch.setattr(node.runtime, "execute", die)
    elif kill == "after commit, before reveal":
        monkeypatch.setattr(node.oracle, "reveal", die)
    else:
        step = "commit" if "commit tx" in kill else "submit"
        real = node.state.record_tx
        monkeypatch.setattr(node.state, "record_tx", lambda r, s, receipt: die() if s == step else real(r, s, receipt))
    with pytest.raises(SystemExit):
        node.step()
    node.state.close()
    left = NodeState(path).request(rid).status
    assert left == {"while executing": "executing"}.get(kill, "committed")
    assert m.calls(HONEST) == {"while executing": Counter(), "after reveal, before the state update": Counter(commit=1, submit=1)}.get(
        kill, Counter(commit=1))

    restarted = m.oracle_node(HONEST, state=path)
    restarted.step()
    restarted.step()
    assert restarted.state.request(rid).status == "submitted"
    assert m.calls(HONEST) == Counter(commit=1, submit=1)
    assert len(m.events("AIResultSubmitted", rid)) == 1
    recorded = Counter(t["step"] for t in restarted.state.txs())
    assert recorded["commit"] <= 1 and recorded["submit"] <= 1 and set(recorded) <= {"commit", "submit"}
    challenger = m.challenger()
    challenger.step()
    finish(m, challenger, restarted)
    assert m.status(rid) == Status.FINALIZED and restarted.state.request(rid).status == "finalized"
    assert restarted.warnings.items == []


CHALLENGER_KILLS = ["after commit, before the challenge", "after the challenge, before the state update", "while disputing",
                    "after resolve, before the state update"]


@pytest.mark.parametrize("kill", CHALLENGER_KILLS)
def test_challenger_killed_at_any_point_disputes_once_and_slashes_after_restart(market, monkeypatch, tmp_path, kill):
    m = market
    path = tmp_path / "challenger.sqlite"
    liar = m.oracle_node(DISHONEST, dishonest="output")
    rid = m.request(POOL[0])
    liar.step()
    first = m.challenger(state=path)
    if kill == "after commit, before the challenge":
        real_send = first.oracle._send
        monkeypatch.setattr(first.oracle, "_send", lambda fn, **kw: die() if fn.fn_name == "challenge" else real_send(fn, **kw))
    elif kill != "while disputing":
        step = "challenge" if "challenge" in kill else "resolve"
        real = first.state.record_tx
        monkeypatch.setattr(first.state, "record_tx", lambda r, s, receipt: die() if s == step else real(r, s, receipt))
    if kill.startswith("after resolve"):
        first.step()
        advance(m.w3, m.window + 1)
    if kill == "while disputing":
        first.step()
    else:
        with pytest.raises(SystemExit):
            first.step()
    first.state.close()
    assert NodeState(path).request(rid).status == ("fraud" if "challenge" in kill else "disputing")

    restarted = m.challenger(state=path)
    restarted.step()
    if m.status(rid) == Status.SUBMITTED:  # the dispute is open: unanswered, it is resolved after the response window
        assert restarted.state.request(rid).status == "disputing"
        liar.step()
        advance(m.w3, m.window + 1)
        restarted.step()
    assert restarted.state.request(rid).status == "slashed" and m.status(rid) == Status.PENDING
    assert m.calls(CHALLENGER) == Counter(commit=1, challenge=1, resolve=1)
    assert len(m.events("AIResultChallenged", rid)) == 1
    [slash] = m.events("AIResultSlashed", rid)
    assert slash["challenger"] == m.accounts[CHALLENGER] and slash["reward"] == m.bond // 2 and slash["segment"] == 3
    restarted.step()
    assert m.calls(CHALLENGER) == Counter(commit=1, challenge=1, resolve=1)
    assert restarted.warnings.items == []


def _status(state_file: Path, rid: int) -> str | None:
    if not state_file.is_file():
        return None
    try:
        with sqlite3.connect(state_file, timeout=1) as db:
            row = db.execute("SELECT status FROM requests WHERE request_id = ?", (rid,)).fetchone()
    except sqlite3.Error:
        return None
    return row and row[0]


def test_oracle_process_killed_with_sigkill_mid_proof_resumes_and_submits_once(market, tmp_path):
    """`imo node oracle` killed with SIGKILL (with its prover processes) while proving a fresh input; the restarted
    process proves again and submits exactly once, and a third run sends nothing."""
    m = market
    x = np.random.default_rng(int.from_bytes(os.urandom(4), "little")).uniform(-1, 1, (1, 8)).astype(np.float32)
    inbox = Inbox(tmp_path / "inbox")
    rid = m.request(key=inbox.put(m.plan, x))  # never proven before: the kill lands mid-proof
    state_file = tmp_path / "oracle.sqlite"
    cmd = [str(Path(sys.executable).with_name("imo")), "node", "oracle", "--rpc-url", m.rpc_url, "--deployment", str(m.deployment_file),
           "--plan", str(m.plan_file), "--state", str(state_file), "--inbox", str(tmp_path / "inbox"),
           "--once", "--quiet", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "IMO_KEYSTORE_PASSWORD"}
    env["IMO_PRIVATE_KEY"] = m.signers[HONEST].key.to_0x_hex()  # the process signs with the honest oracle's key
    log = tmp_path / "first.log"
    with open(log, "wb") as err:
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _status(state_file, rid) != "executing":
            assert first.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, f"status {_status(state_file, rid)} after 120 s"
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)  # the node and its prover pool, as a container kill would
        except ProcessLookupError:
            pass
        first.wait()
    assert _status(state_file, rid) == "executing" and m.calls(HONEST) == Counter()

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert second.returncode == 0, second.stderr[-2000:]
    report = json.loads(second.stdout)
    assert report["requests"] == {"submitted": 1} and report["warnings"] == [] and report["models"] == [m.model_id]
    third = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=200)
    assert third.returncode == 0 and json.loads(third.stdout)["requests"] == {"submitted": 1}, third.stderr[-2000:]
    assert m.calls(HONEST) == Counter(commit=1, submit=1) and len(m.events("AIResultSubmitted", rid)) == 1


# ---------------------------------------------------------------- RPC faults


@pytest.fixture
def restartable(tmp_path, plan_file, window):
    """A market on an anvil of its own that can be stopped and restarted on the same port with its chain intact."""
    with RestartableAnvil(tmp_path / "anvil-state.json") as node:
        yield node, Market(node.w3, node.rpc_url, plan_file, tmp_path, window)


def test_oracle_run_forever_survives_the_rpc_going_away_and_never_submits_twice(restartable, tmp_path, caplog):
    anvil_, m = restartable
    path = tmp_path / "oracle.sqlite"
    stop, crashed = threading.Event(), []

    def serve():  # the node lives in its thread (sqlite connections stay in the thread that made them)
        try:
            node = m.oracle_node(HONEST, state=path, poll_interval=0.1)
            real_step = node.step

            def step():
                if stop.is_set():
                    raise KeyboardInterrupt
                real_step()
            node.step = step
            node.run_forever(max_backoff=0.5)
        except KeyboardInterrupt:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            crashed.append(exc)

    def wait_for(rid: int, status: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while _status(path, rid) != status:
            assert not crashed and thread.is_alive(), crashed
            assert time.monotonic() < deadline, f"request {rid}: {_status(path, rid)} after {timeout} s"
            time.sleep(0.05)

    caplog.set_level("WARNING", logger="imo.nodes")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        first = m.request(POOL[0])
        wait_for(first, "submitted")
        anvil_.stop()  # the RPC goes away (anvil dumps its chain) ...
        time.sleep(1.5)
        assert thread.is_alive()
        anvil_.start()  # ... and comes back on the same port with the same chain
        second = m.request(POOL[1])
        wait_for(second, "submitted")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and not crashed
    assert "retrying in" in caplog.text  # it did see the outage
    assert m.calls(HONEST) == Counter(commit=2, submit=2)
    assert [len(m.events("AIResultSubmitted", r)) for r in (first, second)] == [1, 1]
    challenger = m.challenger()
    challenger.step()
    finish(m, challenger)
    assert m.status(first) == m.status(second) == Status.FINALIZED


def test_rpc_lost_between_commit_and_reveal_reveals_once_when_it_returns(restartable, tmp_path):
    anvil_, m = restartable
    node = m.oracle_node(HONEST, state=tmp_path / "oracle.sqlite")
    challenger = m.challenger(state=tmp_path / "challenger.sqlite")
    rid = m.request(POOL[0])
    real_commit = node.oracle.commit

    def commit_then_lose_the_rpc(commitment):
        receipt = real_commit(commitment)
        anvil_.stop()
        return receipt
    node.oracle.commit = commit_then_lose_the_rpc
    node.step()  # the reveal fails: kept as a warning on this request, the node goes on
    assert node.state.request(rid).status == "committed"
    assert any(f"request {rid}:" in w for w in node.warnings.items), node.warnings.items
    with pytest.raises(Exception):
        node.step()  # the scan fails while the RPC is down (run_forever waits and retries)
    with pytest.raises(Exception):
        challenger.step()
    anvil_.start()
    del node.oracle.commit
    node.step()
    assert node.state.request(rid).status == "submitted"
    assert m.calls(HONEST) == Counter(commit=1, submit=1)
    challenger.step()
    finish(m, challenger, node)
    assert m.status(rid) == Status.FINALIZED and node.state.request(rid).status == "finalized"
    assert challenger.state.request(rid).status == "finalized"
