"""The protocol's Solidity contracts: compile them with solc-js, deploy them with web3.py, and record where they are.

`compile_protocol()` compiles every .sol file in this folder (OpenZeppelin comes from node_modules).
`deploy_protocol()` deploys the model's RevShareToken (ERC-7641), its IMO sale, the AIOracle and an example
consumer dapp; `register_model()` and `deploy_nft()` add a model and its ERC-7007 collection. The addresses
go to a `Deployment`, which `write()` saves as deployment.json and `Deployment.read()` loads back.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eth_abi import decode
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from eth_account.signers.local import LocalAccount

from imo.errors import ChainError, MissingArtifactError
from imo.fsutil import atomic_write_bytes
from imo.verifier_contracts.evm import address_of, deploy, send
from imo.verifier_contracts.solc import CompiledContract, compile_sources

SOURCES_DIR = Path(__file__).parent
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617


Sender = str | LocalAccount



def protocol_sources() -> dict[str, str]:
    """{file name: Solidity source} of every contract in this folder."""
    return {path.name: path.read_text() for path in sorted(SOURCES_DIR.glob("*.sol"))}


def compile_protocol(optimizer_runs: int = 200) -> dict[str, CompiledContract]:
    """Every contract of the protocol by name (RevShareToken, ModelOffering, AIOracle, AIGCNFT, OracleConsumer, ...)."""
    return compile_sources(protocol_sources(), optimizer_runs=optimizer_runs)


class ContractRevertError(ChainError):
    """A transaction or call reverted with a custom error: `name` and decoded `args` (the raw data when unknown)."""

    def __init__(self, function: str, name: str, args: tuple):
        self.function, self.name, self.args_ = function, name, args
        super().__init__(f"{function} reverted: {name}({', '.join(str(a) for a in args)})")


def decode_revert(revert_data: str | bytes, contracts: dict[str, CompiledContract] | None = None) -> tuple[str, tuple]:
    """A revert's custom error as (name, args), decoded with the protocol's ABIs (or `contracts`); ("0x…", ()) if unknown."""
    data = bytes.fromhex(revert_data.removeprefix("0x")) if isinstance(revert_data, str) else bytes(revert_data)
    for contract in (contracts or compile_protocol()).values():
        for item in contract.abi:
            if item["type"] != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            if Web3.keccak(text=f"{item['name']}({','.join(types)})")[:4] == data[:4]:
                return item["name"], tuple(decode(types, data[4:])) if types else ()
    return "0x" + data.hex(), ()


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + param["type"][len("tuple"):]
    return param["type"]


@dataclass(frozen=True)
class TokenConfig:
    """RevShareToken: the supply is minted to the deployer; `claim_share_bps` of each snapshot's revenue is claimable."""

    name: str = "IMO Model Token"
    symbol: str = "IMO"
    supply: int = 1_000_000 * 10**18
    claim_share_bps: int = 6_000
    snapshot_interval_s: int = 3_600
    claim_period_s: int = 30 * 86_400


@dataclass(frozen=True)
class SaleConfig:
    """ModelOffering: `sale_tokens` are moved to the sale; `price_wei` buys `unit_size` token base units."""

    sale_tokens: int = 500_000 * 10**18
    price_wei: int = 10**12
    unit_size: int = 10**18
    soft_cap_wei: int = 10**17
    hard_cap_wei: int = 5 * 10**17
    duration_s: int = 7 * 86_400
    treasury: str | None = None


@dataclass(frozen=True)
class OracleConfig:
    """AIOracle's constructor: the smallest bond a model may ask, how long a request waits before its requester may
    cancel, and the price of callback gas in the fee (paid to the finalizer, who supplies that gas; 2 gwei is a
    realistic mainnet base fee plus tip, checked by nodes against the chain's gas price)."""

    min_bond_wei: int = 10**16
    request_timeout_s: int = 86_400
    callback_gas_price_wei: int = 2 * 10**9


@dataclass
class Deployment:
    """Where the protocol lives on one chain; saved as deployment.json."""

    chain_id: int
    deployer: str
    token: str
    oracle: str
    consumer: str
    offering: str | None = None
    nft: str | None = None
    game: str | None = None  # DisputeGame (bisection disputes); None in a deployment.json written before it existed
    models: dict[str, int] = field(default_factory=dict)
    registrations: dict[str, dict] = field(default_factory=dict)  # name → model id, digest, terms (`imo register`)
    verifiers: dict[str, str] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)
    rpc_url: str | None = None  # where `imo deploy` deployed: the default --rpc-url of later commands
    local_chain: dict | None = None  # a background anvil started by `imo deploy`: pid, state file

    def write(self, path: Path) -> Path:
        atomic_write_bytes(Path(path), json.dumps(asdict(self), indent=2).encode())
        return Path(path)

    @classmethod
    def read(cls, path: Path) -> "Deployment":
        """Load deployment.json; one clear line when it is missing or not a deployment."""
        path = Path(path)
        if not path.is_file():
            raise MissingArtifactError(f"{path} not found; run `imo deploy` first (or pass --deployment FILE)")
        try:
            data = json.loads(path.read_text())
            deployment = cls(**data)
            for name in ("token", "oracle", "consumer"):
                if not Web3.is_address(getattr(deployment, name)):
                    raise ValueError(f"{name} is not an address")
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise MissingArtifactError(f"{path} is not a deployment written by `imo deploy` ({str(exc).splitlines()[0][:120]})") from None
        return deployment

    def contract(self, w3: Web3, name: str) -> Contract:
        """A web3 contract object for `name` (RevShareToken, ModelOffering, AIOracle, OracleConsumer, AIGCNFT)."""
        address = {"RevShareToken": self.token, "ModelOffering": self.offering, "AIOracle": self.oracle,
                   "OracleConsumer": self.consumer, "AIGCNFT": self.nft, "DisputeGame": self.game}[name]
        if address is None:
            raise MissingArtifactError(f"this deployment has no {name}")
        return w3.eth.contract(address=address, abi=compile_protocol()[name].abi)


