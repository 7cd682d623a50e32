"""RevShareToken snapshots count balances as of the block before the snapshot, on a real anvil.

A flash loan (borrow, `snapshot()`, repay in one transaction) must capture no revenue share, and tokens moved in the
snapshot's own block (before it, in an earlier transaction) count for the old holder until the next snapshot. The
attacker and lender are test-only contracts in tests/contracts/, compiled together with the protocol sources. Every
party is a fresh funded account that signs locally."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from web3.logs import DISCARD

from helpers import funded_accounts, send_signed
from imo.errors import ChainError
from imo.verifier_contracts.contracts import pay, protocol_sources, transact
from imo.verifier_contracts.evm import deploy
from imo.verifier_contracts.solc import compile_sources

ETH = 10**18
TOKEN = 10**18
SUPPLY = 1_000 * TOKEN
CLAIM_BPS = 6_000
SNAPSHOT_INTERVAL = 50
CLAIM_PERIOD = 10_000
TEST_CONTRACTS = Path(__file__).parent / "contracts"


@pytest.fixture(scope="module")
def compiled():
    attacker = TEST_CONTRACTS / "FlashSnapshotAttacker.sol"
    return compile_sources({**protocol_sources(), attacker.name: attacker.read_text()})


@pytest.fixture
def world(chain, compiled):
    """A fresh RevShareToken (all supply to the owner) on the session's anvil, rolled back after the test."""
    w3 = chain.w3
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    owner, attacker_eoa, *holders = funded_accounts(w3, 6)
    token = deploy(w3, compiled["RevShareToken"], owner, "Model", "MDL", SUPPLY, owner.address, CLAIM_BPS,
                   SNAPSHOT_INTERVAL, CLAIM_PERIOD)[0]
    try:
        yield SimpleNamespace(w3=w3, compiled=compiled, token=token, owner=owner, attacker_eoa=attacker_eoa,
                              holders=holders)
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
        assert w3.provider.make_request("evm_revert", [snapshot])["result"]


def reverts(error: str):
    return pytest.raises(ChainError, match=rf"\b{error}\(")


