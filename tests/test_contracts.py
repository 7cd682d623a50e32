"""The protocol contracts on a real anvil: ERC-7641 token, IMO sale, the hybrid AIOracle, the ERC-7007 NFT.

Segments are checked by `ToyVerifier` (tests/contracts/ToyVerifiers.sol), a stand-in for ezkl's verifier that is sound
for a toy function (tests/helpers.py `ToyModel`), so honest and dishonest claims, valid and tampered proofs behave as
with real proofs, at no proving cost; with slack 1 it accepts two answers, as ezkl's rounding relations do.
tests/test_contracts_zk.py runs the protocol with real ezkl proofs. The oracle is driven through `OracleClient` (commit
then reveal). Each test starts from the same deployed world and is rolled back with evm_snapshot/evm_revert. Every party
(owner, requester, operator, challenger, finalizer, holders) is a fresh funded account that signs locally.

The attacks of the security review each have a test here that fails on the old design and passes on this one."""

import base64
import dataclasses
import json
import os
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from eth_abi import decode, encode
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from web3 import Web3
from web3.logs import DISCARD

from helpers import (
    rolled_back,
    ToyModel,
    advance,
    compile_with_test_contracts,
    fraud_proof,
    from_field,
    funded_accounts,
    own_proof,
    reverts,
    send_signed,
    toy_proof,
)
from imo.circuits.fixed_point import FIELD_MODULUS
from imo.errors import ChainError
from imo.proving.protocol import (
    Claim,
    ModelSpec,
    Registration,
    SegmentSpec,
    challenge_commitment,
    pack_tensor,
    submit_commitment,
    to_field,
)
from imo.verifier_contracts.contracts import (
    Deployment,
    OracleConfig,
    TokenConfig,
    address_of,
    deploy_protocol,
    pay,
    transact,
)
from imo.verifier_contracts.evm import deploy
from imo.verifier_contracts.oracle_client import OracleClient, Status

P = FIELD_MODULUS
ETH = 10**18
TOKEN = 10**18
FEE = 10**15
BOND = MIN_BOND = 10**16
OPERATOR_BPS = 2_000
BPS = 10_000
CHALLENGE_WINDOW = 1_000
RESPONSE_WINDOW = 500
TIMEOUT = 5_000
GAS_PRICE = 2 * 10**9  # wei per unit of callback gas in the fee
CALLBACK_GAS = 300_000
SCALE = 7
SNAPSHOT_INTERVAL = 50
CLAIM_PERIOD = 10_000
CLAIM_BPS = 6_000
MINT_FEE = 10**15
TX_GAS_CAP = 1 << 24  # EIP-7825's per-transaction gas limit
MARGIN = 5  # seconds of block-time uncertainty the state machine stays away from deadlines
ZERO = "0x" + "00" * 20

# name: (salts, boundary sizes (0: hashed), zk per segment, slack per segment, challenge window, response window)
MODELS = {
    # zk (private input -> 4) then op (4 -> 4, a relation with two answers) then op (4 -> y of 3)
    "hybrid": ([11, 22, 33], [0, 4, 4, 3], [True, False, False], [0, 1, 0], CHALLENGE_WINDOW, RESPONSE_WINDOW),
    # all zk, hashed in between: verified at submit, final at once
    "eager": ([44, 55], [0, 0, 3], [True, True], [0, 0], 0, 0),
    # OAO-style public input: an 8-byte prompt, one op segment
    "prompt": ([66], [8, 4], [False], [0], CHALLENGE_WINDOW, RESPONSE_WINDOW),
    # the NFT's 8x8 image model
    "image": ([77], [0, 64], [True], [0], CHALLENGE_WINDOW, RESPONSE_WINDOW),
}


# ---------------------------------------------------------------- the world


def deploy_toy_model(w, salts, sizes, zk, slack, challenge_window, response_window, token=None):
    """Deploy a ToyVerifier per segment and register the model; returns its record."""
    verifiers = []
    for k, salt in enumerate(salts, start=1):
        n_in, n_out = sizes[k - 1] or 1, sizes[k] or 1
        verifiers.append(deploy(w.w3, w.compiled["ToyVerifier"], w.owner, salt, n_in, n_out, slack[k - 1], sizes[k] == 0)[0])
    spec = ModelSpec(keccak(bytes(salts)), keccak(bytes(sizes[:1])), token or w.dep.token, FEE, BOND, OPERATOR_BPS,
                     challenge_window, response_window, SCALE)
    segments = [SegmentSpec(v.address, z) for v, z in zip(verifiers, zk)]
    model_id, digest, receipt = w.oracle.register(spec, segments, sizes)
    return SimpleNamespace(id=model_id, toy=ToyModel(salts, sizes), sizes=sizes, verifiers=verifiers, spec=spec,
                           segments=segments, digest=digest, receipt=receipt)


@pytest.fixture(scope="module")
def deployed(chain):
    """Token, oracle and consumer (deploy_protocol), the toy models of MODELS and the image model's NFT."""
    w3 = chain.w3
    accounts = funded_accounts(w3, 10)
    owner = accounts[0]
    dep = deploy_protocol(
        w3, owner,
        token=TokenConfig(supply=1_000 * TOKEN, claim_share_bps=CLAIM_BPS, snapshot_interval_s=SNAPSHOT_INTERVAL,
                          claim_period_s=CLAIM_PERIOD),
        sale=None,
        oracle=OracleConfig(min_bond_wei=MIN_BOND, request_timeout_s=TIMEOUT, callback_gas_price_wei=GAS_PRICE),
    )
    compiled = compile_with_test_contracts()
    w = SimpleNamespace(
        w3=w3, owner=owner, requester=accounts[1], operator=accounts[2], challenger=accounts[3],
        holders=accounts[4:8], finalizer=accounts[8], accounts=accounts, dep=dep, compiled=compiled,
        oracle=OracleClient(w3, dep.oracle, owner),
        token=w3.eth.contract(address=dep.token, abi=compiled["RevShareToken"].abi),
        consumer=w3.eth.contract(address=dep.consumer, abi=compiled["OracleConsumer"].abi),
    )
    w.models = {name: deploy_toy_model(w, *args) for name, args in MODELS.items()}
    nft = deploy(w3, compiled["AIGCNFT"], owner, "Pixels", "PIX", dep.oracle, w.models["image"].id, MINT_FEE, 500)[0]
    w.nft = nft
    return w


@pytest.fixture
def world(deployed):
    """The deployed world, rolled back after the test."""
    with rolled_back(deployed.w3):
        yield deployed


# ---------------------------------------------------------------- helpers


def client(world, account) -> OracleClient:
    return world.oracle.as_sender(account)


def new_contract(world, name, *args):
    return deploy(world.w3, world.compiled[name], world.owner, *args)[0]


def events(contract, name, receipt) -> list:
    return contract.events[name]().process_receipt(receipt, errors=DISCARD)


def balance(world, account) -> int:
    """Wei held by `account` (a party's LocalAccount or an address)."""
    return world.w3.eth.get_balance(address_of(account))


def credit(world, account) -> int:
    """What the oracle credits `account` (a party's LocalAccount or an address)."""
    return world.oracle.credits(address_of(account))


def now(world) -> int:
    return world.oracle.now()


def timestamp_of(world, receipt) -> int:
    return world.w3.eth.get_block(receipt.blockNumber)["timestamp"]


def c0_input(c0: int) -> bytes:
    return c0.to_bytes(32, "big")


def shift(value: int, by: int) -> int:
    """A public field element's value moved by `by`."""
    return to_field(from_field(value) + by)


def tamper(boundary: int, by: int = 5, index: int = 0):
    """A `ToyModel.claim` tamper: element `index` of `boundary` moved by `by` (decodable, but wrong)."""
    def apply(b):
        b[boundary][index] = shift(b[boundary][index], by)
    return apply


def model_revenue(fee_part: int = FEE) -> int:
    return fee_part * (BPS - OPERATOR_BPS) // BPS


def request(world, model="hybrid", c0=12345, callback=None, gas_limit=0, requester=None, value=None, input_=None):
    """A request of `model` on C_0 = c0 (or the raw `input_`); returns the request id."""
    m = world.models[model]
    rid, _ = client(world, requester or world.requester).request_callback(
        m.id, c0_input(c0) if input_ is None else input_, callback, gas_limit, b"\x2a", value=value)
    return rid


def honest_claim(world, model="hybrid", c0=12345, **kwargs) -> Claim:
    m = world.models[model]
    zk = [k for k, s in enumerate(m.segments, start=1) if s.zk]
    return m.toy.claim([c0], proofs_for=zk, **kwargs)


def served(world, model="hybrid", c0=12345, claim=None, operator=None, **request_kwargs) -> tuple[int, Claim]:
    """A request with a claim (the honest one unless given) submitted; returns (request id, claim)."""
    rid = request(world, model, c0, **request_kwargs)
    claim = claim or honest_claim(world, model, c0)
    client(world, operator or world.operator).submit(rid, claim, bond=BOND)
    return rid, claim


def lying(world, c0=12345) -> Claim:
    """A hybrid claim whose y (op segment 3's output) is decodable but wrong."""
    return honest_claim(world, "hybrid", c0, tamper=tamper(3))


def challenge(world, rid, claim, k, challenger=None, plus_one=False, model="hybrid"):
    proof, outputs = fraud_proof(world.models[model].toy, claim, k, plus_one)
    return client(world, challenger or world.challenger).challenge(rid, k, claim, proof, outputs, bond=BOND)


def in_one_block(world, sends) -> list:
    """Send transactions (thunks returning a hash, see `send_signed`) without mining, mine them in one block, return their receipts."""
    w3 = world.w3
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        hashes = [send() for send in sends]
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    return [w3.eth.wait_for_transaction_receipt(h) for h in hashes]


def distribute(world, amounts: list[int]) -> None:
    for holder, amount in zip(world.holders, amounts):
        transact(world.token.functions.transfer(holder.address, amount), world.owner)


def pay_revenue(world, amount: int) -> None:
    pay(world.w3, world.owner, world.token.address, amount)


def take_snapshot(world) -> int:
    advance(world.w3, SNAPSHOT_INTERVAL)
    receipt = transact(world.token.functions.snapshot(), world.owner)
    return events(world.token, "Snapshot", receipt)[0]["args"]["snapshotId"]


# ---------------------------------------------------------------- RevShareToken (ERC-7641)


def test_holders_claim_their_pro_rata_share_of_revenue_between_snapshots(world):
    distribute(world, [100 * TOKEN, 300 * TOKEN])
    pay_revenue(world, ETH)
    snapshot_id = take_snapshot(world)
    h0, h1 = world.holders[:2]
    claimable = ETH * CLAIM_BPS // BPS
    assert world.token.functions.claimableRevenue(h0.address, snapshot_id).call() == claimable * 100 // 1_000
    before = balance(world, h1)
    receipt = transact(world.token.functions.claim(snapshot_id), h1)
    assert balance(world, h1) - before + receipt.gasUsed * receipt.effectiveGasPrice == claimable * 300 // 1_000
    assert world.token.functions.burnPool().call() == ETH - claimable


def test_claiming_twice_reverts(world):
    distribute(world, [100 * TOKEN])
    pay_revenue(world, ETH)
    snapshot_id = take_snapshot(world)
    transact(world.token.functions.claim(snapshot_id), world.holders[0])
    with reverts("RevShareTokenAlreadyClaimed"):
        transact(world.token.functions.claim(snapshot_id), world.holders[0])


