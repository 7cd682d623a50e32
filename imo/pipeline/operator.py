"""The operator's side: deploy the protocol on a chain (`imo deploy`) and register a compiled plan (`imo register`).
Both sign locally (imo.pipeline.keys); without --rpc-url, `imo deploy` starts a local anvil in the background whose
state is kept beside deployment.json, so the later commands find the same chain."""

import os
import signal
from dataclasses import asdict
from pathlib import Path

from imo.circuits.plan import Plan
from imo.pipeline.chain import connect, start_background_anvil
from imo.verifier_contracts.contracts import Deployment, OracleConfig, SaleConfig, TokenConfig, address_of, deploy_protocol
from imo.verifier_contracts.oracle_client import OracleClient
from imo.verifier_contracts.registration import Terms, register_plan

DEPLOYMENT_FILE = "deployment.json"


def deploy(out_dir: Path, signer, rpc_url: str | None = None, token: TokenConfig = TokenConfig(), sale: SaleConfig | None = SaleConfig(),
           oracle: OracleConfig = OracleConfig()) -> Deployment:
    """Deploy RevShareToken + its sale, AIOracle and the example consumer; write out_dir/deployment.json atomically."""
    out_dir = Path(out_dir)
    local = None
    if rpc_url is None:
        state = out_dir.resolve() / "anvil-state.json"
        rpc_url, pid = start_background_anvil(state)
        local = {"pid": pid, "state": state.name}  # beside deployment.json
    try:
        w3 = connect(rpc_url).w3
        deployment = deploy_protocol(w3, signer, token, sale, oracle)
    except BaseException:
        if local:  # nothing was written: leave no chain running either
            os.kill(local["pid"], signal.SIGTERM)
        raise
    deployment.rpc_url, deployment.local_chain = rpc_url, local
    deployment.write(out_dir / DEPLOYMENT_FILE)
    return deployment


def register(deployment_file: Path, plan_file: Path, signer, rpc_url: str | None, name: str | None, terms: Terms) -> dict:
    """Deploy the plan's verifiers and register it; records the model in deployment.json; returns what was done."""
    deployment = Deployment.read(deployment_file)
    w3 = connect(rpc_url or deployment.rpc_url or _no_url(deployment_file)).w3
    plan = Plan.load(plan_file)
    name = name or Path(plan.model).stem
    oracle = OracleClient(w3, deployment.oracle, signer)
    model_id, digest, costs = register_plan(oracle, deployment, plan_file, name, terms)
    deployment.write(deployment_file)
    return {"name": name, "model_id": model_id, "digest": "0x" + digest.hex(), "plan_hash": plan.plan_hash,
            "boundary_sizes": plan.boundary_sizes(), "terms": asdict(terms), "dispute_costs": asdict(costs),
            "registrant": address_of(oracle.sender), "verifiers": {k: v for k, v in deployment.verifiers.items() if k.startswith(f"{name}/")}}


def _no_url(deployment_file: Path) -> str:
    from imo.errors import ChainError

    raise ChainError(f"{deployment_file} records no RPC URL; pass --rpc-url")
