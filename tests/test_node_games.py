"""The nodes play bisection games (imo.pipeline.game_play) on a real anvil: the challenger node opens a game on a wrong
op segment and plays it down to one step, which the contract recomputes; the oracle node defends its claims on its
own; a lying challenger loses its bond to an honest oracle by the clock; a node killed mid-game continues the game
after a restart without sending a move twice. The plan is tests/test_nodes.py's (zk → op → op), registered with its
op segments' step programs; `fast_path_max_logrows=0` makes the challenger choose the game over a fraud proof."""

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_nodes import CHALLENGER, DISHONEST, HONEST, POOL, REQUESTER, Market, finish, plan_file, window  # noqa: F401

from helpers import advance, calls_to, gas_paid
from imo.pipeline.dapp import Session, status
from imo.pipeline.oracle_node import _claim_from_json
from imo.proving.programs import plan_programs
from imo.verifier_contracts.game_client import GameClient, GameStatus
from imo.verifier_contracts.oracle_client import Status

MAX_TX_GAS = 5_000_000


@pytest.fixture
def market(chain, plan_file, window, tmp_path) -> Market:  # noqa: F811
    return Market(chain.w3, chain.rpc_url, plan_file, tmp_path, window)


def games(m: Market) -> GameClient:
    return GameClient(m.w3, m.deployment.game)


def play(m: Market, *nodes, rounds: int = 40) -> None:
    """Step the nodes until no game is open (each step makes at most one move per game)."""
    g = games(m)
    for _ in range(rounds):
        for node in nodes:
            node.step()
        if g.game_count() and all(g.game(i).over for i in range(1, g.game_count() + 1)):
            return
    raise AssertionError("the game did not end")


def test_the_plan_is_registered_with_a_step_program_for_each_op_segment(market, plan_file):  # noqa: F811
    registered = market.client.model(market.model_id).registration.segments
    programs = plan_programs(plan_file)
    assert sorted(programs) == [2, 3]
    assert [(s.program_root, s.program_steps) for s in registered[1:]] == [programs[2], programs[3]]
    assert registered[0].program_steps == 0  # the zk segment has none


@pytest.mark.parametrize("fault, segment", [("output", 3), ("boundary", 2)])
def test_a_liar_loses_the_bisection_game_the_nodes_play_and_is_slashed(market, fault, segment):
    m = market
    start = m.w3.eth.block_number
    liar = m.oracle_node(DISHONEST, dishonest=fault)
    challenger = m.challenger(fast_path_max_logrows=0)
    rid = m.request(POOL[0])
    liar.step()
    assert liar.state.request(rid).detail["dishonest"] == fault
    challenger.step()
    assert challenger.state.request(rid).status == "gaming" and challenger.state.request(rid).detail["segment"] == segment
    [shown] = status(Session(m.client, m.deployment), rid)["disputes"]  # what `imo status RID` shows
    assert shown["segment"] == segment and shown["game"]["to_move"] == "defender" and shown["game"]["round"] == 0
    play(m, challenger, liar)
    g = games(m)
    [game] = [g.game(i) for i in range(1, g.game_count() + 1)]
    assert game.status == GameStatus.CHALLENGER_WON and game.request_id == rid and game.segment == segment
    challenger.step()
    liar.step()
    assert challenger.state.request(rid).status == "slashed" and liar.state.request(rid).status == "slashed"
    assert m.status(rid) == Status.PENDING
    [slash] = m.events("AIResultSlashed", rid)
    assert slash["challenger"] == m.accounts[CHALLENGER] and slash["segment"] == segment and slash["reward"] == m.bond // 2
    moves = Counter(name for name, _ in calls_to(g.contract, start, m.accounts[CHALLENGER]))
    assert moves["choose"] == game.depth and moves["step"] == 1
    assert Counter(name for name, _ in calls_to(g.contract, start, m.accounts[DISHONEST])) == Counter(postRoot=1, reveal=game.depth - 1)
    gas = [t["gas_used"] for node in (challenger, liar) for t in node.state.txs() if t["step"].startswith("game ")]
    assert len(gas) == 2 * game.depth + 1 and max(gas) <= MAX_TX_GAS
    assert challenger.warnings.items == [] and m.calls(CHALLENGER) == Counter(commit=1, challenge=1)


