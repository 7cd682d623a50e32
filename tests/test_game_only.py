"""Game-only op segments (registered with a step program and no whole-segment ezkl verifier) and `imo bench --dispute`.

- The registry accepts an op segment with verifier zero only when it has a step program; its code hash in the
  digest is zero, and the Python side (`Registration`, `OracleClient.model`) computes the same digest.
- A challenge with a proof of such a segment reverts with AIOracleNoVerifier; a proofless one opens the game.
- The dispute bench's flow (a liar lying at a random GEMM tile, the challenger opening the game, both played by
  `GameSide`) on a small MLP on anvil: the liar is slashed, every transaction <= 5M gas. mlp-4k's: slow.
- `imo bench --dispute` without mlp-4k's export fails with one line.
"""

import json

import numpy as np
import onnx
import pytest
from eth_utils import keccak
from onnx import TensorProto, helper, numpy_helper

from helpers import funded_accounts, reverts, rolled_back
from imo.circuits.fixed_point import quantize
from imo.pipeline.bench_dispute import MAX_TX_GAS, run_dispute, step_settings
from imo.proving.protocol import NO_VERIFIER, Claim, ModelSpec, Registration, SegmentSpec, pack_tensor, verifier_code_hash
from imo.proving.trace import StepProgram
from imo.verifier_contracts.contracts import OracleConfig, deploy_protocol
from imo.verifier_contracts.oracle_client import OracleClient

ETH = 10**18
BOND = 2 * 10**16


def mlp(seed=0, k=64, h=48, out=10) -> onnx.ModelProto:
    """Gemm → Relu → Gemm → Relu → Gemm: a small stand-in for mlp-4k (same ops, same public 64 → 10 boundaries)."""
    rng = np.random.default_rng(seed)

    def const(name, a):
        return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)

    inits = [const("w1", rng.normal(0, 1.5 / np.sqrt(k), (h, k))), const("b1", rng.normal(0, 0.2, h)),
             const("w2", rng.normal(0, 1.5 / np.sqrt(h), (h, h))), const("b2", rng.normal(0, 0.2, h)),
             const("w3", rng.normal(0, 1 / np.sqrt(h), (out, h))), const("b3", rng.normal(0, 0.2, out))]
    nodes = [helper.make_node("Gemm", ["input", "w1", "b1"], ["g1"], transB=1), helper.make_node("Relu", ["g1"], ["a1"]),
             helper.make_node("Gemm", ["a1", "w2", "b2"], ["g2"], transB=1), helper.make_node("Relu", ["g2"], ["a2"]),
             helper.make_node("Gemm", ["a2", "w3", "b3"], ["output"], transB=1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, out])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def small():
    program = StepProgram.build(mlp(), step_settings())
    x_q = quantize(np.random.default_rng(3).uniform(0, 1, program.input_shape).astype(np.float32), 7)
    return program, x_q


@pytest.fixture(scope="module")
def world(chain, small):
    program, _ = small
    w3 = chain.w3
    owner, requester, operator, challenger = funded_accounts(w3, 4, wei=100 * ETH)
    dep = deploy_protocol(w3, owner, sale=None, oracle=OracleConfig(min_bond_wei=BOND))
    oracle = OracleClient(w3, dep.oracle, owner)
    spec = ModelSpec(keccak(b"game-only"), keccak(b"plan"), dep.token, 10**15, BOND, 2_000, 600, 600, 7)
    return dict(w3=w3, dep=dep, oracle=oracle, spec=spec, program=program, owner=owner, requester=requester,
                operator=operator, challenger=challenger)


def test_a_game_only_segment_registers_and_its_digest_matches_python(world, small):
    program, _ = small
    oracle, spec = world["oracle"], world["spec"]
    seg = SegmentSpec(NO_VERIFIER, False, program.root, program.n_steps)
    assert seg.game_only and not SegmentSpec(NO_VERIFIER, False).game_only
    with rolled_back(world["w3"]):
        model_id, digest, _ = oracle.register(spec, [seg], [program.input_size, program.output_size])
        expected = Registration(spec, (seg,), (program.input_size, program.output_size), (b"\x00" * 32,))
        assert digest == expected.digest() == oracle.model(model_id).digest
        assert oracle.model(model_id).registration == expected  # code hash of the zero verifier read back as zero
        assert verifier_code_hash(NO_VERIFIER, b"") == b"\x00" * 32
        assert verifier_code_hash(world["dep"].oracle, b"\x01") == keccak(b"\x01")