def test_tokens_moved_after_a_snapshot_are_not_claimed_twice(world):
    h0, h1 = world.holders[:2]
    distribute(world, [100 * TOKEN])
    pay_revenue(world, ETH)
    snapshot_id = take_snapshot(world)
    transact(world.token.functions.transfer(h1.address, 100 * TOKEN), h0)
    assert world.token.functions.claimableRevenue(h1.address, snapshot_id).call() == 0
    with reverts("RevShareTokenNothingToClaim"):
        transact(world.token.functions.claim(snapshot_id), h1)
    transact(world.token.functions.claim(snapshot_id), h0)
    assert world.token.functions.balanceOfAt(h0.address, snapshot_id).call() == 100 * TOKEN


def test_claim_for_a_snapshot_taken_before_buying_gets_nothing(world):
    pay_revenue(world, ETH)
    snapshot_id = take_snapshot(world)
    offering = new_contract(world, "ModelOffering", world.token.address, world.owner.address, 10**12, TOKEN, 10**13, 10**14,
                            now(world) + 1_000)
    transact(world.token.functions.transfer(offering.address, 100 * TOKEN), world.owner)
    buyer = world.holders[0]
    transact(offering.functions.buy(), buyer, value=10**13)
    advance(world.w3, 1_000)
    transact(offering.functions.finalizeSale(), buyer)
    transact(offering.functions.claimTokens(), buyer)
    assert world.token.functions.balanceOf(buyer.address).call() == 10 * TOKEN
    assert world.token.functions.claimableRevenue(buyer.address, snapshot_id).call() == 0
    with reverts("RevShareTokenNothingToClaim"):
        transact(world.token.functions.claim(snapshot_id), buyer)


def test_snapshots_are_rate_limited(world):
    take_snapshot(world)
    with reverts("RevShareTokenSnapshotTooSoon"):
        transact(world.token.functions.snapshot(), world.owner)


def test_claim_at_an_unknown_snapshot_reverts(world):
    with reverts("RevShareTokenUnknownSnapshot"):
        transact(world.token.functions.claim(7), world.owner)


def test_burning_redeems_a_pro_rata_share_of_the_burn_pool(world):
    distribute(world, [250 * TOKEN])
    pay_revenue(world, ETH)
    take_snapshot(world)
    pool = world.token.functions.burnPool().call()
    holder = world.holders[0]
    assert world.token.functions.redeemableOnBurn(250 * TOKEN).call() == pool // 4
    before = balance(world, holder)
    receipt = transact(world.token.functions.burn(250 * TOKEN), holder)
    assert balance(world, holder) - before + receipt.gasUsed * receipt.effectiveGasPrice == pool // 4
    assert world.token.functions.totalSupply().call() == 750 * TOKEN


def test_burning_more_than_held_reverts(world):
    distribute(world, [10 * TOKEN])
    with reverts("RevShareTokenBurnExceedsBalance"):
        transact(world.token.functions.burn(10 * TOKEN + 1), world.holders[0])


def test_unclaimed_revenue_is_swept_into_the_burn_pool_after_the_claim_period(world):
    distribute(world, [500 * TOKEN])
    pay_revenue(world, ETH)
    snapshot_id = take_snapshot(world)
    with reverts("RevShareTokenClaimPeriodOpen"):
        transact(world.token.functions.sweep(snapshot_id), world.owner)
    transact(world.token.functions.claim(snapshot_id), world.holders[0])
    advance(world.w3, CLAIM_PERIOD)
    burn_pool = world.token.functions.burnPool().call()
    transact(world.token.functions.sweep(snapshot_id), world.owner)
    claimable = ETH * CLAIM_BPS // BPS
    assert world.token.functions.burnPool().call() == burn_pool + claimable // 2
    assert world.token.functions.claimPool().call() == 0
    with reverts("RevShareTokenSnapshotSwept"):
        transact(world.token.functions.claim(snapshot_id), world.owner)


# ---------------------------------------------------------------- ModelOffering


@pytest.fixture
def sale(world):
    """A sale of 100 tokens at 1e12 wei per token: soft cap 3e13, hard cap 6e13, open 1000 s."""
    offering = new_contract(world, "ModelOffering", world.token.address, world.owner.address, 10**12, TOKEN, 3 * 10**13,
                            6 * 10**13, now(world) + 1_000)
    transact(world.token.functions.transfer(offering.address, 100 * TOKEN), world.owner)
    return offering


def test_sale_success_path(world, sale):
    b0, b1 = world.holders[:2]
    with reverts("ModelOfferingInvalidPayment"):
        transact(sale.functions.buy(), b0, value=10**12 + 1)
    transact(sale.functions.buy(), b0, value=2 * 10**13)
    transact(sale.functions.buy(), b1, value=2 * 10**13)
    with reverts("ModelOfferingHardCapExceeded"):
        transact(sale.functions.buy(), b1, value=3 * 10**13)
    with reverts("ModelOfferingStillOpen"):
        transact(sale.functions.finalizeSale(), b0)
    advance(world.w3, 1_000)
    with reverts("ModelOfferingClosed"):
        transact(sale.functions.buy(), b1, value=10**12)
    treasury_tokens = world.token.functions.balanceOf(world.owner.address).call()
    transact(sale.functions.finalizeSale(), b0)
    assert world.token.functions.balanceOf(world.owner.address).call() == treasury_tokens + 60 * TOKEN
    transact(sale.functions.claimTokens(), b0)
    assert world.token.functions.balanceOf(b0.address).call() == 20 * TOKEN
    with reverts("ModelOfferingNothingToClaim"):
        transact(sale.functions.claimTokens(), b0)
    with reverts("ModelOfferingSaleSucceeded"):
        transact(sale.functions.refund(), b1)
    before = balance(world, world.owner)
    transact(sale.functions.withdrawProceeds(), b1)
    assert balance(world, world.owner) - before == 4 * 10**13
    transact(sale.functions.claimTokens(), b1)
    assert balance(world, sale.address) == 0 and world.token.functions.balanceOf(sale.address).call() == 0


def test_sale_that_misses_its_soft_cap_refunds_every_buyer_in_full(world, sale):
    buyer = world.holders[0]
    transact(sale.functions.buy(), buyer, value=10**13)
    advance(world.w3, 1_000)
    transact(sale.functions.finalizeSale(), buyer)
    assert world.token.functions.balanceOf(sale.address).call() == 0
    with reverts("ModelOfferingSaleFailed"):
        transact(sale.functions.claimTokens(), buyer)
    before = balance(world, buyer)
    receipt = transact(sale.functions.refund(), buyer)
    assert balance(world, buyer) - before + receipt.gasUsed * receipt.effectiveGasPrice == 10**13
    with reverts("ModelOfferingNothingToClaim"):
        transact(sale.functions.refund(), buyer)
    with reverts("ModelOfferingNothingToWithdraw"):
        transact(sale.functions.withdrawProceeds(), buyer)


def test_buying_tokens_the_sale_does_not_hold_reverts(world):
    offering = new_contract(world, "ModelOffering", world.token.address, world.owner.address, 10**12, TOKEN, 10**12, 10**14,
                            now(world) + 1_000)
    transact(world.token.functions.transfer(offering.address, 5 * TOKEN), world.owner)
    with reverts("ModelOfferingUnderfunded"):
        transact(offering.functions.buy(), world.holders[0], value=6 * 10**12)


# ---------------------------------------------------------------- AIOracle: the happy path and basic checks


def test_honest_result_is_delivered_and_the_fee_is_split(world):
    token_before = balance(world, world.token.address)
    rid, claim = served(world, callback=world.consumer.address, gas_limit=CALLBACK_GAS)
    assert world.oracle.request(rid).status == Status.SUBMITTED
    advance(world.w3, CHALLENGE_WINDOW)
    receipt = client(world, world.finalizer).finalize(rid, claim)
    assert world.oracle.request(rid).status == Status.FINALIZED
    assert world.oracle.fn.isFinalized(rid).call()
    assert balance(world, world.token.address) - token_before == model_revenue()
    assert credit(world, world.operator) == FEE - model_revenue() + BOND
    assert credit(world, world.finalizer) == CALLBACK_GAS * GAS_PRICE
    y = world.models["hybrid"].toy.boundaries([12345])[3]
    assert claim.output_values(world.models["hybrid"].sizes) == [from_field(v) for v in y]
    assert world.consumer.functions.outputOf(rid).call() == encode(["int256[]", "uint256"], [[from_field(v) for v in y], SCALE])
    assert events(world.consumer, "ResultReceived", receipt)[0]["args"]["callbackData"] == b"\x2a"
    before = balance(world, world.operator)
    receipt = client(world, world.operator).withdraw()
    assert balance(world, world.operator) - before + receipt.gasUsed * receipt.effectiveGasPrice == FEE - model_revenue() + BOND
    client(world, world.finalizer).withdraw()
    assert balance(world, world.oracle.address) == 0


def test_published_boundaries_are_read_back_from_the_submit_calldata(world):
    rid = request(world)
    claim = honest_claim(world)
    _, receipt = client(world, world.operator).submit(rid, claim, bond=BOND)
    assert world.oracle.submitted_claim(receipt.transactionHash) == (rid, claim)
    assert world.oracle.claim(rid).claim_hash == claim.claim_hash
    assert world.oracle.fn.hashClaim(claim.as_tuple()).call() == [claim.body_hash, claim.claim_hash]


def test_underpaid_request_reverts(world):
    with reverts("AIOracleUnderpaid"):
        request(world, value=FEE - 1)
    with reverts("AIOracleUnderpaid"):
        request(world, callback=world.consumer.address, gas_limit=CALLBACK_GAS, value=FEE + CALLBACK_GAS * GAS_PRICE - 1)


def test_private_input_must_be_one_field_element(world):
    with reverts("AIOracleInvalidInput"):
        request(world, c0=P)
    with reverts("AIOracleInvalidInput"):
        request(world, input_=b"\x01" * 31)


def test_callback_gas_above_the_maximum_reverts(world):
    with reverts("AIOracleGasLimitTooHigh"):
        request(world, callback=world.consumer.address, gas_limit=10_000_001, value=ETH)


def test_request_for_an_unknown_model_reverts(world):
    with reverts("AIOracleUnknownModel"):
        client(world, world.requester).request_callback(99, c0_input(5), value=FEE)


def test_submitting_twice_reverts(world):
    rid, claim = served(world)
    with reverts("AIOracleUnexpectedStatus"):
        client(world, world.challenger).submit(rid, claim, bond=BOND)


def test_submit_requires_exactly_the_models_bond(world):
    rid = request(world)
    claim = honest_claim(world)
    for bond in (BOND - 1, BOND + 1):
        with reverts("AIOracleWrongBond"):
            client(world, world.operator).submit(rid, claim, bond=bond)


def test_finalize_before_the_window_ends_reverts(world):
    rid, claim = served(world)
    with reverts("AIOracleChallengeWindowOpen"):
        client(world, world.operator).finalize(rid, claim)


def test_double_finalize_reverts(world):
    rid, claim = served(world)
    advance(world.w3, CHALLENGE_WINDOW)
    client(world, world.operator).finalize(rid, claim)
    with reverts("AIOracleUnexpectedStatus"):
        client(world, world.operator).finalize(rid, claim)


