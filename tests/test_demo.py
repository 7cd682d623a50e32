"""`imo demo`: the whole IMO story on a fresh embedded anvil, with the small `mlp` (zk → op) so it stays fast.

One run through the CLI (`imo demo --model mlp --summary FILE`) is shared by the checks: a dishonest answer is caught
and slashed, every request ends finalized, the holders claim exactly their pro-rata share of the released revenue,
one NFT is minted and its royalty reaches the token, and total ETH is conserved. The mlp-wide demo (`make demo`)
runs the same code with bigger circuits."""

import json

import pytest

from imo.pipeline.cli import main

CLAIM_SHARE_BPS = 6_000  # TokenConfig default
FEE, OPERATOR_BPS = 10**15, 2_000
# the accounts anvil unlocks on every fresh chain (from its "test test … junk" mnemonic), and which the demo does not use
ANVIL_DEV_ADDRESSES = {
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65", "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
    "0x976EA74026E726554dB657fA54763abd0C3a0aa9", "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
    "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f", "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    summary_file = root / "summary.json"
    assert main(["demo", "--model", "mlp", "--workdir", str(root / "work"), "--summary", str(summary_file), "--quiet"]) == 0
    return json.loads(summary_file.read_text())


def test_plan_is_a_zk_then_op_hybrid_with_public_op_boundaries(demo):
    assert [s["mode"] for s in demo["plan"]["segments"]] == ["zk", "op"]
    sizes = demo["plan"]["boundary_sizes"]
    assert sizes[0] == 0 and all(sizes[1:])  # the private input is a commitment; everything next to op is public
    assert demo["plan"]["terms"]["challenge_window_s"] >= demo["plan"]["dispute_costs"]["min_window_s"]


def test_a_forged_proof_a_wrong_output_and_a_lie_inside_a_trace_are_slashed_and_every_request_finalized(demo):
    assert demo["fraud_caught"] == 3
    forged, lied, gamed = demo["fraud"]
    assert forged["kind"] == "invalid zk proof" and lied["kind"] == "wrong output, unanswered dispute"
    assert gamed["kind"] == "wrong op segment, bisection game" and gamed["segment"] == 2
    assert gamed["rounds"] == (gamed["steps"] - 1).bit_length() and 0 <= gamed["disputed_step"] < gamed["steps"]
    assert gamed["transactions"] == 2 * gamed["rounds"] + 2  # open, root, choices and reveals, the step
    assert 0 < gamed["max_tx_gas"] <= 5_000_000
    for f in demo["fraud"]:
        assert f["to_challenger_wei"] + f["to_token_wei"] == f["bond_slashed_wei"] and f["to_token_wei"] > 0
    assert sum(r["model"] == "mlp" for r in demo["requests"]) >= 5
    assert all(r["status"] == "finalized" for r in demo["requests"])
    assert {r["id"] for r in demo["requests"] if r["disputed"]} == {forged["request"], lied["request"], gamed["request"]}


def test_holders_claim_exactly_their_share_of_fees_and_slashed_bonds(demo):
    first, second = demo["snapshots"]
    answers = sum(r["model"] == "mlp" for r in demo["requests"])  # slashed requests keep their fee: all are paid
    assert first["revenue_wei"] == answers * FEE * (10_000 - OPERATOR_BPS) // 10_000 + demo["fees"]["slashed_to_token_wei"]
    for snap in (first, second):
        assert snap["claimable_wei"] == snap["revenue_wei"] * CLAIM_SHARE_BPS // 10_000
        assert len(snap["claims"]) == 3
        for claim in snap["claims"]:
            assert claim["claimed_wei"] == claim["expected_wei"] == int(claim["share"] * 10**6) * snap["claimable_wei"] // 10**6
    shares = [c["share"] for c in first["claims"]]
    assert len(set(shares)) == 3  # three buyers, three different amounts
    assert second["revenue_wei"] == demo["nft"]["mint_fee_wei"] + demo["nft"]["royalty_paid_wei"] + FEE * (10_000 - OPERATOR_BPS) // 10_000


def test_one_nft_minted_and_its_royalty_paid_to_the_token(demo):
    nft = demo["nft"]
    assert nft["minted"] == 1
    assert nft["royalty_receiver"] == demo["sale"]["token"]
    assert nft["royalty_paid_wei"] == nft["sale_price_wei"] * 500 // 10_000 > 0
    assert len(nft["pixels"]) == 64 and max(nft["pixels"]) > 0


def test_every_party_is_a_fresh_key_not_an_account_of_the_node(demo):
    accounts = demo["accounts"]
    assert len(accounts) == len(set(accounts.values())) == 10
    assert not set(accounts.values()) & ANVIL_DEV_ADDRESSES  # the guard in conftest.py checks that they signed locally
    assert [b["buyer"] for b in demo["sale"]["buyers"]] == [accounts[f"buyer {n}"] for n in (1, 2, 3)]


def test_eth_is_conserved_and_the_summary_has_gas_and_timings(demo):
    assert demo["eth_conserved"] is True
    gas = demo["gas"]
    assert gas["node submit"] > 0 and gas["node challenge"] > 0 and gas["node disputeProof"] > 0 and gas["node resolve"] > 0
    parts = gas["happy_path_parts"]
    assert gas["happy_path_per_request"] == parts["request"] + parts["commit"] + parts["submit"] + parts["finalize"]
    assert demo["latency_s"]["request_to_finalized_excluding_window_mean"] > 0
    assert demo["timings"]["total"] > 0
