"""Compiles Solidity with solc-js (the npm `solc` package) through node's standard-JSON interface, cached by input hash."""

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from imo import toolchain
from imo.errors import ToolchainError
from imo.fsutil import atomic_write_bytes, cache_dir

_DRIVER = Path(__file__).with_name("solc_standard_json.cjs")


@dataclass(frozen=True)
class CompiledContract:
    name: str
    abi: list
    bytecode: str
    runtime: str  # deployed bytecode, hex: its keccak256 is the deployed contract's code hash (no immutables)

    @property
    def runtime_size(self) -> int:
        return len(self.runtime) // 2


def compile_sources(sources: dict[str, str], optimizer_runs: int = 200, via_ir: bool = False) -> dict[str, CompiledContract]:
    """Compile {file name: source} and return every contract by name. Errors from solc become one ToolchainError."""
    standard_input = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sorted(sources.items())},
        "settings": {
            "optimizer": {"enabled": True, "runs": optimizer_runs},
            "viaIR": via_ir,
            "evmVersion": "cancun",
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }
    modules = toolchain.node_modules()
    payload = json.dumps(standard_input, sort_keys=True).encode()
    solc_version = json.loads((modules / "solc" / "package.json").read_text())["version"]
    key = hashlib.sha256(payload + solc_version.encode()).hexdigest()
    cached = cache_dir("solc") / f"{key}.json"
    if cached.is_file():
        output = json.loads(cached.read_text())
    else:
        output = _run_solc(payload, modules)
        atomic_write_bytes(cached, json.dumps(output).encode())
    return {
        name: CompiledContract(name, c["abi"], c["evm"]["bytecode"]["object"], c["evm"]["deployedBytecode"]["object"])
        for file_contracts in output["contracts"].values()
        for name, c in file_contracts.items()
    }


def _run_solc(payload: bytes, modules: Path) -> dict:
    proc = subprocess.run([toolchain.node(), str(_DRIVER), str(modules)], input=payload, capture_output=True)
    if proc.returncode != 0:
        raise ToolchainError(f"solc-js failed: {proc.stderr.decode().strip().splitlines()[-1:]}")
    output = json.loads(proc.stdout)
    errors = [e for e in output.get("errors", []) if e["severity"] == "error"]
    if errors:
        raise ToolchainError(f"solc: {errors[0]['formattedMessage'].strip().splitlines()[0]}")
    return output
