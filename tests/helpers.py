"""Test helpers shared by the contract, node and demo tests: expecting a custom error, moving chain time, the toy
segment function that `tests/contracts/ToyVerifiers.sol` checks, test-only Solidity sources, and fresh funded accounts
that sign locally (no test sends from an account the node unlocked; tests/conftest.py enforces it)."""

import json
from contextlib import contextmanager
from pathlib import Path

import ezkl
import numpy as np
import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hexbytes import HexBytes
from web3 import Web3

from imo.verifier_contracts.evm import send
from imo.pipeline.keys import dev_account
from imo.circuits.fixed_point import FIELD_MODULUS
from imo.errors import ChainError
from imo.proving.protocol import Claim, pack_tensor, to_field
from imo.verifier_contracts.contracts import protocol_sources
from imo.verifier_contracts.solc import compile_sources

TEST_CONTRACTS = Path(__file__).parent / "contracts"


def reverts(error: str):
    """Expect a transaction to revert with the custom error `error`."""
    return pytest.raises(ChainError, match=rf"\b{error}\(")


@contextmanager
def rolled_back(w3: Web3):
    """Run the block on the chain as it is, then put it back (evm_snapshot / evm_revert), automining again."""
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
        assert w3.provider.make_request("evm_revert", [snapshot])["result"]


# anvil's first dev account (mnemonic "test test test test test test test test test test test junk"), funded at genesis on
# every fresh anvil: for CLI commands that start their own chain, where no fresh key could have been funded first
ANVIL_DEV_KEY = dev_account(0).key.to_0x_hex()
FUNDING_WEI = 10_000 * 10**18  # what anvil gives each of its own dev accounts


def funded_accounts(w3: Web3, n: int, wei: int = FUNDING_WEI) -> list[LocalAccount]:
    """`n` fresh random accounts, each given `wei` with anvil_setBalance. Only this process holds their keys and the
    node never unlocked them, so everything they send is signed here (eth_sendRawTransaction)."""
    accounts = [Account.create() for _ in range(n)]
    for account in accounts:
        response = w3.provider.make_request("anvil_setBalance", [account.address, hex(wei)])
        assert "error" not in response, response
    return accounts


def send_signed(fn, sender: LocalAccount, gas: int, value: int = 0) -> HexBytes:
    """Sign the contract call `fn` as `sender` and send it without waiting for it to be mined (for transactions mined
    together while evm_setAutomine is off): a fixed gas limit, the nonce after the sender's pending transactions."""
    return send(fn.w3, fn.build_transaction({"from": sender.address, "value": value, "gas": gas}), sender)


def float_witness(compiled: Path, workdir: Path, x: np.ndarray, tag: str = "w") -> dict:
    """ezkl's witness of `compiled` for float input x, through an input file in workdir (the floats path on purpose)."""
    inp, out = workdir / f"{tag}_input.json", workdir / f"{tag}_witness.json"
    inp.write_text(json.dumps({"input_data": [np.asarray(x, dtype=np.float64).ravel().tolist()]}))
    return ezkl.gen_witness(str(inp), str(compiled), str(out))


def advance(w3: Web3, seconds: int) -> None:
    """Move chain time forward and mine a block, so calls and gas estimates see the new time."""
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def compile_with_test_contracts() -> dict:
    """The protocol's contracts and every .sol file in tests/contracts, compiled together."""
    extra = {p.name: p.read_text() for p in sorted(TEST_CONTRACTS.glob("*.sol"))}
    return compile_sources({**protocol_sources(), **extra})


def from_field(x: int) -> int:
    return x - FIELD_MODULUS if x > FIELD_MODULUS // 2 else x


class ToyModel:
    """The function `ToyVerifier` is sound for, chained over segments with the given boundary sizes (0: hashed).
    Segment k's output instances are toyOutput(keccak(abi.encode(salt_k, input instances)), i)."""

    def __init__(self, salts: list[int], sizes: list[int]):
        self.salts, self.sizes = salts, sizes

    @staticmethod
    def output(salt: int, inputs: list[int], n_out: int, hashed: bool) -> list[int]:
        seed = keccak(encode(["uint256", "uint256[]"], [salt, inputs]))
        out = []
        for i in range(n_out):
            h = int.from_bytes(keccak(encode(["bytes32", "uint256"], [seed, i])), "big")
            out.append(h % FIELD_MODULUS if hashed else to_field(h % 2001 - 1000))
        return out

    def segment_output(self, k: int, inputs: list[int], plus_one: bool = False) -> list[int]:
        """Segment k's (1-based) output instances from its input instances; `plus_one`: the other answer a
        ToyVerifier with slack 1 accepts (every element + 1)."""
        hashed = self.sizes[k] == 0
        out = self.output(self.salts[k - 1], inputs, 1 if hashed else self.sizes[k], hashed)
        return [(v + 1) % FIELD_MODULUS for v in out] if plus_one else out

    def boundaries(self, input_instances: list[int], plus_one=()) -> list[list[int]]:
        """Every boundary's instances (field elements), from the model input's; segments in `plus_one` (1-based) give
        the +1 answer (valid only where their verifier has slack)."""
        b = [input_instances]
        for k in range(1, len(self.salts) + 1):
            b.append(self.segment_output(k, b[-1], k in plus_one))
        return b

    def claim(self, input_instances: list[int], input_bytes: bytes = b"", proofs_for=(), tamper=None,
              plus_one=()) -> Claim:
        """The honest claim (or one with boundary values changed by `tamper(boundaries)`), with toy proofs of the
        segments in `proofs_for` (1-based) made from the claim's own instances; `plus_one` as in `boundaries`."""
        b = self.boundaries(input_instances, plus_one)
        if tamper:
            tamper(b)
        n = len(self.salts)
        public = lambda k: pack_tensor(np.array([from_field(v) for v in b[k]]))  # noqa: E731
        commitments = tuple(b[k][0] if self.sizes[k] == 0 else 0 for k in range(n + 1))
        proofs = tuple(toy_proof(b[k - 1] + b[k]) for k in proofs_for)
        data = b"".join(public(k) for k in range(1, n) if self.sizes[k])
        return Claim(input_bytes, commitments, data, public(n), proofs)