@pytest.mark.parametrize("segment, why", [
    (lambda p: SegmentSpec(NO_VERIFIER, False), "an op segment without a program still needs a verifier"),
    (lambda p: SegmentSpec(NO_VERIFIER, True), "a zk segment always needs a verifier"),
])
def test_a_segment_without_a_verifier_needs_a_step_program(world, small, segment, why):
    program, _ = small
    with rolled_back(world["w3"]), reverts("AIOracleInvalidVerifier"):
        world["oracle"].register(world["spec"], [segment(program)], [program.input_size, program.output_size])


def test_a_proof_challenge_of_a_game_only_segment_reverts_and_a_proofless_one_opens_the_game(world, small):
    program, x_q = small
    w = world
    with rolled_back(w["w3"]):
        oracle = w["oracle"]
        model_id, _, _ = oracle.register(w["spec"], [SegmentSpec(NO_VERIFIER, False, program.root, program.n_steps)],
                                         [program.input_size, program.output_size])
        packed = pack_tensor(x_q)
        rid, _ = oracle.as_sender(w["requester"]).request_callback(model_id, packed)
        out = program.execute(x_q).output.copy()
        out[0] += 1
        claim = Claim(packed, (0, 0), b"", pack_tensor(out), ())
        oracle.as_sender(w["operator"]).submit(rid, claim, bond=BOND)
        with reverts("AIOracleNoVerifier"):
            oracle.as_sender(w["challenger"]).challenge(rid, 1, claim, b"\x01" * 64, [0] * program.output_size, bond=BOND)
        oracle.as_sender(w["challenger"]).open_game(rid, 1, claim, bond=BOND)
        assert not oracle.dispute(rid, 1).open and oracle.claim(rid).open_disputes == 1  # a game, not a fraud-proof dispute


def test_the_dispute_flow_on_a_small_mlp_slashes_the_liar(chain, small):
    program, x_q = small
    with rolled_back(chain.w3):
        r = run_dispute(program, x_q, chain.w3, seed=1)
    assert r["liar_lost"] and r["game_status"] == "CHALLENGER_WON" and r["request_status_after"] == "PENDING"
    assert r["lie_kind"] == "GEMM" and r["disputed_step"] == r["lie_at"] >= program.n_steps // 2
    assert r["one_step"]["kind"] == "GEMM" and r["rounds"] == program.depth
    assert r["max_tx_gas"] <= MAX_TX_GAS
    assert r["gas_by_move"]["choose"]["n"] == program.depth and r["gas_by_move"]["step"]["n"] == 1


def test_bench_dispute_cli_without_the_export_fails_in_one_line(tmp_path, monkeypatch, capsys):
    from imo.pipeline import cli

    monkeypatch.setenv("IMO_CACHE", str(tmp_path / "empty-cache"))
    assert cli.main(["bench", "--dispute", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "mlp-4k" in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "dispute.json").exists()


@pytest.mark.slow
def test_bench_dispute_on_mlp_4k(tmp_path):
    """The issue's scale: mlp-4k (~101M MACs) as one game-only op segment; a liar at a deep GEMM tile loses."""
    from imo.models import cached_export
    from imo.pipeline.bench_dispute import bench_dispute

    cached_export("mlp-4k")
    r = bench_dispute(tmp_path, progress=True)
    saved = json.loads((tmp_path / "dispute.json").read_text())
    for key in ("max_tx_gas", "total_gas", "rounds", "segment_macs", "segment_est_logrows", "liar_lost"):
        assert key in saved
    assert r["liar_lost"] and r["segment_macs"] >= 10**8 and r["segment_est_logrows"] >= 21
    assert r["max_tx_gas"] <= MAX_TX_GAS
    assert r["total_gas"] <= 10_000_000
    assert (tmp_path / "dispute.md").read_text().startswith("dispute (mlp-4k")
