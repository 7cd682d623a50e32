"""The protocol contracts on a real anvil: ERC-7641 token, IMO sale, hybrid AIOracle, ERC-7007 NFT.

Segments here are checked by `ToyVerifier`, a stand-in for ezkl's verifier that is sound for a fixed toy function
(so honest and dishonest claims, valid and tampered proofs behave as with real proofs, at no proving cost);
tests/test_contracts_zk.py runs the same protocol with real ezkl proofs. Each test starts from the same deployed
world and is rolled back with evm_snapshot/evm_revert."""

import base64
import json
from types import SimpleNamespace

import pytest
from eth_abi import encode
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

from imo.errors import ChainError
from imo.verifier_contracts.contracts import (
    FIELD_MODULUS,
    Deployment,
    protocol_sources,
    to_field,
    transact,
)
from imo.verifier_contracts.evm import deploy
from imo.verifier_contracts.solc import compile_sources

P = FIELD_MODULUS
ETH = 10**18
TOKEN = 10**18
FEE = 10**15
OPERATOR_BPS = 2_000
WINDOW = 100
TIMEOUT = 1_000
MIN_BOND = 10**16
SNAPSHOT_INTERVAL = 50
CLAIM_PERIOD = 10_000
CLAIM_BPS = 6_000
MARGIN = 5  # seconds of block-time uncertainty the state machine stays away from deadlines

MOCKS = r"""
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;
import {AIOracle} from "./AIOracle.sol";

/// A verifier that is sound for a toy segment function: the "proof" is keccak256(abi.encode(instances)), and only true
/// statements verify. Segment k < n maps C to keccak(salt, C) mod p; the last maps C to outputs
/// (keccak(salt, C, i) mod 2001) - 1000. Like ezkl's verifier it reverts on a malformed proof, returns false otherwise.
contract ToyVerifier {
    uint256 constant P = 21888242871839275222246405745257275088548364400416034343698204186575808495617;
    uint256 public immutable salt;
    bool public immutable last;
    constructor(uint256 salt_, bool last_) { salt = salt_; last = last_; }
    function verifyProof(bytes calldata proof, uint256[] calldata instances) external view returns (bool) {
        require(proof.length == 32 && bytes32(proof) == keccak256(abi.encode(instances)), "bad proof");
        if (!last) return instances.length == 2 && instances[1] == uint256(keccak256(abi.encode(salt, instances[0]))) % P;
        for (uint256 i = 1; i < instances.length; ++i) {
            int256 v = int256(uint256(keccak256(abi.encode(salt, instances[0], i - 1))) % 2001) - 1000;
            if (instances[i] != (v >= 0 ? uint256(v) : P - uint256(-v))) return false;
        }
        return true;
    }
}

contract RevertingCallback {
    function aiOracleCallback(uint256, bytes calldata, bytes calldata) external pure { revert("callback refuses"); }
}

contract GasBurningCallback {
    uint256 public spins;
    function aiOracleCallback(uint256, bytes calldata, bytes calldata) external { while (true) { ++spins; } }
}

contract ReturnBombCallback {
    function aiOracleCallback(uint256, bytes calldata, bytes calldata) external pure { assembly { return(0, 400000) } }
}

contract ReentrantCallback {
    AIOracle public immutable oracle;
    uint256 public calls;
    bool public finalizeReentered;
    bool public withdrawReentered;
    constructor(AIOracle oracle_) { oracle = oracle_; }
    function aiOracleCallback(uint256 requestId, bytes calldata, bytes calldata) external {
        ++calls;
        try oracle.finalize(requestId) { finalizeReentered = true; } catch {}
        try oracle.withdraw() { withdrawReentered = true; } catch {}
    }
    receive() external payable {}
}

contract RefusingReceiver {
    receive() external payable { revert("no ETH"); }
}
"""


# ---------------------------------------------------------------- helpers


def reverts(error: str):
    """Expect a transaction to revert with the custom error `error`."""
    return pytest.raises(ChainError, match=rf"\b{error}\(")


def advance(w3: Web3, seconds: int) -> None:
    """Move chain time forward and mine a block, so calls and gas estimates see the new time."""
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def now(w3: Web3) -> int:
    return w3.eth.get_block("latest")["timestamp"]


def logs(contract, event: str, receipt) -> list:
    """The `event` logs that `contract` emitted in a transaction."""
    return contract.events[event]().process_receipt(receipt, errors=DISCARD)


def keccak_int(types: list[str], values: list) -> int:
    return int.from_bytes(Web3.keccak(encode(types, values)), "big")


def toy_hidden(salt: int, c: int) -> int:
    """ToyVerifier's non-last segment: the commitment after segment k from the one before."""
    return keccak_int(["uint256", "uint256"], [salt, c]) % P


def toy_output(salt: int, c: int, size: int) -> list[int]:
    """ToyVerifier's last segment: the public output from the commitment before it."""
    return [keccak_int(["uint256", "uint256", "uint256"], [salt, c, i]) % 2001 - 1000 for i in range(size)]


def toy_proof(instances: list[int]) -> bytes:
    return Web3.keccak(encode(["uint256[]"], [instances]))


def honest_claim(c0: int, output_size: int = 2) -> tuple[list[int], list[int]]:
    """(commitments C_0..C_2, output y) of the toy 2-segment model."""
    c1 = toy_hidden(1, c0)
    y = toy_output(2, c1, output_size)
    return [c0, c1, toy_hidden(99, c1)], y