def tiny_hybrid_plan(root: Path) -> Path:
    """A 3-layer MLP (8→8→8→4) planned zk (private input layer) → op → op and compiled: the nodes' and the operator
    commands' model (its circuits come from the artifact store after the first build)."""
    import torch
    from torch import nn

    from imo.circuits.plan import make_plan, write_plan
    from imo.models.export import export_onnx
    from imo.proving.segments import compile_plan

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    rng = np.random.default_rng(0)
    export_onnx(model, rng.uniform(-1, 1, (1, 8)).astype(np.float32), root / "model.onnx")
    plan_file = write_plan(*make_plan(root / "model.onnx", private_input=True, budget_logrows=1, merge=False), root / "plan")
    compile_plan(plan_file, rng.uniform(-1, 1, (8, 1, 8)).astype(np.float32), quiet=True)
    return plan_file


def toy_proof(instances: list[int]) -> bytes:
    return keccak(encode(["uint256[]"], [instances]))


def own_proof(model: ToyModel, claim: Claim, k: int) -> bytes:
    """A toy proof of segment k (1-based) with the claim's own instances: valid iff the claim is right about k."""
    inputs, outputs = claim.segment_instances(model.sizes, k)
    return toy_proof(inputs + outputs)


def fraud_proof(model: ToyModel, claim: Claim, k: int, plus_one: bool = False) -> tuple[bytes, list[int]]:
    """(proof, output instances) of segment k from the claim's own input boundary: the evidence of a challenge,
    valid whenever the claim's output of k differs from it."""
    inputs, _ = claim.segment_instances(model.sizes, k)
    outputs = model.segment_output(k, inputs, plus_one)
    return toy_proof(inputs + outputs), outputs


# ------------------------------------------------------------------ chain accounting and a restartable anvil


def gas_paid(w3: Web3, after_block: int, sender: str | None = None) -> int:
    """Wei paid for gas by every transaction (or by `sender`'s) mined after block `after_block`."""
    total = 0
    for number in range(after_block + 1, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if sender is None or tx["from"] == sender:
                receipt = w3.eth.get_transaction_receipt(tx["hash"])
                total += receipt.gasUsed * receipt.effectiveGasPrice
    return total


def calls_to(contract, after_block: int, sender: str | None = None) -> list[tuple[str, dict]]:
    """(function name, decoded arguments) of every transaction to `contract` mined after block `after_block`
    (only `sender`'s if given), oldest first."""
    w3, out = contract.w3, []
    for number in range(after_block + 1, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["to"] == contract.address and (sender is None or tx["from"] == sender):
                fn, args = contract.decode_function_input(tx["input"])
                out.append((fn.fn_name, args))
    return out


class RestartableAnvil:
    """An anvil on a fixed free 127.0.0.1 port whose chain survives `stop()` + `start()` (`--state FILE`: loaded at
    start, dumped on SIGTERM), for tests of nodes that lose their RPC. Use as a context manager: stopped on exit."""

    def __init__(self, state_file: Path):
        from imo.pipeline.chain import free_port

        self.state_file = Path(state_file)
        self.port = free_port()
        self.rpc_url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 20.0) -> Web3:
        import subprocess
        import time

        from imo import toolchain
        from imo.pipeline.chain import _die_with_parent, connect

        self.proc = subprocess.Popen(
            [str(toolchain.anvil()), "--host", "127.0.0.1", "--port", str(self.port), "--silent", "--code-size-limit", "100000",
             "--state", str(self.state_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.w3 = connect(self.rpc_url, timeout=1.0).w3
                return self.w3
            except ChainError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (anvil dumps its state), then wait; SIGKILL if it does not exit."""
        import subprocess

        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> "RestartableAnvil":
        self.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop()
