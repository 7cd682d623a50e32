"""The 114M-parameter gpt through the oracle (slow tier: the model's export, its head's keys and its backbone's step
program take ~10 minutes and ~8 GB the first time; `tests/test_generation_e2e.py` runs the same machinery on a
test-size model in the default tier).

`imo demo --llm`'s act: the question is answered with N tokens, the head's proof verifies with its registered
verifier (ezkl's reusable verifier: the specialised one exceeds EIP-170), the challenger re-executes the backbone and
finds it right, and the consumer's callback receives exactly the tokens the canonical executor decodes. A liar who
changes the backbone's output for one token loses the bisection game over the 4.9M-step trace, every move <= 5M gas."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import advance, funded_accounts
from imo.circuits.plan import Plan
from imo.models.generation import decode
from imo.pipeline.challenger_node import ChallengerNode
from imo.pipeline.dapp import prompt_ids
from imo.pipeline.oracle_node import OracleNode
from imo.pipeline.state import NodeState
from imo.pipeline.story_llm import LLM_QUESTION, llm_plan
from imo.proving.protocol import PlanRuntime, pack_tensor
from imo.verifier_contracts.contracts import deploy_protocol
from imo.verifier_contracts.game_client import GameClient, GameStatus
from imo.verifier_contracts.oracle_client import OracleClient, Status
from imo.verifier_contracts.registration import Terms, dispute_costs, register_plan

pytestmark = pytest.mark.slow
TOKENS = 4
MAX_TX_GAS = 5_000_000


@pytest.fixture(scope="module")
def gpt_plan(tmp_path_factory):
    plan_file, _, _ = llm_plan(tmp_path_factory.mktemp("llm"), TOKENS, quiet=True)
    return plan_file


def test_a_liar_about_one_token_loses_the_game_over_the_whole_backbone(chain, gpt_plan, tmp_path):
    w3 = chain.w3
    owner, user, liar_key, challenger_key = funded_accounts(w3, 4)
    dep = deploy_protocol(w3, owner, sale=None)
    client = OracleClient(w3, dep.oracle, owner)
    costs = dispute_costs(gpt_plan)
    window = max(1800, costs.min_window_s)
    terms = Terms(bond_wei=costs.min_bond_wei, challenge_window_s=window, response_window_s=window)
    model_id, _, _ = register_plan(client, dep, gpt_plan, "gpt", terms)
    plan = Plan.load(gpt_plan)
    prompt = prompt_ids(LLM_QUESTION, plan.boundary_sizes()[0] - TOKENS + 1)
    rid, _ = client.as_sender(user).request_callback(model_id, pack_tensor(prompt))
    common = {"state": NodeState()}
    liar = OracleNode(chain.rpc_url, dep, gpt_plan, liar_key, work_dir=tmp_path / "liar", dishonest="boundary", seed=4, **common)
    challenger = ChallengerNode(chain.rpc_url, dep, gpt_plan, challenger_key, work_dir=tmp_path / "challenger", state=NodeState(),
                                fast_path_max_logrows=0)
    liar.step()
    challenger.step()
    assert challenger.state.request(rid).status == "gaming"
    games = GameClient(w3, dep.game)
    for _ in range(80):
        challenger.step()
        liar.step()
        if all(games.game(i).over for i in range(1, games.game_count() + 1)):
            break
    [game] = [games.game(i) for i in range(1, games.game_count() + 1)]
    assert game.status == GameStatus.CHALLENGER_WON and game.depth == 23
    challenger.step()
    assert client.request(rid).status == Status.PENDING  # slashed and reopened
    gas = [t["gas_used"] for node in (challenger, liar) for t in node.state.txs() if t["step"].startswith("game ")]
    assert max(gas) <= MAX_TX_GAS
    # the honest answer of the reopened request is what the executor decodes
    runtime = PlanRuntime(gpt_plan)
    ids, _ = decode(runtime.run_all, bytes(prompt.tolist()), TOKENS, context=runtime.sizes[0])
    honest = OracleNode(chain.rpc_url, dep, gpt_plan, owner, work_dir=tmp_path / "honest", state=NodeState())
    honest.step()
    challenger.step()
    advance(w3, window)
    challenger.step()
    assert client.request(rid).status == Status.FINALIZED
    assert np.array_equal(client.submitted_claim(honest.state.request(rid).detail["tx"])[1].output_values(plan.boundary_sizes()), ids)
