"""`imo demo`: the story so far, told step by step on a fresh embedded anvil (or --rpc-url).

Export a zoo model trained on real digits → compile and prove one inference with ezkl → verify off-chain →
deploy the generated Solidity verifier → verify on-chain → show a tampered proof rejected."""

import time
from dataclasses import asdict
from pathlib import Path

from imo.models import export_model
from imo.pipeline.chain import chain
from imo.pipeline.slice import prove_model, verify_proof_onchain
from imo.proving import prover
from imo.proving.circuit import CircuitFiles
from imo.verifier_contracts.evm import ProofCall, compile_verifier, verify_onchain

DEMO_MODEL = "mlp"


def run_demo(workdir: Path, rpc_url: str | None = None, quiet: bool = False) -> dict:
    """Run every step, print one line per step, and return the summary (timings, sizes, gas)."""
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - start, 3)
        return result

    say = print
    say(f"[1/5] training `{DEMO_MODEL}` on sklearn digits and exporting ONNX …")
    exported = timed("export", export_model, DEMO_MODEL, workdir / DEMO_MODEL)
    model_dir = exported.onnx_path.parent
    say(f"      {exported.onnx_path} (+ input.json, card.json)")

    say("[2/5] compiling the ezkl circuit and proving one inference …")
    proof_dir = workdir / f"{DEMO_MODEL}-proof"
    proved = timed("prove", prove_model, exported.onnx_path, exported.input_path, proof_dir, model_dir / "calibration.json", quiet=quiet)
    circuit, proof = proved["circuit"], proved["proof"]
    predicted = max(range(len(proof["output"][0])), key=proof["output"][0].__getitem__)
    say(f"      logrows {circuit['logrows']}, pk {circuit['pk_bytes'] / 1e6:.0f} MB, proof {proof['proof_bytes']} B; the model says digit {predicted}; "
        f"|circuit − onnxruntime| ≤ {proof['max_abs_error']:.2g} (tolerance {proof['tolerance']:.2g})")

    say("[3/5] verifying the proof off-chain …")
    files = CircuitFiles(proof_dir)
    offchain_seconds = timed("verify_offchain", prover.verify, files)
    say(f"      valid ({offchain_seconds:.3f} s)")

    with chain(rpc_url) as node:
        say(f"[4/5] deploying the generated Solidity verifier to {node.rpc_url} and verifying on-chain …")
        onchain = timed("verify_onchain", verify_proof_onchain, proof_dir, node)
        say(f"      accepted: {onchain.accepted}; deploy {onchain.deploy_gas:,} gas, verify {onchain.verify_gas:,} gas")

        say("[5/5] the same proof with one byte flipped …")
        call = ProofCall.from_proof_file(prover.proof_path(files))
        tampered = bytearray(call.proof)
        tampered[len(tampered) // 2] ^= 1
        verifier = node.w3.eth.contract(address=onchain.verifier_address, abi=compile_verifier(files.verifier_sol).abi)
        tampered_accepted, _ = verify_onchain(verifier, ProofCall(bytes(tampered), call.instances), node.accounts[0])
        say(f"      rejected: {not tampered_accepted}")

    return {
        "model": DEMO_MODEL,
        "predicted_digit": predicted,
        "circuit": circuit,
        "proof": proof,
        "offchain_verify_seconds": offchain_seconds,
        "onchain": asdict(onchain),
        "tampered_proof_rejected": not tampered_accepted,
        "timings": timings,
    }