def input_bytes(c0: int) -> bytes:
    return c0.to_bytes(32, "big")


def credit(world, account: str) -> int:
    return world.oracle.functions.credits(account).call()


def balance(world, account: str) -> int:
    return world.w3.eth.get_balance(account)


# ---------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def compiled():
    return compile_sources({**protocol_sources(), "TestMocks.sol": MOCKS})


@pytest.fixture(scope="module")
def deployed(chain, compiled):
    """Token, oracle, consumer, toy verifiers, a 2-segment model (zk then op) and a 64-pixel model with its NFT."""
    w3 = chain.w3
    accounts = w3.eth.accounts
    owner = accounts[0]

    def new(name, *args):
        return deploy(w3, compiled[name], owner, *args)[0]

    token = new("RevShareToken", "Model", "MDL", 1_000 * TOKEN, owner, CLAIM_BPS, SNAPSHOT_INTERVAL, CLAIM_PERIOD)
    oracle = new("AIOracle", MIN_BOND, TIMEOUT, 0)
    v1, v2, v3 = new("ToyVerifier", 1, False), new("ToyVerifier", 2, True), new("ToyVerifier", 2, True)
    spec = (b"\x01" * 32, b"\x02" * 32, token.address, FEE, OPERATOR_BPS, WINDOW, 2, 7)
    transact(oracle.functions.registerModel(spec, [(v1.address, True), (v2.address, False)]), owner)
    image_spec = (b"\x03" * 32, b"\x04" * 32, token.address, FEE, OPERATOR_BPS, WINDOW, 64, 7)
    transact(oracle.functions.registerModel(image_spec, [(v3.address, False)]), owner)
    nft = new("AIGCNFT", "Pixels", "PIX", oracle.address, 2, 10**15, 500)
    consumer = new("OracleConsumer", oracle.address)
    return SimpleNamespace(
        w3=w3, owner=owner, requester=accounts[1], operator=accounts[2], challenger=accounts[3],
        holders=accounts[4:8], token=token, oracle=oracle, consumer=consumer, nft=nft, compiled=compiled,
        model=1, image_model=2, verifiers=(v1, v2, v3),
    )


@pytest.fixture
def world(deployed):
    """The deployed world, rolled back after the test."""
    w3 = deployed.w3
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield deployed
    assert w3.provider.make_request("evm_revert", [snapshot])["result"]


def new_contract(world, name, *args):
    return deploy(world.w3, world.compiled[name], world.owner, *args)[0]


def request(world, c0: int, callback: str | None = None, gas_limit: int = 200_000, model: int | None = None,
            value: int = FEE, sender: str | None = None) -> int:
    receipt = transact(
        world.oracle.functions.requestCallback(model or world.model, input_bytes(c0), callback or world.consumer.address,
                                               gas_limit, b"\x2a"),
        sender or world.requester, value=value,
    )
    return logs(world.oracle, "AICallbackRequest", receipt)[0]["args"]["requestId"]


def submit(world, request_id: int, commitments: list[int], output: list[int], proofs: list[bytes] | None = None,
           boundary: bytes = b"boundary", bond: int = MIN_BOND, sender: str | None = None):
    if proofs is None:
        proofs = [toy_proof(commitments[:2])]
    return transact(world.oracle.functions.submit(request_id, commitments, output, proofs, boundary),
                    sender or world.operator, value=bond)


def finalize(world, request_id: int, sender: str | None = None, gas: int | None = None):
    return transact(world.oracle.functions.finalize(request_id), sender or world.operator, gas=gas)


def served(world, c0: int = 12345, **request_kwargs) -> tuple[int, list[int], list[int]]:
    """A request with an honest result submitted; returns (request id, commitments, output)."""
    request_id = request(world, c0, **request_kwargs)
    commitments, output = honest_claim(c0)
    submit(world, request_id, commitments, output)
    return request_id, commitments, output


def distribute(world, amounts: list[int]) -> None:
    for holder, amount in zip(world.holders, amounts):
        transact(world.token.functions.transfer(holder, amount), world.owner)


def pay_revenue(world, amount: int) -> None:
    world.w3.eth.wait_for_transaction_receipt(
        world.w3.eth.send_transaction({"from": world.owner, "to": world.token.address, "value": amount}))


def take_snapshot(world) -> int:
    advance(world.w3, SNAPSHOT_INTERVAL)
    receipt = transact(world.token.functions.snapshot(), world.owner)
    return logs(world.token, "Snapshot", receipt)[0]["args"]["snapshotId"]


# ---------------------------------------------------------------- RevShareToken (ERC-7641)


def test_holders_claim_their_pro_rata_share_of_revenue_between_snapshots(world):
    distribute(world, [100 * TOKEN, 300 * TOKEN])
    pay_revenue(world, ETH)
    snapshot_id = take_snapshot(world)
    h0, h1 = world.holders[:2]
    claimable = ETH * CLAIM_BPS // 10_000
    assert world.token.functions.claimableRevenue(h0, snapshot_id).call() == claimable * 100 // 1_000
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
    transact(world.token.functions.transfer(h1, 100 * TOKEN), h0)
    assert world.token.functions.claimableRevenue(h1, snapshot_id).call() == 0
    with reverts("RevShareTokenNothingToClaim"):
        transact(world.token.functions.claim(snapshot_id), h1)
    transact(world.token.functions.claim(snapshot_id), h0)
    assert world.token.functions.balanceOfAt(h0, snapshot_id).call() == 100 * TOKEN


