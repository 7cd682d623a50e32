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

from imo.errors import ChainError, MissingArtifactError
from imo.fsutil import atomic_write_bytes
from imo.verifier_contracts.evm import deploy
from imo.verifier_contracts.solc import CompiledContract, compile_sources

SOURCES_DIR = Path(__file__).parent
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617


def protocol_sources() -> dict[str, str]:
    """{file name: Solidity source} of every contract in this folder."""
    return {path.name: path.read_text() for path in sorted(SOURCES_DIR.glob("*.sol"))}


def compile_protocol(optimizer_runs: int = 200) -> dict[str, CompiledContract]:
    """Every contract of the protocol by name (RevShareToken, ModelOffering, AIOracle, AIGCNFT, OracleConsumer, ...)."""
    return compile_sources(protocol_sources(), optimizer_runs=optimizer_runs)


def error_name(revert_data: str | bytes, contracts: dict[str, CompiledContract] | None = None) -> str:
    """A revert's custom error as `Name(arg, ...)`, decoded with the protocol's ABIs (or `contracts`); the raw hex if unknown."""
    data = bytes.fromhex(revert_data.removeprefix("0x")) if isinstance(revert_data, str) else bytes(revert_data)
    for contract in (contracts or compile_protocol()).values():
        for item in contract.abi:
            if item["type"] != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            if Web3.keccak(text=f"{item['name']}({','.join(types)})")[:4] == data[:4]:
                args = decode(types, data[4:]) if types else ()
                return f"{item['name']}({', '.join(str(a) for a in args)})"
    return "0x" + data.hex()


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
    min_bond_wei: int = 10**16
    request_timeout_s: int = 86_400
    callback_gas_price_wei: int = 0


@dataclass(frozen=True)
class SegmentSpec:
    """One segment of a registered plan: its ezkl verifier and whether its proof is checked at submit (zk) or only
    on challenge (op)."""

    verifier: str
    zk: bool


@dataclass(frozen=True)
class ModelSpec:
    """The AIOracle registration of a model (mirrors `AIOracle.ModelSpec`)."""

    onnx_hash: bytes
    plan_hash: bytes
    rev_share_token: str
    fee_wei: int
    operator_share_bps: int
    challenge_window_s: int
    output_size: int
    scale: int

    def as_tuple(self) -> tuple:
        return (self.onnx_hash, self.plan_hash, self.rev_share_token, self.fee_wei, self.operator_share_bps,
                self.challenge_window_s, self.output_size, self.scale)


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
    models: dict[str, int] = field(default_factory=dict)
    verifiers: dict[str, str] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        atomic_write_bytes(Path(path), json.dumps(asdict(self), indent=2).encode())
        return Path(path)

    @classmethod
    def read(cls, path: Path) -> "Deployment":
        if not Path(path).is_file():
            raise MissingArtifactError(f"{path} not found; run `imo deploy` first")
        return cls(**json.loads(Path(path).read_text()))

    def contract(self, w3: Web3, name: str) -> Contract:
        """A web3 contract object for `name` (RevShareToken, ModelOffering, AIOracle, OracleConsumer, AIGCNFT)."""
        address = {"RevShareToken": self.token, "ModelOffering": self.offering, "AIOracle": self.oracle,
                   "OracleConsumer": self.consumer, "AIGCNFT": self.nft}[name]
        if address is None:
            raise MissingArtifactError(f"this deployment has no {name}")
        return w3.eth.contract(address=address, abi=compile_protocol()[name].abi)


def deploy_protocol(
    w3: Web3,
    sender: str,
    token: TokenConfig = TokenConfig(),
    sale: SaleConfig | None = SaleConfig(),
    oracle: OracleConfig = OracleConfig(),
) -> Deployment:
    """Deploy RevShareToken (supply to `sender`), AIOracle, OracleConsumer and, unless `sale` is None, a ModelOffering
    funded with `sale.sale_tokens` whose deadline is `sale.duration_s` from the latest block."""
    compiled = compile_protocol()
    gas: dict[str, int] = {}
    token_contract, gas["RevShareToken"] = deploy(
        w3, compiled["RevShareToken"], sender, token.name, token.symbol, token.supply, sender,
        token.claim_share_bps, token.snapshot_interval_s, token.claim_period_s,
    )
    oracle_contract, gas["AIOracle"] = deploy(
        w3, compiled["AIOracle"], sender, oracle.min_bond_wei, oracle.request_timeout_s, oracle.callback_gas_price_wei
    )
    consumer, gas["OracleConsumer"] = deploy(w3, compiled["OracleConsumer"], sender, oracle_contract.address)
    deployment = Deployment(
        chain_id=w3.eth.chain_id, deployer=sender, token=token_contract.address, oracle=oracle_contract.address,
        consumer=consumer.address, gas=gas,
    )
    if sale is not None:
        deadline = w3.eth.get_block("latest")["timestamp"] + sale.duration_s
        offering, gas["ModelOffering"] = deploy(
            w3, compiled["ModelOffering"], sender, token_contract.address, sale.treasury or sender, sale.price_wei,
            sale.unit_size, sale.soft_cap_wei, sale.hard_cap_wei, deadline,
        )
        transact(token_contract.functions.transfer(offering.address, sale.sale_tokens), sender)
        deployment.offering = offering.address
    return deployment


def register_model(w3: Web3, sender: str, deployment: Deployment, name: str, spec: ModelSpec,
                   segments: list[SegmentSpec]) -> int:
    """Register a model with the deployment's AIOracle; records and returns its model id."""
    oracle = deployment.contract(w3, "AIOracle")
    receipt = transact(oracle.functions.registerModel(spec.as_tuple(), [(s.verifier, s.zk) for s in segments]), sender)
    model_id = oracle.events.ModelRegistered().process_receipt(receipt)[0]["args"]["modelId"]
    deployment.models[name] = model_id
    return model_id


def deploy_nft(w3: Web3, sender: str, deployment: Deployment, model_id: int, mint_fee_wei: int = 10**15,
               royalty_bps: int = 500, name: str = "IMO AIGC", symbol: str = "AIGC") -> str:
    """Deploy the ERC-7007 collection of a registered 64-output (8x8 image) model."""
    nft, deployment.gas["AIGCNFT"] = deploy(
        w3, compile_protocol()["AIGCNFT"], sender, name, symbol, deployment.oracle, model_id, mint_fee_wei, royalty_bps
    )
    deployment.nft = nft.address
    return nft.address


def transact(fn, sender: str, value: int = 0, gas: int | None = None):
    """Send a contract call as a transaction and return its receipt; a revert becomes one ChainError line."""
    params = {"from": sender, "value": value}
    if gas is not None:
        params["gas"] = gas
    try:
        if gas is not None:
            fn.call(params)  # with a fixed gas limit there is no estimate to surface the revert reason
        receipt = fn.w3.eth.wait_for_transaction_receipt(fn.transact(params))
    except ContractCustomError as exc:
        raise ChainError(f"{fn.fn_name} reverted: {error_name(exc.data)}") from None
    except Exception as exc:
        raise ChainError(f"{fn.fn_name} failed: {exc}") from None
    if receipt.status != 1:
        raise ChainError(f"{fn.fn_name} reverted")
    return receipt


def to_field(v: int) -> int:
    """A fixed-point integer as ezkl's BN254 field element (negative v is p - |v|)."""
    return v % FIELD_MODULUS


def from_field(x: int) -> int:
    """Inverse of to_field for |v| < p/2."""
    return x - FIELD_MODULUS if x > FIELD_MODULUS // 2 else x