def deploy_protocol(
    w3: Web3,
    sender: Sender,
    token: TokenConfig = TokenConfig(),
    sale: SaleConfig | None = SaleConfig(),
    oracle: OracleConfig = OracleConfig(),
) -> Deployment:
    """Deploy RevShareToken (supply to `sender`), AIOracle, OracleConsumer, the bisection game (StepVerifier and
    DisputeGame, wired to the oracle) and, unless `sale` is None, a ModelOffering funded with `sale.sale_tokens` whose
    deadline is `sale.duration_s` from the latest block."""
    compiled = compile_protocol()
    gas: dict[str, int] = {}
    me = address_of(sender)
    token_contract, gas["RevShareToken"] = deploy(
        w3, compiled["RevShareToken"], sender, token.name, token.symbol, token.supply, me,
        token.claim_share_bps, token.snapshot_interval_s, token.claim_period_s,
    )
    oracle_contract, gas["AIOracle"] = deploy(
        w3, compiled["AIOracle"], sender, oracle.min_bond_wei, oracle.request_timeout_s, oracle.callback_gas_price_wei
    )
    consumer, gas["OracleConsumer"] = deploy(w3, compiled["OracleConsumer"], sender, oracle_contract.address)
    step_verifier, gas["StepVerifier"] = deploy(w3, compiled["StepVerifier"], sender)
    game, gas["DisputeGame"] = deploy(w3, compiled["DisputeGame"], sender, oracle_contract.address, step_verifier.address)
    gas["setDisputeGame"] = transact(oracle_contract.functions.setDisputeGame(game.address), sender).gasUsed
    deployment = Deployment(
        chain_id=w3.eth.chain_id, deployer=me, token=token_contract.address, oracle=oracle_contract.address,
        consumer=consumer.address, gas=gas, game=game.address,
    )
    if sale is not None:
        deadline = w3.eth.get_block("latest")["timestamp"] + sale.duration_s
        offering, gas["ModelOffering"] = deploy(
            w3, compiled["ModelOffering"], sender, token_contract.address, sale.treasury or me, sale.price_wei,
            sale.unit_size, sale.soft_cap_wei, sale.hard_cap_wei, deadline,
        )
        transact(token_contract.functions.transfer(offering.address, sale.sale_tokens), sender)
        deployment.offering = offering.address
    return deployment


def deploy_nft(w3: Web3, sender: Sender, deployment: Deployment, model_id: int, mint_fee_wei: int = 10**15,
               royalty_bps: int = 500, name: str = "IMO AIGC", symbol: str = "AIGC") -> str:
    """Deploy the ERC-7007 collection of a registered 64-output (8x8 image) model."""
    nft, deployment.gas["AIGCNFT"] = deploy(
        w3, compile_protocol()["AIGCNFT"], sender, name, symbol, deployment.oracle, model_id, mint_fee_wei, royalty_bps
    )
    deployment.nft = nft.address
    return nft.address


def transact(fn, sender: Sender, value: int = 0, gas: int | None = None):
    """Send a contract call as a transaction and return its receipt; a revert becomes a ContractRevertError, any
    other failure one ChainError line. A LocalAccount signs locally (any RPC); an address must be unlocked (anvil)."""
    params = {"from": address_of(sender), "value": value}
    if gas is not None:
        params["gas"] = gas
    w3 = fn.w3
    try:
        if gas is not None:
            fn.call(params, block_identifier="pending")  # with a fixed gas limit there is no estimate to surface the revert reason
        else:  # estimated against the next block: a reveal must come in a later block than its commitment
            params["gas"] = fn.estimate_gas(params, block_identifier="pending") * 6 // 5
        receipt = w3.eth.wait_for_transaction_receipt(send(w3, fn.build_transaction(params), sender))
    except ContractCustomError as exc:
        raise ContractRevertError(fn.fn_name, *decode_revert(exc.data)) from None
    except Exception as exc:
        raise ChainError(f"{fn.fn_name} failed: {str(exc).splitlines()[0][:300]}") from None
    if receipt.status != 1:
        raise ChainError(f"{fn.fn_name} reverted")
    return receipt


def pay(w3: Web3, sender: Sender, to: str, value: int):
    """Send `value` wei from `sender` to `to` (an account, or a contract's receive()) and return the receipt; signed
    like `transact`: a LocalAccount locally, an address by the node that unlocked it."""
    tx = {"from": address_of(sender), "to": to, "value": value}
    try:
        tx["gas"] = w3.eth.estimate_gas(tx)
        receipt = w3.eth.wait_for_transaction_receipt(send(w3, tx, sender))
    except Exception as exc:
        raise ChainError(f"paying {value} wei to {to} failed: {str(exc).splitlines()[0][:300]}") from None
    if receipt.status != 1:
        raise ChainError(f"paying {value} wei to {to} reverted")
    return receipt