def test_claim_for_a_snapshot_taken_before_buying_gets_nothing(world):
    pay_revenue(world, ETH)
    snapshot_id = take_snapshot(world)
    offering = new_contract(world, "ModelOffering", world.token.address, world.owner, 10**12, TOKEN, 10**13, 10**14,
                            now(world.w3) + 1_000)
    transact(world.token.functions.transfer(offering.address, 100 * TOKEN), world.owner)
    buyer = world.holders[0]
    transact(offering.functions.buy(), buyer, value=10**13)
    advance(world.w3, 1_000)
    transact(offering.functions.finalizeSale(), buyer)
    transact(offering.functions.claimTokens(), buyer)
    assert world.token.functions.balanceOf(buyer).call() == 10 * TOKEN
    assert world.token.functions.claimableRevenue(buyer, snapshot_id).call() == 0
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
    claimable = ETH * CLAIM_BPS // 10_000
    assert world.token.functions.burnPool().call() == burn_pool + claimable // 2
    assert world.token.functions.claimPool().call() == 0
    with reverts("RevShareTokenSnapshotSwept"):
        transact(world.token.functions.claim(snapshot_id), world.owner)


# ---------------------------------------------------------------- ModelOffering


@pytest.fixture
def sale(world):
    """A sale of 100 tokens at 1e12 wei per token: soft cap 3e13, hard cap 6e13, open 1000 s."""
    offering = new_contract(world, "ModelOffering", world.token.address, world.owner, 10**12, TOKEN, 3 * 10**13,
                            6 * 10**13, now(world.w3) + 1_000)
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
    treasury_tokens = world.token.functions.balanceOf(world.owner).call()
    transact(sale.functions.finalizeSale(), b0)
    assert world.token.functions.balanceOf(world.owner).call() == treasury_tokens + 60 * TOKEN
    transact(sale.functions.claimTokens(), b0)
    assert world.token.functions.balanceOf(b0).call() == 20 * TOKEN
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
    offering = new_contract(world, "ModelOffering", world.token.address, world.owner, 10**12, TOKEN, 10**12, 10**14,
                            now(world.w3) + 1_000)
    transact(world.token.functions.transfer(offering.address, 5 * TOKEN), world.owner)
    with reverts("ModelOfferingUnderfunded"):
        transact(offering.functions.buy(), world.holders[0], value=6 * 10**12)


# ---------------------------------------------------------------- AIOracle


def test_honest_result_is_delivered_and_fee_is_split(world):
    token_before = balance(world, world.token.address)
    request_id, _, output = served(world)
    advance(world.w3, WINDOW)
    receipt = finalize(world, request_id, sender=world.challenger)
    assert world.oracle.functions.isFinalized(request_id).call()
    model_revenue = FEE * (10_000 - OPERATOR_BPS) // 10_000
    assert balance(world, world.token.address) - token_before == model_revenue
    assert credit(world, world.operator) == FEE - model_revenue + MIN_BOND
    delivered = world.consumer.functions.outputOf(request_id).call()
    assert delivered == encode(["int256[]", "uint256"], [output, 7])
    assert logs(world.consumer, "ResultReceived", receipt)[0]["args"]["callbackData"] == b"\x2a"
    before = balance(world, world.operator)
    receipt = transact(world.oracle.functions.withdraw(), world.operator)
    assert balance(world, world.operator) - before + receipt.gasUsed * receipt.effectiveGasPrice == FEE - model_revenue + MIN_BOND
    assert balance(world, world.oracle.address) == 0


def test_underpaid_request_reverts(world):
    with reverts("AIOracleUnderpaid"):
        request(world, 5, value=FEE - 1)


def test_request_input_must_be_one_field_element(world):
    with reverts("AIOracleInvalidInput"):
        request(world, P)
    with reverts("AIOracleInvalidInput"):
        transact(world.oracle.functions.requestCallback(world.model, b"\x01" * 31, world.consumer.address, 1, b""),
                 world.requester, value=FEE)


def test_request_for_an_unknown_model_reverts(world):
    with reverts("AIOracleUnknownModel"):
        request(world, 5, model=99)


def test_submitting_twice_reverts(world):
    request_id, commitments, output = served(world)
    with reverts("AIOracleUnexpectedStatus"):
        submit(world, request_id, commitments, output, sender=world.challenger)


def test_submit_with_an_invalid_zk_proof_reverts(world):
    request_id = request(world, 77)
    commitments, output = honest_claim(77)
    with reverts("AIOracleInvalidProof"):
        submit(world, request_id, commitments, output, proofs=[toy_proof([77, commitments[1] + 1])])
    wrong = [77, (commitments[1] + 1) % P, commitments[2]]
    with reverts("AIOracleInvalidProof"):
        submit(world, request_id, wrong, output, proofs=[toy_proof(wrong[:2])])


def test_submit_checks_the_claim_shape(world):
    request_id = request(world, 77)
    commitments, output = honest_claim(77)
    with reverts("AIOracleInvalidCommitments"):
        submit(world, request_id, [78, *commitments[1:]], output)
    with reverts("AIOracleInvalidOutput"):
        submit(world, request_id, commitments, output + [1])
    with reverts("AIOracleWrongProofCount"):
        submit(world, request_id, commitments, output, proofs=[])
    with reverts("AIOracleMissingBoundaryData"):
        submit(world, request_id, commitments, output, boundary=b"")
    with reverts("AIOracleBondTooLow"):
        submit(world, request_id, commitments, output, bond=MIN_BOND - 1)


