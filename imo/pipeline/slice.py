"""The zk vertical slice, one function per step: prove a model monolithically, verify the proof off-chain and on-chain
(and a plan run's zk segments on-chain, each with its own Solidity verifier)."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path


from imo.circuits.plan import Plan
from imo.errors import ImoError, ProofError
from imo.fsutil import atomic_dir
from imo.pipeline.chain import Chain
from imo.proving import onnx_io, prover
from imo.proving.circuit import CircuitFiles, build_circuit
from imo.proving.segments import circuit_files
from imo.verifier_contracts.evm import ProofCall, verify_onchain
from imo.verifier_contracts.reusable import deploy_circuit_verifier


def prove_model(onnx_path: Path, input_path: Path, out_dir: Path, calibration_path: Path | None = None, srs_file: Path | None = None, quiet: bool = False) -> dict:
    """Compile `onnx_path` into a circuit and prove one inference; everything lands in out_dir, or nothing does."""
    sig = onnx_io.signature(onnx_io.load_model(onnx_path))
    x = onnx_io.load_input(input_path, sig)
    calibration = onnx_io.load_batch(calibration_path, sig) if calibration_path else x[None]
    with atomic_dir(out_dir) as tmp:
        files = CircuitFiles(tmp)
        circuit = build_circuit(onnx_path, calibration, files, srs_file=srs_file, quiet=quiet)
        proof = prover.prove(files, x, srs_file=srs_file)
        summary = {"circuit": asdict(circuit), "proof": asdict(proof)}
        (tmp / "report.json").write_text(json.dumps(summary, indent=2))
    return summary


@dataclass
class OnchainResult:
    rpc_url: str
    verifier_address: str
    verifier_runtime_bytes: int
    deploy_gas: int
    verify_gas: int | None
    accepted: bool


def verify_proof_onchain(proof_dir: Path, chain: Chain) -> OnchainResult:
    """Compile the circuit's Solidity verifier, deploy it, and verify the proof in a transaction."""
    files = CircuitFiles(proof_dir)
    call = ProofCall.from_proof_file(prover.proof_path(files))
    sender = chain.require_signer()
    verifier, contract, deploy_gas = deploy_circuit_verifier(chain.w3, files.verifier_sol, sender)
    accepted, gas = verify_onchain(verifier, call, sender)
    return OnchainResult(chain.rpc_url, verifier.address, contract.runtime_size, deploy_gas, gas, accepted)


@dataclass
class SegmentOnchainResult(OnchainResult):
    segment: int = -1


def verify_run_onchain(plan_path: Path, run_dir: Path, chain: Chain) -> list[SegmentOnchainResult]:
    """Every zk segment of a plan run: compile its circuit's Solidity verifier, deploy it, verify the segment's proof in
    a transaction. Raises ProofError naming the first segment whose verifier rejects its proof."""
    plan, plan_dir = Plan.load(plan_path), Path(plan_path).parent
    zk = [s for s in plan.segments if s.mode == "zk"]
    if not zk:
        raise ImoError(f"--onchain: plan {plan_path} has no zk segment, so {run_dir} holds no proof to verify on a chain (op segments are checked by re-execution)")
    sender = chain.require_signer()
    results = []
    for segment in zk:
        call = ProofCall.from_proof_file(Path(run_dir) / f"seg{segment.index}" / "proof.json")
        verifier, contract, deploy_gas = deploy_circuit_verifier(chain.w3, circuit_files(plan_dir, segment).verifier_sol, sender)
        accepted, gas = verify_onchain(verifier, call, sender)
        if not accepted:
            raise ProofError(f"segment {segment.index}'s on-chain verifier at {verifier.address} rejected the proof in {Path(run_dir) / f'seg{segment.index}'}")
        results.append(SegmentOnchainResult(chain.rpc_url, verifier.address, contract.runtime_size, deploy_gas, gas, accepted, segment.index))
    return results
