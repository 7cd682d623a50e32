"""Circuits whose ezkl verifier is too large for one contract (EIP-170: 24,576 bytes of runtime code).

ezkl's own answer is its reusable verifier: one generic contract (`Halo2VerifierReusable`, the same code for every
circuit of an ezkl version) that takes the circuit's verifying key as data, the VKA (`ezkl.create_evm_vka`). imo
turns that into an ordinary `IHalo2Verifier` per circuit, so nothing else changes (AIOracle, registration, nodes):

- The reusable verifier is deployed once per chain through the CREATE2 deployer every EVM chain has
  (0x4e59b448…956c; anvil has it too), so its address is a function of its code alone.
- The circuit's `Verifier.sol` becomes a small adapter, `contract Halo2Verifier`, with the VKA and that address as
  constants: its code hash (what a registration digest covers) commits to the verifying key and, through the CREATE2
  address, to the verifier's code. Its constructor registers the VKA, and reverts if the reusable verifier is absent,
  so a deployed adapter always verifies: an honest proof can never fail for want of a registration.

A verify costs more gas than a specialised verifier (the VKA travels in memory; measured in `imo verify --onchain`)."""

from __future__ import annotations

import struct
from pathlib import Path

import ezkl
from eth_utils import keccak, to_checksum_address

from imo.errors import ChainError, ProofError
from imo.proving.native import call_ezkl
from imo.verifier_contracts.evm import address_of, send
from imo.verifier_contracts.solc import CompiledContract, compile_sources

EIP170_LIMIT = 24_576
CREATE2_DEPLOYER = to_checksum_address("0x4e59b44847b379578588920ca78fbf26c0b4956c")
SALT = b"\x00" * 32
REUSABLE_SOL = "Halo2VerifierReusable.sol"  # beside Verifier.sol in a circuit directory that needs it
REUSABLE_CONTRACT = "Halo2VerifierReusable"


def reusable_sol_path(root: Path) -> Path:
    return Path(root) / REUSABLE_SOL


def needs_reusable(verifier_sol: Path) -> bool:
    """Whether this circuit's Verifier.sol is an adapter for the reusable verifier (written by `make_adapter`)."""
    return reusable_sol_path(Path(verifier_sol).parent).is_file()


def make_adapter(vk: Path, settings: Path, srs: Path, verifier_sol: Path) -> None:
    """Replace `verifier_sol` (ezkl's specialised verifier, too large) with the adapter, and write the reusable
    verifier's source beside it."""
    root = Path(verifier_sol).parent
    vka_file, reusable_sol, abi = root / "vka.bin", reusable_sol_path(root), root / "reusable_abi.json"
    call_ezkl("create_evm_vka", ezkl.create_evm_vka, str(vk), str(settings), str(vka_file), srs_path=str(srs))
    try:  # like the specialised verifier: ezkl writes the source, then fails fetching a native solc
        call_ezkl("create_evm_verifier", ezkl.create_evm_verifier, str(vk), str(settings), str(reusable_sol), str(abi), srs_path=str(srs), reusable=True)
    except ProofError:
        if not reusable_sol.is_file():
            raise
    abi.unlink(missing_ok=True)
    words = read_vka(vka_file)
    vka_file.unlink()
    verifier_sol.write_text(adapter_source(words, reusable_address(compile_reusable(reusable_sol))))