def test_finalize_before_the_window_ends_reverts(world):
    request_id, _, _ = served(world)
    with reverts("AIOracleChallengeWindowOpen"):
        finalize(world, request_id)


def test_double_finalize_reverts(world):
    request_id, _, _ = served(world)
    advance(world.w3, WINDOW)
    finalize(world, request_id)
    with reverts("AIOracleUnexpectedStatus"):
        finalize(world, request_id)


def test_challenge_after_the_window_reverts(world):
    request_id = request(world, 9)
    commitments, output = honest_claim(9)
    wrong = [-v for v in output]
    submit(world, request_id, commitments, wrong)
    advance(world.w3, WINDOW)
    instances = [commitments[1], *map(to_field, output)]
    with reverts("AIOracleChallengeWindowClosed"):
        transact(world.oracle.functions.challenge(request_id, 2, toy_proof(instances), instances), world.challenger)


def test_wrong_op_output_is_slashed_and_the_request_reopens(world):
    request_id = request(world, 9)
    commitments, output = honest_claim(9)
    submit(world, request_id, commitments, [v + 1 for v in output])
    instances = [commitments[1], *map(to_field, output)]
    transact(world.oracle.functions.challenge(request_id, 2, toy_proof(instances), instances), world.challenger)
    assert credit(world, world.challenger) == MIN_BOND
    assert credit(world, world.requester) == FEE
    submit(world, request_id, commitments, output, sender=world.challenger)
    advance(world.w3, WINDOW)
    finalize(world, request_id)
    assert credit(world, world.challenger) == MIN_BOND * 2  # the bond back; the refunded fee leaves nothing to share
    assert world.consumer.functions.outputOf(request_id).call() == encode(["int256[]", "uint256"], [output, 7])


def test_challenge_that_agrees_with_the_claim_reverts(world):
    request_id, commitments, output = served(world)
    instances = [commitments[1], *map(to_field, output)]
    with reverts("AIOracleClaimNotContradicted"):
        transact(world.oracle.functions.challenge(request_id, 2, toy_proof(instances), instances), world.challenger)


def test_challenge_instances_must_be_field_elements(world):
    request_id, commitments, output = served(world)
    instances = [commitments[1], to_field(output[0]) + P, to_field(output[1])]
    with reverts("AIOracleInvalidInstances"):
        transact(world.oracle.functions.challenge(request_id, 2, toy_proof(instances), instances), world.challenger)


def test_a_reverting_callback_does_not_block_payment(world):
    callback = new_contract(world, "RevertingCallback")
    request_id, _, _ = served(world, callback=callback.address)
    advance(world.w3, WINDOW)
    receipt = finalize(world, request_id)
    assert logs(world.oracle, "AICallbackFailed", receipt)
    assert world.oracle.functions.isFinalized(request_id).call()
    assert credit(world, world.operator) > 0


def test_a_gas_burning_callback_gets_its_limit_and_no_more(world):
    callback = new_contract(world, "GasBurningCallback")
    request_id, _, _ = served(world, callback=callback.address, gas_limit=300_000)
    advance(world.w3, WINDOW)
    with reverts("AIOracleInsufficientGas"):
        finalize(world, request_id, gas=250_000)
    receipt = finalize(world, request_id)
    assert logs(world.oracle, "AICallbackFailed", receipt)
    assert 300_000 < receipt.gasUsed < 450_000
    assert credit(world, world.operator) > 0


def test_a_reentering_callback_cannot_finalize_or_withdraw_again(world):
    callback = new_contract(world, "ReentrantCallback", world.oracle.address)
    request_id, _, _ = served(world, callback=callback.address, gas_limit=500_000, sender=None)
    advance(world.w3, WINDOW)
    receipt = finalize(world, request_id, sender=world.operator)
    assert not logs(world.oracle, "AICallbackFailed", receipt)
    assert callback.functions.calls().call() == 1
    assert not callback.functions.finalizeReentered().call()
    assert not callback.functions.withdrawReentered().call()


def test_a_callback_returning_huge_data_costs_the_oracle_no_copy(world):
    callback = new_contract(world, "ReturnBombCallback")
    request_id, _, _ = served(world, callback=callback.address, gas_limit=1_000_000)
    advance(world.w3, WINDOW)
    receipt = finalize(world, request_id)
    assert not logs(world.oracle, "AICallbackFailed", receipt)
    assert receipt.gasUsed < 550_000  # the callback's own 400 kB costs ~345k gas; copying it back would cost as much again


def test_revenue_a_token_refuses_is_credited_to_it(world):
    refusing = new_contract(world, "RefusingReceiver")
    spec = (b"\x05" * 32, b"\x06" * 32, refusing.address, FEE, OPERATOR_BPS, WINDOW, 2, 7)
    v1, v2, _ = world.verifiers
    transact(world.oracle.functions.registerModel(spec, [(v1.address, True), (v2.address, False)]), world.owner)
    request_id, _, _ = served(world, model=3)
    advance(world.w3, WINDOW)
    finalize(world, request_id)
    assert credit(world, refusing.address) == FEE * (10_000 - OPERATOR_BPS) // 10_000