def advance(w3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def pay_revenue(world, amount: int) -> None:
    pay(world.w3, world.owner, world.token.address, amount)


def snapshot_id_of(world, receipt) -> int:
    return world.token.events.Snapshot().process_receipt(receipt, errors=DISCARD)[0]["args"]["snapshotId"]


def balances(world, accounts) -> dict[str, int]:
    return {a: world.token.functions.balanceOf(a).call() for a in accounts}


def in_one_block(world, calls) -> list:
    """Send (contract function, sender) pairs without mining, mine them together in one block, return the receipts."""
    w3 = world.w3
    assert w3.provider.make_request("evm_setAutomine", [False])["result"] is None
    try:
        hashes = [send_signed(fn, sender, gas=1_000_000) for fn, sender in calls]
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    receipts = [w3.eth.wait_for_transaction_receipt(h) for h in hashes]
    assert all(r.status == 1 for r in receipts)
    assert len({r.blockNumber for r in receipts}) == 1, "the transactions must share one block"
    assert [r.transactionIndex for r in receipts] == sorted(r.transactionIndex for r in receipts)
    return receipts


def assert_pro_rata(world, snapshot_id: int, before: dict[str, int], supply: int) -> None:
    """Every account counts with its balance before the snapshot's block, and the shares add up to the claimable pool."""
    token = world.token
    claimable = token.functions.snapshotRecord(snapshot_id).call()[0]
    assert token.functions.totalSupplyAt(snapshot_id).call() == supply
    for account, held in before.items():
        assert token.functions.balanceOfAt(account, snapshot_id).call() == held
        assert token.functions.claimableRevenue(account, snapshot_id).call() == held * claimable // supply
    assert sum(held * claimable // supply for held in before.values()) <= claimable


def test_a_flash_loaned_balance_captures_nothing_at_a_snapshot_taken_while_borrowed(world):
    token, owner, (h0, h1, _, _) = world.token, world.owner, [h.address for h in world.holders]
    lender = deploy(world.w3, world.compiled["FlashLender"], owner, token.address)[0]
    attacker = deploy(world.w3, world.compiled["FlashSnapshotAttacker"], world.attacker_eoa, token.address,
                      lender.address)[0]
    for account, amount in ((h0, 100 * TOKEN), (h1, 300 * TOKEN), (lender.address, 500 * TOKEN)):
        transact(token.functions.transfer(account, amount), owner)
    pay_revenue(world, ETH)
    advance(world.w3, SNAPSHOT_INTERVAL)
    before = balances(world, [owner.address, h0, h1, lender.address, attacker.address])

    # one transaction: borrow the lender's 500 tokens (half the supply), snapshot, repay
    receipt = transact(attacker.functions.attack(500 * TOKEN), world.attacker_eoa)
    snapshot_id = snapshot_id_of(world, receipt)
    assert balances(world, [lender.address, attacker.address]) == {lender.address: 500 * TOKEN, attacker.address: 0}
    claimable = ETH * CLAIM_BPS // 10_000
    assert token.functions.snapshotRecord(snapshot_id).call()[0] == claimable

    assert token.functions.balanceOfAt(attacker.address, snapshot_id).call() == 0
    assert token.functions.claimableRevenue(attacker.address, snapshot_id).call() == 0
    with reverts("RevShareTokenNothingToClaim"):
        transact(attacker.functions.claim(snapshot_id), world.attacker_eoa)
    assert world.w3.eth.get_balance(attacker.address) == 0

    assert_pro_rata(world, snapshot_id, before, SUPPLY)
    for holder, held in ((world.holders[0], 100 * TOKEN), (world.holders[1], 300 * TOKEN)):
        paid_before = world.w3.eth.get_balance(holder.address)
        r = transact(token.functions.claim(snapshot_id), holder)
        assert world.w3.eth.get_balance(holder.address) - paid_before + r.gasUsed * r.effectiveGasPrice == held * claimable // SUPPLY


def test_tokens_received_in_the_snapshot_block_count_for_the_sender_until_the_next_snapshot(world):
    token, owner, (h0, newcomer, _, _) = world.token, world.owner, world.holders
    transact(token.functions.transfer(h0.address, 400 * TOKEN), owner)
    pay_revenue(world, ETH)
    advance(world.w3, SNAPSHOT_INTERVAL)
    before = balances(world, [owner.address, h0.address, newcomer.address])

    # no flash loan: an ordinary transfer, then the snapshot, in one block
    _, snap = in_one_block(world, [(token.functions.transfer(newcomer.address, 300 * TOKEN), owner),
                                   (token.functions.snapshot(), owner)])
    snapshot_id = snapshot_id_of(world, snap)
    assert before == {owner.address: 600 * TOKEN, h0.address: 400 * TOKEN, newcomer.address: 0}
    assert_pro_rata(world, snapshot_id, before, SUPPLY)
    with reverts("RevShareTokenNothingToClaim"):
        transact(token.functions.claim(snapshot_id), newcomer)
    transact(token.functions.claim(snapshot_id), owner)  # the sender keeps the claim on what it held before the block

    # from the next snapshot on, the newcomer's tokens count
    pay_revenue(world, ETH)
    advance(world.w3, SNAPSHOT_INTERVAL)
    later = snapshot_id_of(world, transact(token.functions.snapshot(), h0))
    assert_pro_rata(world, later, {owner.address: 300 * TOKEN, h0.address: 400 * TOKEN, newcomer.address: 300 * TOKEN}, SUPPLY)
    transact(token.functions.claim(later), newcomer)


def test_tokens_burned_in_the_snapshot_block_keep_their_share_and_the_claims_add_up(world):
    token, owner, (h0, _, _, _) = world.token, world.owner, world.holders
    transact(token.functions.transfer(h0.address, 400 * TOKEN), owner)
    pay_revenue(world, ETH)
    advance(world.w3, SNAPSHOT_INTERVAL)
    before = balances(world, [owner.address, h0.address])

    _, snap = in_one_block(world, [(token.functions.burn(250 * TOKEN), owner), (token.functions.snapshot(), owner)])
    snapshot_id = snapshot_id_of(world, snap)
    assert token.functions.totalSupply().call() == SUPPLY - 250 * TOKEN
    assert_pro_rata(world, snapshot_id, before, SUPPLY)  # supply and balances are read at the same point
    for account in (owner, h0):
        transact(token.functions.claim(snapshot_id), account)
    assert token.functions.claimPool().call() == 0