def test_challenge_after_the_window_reverts(world):
    rid, claim = served(world, claim=lying(world))
    advance(world.w3, CHALLENGE_WINDOW)
    with reverts("AIOracleChallengeWindowClosed"):
        challenge(world, rid, claim, 3)


def test_challenge_that_agrees_with_the_claim_reverts(world):
    rid, claim = served(world)
    inputs, outputs = claim.segment_instances(world.models["hybrid"].sizes, 3)
    with reverts("AIOracleClaimNotContradicted"):
        client(world, world.challenger).challenge(rid, 3, claim, toy_proof(inputs + outputs), outputs, bond=BOND)


def test_challenge_with_an_invalid_fraud_proof_reverts(world):
    rid, claim = served(world, claim=lying(world))
    inputs, outputs = claim.segment_instances(world.models["hybrid"].sizes, 3)
    wrong = [shift(v, 7) for v in outputs]  # contradicts the claim, but is not the segment's output
    with reverts("AIOracleInvalidProof"):
        client(world, world.challenger).challenge(rid, 3, claim, toy_proof(inputs + wrong), wrong, bond=BOND)


def test_challenge_instances_must_be_field_elements(world):
    rid, claim = served(world, claim=lying(world))
    proof, outputs = fraud_proof(world.models["hybrid"].toy, claim, 3)
    with reverts("AIOracleInvalidInstances"):
        client(world, world.challenger).challenge(rid, 3, claim, proof, [outputs[0] + P, *outputs[1:]], bond=BOND)
    with reverts("AIOracleInvalidInstances"):
        client(world, world.challenger).challenge(rid, 3, claim, proof, outputs[:-1], bond=BOND)


def test_challenge_must_post_exactly_the_models_bond(world):
    rid, claim = served(world, claim=lying(world))
    proof, outputs = fraud_proof(world.models["hybrid"].toy, claim, 3)
    with reverts("AIOracleWrongBond"):
        client(world, world.challenger).challenge(rid, 3, claim, proof, outputs, bond=BOND - 1)


def test_challenge_of_a_zk_segment_and_proof_dispute_of_an_op_segment_revert(world):
    rid, claim = served(world, claim=lying(world))
    proof, outputs = fraud_proof(world.models["hybrid"].toy, claim, 1)
    with reverts("AIOracleInvalidSegment"):
        client(world, world.challenger).challenge(rid, 1, claim, proof, outputs, bond=BOND)
    for k in (0, 2, 4):
        with reverts("AIOracleInvalidSegment"):
            client(world, world.challenger).dispute_proof(rid, k, claim)


def test_revenue_a_token_refuses_is_credited_to_it(world):
    refusing = new_contract(world, "RefusingReceiver")
    m = deploy_toy_model(world, *MODELS["hybrid"], token=refusing.address)
    rid = client(world, world.requester).request_callback(m.id, c0_input(5), value=FEE)[0]
    claim = m.toy.claim([5], proofs_for=[1])
    client(world, world.operator).submit(rid, claim, bond=BOND)
    advance(world.w3, CHALLENGE_WINDOW)
    client(world, world.operator).finalize(rid, claim)
    assert credit(world, refusing.address) == model_revenue()
    with pytest.raises(ChainError, match="withdrawFor"):  # the token still refuses the ETH
        transact(world.oracle.fn.withdrawFor(refusing.address), world.owner)


def test_withdrawing_nothing_reverts(world):
    with reverts("AIOracleNothingToWithdraw"):
        client(world, world.holders[3]).withdraw()


# ---------------------------------------------------------------- finding 1: published data is bound to the claim


def _bad_width(packed: bytes) -> bytes:
    return bytes([3]) + packed[1:]


SHAPE_CASES = {
    # name: (change to the honest claim, expected error, expected args but the request id)
    "width-byte-3-in-the-boundary-data": (lambda c: dict(data=_bad_width(c.data)), "BoundaryCodecMalformed", (0,)),
    "width-byte-3-in-the-output": (lambda c: dict(output=_bad_width(c.output)), "BoundaryCodecMalformed", (0,)),
    "output-width-byte-too-wide-for-its-bytes": (lambda c: dict(output=b"\x04" + c.output[1:]), "BoundaryCodecMalformed", (0,)),
    "boundary-data-one-byte-short": (lambda c: dict(data=c.data[:-1]), "BoundaryCodecMalformed", (9,)),
    "boundary-data-one-tensor-short": (lambda c: dict(data=c.data[:9]), "BoundaryCodecMalformed", (9,)),
    "trailing-bytes-after-the-boundary-data": (lambda c: dict(data=c.data + b"\x00"), "AIOracleInvalidClaim", (4,)),
    "output-one-element-short": (lambda c: dict(output=c.output[:-2]), "BoundaryCodecMalformed", (0,)),
    "trailing-bytes-after-the-output": (lambda c: dict(output=c.output + b"\x00\x00"), "AIOracleInvalidClaim", (3,)),
    "nonzero-commitment-for-a-public-boundary": (
        lambda c: dict(commitments=(c.commitments[0], 5, 0, 0)), "AIOracleInvalidClaim", (1,)),
    "nonzero-commitment-for-the-output": (
        lambda c: dict(commitments=(c.commitments[0], 0, 0, 5)), "AIOracleInvalidClaim", (3,)),
    "input-commitment-not-the-requests": (
        lambda c: dict(commitments=(c.commitments[0] + 1, 0, 0, 0)), "AIOracleInvalidClaim", (0,)),
    "one-commitment-missing": (lambda c: dict(commitments=c.commitments[:3]), "AIOracleInvalidClaim", (3,)),
    "input-bytes-for-a-private-input": (lambda c: dict(input=b"\x01\x05"), "AIOracleInvalidClaim", (0,)),
    "zk-proof-missing": (lambda c: dict(proofs=()), "AIOracleWrongProofCount", (1, 0)),
    "one-proof-too-many": (lambda c: dict(proofs=c.proofs * 2), "AIOracleWrongProofCount", (1, 2)),
}


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
def test_submit_rejects_a_claim_that_does_not_fit_the_registration(world, case):
    change, error, args = SHAPE_CASES[case]
    rid = request(world)
    honest = honest_claim(world)
    bad = dataclasses.replace(honest, **change(honest))
    with reverts(error) as excinfo:
        client(world, world.operator).submit(rid, bad, bond=BOND)
    assert excinfo.value.args_ == (args if error != "AIOracleInvalidClaim" else (rid, *args))
    client(world, world.operator).submit(rid, honest, bond=BOND)  # the request is still open for the honest claim


def test_submit_rejects_a_hashed_boundary_outside_the_field(world):
    rid = request(world, "eager")
    honest = honest_claim(world, "eager")
    bad = dataclasses.replace(honest, commitments=(honest.commitments[0], honest.commitments[1] + P, 0))
    with reverts("AIOracleInvalidClaim") as excinfo:
        client(world, world.operator).submit(rid, bad, bond=BOND)
    assert excinfo.value.args_ == (rid, 1)