def test_requester_can_cancel_an_unserved_request_after_the_timeout(world):
    request_id = request(world, 3)
    with reverts("AIOracleCancelTooEarly"):
        transact(world.oracle.functions.cancel(request_id), world.requester)
    advance(world.w3, TIMEOUT)
    with reverts("AIOracleNotRequester"):
        transact(world.oracle.functions.cancel(request_id), world.operator)
    transact(world.oracle.functions.cancel(request_id), world.requester)
    assert credit(world, world.requester) == FEE
    with reverts("AIOracleUnexpectedStatus"):
        submit(world, request_id, *honest_claim(3))


def test_only_the_oracle_may_call_a_receiver(world):
    with reverts("AIOracleCallbackReceiverUnauthorized"):
        transact(world.consumer.functions.aiOracleCallback(1, b"", b""), world.requester)


def test_withdrawing_nothing_reverts(world):
    with reverts("AIOracleNothingToWithdraw"):
        transact(world.oracle.functions.withdraw(), world.holders[3])


def test_registration_rejects_a_plan_with_an_op_segment_and_no_window(world):
    v1, v2, _ = world.verifiers
    spec = (b"\x05" * 32, b"\x06" * 32, world.token.address, FEE, OPERATOR_BPS, 0, 2, 7)
    with reverts("AIOracleMissingChallengeWindow"):
        transact(world.oracle.functions.registerModel(spec, [(v1.address, True), (v2.address, False)]), world.owner)
    with reverts("AIOracleInvalidVerifier"):
        transact(world.oracle.functions.registerModel(spec, [(world.owner, True)]), world.owner)


# ---------------------------------------------------------------- AIGCNFT (ERC-7007)


def image_result(world, c0: int = 4242) -> tuple[int, bytes]:
    """A finalized request of the 64-pixel model; returns (request id, output bytes)."""
    request_id = request(world, c0, model=world.image_model)
    output = toy_output(2, c0, 64)
    transact(world.oracle.functions.submit(request_id, [c0, 0], output, [], b"x"), world.operator, value=MIN_BOND)
    advance(world.w3, WINDOW)
    finalize(world, request_id)
    return request_id, encode(["int256[]", "uint256"], [output, 7])


