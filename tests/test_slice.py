"""The zk vertical slice: a zoo model proven with ezkl, verified off-chain and by its Solidity verifier on anvil."""

import json
import subprocess
import sys

import ezkl
import pytest
from eth_abi import decode

from imo.errors import ChainError
from imo.pipeline import chain as chain_mod
from imo.pipeline.cli import main
from imo.pipeline.slice import verify_proof_onchain
from imo.proving import prover
from imo.proving.circuit import CircuitFiles
from imo.verifier_contracts.evm import ProofCall, compile_verifier, deploy, verify_onchain


@pytest.fixture(scope="module")
def verifier(proved_mlp, chain):
    contract, _ = deploy(chain.w3, compile_verifier(CircuitFiles(proved_mlp).verifier_sol), chain.signer)
    return contract


def test_proof_verifies_offchain(proved_mlp):
    assert prover.verify(CircuitFiles(proved_mlp)) >= 0


def test_proven_output_matches_onnxruntime_within_calibrated_tolerance(proved_mlp):
    report = json.loads((proved_mlp / "report.json").read_text())["proof"]
    worst = max(abs(a - b) for a, b in zip(report["output"][0], report["onnxruntime_output"][0]))
    assert worst == report["max_abs_error"] <= report["tolerance"] < 0.05


def test_proof_verifies_onchain_and_reports_gas(proved_mlp, chain):
    result = verify_proof_onchain(proved_mlp, chain)
    assert result.accepted
    assert 200_000 < result.verify_gas < 1_000_000
    assert result.verifier_runtime_bytes <= 24_576  # EIP-170: deployable on mainnet


def test_calldata_encodes_the_same_arguments_as_ezkl(proved_mlp):
    proof_file = prover.proof_path(CircuitFiles(proved_mlp))
    ezkl_calldata = bytes(ezkl.encode_evm_calldata(str(proof_file), str(proved_mlp / "calldata.bin")))
    (proved_mlp / "calldata.bin").unlink()
    call = ProofCall.from_proof_file(proof_file)
    proof, instances = decode(["bytes", "uint256[]"], ezkl_calldata[4:])
    assert (proof, list(instances)) == (call.proof, call.instances)


def test_proof_with_one_flipped_byte_is_rejected_onchain(proved_mlp, verifier, chain):
    call = ProofCall.from_proof_file(prover.proof_path(CircuitFiles(proved_mlp)))
    tampered = bytearray(call.proof)
    tampered[len(tampered) // 2] ^= 0x01
    assert verify_onchain(verifier, call, chain.signer)[0]
    assert verify_onchain(verifier, ProofCall(bytes(tampered), call.instances), chain.signer) == (False, None)


def test_proof_with_changed_public_instance_is_rejected_onchain(proved_mlp, verifier, chain):
    call = ProofCall.from_proof_file(prover.proof_path(CircuitFiles(proved_mlp)))
    changed = list(call.instances)
    changed[-1] = (changed[-1] + 1) % 21888242871839275222246405745257275088548364400416034343698204186575808495617
    assert verify_onchain(verifier, ProofCall(call.proof, changed), chain.signer) == (False, None)


def test_corrupt_onnx_fails_with_one_line_and_no_output(tmp_path, exported_mlp):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes((exported_mlp / "model.onnx").read_bytes()[:200])
    out = tmp_path / "proof"
    proc = subprocess.run([sys.executable, "-m", "imo.pipeline.cli", "prove", str(bad), str(exported_mlp / "input.json"), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "not a valid ONNX model" in proc.stderr
    assert list(tmp_path.iterdir()) == [bad]


def test_wrong_input_shape_fails_with_one_line_and_no_output(tmp_path, exported_mlp, capsys):
    wrong = tmp_path / "input.json"
    wrong.write_text(json.dumps({"input_data": [[0.5] * 63]}))
    assert main(["prove", str(exported_mlp / "model.onnx"), str(wrong), "--out", str(tmp_path / "proof"), "--quiet"]) == 1
    assert "has 63 values but input" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.json"]


def test_missing_artifact_fails_with_one_line(tmp_path, proved_mlp, capsys):
    incomplete = tmp_path / "proof"
    incomplete.mkdir()
    (incomplete / "proof.json").write_text((proved_mlp / "proof.json").read_text())
    assert main(["verify", str(incomplete)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "settings.json not found" in err


def test_tampered_proof_file_fails_offchain_verify(tmp_path, proved_mlp, capsys):
    copy = tmp_path / "proof"
    copy.mkdir()
    for name in ("settings.json", "vk.key", "circuit.json"):
        (copy / name).write_bytes((proved_mlp / name).read_bytes())
    proof = json.loads((proved_mlp / "proof.json").read_text())
    felt = bytearray(bytes.fromhex(proof["instances"][0][0]))
    felt[0] ^= 1  # little-endian: the lowest bit of the first public input
    proof["instances"][0][0] = felt.hex()
    (copy / "proof.json").write_text(json.dumps(proof))
    assert main(["verify", str(copy)]) == 1
    assert "ezkl verify failed" in capsys.readouterr().err


def test_cli_verify_onchain_prints_gas(proved_mlp, capsys):
    assert main(["verify", str(proved_mlp), "--onchain", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["onchain"]["accepted"] and result["onchain"]["verify_gas"] > 0


def test_unreachable_rpc_url_is_one_clear_error(proved_mlp, capsys):
    port = chain_mod.free_port()
    assert main(["verify", str(proved_mlp), "--onchain", "--rpc-url", f"http://127.0.0.1:{port}"]) == 1
    assert f"no JSON-RPC node answers at http://127.0.0.1:{port}" in capsys.readouterr().err


def test_anvil_is_stopped_when_the_block_raises():
    with pytest.raises(RuntimeError):
        with chain_mod.anvil() as local:
            url = local.rpc_url
            raise RuntimeError("test failure inside the block")
    with pytest.raises(ChainError):
        chain_mod.connect(url, timeout=1.0)
