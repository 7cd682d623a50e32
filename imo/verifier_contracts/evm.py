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


def deploy(w3: Web3, contract: CompiledContract, sender, *args) -> tuple[Contract, int]:
    """Deploy and return (contract, gas used). `sender`: an unlocked address, or a LocalAccount that signs locally."""
    factory = w3.eth.contract(abi=contract.abi, bytecode=contract.bytecode)
    try:
        constructor = factory.constructor(*args)
        if isinstance(sender, str):
            tx_hash = constructor.transact({"from": sender})
        else:
            tx = constructor.build_transaction({"from": sender.address, "nonce": w3.eth.get_transaction_count(sender.address, "pending")})
            tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    except Exception as exc:
        raise ChainError(f"deploying {contract.name} failed: {exc}") from None
    if receipt.status != 1:
        raise ChainError(f"deploying {contract.name} reverted")
    return w3.eth.contract(address=receipt.contractAddress, abi=contract.abi), receipt.gasUsed


def verify_onchain(verifier: Contract, call: ProofCall, sender) -> tuple[bool, int | None]:
    """(accepted, gas used by a verify transaction). A rejected proof reverts or returns false; no gas is reported then.
    `sender`: a LocalAccount that signs locally (or an unlocked address)."""
    w3 = verifier.w3
    fn = verifier.functions.verifyProof(call.proof, call.instances)
    address = sender if isinstance(sender, str) else sender.address
    try:
        accepted = bool(fn.call({"from": address}))
    except Exception:
        return False, None
    if not accepted:
        return False, None
    if isinstance(sender, str):
        tx_hash = fn.transact({"from": sender})
    else:
        tx = fn.build_transaction({"from": address, "nonce": w3.eth.get_transaction_count(address, "pending")})
        tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    return receipt.status == 1, receipt.gasUsed