def test_nft_mints_a_finalized_output_and_renders_it_onchain(world):
    request_id, output = image_result(world)
    prompt, proof = input_bytes(4242), request_id.to_bytes(32, "big")
    assert world.nft.functions.verify(prompt, output, proof).call()
    token_before = balance(world, world.token.address)
    receipt = transact(world.nft.functions.mint(prompt, output, proof), world.requester, value=10**15)
    token_id = int.from_bytes(Web3.keccak(prompt), "big")
    assert logs(world.nft, "AigcData", receipt)[0]["args"]["tokenId"] == token_id
    assert world.nft.functions.ownerOf(token_id).call() == world.requester
    assert balance(world, world.token.address) - token_before == 10**15
    assert tuple(world.nft.functions.royaltyInfo(token_id, 10_000).call()) == (world.token.address, 500)
    selectors = [Web3.keccak(text=f)[:4] for f in ("addAigcData(uint256,bytes,bytes,bytes)", "verify(bytes,bytes,bytes)")]
    erc7007 = bytes(a ^ b for a, b in zip(*selectors))
    for interface in (erc7007, bytes.fromhex("80ac58cd"), bytes.fromhex("2a55205a")):  # ERC-7007, ERC-721, ERC-2981
        assert world.nft.functions.supportsInterface(interface).call()
    uri = world.nft.functions.tokenURI(token_id).call()
    metadata = json.loads(base64.b64decode(uri.removeprefix("data:application/json;base64,")))
    svg = base64.b64decode(metadata["image"].removeprefix("data:image/svg+xml;base64,")).decode()
    assert svg.count("<rect") == 64
    pixels = [int.from_bytes(output[96 + 32 * i:128 + 32 * i], "big", signed=True) for i in range(64)]
    first = min(255, max(0, pixels[0]) * 255 // 128)
    assert f"fill='rgb({first},{first},{first})'" in svg.split("<rect")[1]


def test_nft_rejects_content_that_is_not_the_finalized_output(world):
    request_id, output = image_result(world)
    prompt, proof = input_bytes(4242), request_id.to_bytes(32, "big")
    forged = output[:-1] + bytes([output[-1] ^ 1])
    assert not world.nft.functions.verify(prompt, forged, proof).call()
    assert not world.nft.functions.verify(input_bytes(4243), output, proof).call()
    with reverts("AIGCNFTUnverified"):
        transact(world.nft.functions.mint(prompt, forged, proof), world.requester, value=10**15)
    with reverts("AIGCNFTNotRequester"):
        transact(world.nft.functions.mint(prompt, output, proof), world.operator, value=10**15)
    with reverts("AIGCNFTWrongMintFee"):
        transact(world.nft.functions.mint(prompt, output, proof), world.requester, value=0)
    transact(world.nft.functions.mint(prompt, output, proof), world.requester, value=10**15)
    with reverts("AIGCNFTAlreadyMinted"):
        transact(world.nft.functions.mint(prompt, output, proof), world.requester, value=10**15)


def test_nft_rejects_a_result_still_in_its_challenge_window(world):
    request_id = request(world, 5, model=world.image_model)
    output = toy_output(2, 5, 64)
    transact(world.oracle.functions.submit(request_id, [5, 0], output, [], b"x"), world.operator, value=MIN_BOND)
    encoded = encode(["int256[]", "uint256"], [output, 7])
    assert not world.nft.functions.verify(input_bytes(5), encoded, request_id.to_bytes(32, "big")).call()


def test_deployment_round_trips_through_json(tmp_path, chain):
    from imo.verifier_contracts.contracts import deploy_protocol

    deployment = deploy_protocol(chain.w3, chain.accounts[0])
    path = deployment.write(tmp_path / "deployment.json")
    again = Deployment.read(path)
    assert again == deployment
    offering = again.contract(chain.w3, "ModelOffering")
    assert offering.functions.token().call() == again.token


# ---------------------------------------------------------------- stateful: ETH conservation, pro rata, nothing locked


class ProtocolMachine(RuleBasedStateMachine):
    """Random buys, transfers, requests, honest and dishonest submits, challenges, finalizes, cancels, snapshots,
    claims, burns and withdrawals, checked against a shadow model. Invariants: ETH is conserved (the contracts hold
    exactly what was paid in minus what the rules paid out, and each holds what its rules say it owes); every claim
    and burn pays exactly the pro-rata share; and once everything is settled, no contract holds any ETH."""

    world = None  # set by the test

    @initialize()
    def start(self):
        w = self.world
        self.w3 = w.w3
        self.snapshot = self.w3.provider.make_request("evm_snapshot", [])["result"]
        self.users = [w.requester, w.operator, w.challenger, *w.holders]
        self.offering = new_contract(w, "ModelOffering", w.token.address, w.owner, 10**12, TOKEN, 2 * 10**13,
                                     2 * 10**14, now(self.w3) + 2_000)
        transact(w.token.functions.transfer(self.offering.address, 200 * TOKEN), w.owner)
        self.contracts = [w.oracle.address, w.token.address, self.offering.address]
        self.paid_in = self.paid_out = 0
        self.token_balances = {a: 0 for a in [*self.users, w.owner]}
        self.token_balances[w.owner] = 800 * TOKEN
        for holder in self.users:  # everyone starts with tokens, so snapshots have holders to pay
            transact(w.token.functions.transfer(holder, 100 * TOKEN), w.owner)
            self.token_balances[holder] += 100 * TOKEN
            self.token_balances[w.owner] -= 100 * TOKEN
        self.contributions = {}
        self.sale_done = False
        self.credits = {}
        self.requests = {}  # id -> {status, fee, requester, c0, since, [bond, submitter, honest, commitments]}
        self.token_in = self.token_out = 0
        self.snapshots = {}  # id -> (claimable, supply, balances at the snapshot, accounts that claimed)
        self.next_input = 1

    def teardown(self):
        if hasattr(self, "snapshot"):
            try:
                self.settle_everything()
            finally:
                assert self.w3.provider.make_request("evm_revert", [self.snapshot])["result"]

    # -- helpers

    def send(self, fn, account, value=0):
        """Send a transaction; returns (receipt, ETH the sender received from it)."""
        before = self.w3.eth.get_balance(account)
        receipt = transact(fn, account, value=value)
        received = self.w3.eth.get_balance(account) - before + receipt.gasUsed * receipt.effectiveGasPrice + value
        self.paid_in += value
        self.paid_out += received
        return receipt, received

    def add_credit(self, account, amount):
        if amount:
            self.credits[account] = self.credits.get(account, 0) + amount

    def open_requests(self, status):
        return [i for i, r in self.requests.items() if r["status"] == status]

    # -- sale

    @precondition(lambda self: not self.sale_done)
    @rule(buyer=st.integers(0, 6), units=st.integers(1, 60))
    def buy(self, buyer, units):
        account, value = self.users[buyer], units * 10**12
        if sum(self.contributions.values()) + value > 2 * 10**14:
            with reverts("ModelOfferingHardCapExceeded"):
                transact(self.offering.functions.buy(), account, value=value)
            return
        if now(self.w3) + MARGIN >= self.offering.functions.deadline().call():
            return
        self.send(self.offering.functions.buy(), account, value)
        self.contributions[account] = self.contributions.get(account, 0) + value

    @precondition(lambda self: not self.sale_done and len(self.contributions) >= 2)
    @rule()
    def end_sale(self):
        self.finish_sale()

    def finish_sale(self):
        w = self.world
        deadline = self.offering.functions.deadline().call()
        if now(self.w3) < deadline:
            advance(self.w3, deadline - now(self.w3))
        transact(self.offering.functions.finalizeSale(), w.owner)
        raised = sum(self.contributions.values())
        success = raised >= 2 * 10**13
        sold = raised // 10**12 * TOKEN if success else 0
        self.token_balances[w.owner] += 200 * TOKEN - sold
        for buyer, paid in self.contributions.items():
            if success:
                transact(self.offering.functions.claimTokens(), buyer)
                self.token_balances[buyer] += paid // 10**12 * TOKEN
            else:
                assert self.send(self.offering.functions.refund(), buyer)[1] == paid
        if success:
            before = self.w3.eth.get_balance(w.owner)
            transact(self.offering.functions.withdrawProceeds(), w.requester)
            assert self.w3.eth.get_balance(w.owner) - before == raised
            self.paid_out += raised
        self.contributions = {}
        self.sale_done = True

    # -- token

    @rule(sender=st.integers(0, 7), receiver=st.integers(0, 6), share=st.floats(0, 1))
    def transfer(self, sender, receiver, share):
        source, target = [*self.users, self.world.owner][sender], self.users[receiver]
        amount = int(self.token_balances[source] * share)
        transact(self.world.token.functions.transfer(target, amount), source)
        self.token_balances[source] -= amount
        self.token_balances[target] += amount

    @rule(amount=st.integers(1, 10**15))
    def direct_revenue(self, amount):
        pay_revenue(self.world, amount)
        self.token_in += amount
        self.paid_in += amount

    @rule(claimers=st.sets(st.integers(0, 7)))
    def snapshot_and_claim(self, claimers):
        snapshot_id = self.snapshot_now()
        accounts = sorted(self.token_balances)
        for i in sorted(claimers):
            self.claim_at(snapshot_id, accounts[i])

    def snapshot_now(self) -> int:
        token = self.world.token
        advance(self.w3, SNAPSHOT_INTERVAL)
        pending = token.functions.pendingRevenue().call()
        supply = token.functions.totalSupply().call()
        receipt = transact(token.functions.snapshot(), self.world.owner)
        snapshot_id = logs(token, "Snapshot", receipt)[0]["args"]["snapshotId"]
        claimable = pending * CLAIM_BPS // 10_000 if supply else 0
        self.snapshots[snapshot_id] = (claimable, supply, dict(self.token_balances), set())
        offering_tokens = token.functions.balanceOf(self.offering.address).call()
        assert sum(self.token_balances.values()) + offering_tokens == supply
        return snapshot_id

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def claim(self, data):
        snapshot_id = data.draw(st.sampled_from(sorted(self.snapshots)))
        self.claim_at(snapshot_id, data.draw(st.sampled_from(sorted(self.token_balances))))

    def claim_at(self, snapshot_id, account):
        """Claim, expecting exactly the pro-rata share, or the revert the rules demand."""
        claimable, supply, balances, claimed = self.snapshots[snapshot_id]
        share = balances[account] * claimable // supply
        fn = self.world.token.functions.claim(snapshot_id)
        if account in claimed:
            with reverts("RevShareTokenAlreadyClaimed"):
                transact(fn, account)
        elif share == 0:
            with reverts("RevShareTokenNothingToClaim"):
                transact(fn, account)
        else:
            assert self.send(fn, account)[1] == share
            claimed.add(account)
            self.token_out += share

    @rule(holder=st.integers(0, 6), share=st.floats(0, 1))
    def burn(self, holder, share):
        account = self.users[holder]
        amount = int(self.token_balances[account] * share)
        token = self.world.token
        if amount == 0:
            return
        expected = amount * token.functions.burnPool().call() // token.functions.totalSupply().call()
        assert self.send(token.functions.burn(amount), account)[1] == expected
        self.token_balances[account] -= amount
        self.token_out += expected

    # -- oracle

    @rule(requester=st.integers(0, 6), tip=st.integers(0, 10**14), operator=st.none() | st.integers(0, 6),
          honest=st.booleans())
    def request(self, requester, tip, operator, honest):
        """A request, and unless `operator` is None its result, submitted at once (honest or not)."""
        account, c0 = self.users[requester], self.next_input
        self.next_input += 1
        fee = FEE + tip
        fn = self.world.oracle.functions.requestCallback(self.world.model, input_bytes(c0), self.world.consumer.address,
                                                          200_000, b"")
        receipt, _ = self.send(fn, account, fee)
        request_id = logs(self.world.oracle, "AICallbackRequest", receipt)[0]["args"]["requestId"]
        self.requests[request_id] = {"status": "pending", "fee": fee, "requester": account, "c0": c0,
                                     "since": now(self.w3)}
        if operator is not None:
            self.submit_result(request_id, operator, honest, 0)

    @precondition(lambda self: self.open_requests("pending"))
    @rule(data=st.data(), operator=st.integers(0, 6), honest=st.booleans(), bond_extra=st.integers(0, 10**15))
    def submit(self, data, operator, honest, bond_extra):
        self.submit_result(data.draw(st.sampled_from(self.open_requests("pending"))), operator, honest, bond_extra)

    def submit_result(self, request_id, operator, honest, bond_extra):
        r = self.requests[request_id]
        commitments, output = honest_claim(r["c0"])
        if not honest:
            output = [output[0] + 1, output[1]]
        account, bond = self.users[operator], MIN_BOND + bond_extra
        fn = self.world.oracle.functions.submit(request_id, commitments, output, [toy_proof(commitments[:2])], b"t1")
        self.send(fn, account, bond)
        r.update(status="submitted", bond=bond, submitter=account, honest=honest, commitments=commitments,
                 since=now(self.w3))

    @precondition(lambda self: self.open_requests("submitted"))
    @rule(data=st.data(), challenger=st.integers(0, 6))
    def challenge(self, data, challenger):
        request_id = data.draw(st.sampled_from(self.open_requests("submitted")))
        r = self.requests[request_id]
        account, c1 = self.users[challenger], r["commitments"][1]
        instances = [c1, *map(to_field, toy_output(2, c1, 2))]
        fn = self.world.oracle.functions.challenge(request_id, 2, toy_proof(instances), instances)
        deadline = r["since"] + WINDOW
        if now(self.w3) >= deadline:
            with reverts("AIOracleChallengeWindowClosed"):
                transact(fn, account)
        elif r["honest"]:
            with reverts("AIOracleClaimNotContradicted"):
                transact(fn, account)
        elif now(self.w3) + MARGIN < deadline:
            self.send(fn, account)
            self.add_credit(account, r["bond"])
            self.add_credit(r["requester"], r["fee"])
            r.update(status="pending", fee=0, since=now(self.w3))

    @rule(seconds=st.sampled_from([10, WINDOW, TIMEOUT]), finalize_all=st.booleans())
    def wait(self, seconds, finalize_all):
        """Time passes; then maybe someone finalizes every result whose window is over."""
        advance(self.w3, seconds)
        if finalize_all:
            for request_id in self.open_requests("submitted"):
                if now(self.w3) >= self.requests[request_id]["since"] + WINDOW:
                    self.finalize_request(request_id)

    @precondition(lambda self: self.open_requests("submitted"))
    @rule(data=st.data())
    def finalize(self, data):
        request_id = data.draw(st.sampled_from(self.open_requests("submitted")))
        deadline = self.requests[request_id]["since"] + WINDOW
        if now(self.w3) + MARGIN < deadline:
            with reverts("AIOracleChallengeWindowOpen"):
                transact(self.world.oracle.functions.finalize(request_id), self.world.owner)
        elif now(self.w3) >= deadline:
            self.finalize_request(request_id)

    def finalize_request(self, request_id):
        r = self.requests[request_id]
        token_before = self.w3.eth.get_balance(self.world.token.address)
        self.send(self.world.oracle.functions.finalize(request_id), self.world.owner)
        model_revenue = min(r["fee"], FEE) * (10_000 - OPERATOR_BPS) // 10_000
        assert self.w3.eth.get_balance(self.world.token.address) - token_before == model_revenue
        self.token_in += model_revenue
        self.add_credit(r["submitter"], r["fee"] - model_revenue + r["bond"])
        r["status"] = "finalized"

    @precondition(lambda self: self.open_requests("pending"))
    @rule(data=st.data())
    def cancel(self, data):
        request_id = data.draw(st.sampled_from(self.open_requests("pending")))
        r = self.requests[request_id]
        fn = self.world.oracle.functions.cancel(request_id)
        if now(self.w3) + MARGIN < r["since"] + TIMEOUT:
            with reverts("AIOracleCancelTooEarly"):
                transact(fn, r["requester"])
        elif now(self.w3) >= r["since"] + TIMEOUT:
            self.send(fn, r["requester"])
            self.add_credit(r["requester"], r["fee"])
            r.update(status="cancelled", fee=0)

    @precondition(lambda self: self.credits)
    @rule(data=st.data())
    def withdraw(self, data):
        account = data.draw(st.sampled_from(sorted(self.credits)))
        assert self.send(self.world.oracle.functions.withdraw(), account)[1] == self.credits.pop(account)

    # -- invariants

    @invariant()
    def eth_is_conserved(self):
        if hasattr(self, "snapshot"):
            assert sum(self.w3.eth.get_balance(c) for c in self.contracts) == self.paid_in - self.paid_out

    @invariant()
    def contracts_hold_exactly_what_they_owe(self):
        if not hasattr(self, "snapshot"):
            return
        w = self.world
        owed = sum(self.credits.values()) + sum(
            r["fee"] + (r["bond"] if r["status"] == "submitted" else 0)
            for r in self.requests.values() if r["status"] in ("pending", "submitted"))
        assert self.w3.eth.get_balance(w.oracle.address) == owed
        assert self.w3.eth.get_balance(w.token.address) == self.token_in - self.token_out
        if not self.sale_done:
            assert self.w3.eth.get_balance(self.offering.address) == sum(self.contributions.values())

    # -- the end: settle everything, then nothing is left

    def settle_everything(self):
        w = self.world
        if not self.sale_done:
            self.finish_sale()
        advance(self.w3, TIMEOUT)
        for request_id, r in self.requests.items():
            if r["status"] == "submitted":
                self.finalize_request(request_id)
            elif r["status"] == "pending":
                self.send(w.oracle.functions.cancel(request_id), r["requester"])
                self.add_credit(r["requester"], r["fee"])
        for account in sorted(self.credits):
            assert self.send(w.oracle.functions.withdraw(), account)[1] == self.credits[account]
        self.credits = {}
        last = self.snapshot_now()
        for account in sorted(self.token_balances):
            self.claim_at(last, account)
        advance(self.w3, CLAIM_PERIOD)  # what older snapshots left unclaimed is swept into the burn pool
        for snapshot_id in self.snapshots:
            transact(w.token.functions.sweep(snapshot_id), w.owner)
        for account, held in self.token_balances.items():
            if held:
                self.send(w.token.functions.burn(held), account)
        assert w.token.functions.totalSupply().call() == 0
        assert [self.w3.eth.get_balance(c) for c in self.contracts] == [0, 0, 0]
        assert self.paid_in == self.paid_out


def test_protocol_state_machine_conserves_eth_and_locks_nothing(world):
    ProtocolMachine.world = world
    run_state_machine_as_test(
        ProtocolMachine,
        settings=settings(max_examples=15, stateful_step_count=30, deadline=None, derandomize=True,
                          suppress_health_check=list(HealthCheck)),
    )
