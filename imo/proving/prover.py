"""Prove one inference with a compiled circuit, and verify a proof off-chain."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import ezkl
import numpy as np

from imo.errors import ProofError
from imo.proving import onnx_io
from imo.proving.circuit import CircuitFiles, dequantized_outputs, write_input
from imo.proving.native import call_ezkl


@dataclass
class ProofReport:
    output: list[list[float]]
    onnxruntime_output: list[list[float]]
    max_abs_error: float
    tolerance: float
    proof_bytes: int
    seconds: dict


def proof_path(files: CircuitFiles) -> Path:
    return files.root / "proof.json"


def prove(files: CircuitFiles, x: np.ndarray, srs_file: Path | None = None) -> ProofReport:
    """Witness and proof for input x; the dequantized output is checked against onnxruntime within the circuit's tolerance."""
    files.require(files.settings, files.compiled, files.pk, files.report)
    circuit = json.loads(files.report.read_text())
    input_file, witness_file = files.root / "input.json", files.root / "witness.json"
    write_input(input_file, x)
    seconds = {}
    start = time.perf_counter()
    witness = call_ezkl("witness", ezkl.gen_witness, str(input_file), str(files.compiled), str(witness_file))
    seconds["witness"] = round(time.perf_counter() - start, 3)
    seconds["prove"] = prove_witness(files, witness_file, proof_path(files), srs_file)
    got = dequantized_outputs(witness, circuit["output_scales"])
    want = [o.ravel() for o in onnx_io.run_onnxruntime(files.onnx, x)]
    error = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
    if error > circuit["tolerance"]:
        raise ProofError(f"proven output differs from onnxruntime by {error:.4g} > tolerance {circuit['tolerance']:.4g}; recalibrate with inputs like this one (--calibration)")
    return ProofReport(
        output=[g.tolist() for g in got],
        onnxruntime_output=[w.tolist() for w in want],
        max_abs_error=error,
        tolerance=circuit["tolerance"],
        proof_bytes=len(bytes.fromhex(json.loads(proof_path(files).read_text())["hex_proof"].removeprefix("0x"))),
        seconds=seconds,
    )


def prove_witness(files: CircuitFiles, witness_file: Path, proof_file: Path, srs_file: Path | None = None) -> float:
    """Prove a witness with the circuit's proving key; return the seconds it took."""
    files.require(files.compiled, files.pk, files.settings)
    srs = srs_file or files.srs()
    start = time.perf_counter()
    call_ezkl("prove", ezkl.prove, str(witness_file), str(files.compiled), str(files.pk), str(proof_file), srs_path=str(srs))
    return round(time.perf_counter() - start, 3)


def verify(files: CircuitFiles, srs_file: Path | None = None, proof_file: Path | None = None) -> float:
    """Verify a proof (default: the circuit directory's own proof.json) off-chain; return the seconds it took or raise ProofError."""
    proof_file = proof_file or proof_path(files)
    files.require(proof_file, files.settings, files.vk)
    srs = srs_file or files.srs()
    start = time.perf_counter()
    call_ezkl("verify", ezkl.verify, str(proof_file), str(files.settings), str(files.vk), srs_path=str(srs))
    return round(time.perf_counter() - start, 3)