def test_tampered_op_output_is_challenged_and_slashed_after_the_response_window(world):
    token_before = balance(world, world.token.address)
    rid, claim = served(world, claim=lying(world), callback=world.consumer.address, gas_limit=CALLBACK_GAS)
    fee = world.oracle.request(rid).fee
    claim.tensors(world.models["hybrid"].sizes)  # decodable: the lie is in the values, not the encoding
    challenge(world, rid, claim, 3)
    assert world.oracle.dispute(rid, 3).challenger == world.challenger.address
    assert world.oracle.claim(rid).open_disputes == 1
    with reverts("AIOracleResponseWindowOpen"):
        client(world, world.finalizer).resolve(rid, 3)
    advance(world.w3, RESPONSE_WINDOW)
    receipt = client(world, world.finalizer).resolve(rid, 3)
    slashed = events(world.oracle.contract, "AIResultSlashed", receipt)[0]["args"]
    assert (slashed["segment"], slashed["challenger"], slashed["reward"], slashed["toToken"]) == (
        3, world.challenger.address, BOND // 2, BOND // 2)
    assert credit(world, world.challenger) == BOND + BOND // 2
    assert credit(world, world.operator) == 0
    assert balance(world, world.token.address) - token_before == BOND // 2
    r = world.oracle.request(rid)
    assert (r.status, r.fee) == (Status.PENDING, fee)
    assert not world.oracle.claim(rid).exists


def test_disputes_that_resupply_a_different_claim_revert_with_claim_mismatch(world):
    rid, claim = served(world, claim=lying(world))
    other = honest_claim(world)  # what a challenger would like the claim to have been
    proof, outputs = fraud_proof(world.models["hybrid"].toy, claim, 3)
    c = client(world, world.challenger)
    with reverts("AIOracleClaimMismatch"):
        c.challenge(rid, 3, other, proof, outputs, bond=BOND)
    with reverts("AIOracleClaimMismatch"):
        c.dispute_proof(rid, 1, other)
    with reverts("AIOracleClaimMismatch"):  # one byte of the published data changed
        c.challenge(rid, 3, dataclasses.replace(claim, data=claim.data[:-1] + b"\x07"), proof, outputs, bond=BOND)
    proof2, outputs2 = fraud_proof(world.models["hybrid"].toy, claim, 2, plus_one=True)
    c.challenge(rid, 2, claim, proof2, outputs2, bond=BOND)
    with reverts("AIOracleClaimMismatch"):
        client(world, world.operator).respond(rid, 2, other, own_proof(world.models["hybrid"].toy, other, 2))
    client(world, world.operator).respond(rid, 2, claim, own_proof(world.models["hybrid"].toy, claim, 2))
    advance(world.w3, CHALLENGE_WINDOW)
    with reverts("AIOracleClaimMismatch"):
        client(world, world.finalizer).finalize(rid, other)
    with reverts("AIOracleClaimMismatch"):
        client(world, world.finalizer).finalize(rid, dataclasses.replace(claim, output=other.output))


def test_submit_through_a_contract_reverts_not_direct_call(world):
    caller = new_contract(world, "OracleCaller", world.oracle.address)
    rid = request(world)
    claim = honest_claim(world)
    commit = world.oracle.fn.commit(submit_commitment(caller.address, rid, claim))
    transact(caller.functions.forward(commit._encode_transaction_data()), world.operator)
    reveal = world.oracle.fn.submit(rid, claim.as_tuple())._encode_transaction_data()
    with reverts("AIOracleNotDirectCall") as excinfo:
        transact(caller.functions.forward(reveal), world.operator, value=BOND)
    assert excinfo.value.args_ == (caller.address.lower(),)


# ---------------------------------------------------------------- finding 2: registrations are bound to their code


def test_registration_digest_matches_python_with_verifier_code_hashes(world):
    m = world.models["hybrid"]
    code_hashes = tuple(keccak(bytes(world.w3.eth.get_code(v.address))) for v in m.verifiers)
    expected = Registration(m.spec, tuple(m.segments), tuple(m.sizes), code_hashes).digest()
    assert m.digest == expected
    assert world.oracle.fn.registrationDigest(m.id).call() == expected
    chain_model = world.oracle.model(m.id)
    assert chain_model.registration == Registration(m.spec, tuple(m.segments), tuple(m.sizes), code_hashes)
    assert chain_model.digest == expected


def test_copycat_registration_with_another_verifier_gets_another_digest(world):
    m = world.models["hybrid"]
    salts, sizes, zk, slack, cw, rw = MODELS["hybrid"]
    same_code = deploy_toy_model(world, salts, sizes, zk, slack, cw, rw)  # same code at other addresses
    assert same_code.spec == m.spec
    # the same spec, but its last segment checked by a verifier of another function
    other = deploy(world.w3, world.compiled["ToyVerifier"], world.owner, 34, 4, 3, 0, False)[0]
    segments = [*m.segments[:2], SegmentSpec(other.address, False)]
    _, other_digest, _ = world.oracle.register(m.spec, segments, m.sizes)
    code_hashes = tuple(keccak(bytes(world.w3.eth.get_code(s.verifier))) for s in segments)
    assert other_digest == Registration(m.spec, tuple(segments), tuple(m.sizes), code_hashes).digest()
    assert len({m.digest, same_code.digest, other_digest}) == 3
    assert [keccak(bytes(world.w3.eth.get_code(v.address))) for v in same_code.verifiers] == [
        keccak(bytes(world.w3.eth.get_code(v.address))) for v in m.verifiers]


def _registration_case(world, case):
    """(spec, segments, sizes) of an inconsistent registration."""
    v = [seg.verifier for seg in world.models["hybrid"].segments]
    spec = world.models["hybrid"].spec
    zk_op_op = [SegmentSpec(v[0], True), SegmentSpec(v[1], False), SegmentSpec(v[2], False)]
    return {
        "hashed-boundary-next-to-an-op-segment": (spec, zk_op_op, [0, 0, 4, 3]),
        "hashed-private-input-of-an-op-segment": (spec, [SegmentSpec(v[1], False)], [0, 4]),
        "hashed-output": (spec, [SegmentSpec(v[0], True), SegmentSpec(v[0], True)], [0, 0, 0]),
        "op-segment-without-a-challenge-window": (dataclasses.replace(spec, challenge_window_s=0), zk_op_op, [0, 4, 4, 3]),
        "op-segment-without-a-response-window": (dataclasses.replace(spec, response_window_s=0), zk_op_op, [0, 4, 4, 3]),
        "bond-below-the-minimum": (dataclasses.replace(spec, bond_wei=MIN_BOND - 1), zk_op_op, [0, 4, 4, 3]),
        "verifier-without-code": (spec, [SegmentSpec(v[0], True), SegmentSpec(world.owner.address, False), SegmentSpec(v[2], False)],
                                  [0, 4, 4, 3]),
        "one-boundary-too-few": (spec, zk_op_op, [0, 4, 3]),
        "one-boundary-too-many": (spec, zk_op_op, [0, 4, 4, 4, 3]),
        "no-segments": (spec, [], [3]),
        "output-over-the-maximum": (spec, [SegmentSpec(v[2], False)], [4, 4097]),
        "operator-share-over-100-percent": (dataclasses.replace(spec, operator_share_bps=BPS + 1), zk_op_op, [0, 4, 4, 3]),
        "no-revshare-token": (dataclasses.replace(spec, rev_share_token=ZERO), zk_op_op, [0, 4, 4, 3]),
    }[case]


REGISTRATION_ERRORS = {
    "hashed-boundary-next-to-an-op-segment": "AIOracleInvalidBoundary",
    "hashed-private-input-of-an-op-segment": "AIOracleInvalidBoundary",
    "hashed-output": "AIOracleInvalidBoundary",
    "op-segment-without-a-challenge-window": "AIOracleInvalidWindows",
    "op-segment-without-a-response-window": "AIOracleInvalidWindows",
    "bond-below-the-minimum": "AIOracleBondTooLow",
    "verifier-without-code": "AIOracleInvalidVerifier",
    "one-boundary-too-few": "AIOracleInvalidBoundary",
    "one-boundary-too-many": "AIOracleInvalidBoundary",
    "no-segments": "AIOracleInvalidSegments",
    "output-over-the-maximum": "AIOracleInvalidBoundary",
    "operator-share-over-100-percent": "AIOracleInvalidOperatorShare",
    "no-revshare-token": "AIOracleInvalidRevShareToken",
}


@pytest.mark.parametrize("case", sorted(REGISTRATION_ERRORS))
def test_registration_rejects_an_inconsistent_spec(world, case):
    spec, segments, sizes = _registration_case(world, case)
    count = world.oracle.model_count()
    with reverts(REGISTRATION_ERRORS[case]):
        world.oracle.register(spec, segments, sizes)
    assert world.oracle.model_count() == count


# ---------------------------------------------------------------- finding 3: front-running


def test_a_copied_submit_from_another_account_reverts_not_committed(world):
    rid = request(world)
    claim = honest_claim(world)
    client(world, world.operator).commit(submit_commitment(world.operator.address, rid, claim))
    copier = world.challenger
    with reverts("AIOracleNotCommitted") as excinfo:
        transact(world.oracle.fn.submit(rid, claim.as_tuple()), copier, value=BOND)
    assert excinfo.value.args_ == (submit_commitment(copier.address, rid, claim),)
    transact(world.oracle.fn.submit(rid, claim.as_tuple()), world.operator, value=BOND)
    assert world.oracle.claim(rid).submitter == world.operator.address
    assert world.oracle.fn.commitBlock(submit_commitment(world.operator.address, rid, claim)).call() == 0  # used up


def test_a_copied_challenge_or_proof_dispute_from_another_account_reverts_not_committed(world):
    toy = world.models["hybrid"].toy
    rid, claim = served(world, claim=honest_claim(world, tamper=tamper(1)))  # bad zk proof, and a wrong segment 2
    proof, outputs = fraud_proof(toy, claim, 2)
    copier = world.holders[0]
    client(world, world.challenger).commit(challenge_commitment(world.challenger.address, rid, 2, proof))
    call = world.oracle.fn.challenge(rid, 2, claim.as_tuple(), proof, outputs)
    with reverts("AIOracleNotCommitted"):
        transact(call, copier, value=BOND)
    transact(call, world.challenger, value=BOND)
    assert world.oracle.dispute(rid, 2).challenger == world.challenger.address
    client(world, world.finalizer).commit(challenge_commitment(world.finalizer.address, rid, 1))
    call = world.oracle.fn.disputeProof(rid, 1, claim.as_tuple())
    with reverts("AIOracleNotCommitted"):
        transact(call, copier)
    transact(call, world.finalizer)
    assert credit(world, world.finalizer) == BOND // 2
    assert credit(world, world.challenger) == BOND  # its dispute's bond back
    assert credit(world, copier) == 0


def test_a_reveal_in_the_same_block_as_its_commit_fails(world):
    rid = request(world)
    claim = honest_claim(world)
    commitment = submit_commitment(world.operator.address, rid, claim)
    commit_receipt, reveal_receipt = in_one_block(world, [
        lambda: send_signed(world.oracle.fn.commit(commitment), world.operator, gas=100_000),
        lambda: send_signed(world.oracle.fn.submit(rid, claim.as_tuple()), world.operator, gas=1_000_000, value=BOND),
    ])
    assert commit_receipt.blockNumber == reveal_receipt.blockNumber
    assert (commit_receipt.status, reveal_receipt.status) == (1, 0)
    assert reveal_receipt.gasUsed < 1_000_000  # a revert, not out of gas
    assert world.oracle.fn.commitBlock(commitment).call() == commit_receipt.blockNumber
    assert world.oracle.request(rid).status == Status.PENDING
    transact(world.oracle.fn.submit(rid, claim.as_tuple()), world.operator, value=BOND)  # one block later it counts
    assert world.oracle.request(rid).status == Status.SUBMITTED


def test_a_self_challenge_costs_the_cheater_half_its_bond(world):
    cheater, sock_puppet = world.operator, world.holders[0]
    token_before = balance(world, world.token.address)
    rid, claim = served(world, claim=lying(world), operator=cheater)
    challenge(world, rid, claim, 3, challenger=sock_puppet)  # beats an honest watcher to the reward
    advance(world.w3, RESPONSE_WINDOW)
    client(world, sock_puppet).resolve(rid, 3)
    paid_in = 2 * BOND  # the submit's bond and the challenge's bond
    paid_back = credit(world, cheater) + credit(world, sock_puppet)
    assert paid_in - paid_back == BOND // 2
    assert balance(world, world.token.address) - token_before == BOND // 2
    assert world.oracle.request(rid).status == Status.PENDING


# ---------------------------------------------------------------- finding 5: callback gas


def test_estimate_fee_is_the_model_fee_plus_callback_gas(world):
    m = world.models["hybrid"]
    assert world.oracle.estimate_fee(m.id, 0) == FEE
    assert world.oracle.estimate_fee(m.id, CALLBACK_GAS) == FEE + CALLBACK_GAS * GAS_PRICE
    assert world.oracle.fn.callbackGasPrice().call() == GAS_PRICE


def test_estimate_fee_for_an_unknown_model_reverts(world):
    with reverts("AIOracleUnknownModel") as excinfo:
        world.oracle.estimate_fee(99, CALLBACK_GAS)
    assert excinfo.value.args_ == (99,)


def test_finalize_pays_the_finalizer_exactly_the_callback_gas(world):
    tip = 10**14
    rid, claim = served(world, callback=world.consumer.address, gas_limit=CALLBACK_GAS,
                        value=FEE + CALLBACK_GAS * GAS_PRICE + tip)
    advance(world.w3, CHALLENGE_WINDOW)
    assert world.oracle.fee_split(rid) == (model_revenue(), FEE - model_revenue() + tip, CALLBACK_GAS * GAS_PRICE)
    receipt = client(world, world.finalizer).finalize(rid, claim)
    assert credit(world, world.finalizer) == CALLBACK_GAS * GAS_PRICE
    assert credit(world, world.operator) == FEE - model_revenue() + tip + BOND
    finalized = events(world.oracle.contract, "AIRequestFinalized", receipt)[0]["args"]
    assert finalized["finalizerPayout"] == CALLBACK_GAS * GAS_PRICE


CALLBACKS = {  # name: (contract, gas limit, does the callback fail)
    "reverting": ("RevertingCallback", 100_000, True),
    "gas-burning": ("GasBurningCallback", 300_000, True),
    "return-bomb": ("ReturnBombCallback", 1_000_000, False),
    "reentrant": ("ReentrantCallback", 500_000, False),
}


@pytest.mark.parametrize("kind", sorted(CALLBACKS))
def test_a_misbehaving_callback_still_finalizes_and_pays(world, kind):
    name, gas_limit, fails = CALLBACKS[kind]
    callback = new_contract(world, name, *([world.oracle.address] if kind == "reentrant" else []))
    rid, claim = served(world, callback=callback.address, gas_limit=gas_limit)
    advance(world.w3, CHALLENGE_WINDOW)
    receipt = client(world, world.finalizer).finalize(rid, claim)
    assert world.oracle.request(rid).status == Status.FINALIZED
    assert bool(events(world.oracle.contract, "AICallbackFailed", receipt)) == fails
    assert credit(world, world.operator) == FEE - model_revenue() + BOND
    assert credit(world, world.finalizer) == gas_limit * GAS_PRICE
    assert receipt.gasUsed < TX_GAS_CAP
    if kind == "gas-burning":
        assert gas_limit < receipt.gasUsed < gas_limit + 200_000  # it got its whole limit, and no more
    if kind == "return-bomb":  # the callee pays ~345k for its own 400 kB; copying it back would cost as much again
        assert receipt.gasUsed < 650_000
    if kind == "reentrant":
        assert callback.functions.calls().call() == 1
        assert not callback.functions.finalizeReentered().call()
        assert not callback.functions.withdrawReentered().call()
        assert not callback.functions.cancelReentered().call()


def test_finalize_with_too_little_gas_for_the_callback_reverts(world):
    callback = new_contract(world, "GasBurningCallback")
    rid, claim = served(world, callback=callback.address, gas_limit=300_000)
    advance(world.w3, CHALLENGE_WINDOW)
    with reverts("AIOracleInsufficientGas"):
        client(world, world.finalizer).finalize(rid, claim, gas=250_000)
    assert world.oracle.request(rid).status == Status.SUBMITTED
    client(world, world.finalizer).finalize(rid, claim)
    assert world.oracle.request(rid).status == Status.FINALIZED


# ---------------------------------------------------------------- finding 7: a slash keeps the fee escrowed


def test_after_a_slash_the_fee_stays_escrowed_and_the_next_honest_answer_is_paid(world):
    token_before = balance(world, world.token.address)
    fee = FEE + CALLBACK_GAS * GAS_PRICE
    rid, claim = served(world, claim=lying(world), callback=world.consumer.address, gas_limit=CALLBACK_GAS)
    challenge(world, rid, claim, 3)
    advance(world.w3, RESPONSE_WINDOW)
    client(world, world.challenger).resolve(rid, 3)
    r = world.oracle.request(rid)
    assert (r.status, r.fee) == (Status.PENDING, fee)
    assert credit(world, world.requester) == 0
    with reverts("AIOracleCancelTooEarly"):  # the slash reopened the request for a full timeout
        client(world, world.requester).cancel(rid)
    honest = honest_claim(world)
    client(world, world.holders[0]).submit(rid, honest, bond=BOND)
    advance(world.w3, CHALLENGE_WINDOW)
    client(world, world.finalizer).finalize(rid, honest)
    assert balance(world, world.token.address) - token_before == BOND // 2 + model_revenue()
    assert credit(world, world.holders[0]) == FEE - model_revenue() + BOND
    assert credit(world, world.operator) == 0
    assert world.consumer.functions.outputOf(rid).call() == encode(
        ["int256[]", "uint256"], [honest.output_values(world.models["hybrid"].sizes), SCALE])


def test_cancel_refunds_the_whole_fee_only_after_the_timeout(world):
    fee = FEE + CALLBACK_GAS * GAS_PRICE
    rid = request(world, callback=world.consumer.address, gas_limit=CALLBACK_GAS)
    with reverts("AIOracleCancelTooEarly"):
        client(world, world.requester).cancel(rid)
    advance(world.w3, TIMEOUT)
    with reverts("AIOracleNotRequester"):
        client(world, world.operator).cancel(rid)
    client(world, world.requester).cancel(rid)
    assert credit(world, world.requester) == fee
    assert world.oracle.request(rid).status == Status.CANCELLED
    with reverts("AIOracleUnexpectedStatus"):
        client(world, world.operator).submit(rid, honest_claim(world), bond=BOND)
    with reverts("AIOracleUnexpectedStatus"):
        client(world, world.requester).cancel(rid)


def test_a_declined_request_can_be_cancelled_at_once(world):
    rid = request(world)
    receipt = client(world, world.operator).decline(rid, "no proof exists for this input")
    declined = events(world.oracle.contract, "AIRequestDeclined", receipt)[0]["args"]
    assert (declined["operator"], declined["reason"]) == (world.operator.address, "no proof exists for this input")
    client(world, world.requester).cancel(rid)
    assert credit(world, world.requester) == FEE


def test_a_declined_request_may_still_be_answered_by_another_operator(world):
    rid = request(world)
    client(world, world.operator).decline(rid, "busy")
    client(world, world.holders[0]).submit(rid, honest_claim(world), bond=BOND)
    with reverts("AIOracleUnexpectedStatus"):
        client(world, world.requester).cancel(rid)
    with reverts("AIOracleUnexpectedStatus"):
        client(world, world.operator).decline(rid, "too late")


# ---------------------------------------------------------------- finding 9: large outputs


@pytest.mark.parametrize("size", [1024, 4096])
def test_large_outputs_submit_and_finalize_under_the_transaction_gas_cap(world, size):
    m = deploy_toy_model(world, [88], [4, size], [False], [1], CHALLENGE_WINDOW, RESPONSE_WINDOW)
    consumer = new_contract(world, "OutputDigestConsumer", world.oracle.address)
    x = np.array([3, -1, 4, 1])
    input_ = pack_tensor(x)
    claim = m.toy.claim([to_field(v) for v in x], input_bytes=input_)
    gas_limit = 2_500_000
    c = client(world, world.requester)
    rid, request_receipt = c.request_callback(m.id, input_, consumer.address, gas_limit)
    commit_receipt, submit_receipt = client(world, world.operator).submit(rid, claim, bond=BOND)
    # ezkl relations at this size: a valid second answer is disputed, and answered
    proof, outputs = fraud_proof(m.toy, claim, 1, plus_one=True)
    _, challenge_receipt = client(world, world.challenger).challenge(rid, 1, claim, proof, outputs, bond=BOND)
    respond_receipt = client(world, world.operator).respond(rid, 1, claim, own_proof(m.toy, claim, 1))
    advance(world.w3, CHALLENGE_WINDOW)
    finalize_receipt = client(world, world.finalizer).finalize(rid, claim)
    receipts = [request_receipt, commit_receipt, submit_receipt, challenge_receipt, respond_receipt, finalize_receipt]
    assert all(r.gasUsed < TX_GAS_CAP for r in receipts), [r.gasUsed for r in receipts]
    names = ["request", "commit", "submit", "challenge", "respond", "finalize"]
    print(f"\n{size}-value output gas: " + ", ".join(f"{n} {r.gasUsed:,}" for n, r in zip(names, receipts)))
    assert not events(world.oracle.contract, "AICallbackFailed", finalize_receipt)
    values = claim.output_values(m.sizes)
    assert len(values) == size
    assert consumer.functions.countOf(rid).call() == size
    assert consumer.functions.sumOf(rid).call() == sum(values)
    assert consumer.functions.digestOf(rid).call() == keccak(encode(["int256[]", "uint256"], [values, SCALE]))


# ---------------------------------------------------------------- finding 10: OAO compatibility


PROMPT = "hi there"  # the prompt model's input is 8 bytes


def prompt_input(text: str = PROMPT) -> tuple[bytes, list[int]]:
    """(the request input: the prompt's bytes packed at width 1, their field elements)."""
    values = np.frombuffer(text.encode(), dtype=np.uint8)
    return pack_tensor(values), [to_field(int(v)) for v in values]


def test_public_input_model_takes_packed_input_bytes(world):
    m = world.models["prompt"]
    input_, instances = prompt_input()
    assert input_ == b"\x01" + PROMPT.encode()
    rid = request(world, "prompt", input_=input_, callback=world.consumer.address, gas_limit=CALLBACK_GAS)
    assert world.oracle.request(rid).input == keccak(input_)
    claim = m.toy.claim(instances, input_bytes=input_)
    other = m.toy.claim(prompt_input("hi THERE")[1], input_bytes=prompt_input("hi THERE")[0])
    with reverts("AIOracleInvalidClaim") as excinfo:  # an answer to another prompt
        client(world, world.operator).submit(rid, other, bond=BOND)
    assert excinfo.value.args_ == (rid, 0)
    client(world, world.operator).submit(rid, claim, bond=BOND)
    advance(world.w3, CHALLENGE_WINDOW)
    client(world, world.finalizer).finalize(rid, claim)
    assert world.consumer.functions.outputOf(rid).call() == encode(
        ["int256[]", "uint256"], [claim.output_values(m.sizes), SCALE])


def test_a_wrong_answer_to_a_public_input_is_slashed(world):
    m = world.models["prompt"]
    input_, instances = prompt_input()
    rid = request(world, "prompt", input_=input_)
    lie = m.toy.claim(instances, input_bytes=input_, tamper=tamper(1, index=2))
    client(world, world.operator).submit(rid, lie, bond=BOND)
    proof, outputs = fraud_proof(m.toy, lie, 1)
    with reverts("AIOracleClaimMismatch"):  # the input is the request's, whatever the challenger says
        client(world, world.challenger).challenge(rid, 1, dataclasses.replace(lie, input=prompt_input("hi THERE")[0]),
                                                  proof, outputs, bond=BOND)
    client(world, world.challenger).challenge(rid, 1, lie, proof, outputs, bond=BOND)
    advance(world.w3, RESPONSE_WINDOW)
    client(world, world.challenger).resolve(rid, 1)
    assert credit(world, world.challenger) == BOND + BOND // 2


@pytest.mark.parametrize("input_", [b"", b"\x01" + b"a" * 7, b"\x01" + b"a" * 9, b"\x03" + b"a" * 8, b"\x02" + b"a" * 8],
                         ids=["empty", "one-byte-short", "one-byte-long", "width-byte-3", "width-2-half-the-bytes"])
def test_public_input_of_the_wrong_length_reverts_invalid_input(world, input_):
    with reverts("AIOracleInvalidInput"):
        request(world, "prompt", input_=input_)


def test_ora_style_consumer_receives_the_output_and_reports_finality(world):
    m = world.models["prompt"]
    dapp = new_contract(world, "OraStylePrompt", world.oracle.address, m.id, 500_000)  # ORA's limit for its SD model
    fee = dapp.functions.estimateFee(m.id).call()
    assert fee == FEE + 500_000 * GAS_PRICE
    receipt = transact(dapp.functions.calculateAIResult(m.id, PROMPT), world.requester, value=fee)
    rid = events(world.oracle.contract, "AICallbackRequest", receipt)[0]["args"]["requestId"]
    assert world.oracle.request(rid).requester == dapp.address
    input_, instances = prompt_input()
    claim = m.toy.claim(instances, input_bytes=input_)
    client(world, world.operator).submit(rid, claim, bond=BOND)
    assert not dapp.functions.isFinalized(rid).call()
    advance(world.w3, CHALLENGE_WINDOW)
    receipt = client(world, world.finalizer).finalize(rid, claim)
    assert not events(world.oracle.contract, "AICallbackFailed", receipt)
    assert dapp.functions.isFinalized(rid).call()
    output = dapp.functions.getAIResult(m.id, PROMPT).call()
    values, scale = decode(["int256[]", "uint256"], output)
    assert (list(values), scale) == (claim.output_values(m.sizes), SCALE)
    assert events(dapp, "promptsUpdated", receipt)[0]["args"]["input"] == PROMPT
    with reverts("UnauthorizedCallbackSource") as excinfo:
        transact(dapp.functions.aiOracleCallback(rid, output, b""), world.requester)
    assert excinfo.value.args_ == (world.oracle.address.lower(), world.requester.address.lower())


def test_only_the_oracle_may_call_a_receiver(world):
    with reverts("UnauthorizedCallbackSource"):
        transact(world.consumer.functions.aiOracleCallback(1, b"", b""), world.requester)


# ---------------------------------------------------------------- finding 11: ezkl circuits are relations


def test_an_honest_claim_answers_a_dispute_and_wins_the_challengers_bond(world):
    toy = world.models["hybrid"].toy
    rid, claim = served(world)
    proof, outputs = fraud_proof(toy, claim, 2, plus_one=True)  # the verifier's other valid answer
    _, receipt = client(world, world.challenger).challenge(rid, 2, claim, proof, outputs, bond=BOND)
    challenged = events(world.oracle.contract, "AIResultChallenged", receipt)[0]["args"]
    assert challenged["deadline"] == timestamp_of(world, receipt) + RESPONSE_WINDOW
    client(world, world.holders[0]).respond(rid, 2, claim, own_proof(toy, claim, 2))  # anyone may send the answer
    assert credit(world, world.operator) == BOND
    on_chain = world.oracle.claim(rid)
    assert (on_chain.settled, on_chain.open_disputes) == (0b10, 0)
    assert not world.oracle.dispute(rid, 2).open
    with reverts("AIOracleSegmentSettled"):
        client(world, world.holders[1]).challenge(rid, 2, claim, proof, outputs, bond=BOND)
    advance(world.w3, CHALLENGE_WINDOW)
    client(world, world.finalizer).finalize(rid, claim)
    assert credit(world, world.operator) == BOND + FEE - model_revenue() + BOND
    assert credit(world, world.challenger) == 0


def test_the_second_valid_answer_is_itself_an_honest_claim(world):
    toy = world.models["hybrid"].toy
    rid, claim = served(world, claim=honest_claim(world, plus_one={2}))
    proof, outputs = fraud_proof(toy, claim, 2)  # the base answer contradicts it
    client(world, world.challenger).challenge(rid, 2, claim, proof, outputs, bond=BOND)
    client(world, world.operator).respond(rid, 2, claim, own_proof(toy, claim, 2))
    with reverts("AIOracleClaimNotContradicted"):  # segment 3 follows from the claimed boundary 2
        challenge(world, rid, claim, 3)
    advance(world.w3, CHALLENGE_WINDOW)
    client(world, world.finalizer).finalize(rid, claim)
    assert credit(world, world.operator) == 2 * BOND + FEE - model_revenue()


def test_an_unanswered_dispute_is_slashed_only_after_the_response_window(world):
    rid, claim = served(world, claim=lying(world))
    challenge(world, rid, claim, 3)
    with reverts("AIOracleResponseWindowOpen"):
        client(world, world.finalizer).resolve(rid, 3)
    advance(world.w3, RESPONSE_WINDOW // 2)
    with reverts("AIOracleResponseWindowOpen"):
        client(world, world.finalizer).resolve(rid, 3)
    with reverts("AIOracleNoDispute"):
        client(world, world.finalizer).resolve(rid, 2)
    advance(world.w3, RESPONSE_WINDOW // 2)
    client(world, world.finalizer).resolve(rid, 3)
    assert world.oracle.request(rid).status == Status.PENDING
    with reverts("AIOracleNoDispute"):
        client(world, world.finalizer).resolve(rid, 3)


def test_a_liar_cannot_answer_a_dispute_on_its_lie(world):
    toy = world.models["hybrid"].toy
    rid, claim = served(world, claim=lying(world))
    challenge(world, rid, claim, 3)
    with reverts("AIOracleInvalidProof"):
        client(world, world.operator).respond(rid, 3, claim, own_proof(toy, claim, 3))
    with reverts("AIOracleInvalidProof"):  # nor with the challenger's proof, which is of other outputs
        client(world, world.operator).respond(rid, 3, claim, fraud_proof(toy, claim, 3)[0])


def test_respond_after_the_response_window_reverts_and_the_sleeper_is_slashed(world):
    toy = world.models["hybrid"].toy
    rid, claim = served(world)
    challenge(world, rid, claim, 2, plus_one=True)
    advance(world.w3, RESPONSE_WINDOW)
    with reverts("AIOracleResponseWindowClosed"):
        client(world, world.operator).respond(rid, 2, claim, own_proof(toy, claim, 2))
    client(world, world.challenger).resolve(rid, 2)
    assert credit(world, world.challenger) == BOND + BOND // 2
    assert world.oracle.request(rid).status == Status.PENDING


def test_finalize_reverts_while_a_dispute_is_open(world):
    toy = world.models["hybrid"].toy
    rid, claim = served(world)
    advance(world.w3, CHALLENGE_WINDOW - 50)
    challenge(world, rid, claim, 2, plus_one=True)
    advance(world.w3, 60)  # the challenge window is over, the response window is not
    with reverts("AIOracleChallengeWindowClosed"):
        challenge(world, rid, claim, 3)
    with reverts("AIOracleDisputesOpen") as excinfo:
        client(world, world.finalizer).finalize(rid, claim)
    assert excinfo.value.args_ == (rid, 1)
    client(world, world.operator).respond(rid, 2, claim, own_proof(toy, claim, 2))
    client(world, world.finalizer).finalize(rid, claim)
    assert world.oracle.request(rid).status == Status.FINALIZED


def test_concurrent_disputes_return_every_bond_when_one_slashes(world):
    token_before = balance(world, world.token.address)
    rid, claim = served(world, claim=lying(world))
    frivolous, right = world.holders[0], world.challenger
    challenge(world, rid, claim, 2, challenger=frivolous, plus_one=True)  # segment 2 is right; the operator sleeps
    challenge(world, rid, claim, 3, challenger=right)
    with reverts("AIOracleDisputeExists"):
        challenge(world, rid, claim, 3, challenger=world.holders[1])
    assert world.oracle.claim(rid).open_disputes == 2
    advance(world.w3, CHALLENGE_WINDOW)
    with reverts("AIOracleDisputesOpen") as excinfo:
        client(world, world.finalizer).finalize(rid, claim)
    assert excinfo.value.args_ == (rid, 2)
    client(world, world.finalizer).resolve(rid, 3)
    assert credit(world, right) == BOND + BOND // 2
    assert credit(world, frivolous) == BOND
    assert credit(world, world.finalizer) == 0
    assert balance(world, world.token.address) - token_before == BOND // 2
    assert not world.oracle.dispute(rid, 2).open
    with reverts("AIOracleNoDispute"):
        client(world, frivolous).resolve(rid, 2)
    assert balance(world, world.oracle.address) == FEE + 2 * BOND + BOND // 2


def test_dispute_proof_slashes_a_claim_with_an_invalid_posted_zk_proof(world):
    token_before = balance(world, world.token.address)
    rid, claim = served(world, claim=honest_claim(world, tamper=tamper(1)))
    receipt = client(world, world.challenger).dispute_proof(rid, 1, claim)[1]
    slashed = events(world.oracle.contract, "AIResultSlashed", receipt)[0]["args"]
    assert (slashed["segment"], slashed["reward"]) == (1, BOND // 2)
    assert credit(world, world.challenger) == BOND // 2
    assert balance(world, world.token.address) - token_before == BOND // 2
    assert world.oracle.request(rid).status == Status.PENDING


def test_dispute_proof_of_a_valid_zk_proof_reverts_not_contradicted(world):
    rid, claim = served(world)
    with reverts("AIOracleClaimNotContradicted"):
        client(world, world.challenger).dispute_proof(rid, 1, claim)


def test_a_garbage_zk_proof_is_slashed_like_a_wrong_one(world):
    rid, claim = served(world, claim=dataclasses.replace(honest_claim(world), proofs=(b"\x00" * 5,)))
    client(world, world.challenger).dispute_proof(rid, 1, claim)  # the verifier reverts: a rejection
    assert world.oracle.request(rid).status == Status.PENDING


def test_eager_model_rejects_a_bad_proof_at_submit(world):
    rid = request(world, "eager")
    bad = honest_claim(world, "eager", tamper=lambda b: b[1].__setitem__(0, (b[1][0] + 1) % P))
    with reverts("AIOracleInvalidProof") as excinfo:
        client(world, world.operator).submit(rid, bad, bond=BOND)
    assert excinfo.value.args_ == (rid, 1)
    assert world.oracle.request(rid).status == Status.PENDING


def test_eager_model_result_is_final_in_the_next_block(world):
    rid, claim = served(world, "eager", callback=world.consumer.address, gas_limit=CALLBACK_GAS)
    with reverts("AIOracleChallengeWindowClosed"):
        client(world, world.challenger).dispute_proof(rid, 1, claim)
    client(world, world.finalizer).finalize(rid, claim)
    assert world.oracle.request(rid).status == Status.FINALIZED
    assert credit(world, world.operator) == FEE - model_revenue() + BOND


# ---------------------------------------------------------------- gas


def test_gas_of_each_operation_is_recorded(world, tmp_path_factory):
    toy = world.models["hybrid"].toy
    gas = {}
    op, ch, fin = client(world, world.operator), client(world, world.challenger), client(world, world.finalizer)
    gas["register (3 segments)"] = world.models["hybrid"].receipt.gasUsed
    # an honest claim, disputed with the other valid answer and answered, finalized with a callback
    rid, receipt = client(world, world.requester).request_callback(
        world.models["hybrid"].id, c0_input(1), world.consumer.address, CALLBACK_GAS)
    gas["request"] = receipt.gasUsed
    claim = honest_claim(world, c0=1)
    commit, submit = op.submit(rid, claim, bond=BOND)
    gas["commit"], gas["submit (1 zk proof posted, 11 public values)"] = commit.gasUsed, submit.gasUsed
    proof, outputs = fraud_proof(toy, claim, 2, plus_one=True)
    gas["challenge"] = ch.challenge(rid, 2, claim, proof, outputs, bond=BOND)[1].gasUsed
    gas["respond"] = op.respond(rid, 2, claim, own_proof(toy, claim, 2)).gasUsed
    # a lie, slashed after an unanswered dispute; the honest answer after it finalized without a callback
    rid2 = request(world, c0=2)
    lie = lying(world, c0=2)
    op.submit(rid2, lie, bond=BOND)
    challenge(world, rid2, lie, 3)
    advance(world.w3, CHALLENGE_WINDOW)
    gas["finalize (callback storing 3 values)"] = fin.finalize(rid, claim).gasUsed
    gas["resolve (slash)"] = fin.resolve(rid2, 3).gasUsed
    honest2 = honest_claim(world, c0=2)
    client(world, world.holders[0]).submit(rid2, honest2, bond=BOND)
    # a lazily posted zk proof that does not verify
    rid3 = request(world, c0=3)
    op.submit(rid3, honest_claim(world, c0=3, tamper=tamper(1)), bond=BOND)
    gas["disputeProof (slash)"] = ch.dispute_proof(rid3, 1, honest_claim(world, c0=3, tamper=tamper(1)))[1].gasUsed
    advance(world.w3, CHALLENGE_WINDOW)
    gas["finalize (no callback)"] = fin.finalize(rid2, honest2).gasUsed
    # the eager model: both zk proofs verified at submit
    rid4 = request(world, "eager", c0=4)
    gas["submit (eager, 2 zk proofs verified)"] = op.submit(rid4, honest_claim(world, "eager", c0=4), bond=BOND)[1].gasUsed
    gas["withdraw"] = op.withdraw().gasUsed
    assert all(0 < g < TX_GAS_CAP for g in gas.values())

    out = os.environ.get("IMO_GAS_OUT")
    path = os.path.abspath(out) if out else str(tmp_path_factory.mktemp("gas") / "oracle_gas.json")
    with open(path, "w") as f:
        json.dump(gas, f, indent=2)
    width = max(map(len, gas))
    print(f"\nAIOracle gas ({path})")
    for name, used in gas.items():
        print(f"  {name:<{width}}  {used:>9,}")


# ---------------------------------------------------------------- AIGCNFT (ERC-7007)


def image_result(world, c0: int = 4242) -> tuple[int, Claim]:
    """A finalized request of the 64-pixel model; returns (request id, claim)."""
    rid, claim = served(world, "image", c0)
    advance(world.w3, CHALLENGE_WINDOW)
    client(world, world.operator).finalize(rid, claim)
    return rid, claim


def nft_proof(rid: int, claim: Claim) -> bytes:
    return encode(["uint256", "bytes32"], [rid, claim.body_hash])


def test_nft_mints_a_finalized_output_and_renders_it_onchain(world):
    rid, claim = image_result(world)
    prompt, proof = c0_input(4242), nft_proof(rid, claim)
    nft = world.nft
    assert nft.functions.verify(prompt, claim.output, proof).call()
    token_before = balance(world, world.token.address)
    receipt = transact(nft.functions.mint(prompt, claim.output, proof), world.requester, value=MINT_FEE)
    token_id = int.from_bytes(keccak(prompt), "big")
    assert events(nft, "AigcData", receipt)[0]["args"]["tokenId"] == token_id
    assert nft.functions.ownerOf(token_id).call() == world.requester.address
    assert nft.functions.requestOf(token_id).call() == rid
    assert balance(world, world.token.address) - token_before == MINT_FEE
    assert tuple(nft.functions.royaltyInfo(token_id, 10_000).call()) == (world.token.address, 500)
    selectors = [Web3.keccak(text=f)[:4] for f in ("addAigcData(uint256,bytes,bytes,bytes)", "verify(bytes,bytes,bytes)")]
    erc7007 = bytes(a ^ b for a, b in zip(*selectors))
    for interface in (erc7007, bytes.fromhex("80ac58cd"), bytes.fromhex("2a55205a")):  # ERC-7007, ERC-721, ERC-2981
        assert nft.functions.supportsInterface(interface).call()
    uri = nft.functions.tokenURI(token_id).call()
    metadata = json.loads(base64.b64decode(uri.removeprefix("data:application/json;base64,")))
    svg = base64.b64decode(metadata["image"].removeprefix("data:image/svg+xml;base64,")).decode()
    assert svg.count("<rect") == 64
    pixels = claim.output_values(world.models["image"].sizes)
    for i in range(64):
        grey = min(255, max(0, pixels[i]) * 255 // (1 << SCALE))
        assert f"fill='rgb({grey},{grey},{grey})'" in svg.split("<rect")[i + 1]


def test_nft_rejects_content_that_is_not_the_finalized_output(world):
    rid, claim = image_result(world)
    prompt, proof = c0_input(4242), nft_proof(rid, claim)
    nft = world.nft
    forged = claim.output[:-1] + bytes([claim.output[-1] ^ 1])
    assert not nft.functions.verify(prompt, forged, proof).call()
    assert not nft.functions.verify(c0_input(4243), claim.output, proof).call()
    assert not nft.functions.verify(prompt, claim.output, encode(["uint256", "bytes32"], [rid, b"\x01" * 32])).call()
    assert not nft.functions.verify(prompt, b"", proof).call()  # malformed content is rejected, not a revert
    assert not nft.functions.verify(prompt, claim.output, proof[:32]).call()
    with reverts("AIGCNFTUnverified"):
        transact(nft.functions.mint(prompt, forged, proof), world.requester, value=MINT_FEE)
    with reverts("AIGCNFTNotRequester"):
        transact(nft.functions.mint(prompt, claim.output, proof), world.operator, value=MINT_FEE)
    with reverts("AIGCNFTWrongMintFee"):
        transact(nft.functions.mint(prompt, claim.output, proof), world.requester, value=0)
    transact(nft.functions.mint(prompt, claim.output, proof), world.requester, value=MINT_FEE)
    with reverts("AIGCNFTAlreadyMinted"):
        transact(nft.functions.mint(prompt, claim.output, proof), world.requester, value=MINT_FEE)


def test_nft_rejects_a_result_of_another_model(world):
    rid, claim = served(world)  # hybrid: 3 outputs
    advance(world.w3, CHALLENGE_WINDOW)
    client(world, world.operator).finalize(rid, claim)
    assert not world.nft.functions.verify(c0_input(12345), claim.output, nft_proof(rid, claim)).call()


def test_nft_rejects_a_result_still_in_its_challenge_window(world):
    rid, claim = served(world, "image", 5)
    assert not world.nft.functions.verify(c0_input(5), claim.output, nft_proof(rid, claim)).call()


def test_deployment_round_trips_through_json(world, tmp_path):
    deployment = deploy_protocol(world.w3, world.owner)
    path = deployment.write(tmp_path / "deployment.json")
    again = Deployment.read(path)
    assert again == deployment
    offering = again.contract(world.w3, "ModelOffering")
    assert offering.functions.token().call() == again.token


# ---------------------------------------------------------------- stateful: ETH conservation


KINDS = {"hybrid": ["honest", "plus_one", "wrong_y", "bad_zk"], "eager": ["honest", "bad_zk"]}
HONEST = ("honest", "plus_one")


class OracleMachine(RuleBasedStateMachine):
    """Random requests, honest and dishonest submits, challenges (right and frivolous), answers, resolves, proof
    disputes, finalizes, cancels, declines, withdrawals and time, checked against a shadow model. After every step the
    oracle holds exactly the credits plus the escrowed fees of open requests plus the bonds of live claims and open
    disputes, and every account's credit is what the rules say. Honest operators answer every dispute before time
    moves on, and a watcher disputes every lie before its window closes; so no lie is ever finalized, an honest
    submission is never slashed and never loses money, and a slashed submitter never sees its bond again."""

    world = None  # set by the test
    stats = Counter()  # what happened, over every example (printed with -s)

    @initialize()
    def start(self):
        w = self.world
        self.w3 = w.w3
        self.snapshot = self.w3.provider.make_request("evm_snapshot", [])["result"]
        self.users = [a.address for a in w.accounts[1:8]]  # accounts by address; each client signs with its key
        self.watcher = w.accounts[9].address
        self.senders = [*self.users, w.owner.address]
        self.clients = {a.address: w.oracle.as_sender(a) for a in w.accounts}
        self.oracle_start = balance(w, w.oracle.address)
        self.token_start = balance(w, w.token.address)
        self.paid_in = self.paid_out = self.token_in = 0
        self.credits = {}
        self.requests = {}
        self.submissions = []
        self.next_input = 1_000

    def teardown(self):
        if hasattr(self, "snapshot"):
            try:
                self.settle_everything()
            finally:
                assert self.w3.provider.make_request("evm_revert", [self.snapshot])["result"]

    # -- helpers

    def expect(self, error):
        self.stats[f"reverted {error}"] += 1
        return reverts(error)

    def ids(self, status, model=None):
        return [i for i, r in self.requests.items() if r.status == status and model in (None, r.model)]

    def open_disputes(self):
        return [(i, k) for i, r in self.requests.items() for k in sorted(r.disputes)]

    def when(self, deadline):
        """'before' or 'after' `deadline` for the next transaction; None too close to tell."""
        t = now(self.world)
        if t >= deadline:
            return "after"
        return "before" if t + MARGIN < deadline else None

    def ts(self, receipt):
        return timestamp_of(self.world, receipt)

    def add_credit(self, account, amount):
        self.credits[account] = self.credits.get(account, 0) + amount

    def model(self, r):
        return self.world.models[r.model]

    def valid(self, r, k):
        """Whether claim r is right about segment k (a valid proof of its own instances exists)."""
        m = self.model(r)
        inputs, outputs = r.claim.segment_instances(m.sizes, k)
        slack = MODELS[r.model][3][k - 1]
        return outputs in [m.toy.segment_output(k, inputs, p) for p in ((False, True) if slack else (False,))]

    def make_claim(self, r, kind):
        m = self.model(r)
        zk = [k for k, s in enumerate(m.segments, start=1) if s.zk]
        if kind == "plus_one":
            return m.toy.claim([r.c0], proofs_for=zk, plus_one={2})
        if kind == "wrong_y":
            return m.toy.claim([r.c0], proofs_for=zk, tamper=tamper(len(m.sizes) - 1))
        if kind == "bad_zk" and r.model == "eager":  # a wrong hidden commitment
            return m.toy.claim([r.c0], proofs_for=zk, tamper=lambda b: b[1].__setitem__(0, (b[1][0] + 1) % P))
        if kind == "bad_zk":
            return m.toy.claim([r.c0], proofs_for=zk, tamper=tamper(1))
        return m.toy.claim([r.c0], proofs_for=zk)

    # -- requests

    @rule(requester=st.integers(0, 6), tip=st.sampled_from([0, 10**14]), model=st.sampled_from(["hybrid", "eager"]),
          callback=st.booleans())
    def request(self, requester, tip, model, callback):
        w = self.world
        account, c0 = self.users[requester], self.next_input
        self.next_input += 1
        gas_limit = CALLBACK_GAS if callback else 0
        fee = FEE + gas_limit * GAS_PRICE + tip
        rid, receipt = self.clients[account].request_callback(
            w.models[model].id, c0_input(c0), w.consumer.address if callback else None, gas_limit, value=fee)
        self.paid_in += fee
        self.requests[rid] = SimpleNamespace(
            model=model, requester=account, fee=fee, gas_limit=gas_limit, status=Status.PENDING,
            deadline=self.ts(receipt) + TIMEOUT, c0=c0, claim=None, kind=None, sub=None, disputes={}, settled=set())

    @precondition(lambda self: self.ids(Status.PENDING))
    @rule(data=st.data(), operator=st.integers(0, 6))
    def submit(self, data, operator):
        rid = data.draw(st.sampled_from(self.ids(Status.PENDING)))
        r = self.requests[rid]
        kind = data.draw(st.sampled_from(KINDS[r.model]))
        claim = self.make_claim(r, kind)
        account = self.users[operator]
        if r.model == "eager" and kind not in HONEST:
            with self.expect("AIOracleInvalidProof"):
                self.clients[account].submit(rid, claim, bond=BOND)
            return
        _, receipt = self.clients[account].submit(rid, claim, bond=BOND)
        self.paid_in += BOND
        sub = SimpleNamespace(submitter=account, honest=kind in HONEST, won=0, returned=0, operator=0, outcome=None)
        self.submissions.append(sub)
        r.status, r.claim, r.kind, r.sub, r.disputes, r.settled = Status.SUBMITTED, claim, kind, sub, {}, set()
        r.deadline = self.ts(receipt) + MODELS[r.model][4]
        self.stats[f"submitted {kind}"] += 1

    @precondition(lambda self: self.ids(Status.PENDING))
    @rule(data=st.data(), sender=st.integers(0, 7))
    def decline(self, data, sender):
        rid = data.draw(st.sampled_from(self.ids(Status.PENDING)))
        receipt = self.clients[self.senders[sender]].decline(rid, "declined")
        r = self.requests[rid]
        r.deadline = min(r.deadline, self.ts(receipt))

    @precondition(lambda self: self.ids(Status.PENDING))
    @rule(data=st.data(), sender=st.integers(0, 7))
    def cancel(self, data, sender):
        rid = data.draw(st.sampled_from(self.ids(Status.PENDING)))
        r = self.requests[rid]
        account = data.draw(st.sampled_from([r.requester, self.senders[sender]]))
        when = self.when(r.deadline)
        if account != r.requester:
            with self.expect("AIOracleNotRequester"):
                self.clients[account].cancel(rid)
        elif when == "before":
            with self.expect("AIOracleCancelTooEarly"):
                self.clients[account].cancel(rid)
        elif when == "after":
            self.clients[account].cancel(rid)
            self.add_credit(r.requester, r.fee)
            r.status, r.fee = Status.CANCELLED, 0
            self.stats["cancelled"] += 1

    # -- disputes

    @precondition(lambda self: self.ids(Status.SUBMITTED, "hybrid"))
    @rule(data=st.data(), challenger=st.integers(0, 7), segment=st.sampled_from([2, 3]), alt=st.booleans())
    def challenge(self, data, challenger, segment, alt):
        rid = data.draw(st.sampled_from(self.ids(Status.SUBMITTED, "hybrid")))
        self.challenge_segment(rid, self.senders[challenger], segment, alt)

    def challenge_segment(self, rid, account, k, alt=False):
        r = self.requests[rid]
        m = self.model(r)
        inputs, claimed = r.claim.segment_instances(m.sizes, k)
        answers = [m.toy.segment_output(k, inputs, p) for p in ((False, True) if MODELS[r.model][3][k - 1] else (False,))]
        contradicting = [a for a in answers if a != claimed]
        outputs = contradicting[int(alt) % len(contradicting)] if contradicting else claimed
        when = self.when(r.deadline)
        expected = None
        if when is None:
            return
        if when == "after":
            expected = "AIOracleChallengeWindowClosed"
        elif k in r.settled:
            expected = "AIOracleSegmentSettled"
        elif k in r.disputes:
            expected = "AIOracleDisputeExists"
        elif not contradicting:
            expected = "AIOracleClaimNotContradicted"
        c = self.clients[account]
        if expected:
            with self.expect(expected):
                c.challenge(rid, k, r.claim, toy_proof(inputs + outputs), outputs, bond=BOND)
            return
        _, receipt = c.challenge(rid, k, r.claim, toy_proof(inputs + outputs), outputs, bond=BOND)
        self.paid_in += BOND
        r.disputes[k] = SimpleNamespace(challenger=account, deadline=self.ts(receipt) + RESPONSE_WINDOW)
        self.stats[f"challenged segment {k}"] += 1

    @precondition(lambda self: self.open_disputes())
    @rule(data=st.data(), sender=st.integers(0, 7))
    def respond(self, data, sender):
        rid, k = data.draw(st.sampled_from(self.open_disputes()))
        self.answer(rid, k, self.senders[sender])

    def answer(self, rid, k, account):
        r = self.requests[rid]
        when = self.when(r.disputes[k].deadline)
        proof = own_proof(self.model(r).toy, r.claim, k)
        if when is None:
            return
        if when == "after":
            with self.expect("AIOracleResponseWindowClosed"):
                self.clients[account].respond(rid, k, r.claim, proof)
        elif not self.valid(r, k):
            with self.expect("AIOracleInvalidProof"):
                self.clients[account].respond(rid, k, r.claim, proof)
        else:
            self.clients[account].respond(rid, k, r.claim, proof)
            self.add_credit(r.sub.submitter, BOND)
            r.sub.won += BOND
            r.settled.add(k)
            del r.disputes[k]
            self.stats["dispute answered"] += 1

    @precondition(lambda self: self.open_disputes())
    @rule(data=st.data(), sender=st.integers(0, 7))
    def resolve(self, data, sender):
        rid, k = data.draw(st.sampled_from(self.open_disputes()))
        self.resolve_dispute(rid, k, self.senders[sender])

    def resolve_dispute(self, rid, k, account):
        r = self.requests[rid]
        d = r.disputes[k]
        when = self.when(d.deadline)
        if when == "before":
            with self.expect("AIOracleResponseWindowOpen"):
                self.clients[account].resolve(rid, k)
        elif when == "after":
            receipt = self.clients[account].resolve(rid, k)
            self.slashed(rid, d.challenger, receipt)

    @precondition(lambda self: self.ids(Status.SUBMITTED, "hybrid"))
    @rule(data=st.data(), sender=st.integers(0, 7))
    def dispute_proof(self, data, sender):
        rid = data.draw(st.sampled_from(self.ids(Status.SUBMITTED, "hybrid")))
        self.dispute_zk(rid, self.senders[sender])

    def dispute_zk(self, rid, account):
        r = self.requests[rid]
        when = self.when(r.deadline)
        if when == "after":
            with self.expect("AIOracleChallengeWindowClosed"):
                self.clients[account].dispute_proof(rid, 1, r.claim)
        elif when == "before" and self.valid(r, 1):
            with self.expect("AIOracleClaimNotContradicted"):
                self.clients[account].dispute_proof(rid, 1, r.claim)
        elif when == "before":
            receipt = self.clients[account].dispute_proof(rid, 1, r.claim)[1]
            self.slashed(rid, account, receipt)

    def slashed(self, rid, challenger, receipt):
        r = self.requests[rid]
        assert not r.sub.honest, "an honest submission was slashed"
        reward = BOND * 5_000 // BPS
        for d in r.disputes.values():
            self.add_credit(d.challenger, BOND)
        self.add_credit(challenger, reward)
        self.token_in += BOND - reward
        r.sub.outcome = "slashed"
        r.status, r.claim, r.sub, r.disputes, r.settled = Status.PENDING, None, None, {}, set()
        r.deadline = self.ts(receipt) + TIMEOUT
        self.stats["slashed"] += 1

    # -- finalize, withdraw, time

    @precondition(lambda self: self.ids(Status.SUBMITTED))
    @rule(data=st.data(), sender=st.integers(0, 7))
    def finalize(self, data, sender):
        rid = data.draw(st.sampled_from(self.ids(Status.SUBMITTED)))
        r = self.requests[rid]
        account = self.senders[sender]
        when = self.when(r.deadline)
        if when == "before":
            with self.expect("AIOracleChallengeWindowOpen"):
                self.clients[account].finalize(rid, r.claim)
        elif when == "after" and r.disputes:
            with self.expect("AIOracleDisputesOpen"):
                self.clients[account].finalize(rid, r.claim)
        elif when == "after":
            self.finalize_request(rid, account)

    def finalize_request(self, rid, account):
        r = self.requests[rid]
        assert r.sub.honest, "a lie got past the watcher"
        self.clients[account].finalize(rid, r.claim)
        finalizer_payout = r.gas_limit * GAS_PRICE
        rest = r.fee - finalizer_payout
        revenue = model_revenue(min(rest, FEE))
        self.add_credit(r.sub.submitter, rest - revenue + BOND)
        self.add_credit(account, finalizer_payout)
        self.token_in += revenue
        r.sub.outcome, r.sub.returned, r.sub.operator = "finalized", BOND, rest - revenue
        r.status = Status.FINALIZED
        self.stats["finalized"] += 1

    @precondition(lambda self: any(self.credits.values()))
    @rule(data=st.data())
    def withdraw(self, data):
        account = data.draw(st.sampled_from(sorted(a for a, c in self.credits.items() if c)))
        before = balance(self.world, account)
        receipt = self.clients[account].withdraw()
        received = balance(self.world, account) - before + receipt.gasUsed * receipt.effectiveGasPrice
        assert received == self.credits[account]
        self.paid_out += received
        self.credits[account] = 0

    @rule(seconds=st.sampled_from([10, RESPONSE_WINDOW, CHALLENGE_WINDOW, TIMEOUT]))
    def wait(self, seconds):
        """Before time moves on, honest operators answer their disputes and the watcher disputes every lie."""
        self.guard()
        advance(self.w3, seconds)

    def guard(self):
        for rid, k in self.open_disputes():
            r = self.requests[rid]
            if r.sub.honest:
                assert self.when(r.disputes[k].deadline) == "before"
                self.answer(rid, k, r.sub.submitter)
        for rid in self.ids(Status.SUBMITTED, "hybrid"):
            r = self.requests[rid]
            wrong = [k for k in (1, 2, 3) if not self.valid(r, k)]
            if r.sub.honest or any(k in r.disputes for k in wrong):  # nothing to do, or disputed where it lies
                continue
            assert self.when(r.deadline) == "before"
            if wrong[0] == 1:
                self.dispute_zk(rid, self.watcher)
            else:
                self.challenge_segment(rid, self.watcher, wrong[0])

    # -- invariants

    @invariant()
    def oracle_holds_exactly_what_it_owes(self):
        if not hasattr(self, "snapshot"):
            return
        w = self.world
        live = [r for r in self.requests.values() if r.status in (Status.PENDING, Status.SUBMITTED)]
        owed = (sum(self.credits.values()) + sum(r.fee for r in live)
                + sum(BOND for r in live if r.status == Status.SUBMITTED)
                + sum(BOND * len(r.disputes) for r in live))
        held = balance(w, w.oracle.address) - self.oracle_start
        assert held == owed
        assert held == self.paid_in - self.paid_out - self.token_in
        assert balance(w, w.token.address) - self.token_start == self.token_in
        for account, amount in self.credits.items():
            assert w.oracle.credits(account) == amount

    @invariant()
    def chain_agrees_with_the_shadow_model(self):
        if not hasattr(self, "snapshot"):
            return
        for rid, r in self.requests.items():
            chain = self.world.oracle.request(rid)
            assert (chain.status, chain.fee, chain.deadline) == (r.status, r.fee, r.deadline)
            if r.status == Status.SUBMITTED:
                claim = self.world.oracle.claim(rid)
                assert (claim.submitter, claim.bond, claim.open_disputes) == (r.sub.submitter, BOND, len(r.disputes))
                assert claim.settled == sum(1 << (k - 1) for k in r.settled)

    @invariant()
    def honest_submitters_never_lose_and_slashed_ones_lose_their_bond(self):
        for sub in getattr(self, "submissions", []):
            net = sub.won + sub.returned + sub.operator - BOND
            if sub.outcome == "finalized":
                assert sub.honest and net > 0
            elif sub.outcome == "slashed":
                assert not sub.honest and sub.returned == 0 and net == sub.won - BOND

    # -- the end: settle everything, then the oracle holds nothing

    def settle_everything(self):
        w = self.world
        self.guard()
        advance(self.w3, CHALLENGE_WINDOW + RESPONSE_WINDOW)
        for rid, k in self.open_disputes():
            if k in self.requests[rid].disputes:  # a slash closes the request's other disputes
                self.resolve_dispute(rid, k, w.owner.address)
        for rid in self.ids(Status.SUBMITTED):
            self.finalize_request(rid, w.owner.address)
        advance(self.w3, TIMEOUT)
        for rid in self.ids(Status.PENDING):
            r = self.requests[rid]
            self.clients[r.requester].cancel(rid)
            self.add_credit(r.requester, r.fee)
            r.status, r.fee = Status.CANCELLED, 0
        for account in sorted(a for a, c in self.credits.items() if c):
            before = balance(w, account)
            receipt = self.clients[account].withdraw()
            assert balance(w, account) - before + receipt.gasUsed * receipt.effectiveGasPrice == self.credits[account]
            self.paid_out += self.credits[account]
            self.credits[account] = 0
        assert balance(w, w.oracle.address) == self.oracle_start
        assert self.paid_in == self.paid_out + self.token_in
        assert all(sub.outcome == ("finalized" if sub.honest else "slashed") for sub in self.submissions)
        self.honest_submitters_never_lose_and_slashed_ones_lose_their_bond()


def test_oracle_state_machine_conserves_eth_and_never_costs_an_honest_submitter(world):
    OracleMachine.world = world
    run_state_machine_as_test(
        OracleMachine,
        settings=settings(max_examples=30, stateful_step_count=50, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck)),
    )
    print("\nstate machine:", dict(sorted(OracleMachine.stats.items())))