def test_an_honest_oracle_beats_a_lying_challenger_by_the_clock_and_takes_its_bond(market):
    m = market
    honest = m.oracle_node(HONEST)
    rid = m.request(POOL[1])
    honest.step()
    assert honest.state.request(rid).status == "submitted"
    claim = _claim_from_json(honest._claim_file(rid).read_text())
    rogue = m.client.as_sender(m.signers[REQUESTER])
    start = m.w3.eth.block_number
    wealth = m.wealth(m.accounts[HONEST])
    rogue.open_game(rid, 3, claim, bond=m.bond)  # a challenge of a right claim, to grief the oracle
    assert games(m).game_of(rid, 3) == 1 and m.client.claim(rid).open_disputes == 1
    honest.step()  # the oracle posts its root: the rogue must choose, or lose by its clock
    g = games(m)
    assert g.game(1).status == GameStatus.AWAITING_CHOICE
    advance(m.w3, m.window + 1)
    honest.step()  # the rogue's clock ran out: the oracle ends the game and wins
    assert g.game(1).status == GameStatus.DEFENDER_WON and m.client.claim(rid).open_disputes == 0
    assert m.events("AIDisputeAnswered", rid)
    assert m.wealth(m.accounts[HONEST]) - wealth == m.bond - gas_paid(m.w3, start, m.accounts[HONEST])
    challenger = m.challenger(fast_path_max_logrows=0)
    challenger.step()
    finish(m, challenger, honest)
    assert m.status(rid) == Status.FINALIZED and honest.state.request(rid).status == "finalized"


def test_a_challenger_killed_mid_game_continues_it_after_a_restart(market, monkeypatch, tmp_path):
    m = market
    path = tmp_path / "challenger.sqlite"
    liar = m.oracle_node(DISHONEST, dishonest="output")
    rid = m.request(POOL[0])
    liar.step()
    first = m.challenger(fast_path_max_logrows=0, state=path)
    first.step()  # opens the game
    liar.step()  # root posted
    first.step()  # first choice
    liar.step()

    def killed(*_, **__):
        raise SystemExit("killed")

    monkeypatch.setattr(first.games, "choose", killed)
    with pytest.raises(SystemExit):  # dies mid-move (a crash: isolated() does not catch it)
        first.step()
    first.state.close()
    restarted = m.challenger(fast_path_max_logrows=0, state=path)
    play(m, restarted, liar)
    restarted.step()
    assert restarted.state.request(rid).status == "slashed" and m.status(rid) == Status.PENDING
    assert m.calls(CHALLENGER) == Counter(commit=1, challenge=1)


def test_challenger_process_killed_with_sigkill_mid_game_finishes_it_after_restarts(market, tmp_path):
    """`imo node challenger --once` runs, one move each, against a lying oracle; one run is killed with SIGKILL at a
    random moment of its move. Later runs pick the game up from the chain and win it: one challenge, one slash."""
    m = market
    liar = m.oracle_node(DISHONEST, dishonest="output")
    rid = m.request(POOL[0])
    liar.step()
    state_file = tmp_path / "challenger.sqlite"
    cmd = [str(Path(sys.executable).with_name("imo")), "node", "challenger", "--rpc-url", m.rpc_url, "--deployment",
           str(m.deployment_file), "--plan", str(m.plan_file), "--state", str(state_file), "--fast-path-logrows", "0",
           "--once", "--quiet", "--json"]
    env = {**os.environ, "IMO_PRIVATE_KEY": m.signers[CHALLENGER].key.to_0x_hex()}

    def run() -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    run()  # opens the game
    liar.step()  # root posted: the challenger's move
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    time.sleep(random.uniform(1.0, 3.0))  # start-up takes ~1-2 s: the kill lands before, during or after its move
    try:
        os.killpg(victim.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    victim.wait()
    g = games(m)
    for _ in range(40):
        if g.game(1).over:
            break
        run()
        liar.step()
    assert g.game(1).status == GameStatus.CHALLENGER_WON
    run()
    assert m.status(rid) == Status.PENDING
    assert m.calls(CHALLENGER) == Counter(commit=1, challenge=1)
    [slash] = m.events("AIResultSlashed", rid)
    assert slash["challenger"] == m.accounts[CHALLENGER]