def read_vka(path: Path) -> list[bytes]:
    """ezkl's VKA file: a little-endian u64 word count, then the 32-byte words (bincode of Vec<[u8; 32]>)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    if len(raw) != 8 + 32 * n:
        raise ProofError(f"{path} is not an ezkl VKA ({len(raw)} bytes for {n} words)")
    return [raw[8 + 32 * i: 40 + 32 * i] for i in range(n)]


def compile_reusable(reusable_sol: Path) -> CompiledContract:
    return compile_sources({REUSABLE_SOL: Path(reusable_sol).read_text()})[REUSABLE_CONTRACT]


def reusable_address(compiled: CompiledContract) -> str:
    """Where the CREATE2 deployer puts this code (salt 0): keccak(0xff ‖ deployer ‖ salt ‖ keccak(initcode))[12:]."""
    initcode = bytes.fromhex(compiled.bytecode.removeprefix("0x"))
    return to_checksum_address(keccak(b"\xff" + bytes.fromhex(CREATE2_DEPLOYER[2:]) + SALT + keccak(initcode))[12:])


def ensure_reusable(w3, reusable_sol: Path, sender) -> tuple[str, int]:
    """Deploy the reusable verifier at its CREATE2 address unless it is there already; (address, gas spent)."""
    compiled = compile_reusable(reusable_sol)
    address = reusable_address(compiled)
    if len(w3.eth.get_code(address)) > 0:
        return address, 0
    if len(w3.eth.get_code(CREATE2_DEPLOYER)) == 0:
        raise ChainError(f"this chain has no CREATE2 deployer at {CREATE2_DEPLOYER}; ezkl's reusable verifier cannot be placed")
    initcode = bytes.fromhex(compiled.bytecode.removeprefix("0x"))
    tx = {"from": address_of(sender), "to": CREATE2_DEPLOYER, "data": "0x" + (SALT + initcode).hex()}
    tx["gas"] = w3.eth.estimate_gas(tx)
    receipt = w3.eth.wait_for_transaction_receipt(send(w3, tx, sender))
    if receipt.status != 1 or len(w3.eth.get_code(address)) == 0:
        raise ChainError(f"deploying ezkl's reusable verifier at {address} failed")
    return address, receipt.gasUsed


def adapter_source(words: list[bytes], reusable: str) -> str:
    """An `IHalo2Verifier` for one circuit: its VKA and the reusable verifier's address, constants in its code."""
    return f"""// SPDX-License-Identifier: MIT
// Generated by imo (imo/verifier_contracts/reusable.py): this circuit's ezkl verifier exceeds EIP-170, so proofs are
// checked by ezkl's reusable verifier at REUSABLE (placed by CREATE2: its address commits to its code) with this
// circuit's verifying-key artifact VKA ({len(words)} words).
pragma solidity ^0.8.24;

interface IHalo2VerifierReusable {{
    function registerVka(bytes32[] memory vka) external returns (bytes32);
    function verifyProof(bytes calldata proof, uint256[] calldata instances, bytes32[] memory vka)
        external returns (bool, bytes32, int256[] memory);
}}

contract Halo2Verifier {{
    address public constant REUSABLE = {reusable};
    bytes private constant VKA = hex"{b''.join(words).hex()}";

    constructor() {{
        IHalo2VerifierReusable(REUSABLE).registerVka(_vka());
    }}

    /// @notice True for a valid proof of `instances`; false (never a revert) otherwise.
    function verifyProof(bytes calldata proof, uint256[] calldata instances) external returns (bool) {{
        (bool ok, bytes memory ret) =
            REUSABLE.call(abi.encodeCall(IHalo2VerifierReusable.verifyProof, (proof, instances, _vka())));
        // its return data is (success, digest, rescaled instances) in ezkl's own layout: only the first word is read
        return ok && ret.length >= 32 && uint256(bytes32(ret)) == 1;
    }}

    function _vka() private pure returns (bytes32[] memory words) {{
        bytes memory raw = VKA;
        uint256 n = raw.length / 32;
        words = new bytes32[](n);
        for (uint256 i = 0; i < n; ++i) {{
            bytes32 w;
            assembly ("memory-safe") {{
                w := mload(add(add(raw, 0x20), mul(i, 0x20)))
            }}
            words[i] = w;
        }}
    }}
}}
"""


def deploy_circuit_verifier(w3, verifier_sol: Path, sender):
    """Deploy a circuit's verifier (placing the reusable verifier first where its Verifier.sol is an adapter);
    returns (contract, compiled, gas of this circuit's deployment)."""
    from imo.verifier_contracts.evm import compile_verifier, deploy

    extra = 0
    if needs_reusable(verifier_sol):
        _, extra = ensure_reusable(w3, reusable_sol_path(Path(verifier_sol).parent), sender)
    compiled = compile_verifier(verifier_sol)
    contract, gas = deploy(w3, compiled, sender)
    return contract, compiled, gas + extra
