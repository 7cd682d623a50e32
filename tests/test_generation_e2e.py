"""A language model served end to end as a generation model, on a real anvil: `imo plan LM --generate N` (an
optimistic game-only backbone and a zk output head with private weights), `imo compile`, registration with the
backbone's step program, `imo request MODEL --prompt TEXT` from a dapp, the oracle node decoding N tokens and proving
the head, the challenger re-executing the backbone, finalization and the consumer's callback receiving the text's
bytes. Liars who lie in the backbone at a random token, or at random steps of its trace, lose the bisection game.

The LM is the zoo's gpt architecture at test size (2 blocks x 64, context 16); `imo demo --llm` runs the 114M one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from helpers import advance, funded_accounts
from imo.circuits.plan import Plan
from imo.errors import ImoError
from imo.models.generation import decode
from imo.models.gpt import GPT, GPTConfig, export_gpt_onnx
from imo.pipeline.challenger_node import ChallengerNode
from imo.pipeline.dapp import prompt_ids
from imo.pipeline.keys import PRIVATE_KEY_ENV
from imo.pipeline.oracle_node import OracleNode
from imo.pipeline.state import NodeState
from imo.proving.protocol import NO_VERIFIER, PlanRuntime, decode_text_payload, pack_tensor
from imo.verifier_contracts.contracts import deploy_protocol
from imo.verifier_contracts.game_client import GameClient, GameStatus
from imo.verifier_contracts.oracle_client import OracleClient, Status
from imo.verifier_contracts.registration import Terms, dispute_costs, register_plan

CFG = GPTConfig(n_layer=2, d_model=64, n_head=4, context=16)
N = 4
MAX_TX_GAS = 5_000_000
OWNER, USER, HONEST, LIAR, CHALLENGER = range(5)


def imo(*args: str, key: str | None = None, fails: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI; with `fails`, it must exit 1 with one clear line and no traceback."""
    env = {k: v for k, v in os.environ.items() if k != PRIVATE_KEY_ENV}
    if key:
        env[PRIVATE_KEY_ENV] = key
    proc = subprocess.run([sys.executable, "-m", "imo.pipeline.cli", *args], capture_output=True, text=True, env=env, timeout=900)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    if fails:
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    else:
        assert proc.returncode == 0, f"imo {' '.join(args)}: {proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    """A seeded test-size gpt (a decisive head: its weights x 10), planned with `imo plan --generate` and compiled with
    `imo compile`, as a user does."""
    root = tmp_path_factory.mktemp("generation-e2e")
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    with torch.no_grad():
        model.head.weight.mul_(10.0)
    (root / "lm").mkdir()
    export_gpt_onnx(model, root / "lm" / "model.onnx", external=True)
    out = imo("plan", str(root / "lm" / "model.onnx"), "--generate", str(N), "--out", str(root / "plan"), "--json")
    assert json.loads(out.stdout)["generate"] == N
    imo("compile", str(root / "plan" / "plan.json"), "--quiet")
    return root / "plan" / "plan.json"


def test_the_generation_plan_keeps_the_head_private_and_the_backbone_game_only(plan_file, tmp_path):
    plan = Plan.load(plan_file)
    backbone, head = plan.segments
    assert (backbone.mode, backbone.game_only, head.mode, head.game_only) == ("op", True, "zk", False)
    assert plan.boundary_sizes() == [CFG.context, N * CFG.d_model, N] and plan.generate == N
    head_model = onnx.load(str(plan_file.parent / head.onnx))
    secret = max((numpy_helper.to_array(t) for t in head_model.graph.initializer), key=lambda a: a.size).astype(np.float32).tobytes()
    data = (plan_file.parent / backbone.onnx).with_name("seg0.onnx.data").read_bytes()
    assert secret[:4096] not in data  # the head's private weights are not in the backbone's (public) weight file
    imo("compile", str(plan_file), "--public-bundle", str(tmp_path / "bundle"), "--quiet")
    public = b"".join(p.read_bytes() for p in (tmp_path / "bundle").rglob("*") if p.is_file())
    assert secret[:4096] not in public and (tmp_path / "bundle" / "segments" / "seg0.onnx.data").is_file()


@pytest.fixture
def market(chain, plan_file, tmp_path):
    w3 = chain.w3
    signers = funded_accounts(w3, CHALLENGER + 1)
    dep = deploy_protocol(w3, signers[OWNER], sale=None)
    owner = OracleClient(w3, dep.oracle, signers[OWNER])
    window = max(600, dispute_costs(plan_file).min_window_s)
    model_id, _, _ = register_plan(owner, dep, plan_file, "tiny-gpt", Terms(challenge_window_s=window, response_window_s=window))
    dep.write(tmp_path / "deployment.json")

    class Market:
        pass

    m = Market()
    m.w3, m.rpc_url, m.signers, m.dep, m.client, m.model_id, m.window, m.root = w3, chain.rpc_url, signers, dep, owner, model_id, window, tmp_path
    m.node = lambda who, **kw: OracleNode(chain.rpc_url, dep, plan_file, signers[who], state=NodeState(), work_dir=tmp_path / f"node{who}", **kw)
    m.challenger = lambda **kw: ChallengerNode(chain.rpc_url, dep, plan_file, signers[CHALLENGER], state=NodeState(), work_dir=tmp_path / "challenger", **kw)
    return m


def expected_text(plan_file: Path, prompt: str) -> bytes:
    """The greedy tokens of the prompt on the canonical executor (the whole plan, N passes)."""
    runtime = PlanRuntime(plan_file)
    ids, _ = decode(runtime.run_all, bytes(prompt_ids(prompt, runtime.request_size).tolist()), N, context=runtime.sizes[0])
    return bytes(ids)


def test_a_prompt_goes_through_the_oracle_and_the_callback_receives_the_text(market, plan_file):
    m = market
    model = m.client.model(m.model_id)
    assert model.spec.gen_tokens == N
    assert model.registration.segments[0].verifier == NO_VERIFIER and model.registration.segments[0].program_steps > 0
    out = imo("request", str(m.model_id), "--prompt", "The for statement", "--callback", m.dep.consumer, "--gas-limit", "200000",
              "--deployment", str(m.root / "deployment.json"), "--rpc-url", m.rpc_url, "--json", key=m.signers[USER].key.hex())
    rid = json.loads(out.stdout)["request_id"]
    (m.root / "x.json").write_text(json.dumps({"input_data": [[1.0] * CFG.context]}))
    wrong = imo("request", str(m.model_id), str(m.root / "x.json"), "--deployment", str(m.root / "deployment.json"),
                "--rpc-url", m.rpc_url, key=m.signers[USER].key.hex(), fails=True)  # a generation model takes --prompt
    assert "--prompt" in wrong.stderr
    assert "--out" in imo("plan", str(plan_file.parent / "model" / "model.onnx"), "--generate", "2", fails=True).stderr
    oracle, watcher = m.node(HONEST), m.challenger()
    oracle.step()
    assert oracle.state.request(rid).status == "submitted", oracle.state.request(rid)
    watcher.step()
    assert watcher.state.request(rid).status == "ok", watcher.state.request(rid)
    advance(m.w3, m.window)
    watcher.step()
    assert m.client.request(rid).status == Status.FINALIZED
    consumer = m.dep.contract(m.w3, "OracleConsumer")
    text = decode_text_payload(consumer.functions.outputOf(rid).call())
    assert text == expected_text(plan_file, "The for statement") and len(text) == N
    shown = json.loads(imo("status", str(rid), "--deployment", str(m.root / "deployment.json"), "--rpc-url", m.rpc_url, "--json").stdout)
    assert shown["result"]["tokens"] == list(text)
    from imo.pipeline.dashboard import Dashboard

    board = Dashboard.of(m.dep, m.rpc_url).summary()
    [row] = [r for r in board["requests"] if r["id"] == rid]
    assert row["output"] == {"values": list(text), "kind": "text", "text": text.decode("utf-8", errors="replace")}


def test_a_prompt_that_is_not_bytes_is_declined_not_answered(market):
    m = market
    user = m.client.as_sender(m.signers[USER])
    rid, _ = user.request_callback(m.model_id, pack_tensor(np.full(CFG.context - N + 1, 300, dtype=np.int64)))
    oracle = m.node(HONEST)
    oracle.step()
    assert oracle.state.request(rid).status == "declined" and m.client.request(rid).status == Status.PENDING
    fee = m.client.request(rid).fee
    user.cancel(rid)  # a declined request can be cancelled at once: the requester loses nothing
    assert m.client.request(rid).status == Status.CANCELLED and m.client.credits(m.signers[USER].address) == fee


def test_a_forged_head_proof_is_rejected_by_the_reusable_verifier_and_slashed(market):
    """The test model's head verifier exceeds EIP-170 too, so it is the adapter over ezkl's reusable verifier: a
    corrupted proof of the head must make it return false (not revert the dispute), and the forger is slashed."""
    m = market
    adapter = m.w3.eth.contract(address=m.dep.verifiers["tiny-gpt/seg1"], abi=[{"name": "REUSABLE", "type": "function", "inputs": [],
                                "outputs": [{"name": "", "type": "address"}], "stateMutability": "view"}])
    assert len(m.w3.eth.get_code(adapter.functions.REUSABLE().call())) > 10_000  # ezkl's reusable verifier, placed by CREATE2
    user = m.client.as_sender(m.signers[USER])
    rid, _ = user.request_callback(m.model_id, pack_tensor(prompt_ids("forged", CFG.context - N + 1)))
    forger, challenger = m.node(LIAR, dishonest="proof", seed=1), m.challenger()
    forger.step()
    assert forger.state.request(rid).detail["dishonest"] == "proof"
    challenger.step()
    assert challenger.state.request(rid).status == "slashed" and m.client.request(rid).status == Status.PENDING


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_liar_in_the_backbone_at_a_random_token_loses_the_bisection_game(market, seed):
    """The liar changes one value of the backbone's (N, d) output, at a random token's row, and is checked by a
    challenger that never proves anything: the game ends on one step recomputed in the EVM, every move <= 5M gas."""
    m = market
    user = m.client.as_sender(m.signers[USER])
    rid, _ = user.request_callback(m.model_id, pack_tensor(prompt_ids(f"seed {seed}: lies", CFG.context - N + 1)))
    liar, challenger = m.node(LIAR, dishonest="boundary", seed=seed), m.challenger(fast_path_max_logrows=0)
    liar.step()
    challenger.step()
    assert challenger.state.request(rid).status == "gaming", challenger.state.request(rid)
    games = GameClient(m.w3, m.dep.game)
    for _ in range(60):
        challenger.step()
        liar.step()
        if all(games.game(i).over for i in range(1, games.game_count() + 1)):
            break
    [game] = [games.game(i) for i in range(1, games.game_count() + 1) if games.game(i).request_id == rid]
    assert game.status == GameStatus.CHALLENGER_WON and game.segment == 1
    challenger.step()
    assert challenger.state.request(rid).status == "slashed" and m.client.request(rid).status == Status.PENDING
    gas = [t["gas_used"] for node in (challenger, liar) for t in node.state.txs() if t["step"].startswith("game ")]
    assert gas and max(gas) <= MAX_TX_GAS


def test_lies_at_random_steps_of_the_backbone_trace_always_lose(chain, plan_file):
    """Whole games over the backbone's step program (`imo bench --dispute`'s driver), the liar lying at the first
    step, the last, and random ones (GEMM tiles, lookups, layer norms …): the liar loses every one."""
    from imo.pipeline.bench_dispute import run_dispute
    from imo.proving.segments import circuit_files
    from imo.proving.trace import StepProgram

    plan = Plan.load(plan_file)
    seg = plan.segments[0]
    program = StepProgram.build(plan_file.parent / seg.onnx, circuit_files(plan_file.parent, seg).settings)
    x = prompt_ids("random lies", CFG.context)
    rng = np.random.default_rng(7)
    played = []
    for lie_at in [0, program.n_steps - 1, *rng.permutation(np.arange(1, program.n_steps - 1)).tolist()]:
        if len(played) == 6:
            break
        try:
            result = run_dispute(program, x, chain.w3, lie_at=int(lie_at), seed=int(lie_at))
        except ImoError as exc:  # a lie the network hides (a row no output token reads, a masked score) changes nothing
            assert "changed the output" in str(exc)
            continue
        assert result["liar_lost"] and result["max_tx_gas"] <= MAX_TX_GAS, (lie_at, result)
        played.append(lie_at)
    assert played[:2] == [0, program.n_steps - 1] and len(played) == 6, played
