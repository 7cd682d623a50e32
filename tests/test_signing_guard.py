"""The guard of tests/conftest.py: a test that sends from an account the node unlocked (eth_sendTransaction, eth_sign,
personal_*, impersonation) fails, even where the production code would turn the error into a ChainError, and nothing
reaches the node; locally signed transactions from fresh funded accounts go through."""

import pytest

from helpers import funded_accounts
from imo.errors import ChainError
from imo.verifier_contracts.contracts import pay

GUARD_FAILS = pytest.fail.Exception


def test_sending_from_an_unlocked_account_fails_the_test_and_never_reaches_the_node(chain, no_unlocked_accounts):
    w3 = chain.w3
    unlocked = w3.eth.accounts[0]  # anvil's dev account: the node holds its key
    nonce = w3.eth.get_transaction_count(unlocked)
    try:
        with pytest.raises(GUARD_FAILS, match="eth_sendTransaction"):
            w3.eth.send_transaction({"from": unlocked, "to": unlocked, "value": 1})
        with pytest.raises(GUARD_FAILS, match="eth_sendTransaction"):  # not a ChainError that a test could expect
            pay(w3, unlocked, unlocked, 1)
        with pytest.raises(GUARD_FAILS, match="eth_sign"):
            w3.eth.sign(unlocked, text="hello")
        with pytest.raises(GUARD_FAILS, match="anvil_impersonateAccount"):
            w3.provider.make_request("anvil_impersonateAccount", [unlocked])
        assert no_unlocked_accounts.violations == ["eth_sendTransaction", "eth_sendTransaction", "eth_sign", "anvil_impersonateAccount"]
    finally:
        no_unlocked_accounts.violations.clear()  # recorded as they should be: not this test's failure
    assert w3.eth.get_transaction_count(unlocked) == nonce


def test_a_fresh_funded_account_signs_locally(chain, no_unlocked_accounts):
    w3 = chain.w3
    sender, receiver = funded_accounts(w3, 2, wei=10**18)
    assert not {sender.address, receiver.address} & set(w3.eth.accounts)
    receipt = pay(w3, sender, receiver.address, 12345)
    assert receipt.status == 1 and w3.eth.get_transaction(receipt.transactionHash)["from"] == sender.address
    assert w3.eth.get_balance(receiver.address) == 10**18 + 12345
    assert w3.eth.get_balance(sender.address) == 10**18 - 12345 - receipt.gasUsed * receipt.effectiveGasPrice
    with pytest.raises(ChainError, match="paying"):  # more than it has: an ordinary error, not the guard
        pay(w3, receiver, sender.address, 2 * 10**18)
    assert no_unlocked_accounts.violations == []
