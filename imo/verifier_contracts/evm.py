"""ezkl's Solidity verifier: compile it with solc-js, deploy it, and check proofs with it on-chain."""

import json
from dataclasses import dataclass
from pathlib import Path

from web3 import Web3
from web3.contract import Contract

from imo.errors import ChainError, MissingArtifactError
from imo.verifier_contracts.solc import CompiledContract, compile_sources

VERIFIER_CONTRACT = "Halo2Verifier"


def compile_verifier(sol_path: Path) -> CompiledContract:
    if not Path(sol_path).is_file():
        raise MissingArtifactError(f"{sol_path} not found; run `imo prove` to generate the verifier")
    return compile_sources({Path(sol_path).name: Path(sol_path).read_text()})[VERIFIER_CONTRACT]


@dataclass(frozen=True)
class ProofCall:
    """The arguments of verifyProof(bytes proof, uint256[] instances)."""

    proof: bytes
    instances: list[int]

    @classmethod
    def from_proof_file(cls, path: Path) -> "ProofCall":
        if not Path(path).is_file():
            raise MissingArtifactError(f"{path} not found; run `imo prove` first")
        data = json.loads(Path(path).read_text())
        instances = [int.from_bytes(bytes.fromhex(felt), "little") for column in data["instances"] for felt in column]
        return cls(bytes.fromhex(data["hex_proof"].removeprefix("0x")), instances)


def send(w3: Web3, tx: dict, sender):
    """Send transaction `tx` (its `from` is `sender`'s) and return its hash. A LocalAccount signs it here, with the
    nonce of the pending block so that transactions sent back to back queue up; an address must be unlocked (anvil)."""
    if isinstance(sender, str):
        return w3.eth.send_transaction({k: v for k, v in tx.items() if k != "nonce"})
    tx = {**tx, "nonce": w3.eth.get_transaction_count(sender.address, "pending"), "chainId": w3.eth.chain_id}
    if "gasPrice" not in tx and "maxFeePerGas" not in tx:
        tx["gasPrice"] = w3.eth.gas_price
    return w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)


def address_of(sender) -> str:
    return sender if isinstance(sender, str) else sender.address


def deploy(w3: Web3, contract: CompiledContract, sender, *args) -> tuple[Contract, int]:
    """Deploy and return (contract, gas used). `sender`: a LocalAccount that signs locally, or an unlocked address."""
    factory = w3.eth.contract(abi=contract.abi, bytecode=contract.bytecode)
    try:
        tx_hash = send(w3, factory.constructor(*args).build_transaction({"from": address_of(sender)}), sender)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    except Exception as exc:
        raise ChainError(f"deploying {contract.name} failed: {exc}") from None
    if receipt.status != 1:
        raise ChainError(f"deploying {contract.name} reverted")
    return w3.eth.contract(address=receipt.contractAddress, abi=contract.abi), receipt.gasUsed


def verify_onchain(verifier: Contract, call: ProofCall, sender) -> tuple[bool, int | None]:
    """(accepted, gas used by a verify transaction). A rejected proof reverts or returns false; no gas is reported then.
    `sender`: a LocalAccount that signs locally (or an unlocked address)."""
    fn = verifier.functions.verifyProof(call.proof, call.instances)
    try:
        accepted = bool(fn.call({"from": address_of(sender)}))
    except Exception:
        return False, None
    if not accepted:
        return False, None
    receipt = verifier.w3.eth.wait_for_transaction_receipt(send(verifier.w3, fn.build_transaction({"from": address_of(sender)}), sender))
    return receipt.status == 1, receipt.gasUsed
