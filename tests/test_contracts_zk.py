"""The hybrid protocol with real ezkl proofs and the real generated Solidity verifiers on anvil, driven through
`OracleClient` (commit, then reveal). tests/test_contracts.py covers the same contract with `ToyVerifier`; here every
proof is an ezkl proof and every verifier is the one ezkl generated for its circuit.

Two tiny torch segments at scale 7, S_1 = Linear(8, 8) + ReLU and S_2 = Linear(8, 4), compiled into four circuits:

    seg1-hp  S_1, hashed (private) input, public output   [C_0, h_0..h_7]     the zk segment of "hybrid"
    seg2-pp  S_2, public input, public output             [h_0..h_7, y_0..y_3] the op segment of "hybrid" (fraud proofs)
    seg1-hh  S_1, hashed input, hashed output             [C_0, C_1]          segment 1 of "eager"
    seg2-hp  S_2, hashed input, public output             [C_1, y_0..y_3]     segment 2 of "eager"

Models: "hybrid" (zk then op, boundaries [hashed, 8, 4]), "eager" (zk, zk, challenge window 0, boundaries
[hashed, hashed, 4]) and "public" (one op segment on a public input, boundaries [8, 4]). Inputs cross into ezkl as exact
field elements (`write_quantized_input`), as the nodes do. Circuits and proofs are built once per module; set
IMO_TEST_SEGMENTS=DIR to keep them between runs (anything missing is rebuilt; proofs are keyed by verifying key and
input).

Disputes answered by the submitter: an ezkl circuit is a relation, and its rescale admits two outputs only where the
accumulator sits exactly half-way between two multiples of 2**scale; ezkl's prover always takes the same one, so two
valid proofs with different outputs from one input cannot be made without a patched prover. `respond` is therefore
exercised here with real proofs on disputes against dishonest claims (it must revert AIOracleInvalidProof: the liar has
no proof of its claim), and the case where both the challenger's and the submitter's proofs are valid (the claim stands
and the submitter wins the challenger's bond) is covered with `ToyVerifier` slack in tests/test_contracts.py. For the
same reason `respond` has no entry in the gas table here."""

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import ezkl
import numpy as np
import pytest
from eth_abi import encode
from web3 import Web3
from web3.logs import DISCARD

from helpers import advance, funded_accounts, reverts, rolled_back
from imo.circuits.fixed_point import FIELD_MODULUS, FixedPointProgram, poseidon_commitment, quantize, witness_outputs
from imo.proving import prover
from imo.proving.circuit import CircuitFiles, Visibility, build_circuit, write_quantized_input
from imo.proving.native import call_ezkl
from imo.proving.protocol import (
    Claim,
    ModelSpec,
    Registration,
    SegmentSpec,
    claim_from_boundaries,
    felt,
    pack_tensor,
    to_field,
)
from imo.verifier_contracts.contracts import address_of, compile_protocol, deploy_protocol
from imo.verifier_contracts.evm import compile_verifier, deploy
from imo.verifier_contracts.oracle_client import OracleClient, Status

SCALE = 7
FEE = 10**15
BOND = 10**16  # deploy_protocol's default minimum bond
OPERATOR_BPS = 2_000
BPS = 10_000
CHALLENGE_WINDOW = 1_000
RESPONSE_WINDOW = 500
CALLBACK_GAS = 300_000
GAS_PRICE = 2 * 10**9  # deploy_protocol's default callback gas price
TX_GAS_CAP = 1 << 24  # EIP-7825's per-transaction gas limit
EIP170_RUNTIME_LIMIT = 24_576

CIRCUITS = {  # name: (torch segment, visibility)
    "seg1-hp": ("seg1", Visibility("hashed", "public")),
    "seg2-pp": ("seg2", Visibility("public", "public")),
    "seg1-hh": ("seg1", Visibility("hashed", "hashed")),
    "seg2-hp": ("seg2", Visibility("hashed", "public")),
}
SIZES = {"hybrid": [0, 8, 4], "eager": [0, 0, 4], "public": [8, 4]}

# boundary 1 of "hybrid" (= S_2's input) with elements of magnitude >= 2**24: float32 cannot hold most of them
BIG = np.array([[(1 << 24) + 1, -(1 << 24) - 3, (1 << 25) + 7, 5, -9, (1 << 24) + 77, 3, -(1 << 26) - 1]], dtype=np.int64)

# every transaction this module sends: (what, gas used, gas limit)
TRANSACTIONS: list[tuple[str, int, int]] = []


# ---------------------------------------------------------------- real segments, built and proven once


@dataclasses.dataclass(frozen=True)
class Proof:
    """An ezkl proof as the contract takes it, its public instances, and the circuit's (quantized) output."""

    proof: bytes
    instances: list[int]
    output: np.ndarray


def _export_segments(root: Path) -> None:
    import torch
    from torch import nn

    from imo.models.export import export_onnx

    torch.manual_seed(0)
    seg1 = nn.Sequential(nn.Linear(8, 8), nn.ReLU()).eval()
    seg2 = nn.Sequential(nn.Linear(8, 4)).eval()
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (4, 1, 8)).astype(np.float32)
    with torch.no_grad():
        hidden = seg1(torch.tensor(calibration)).numpy()
    export_onnx(seg1, calibration[0], root / "seg1.onnx")
    export_onnx(seg2, hidden[0], root / "seg2.onnx")
    np.save(root / "seg1-calibration.npy", calibration)
    np.save(root / "seg2-calibration.npy", hidden)


def _circuit(root: Path, name: str) -> CircuitFiles:
    files = CircuitFiles(root / name)
    if not files.report.is_file():  # build_circuit writes its report last
        onnx, visibility = CIRCUITS[name]
        build_circuit(root / f"{onnx}.onnx", np.load(root / f"{onnx}-calibration.npy"), files, visibility, scales=[SCALE], quiet=True)
    return files


def _prove(files: CircuitFiles, q: np.ndarray, cache: Path) -> Proof:
    """Prove the circuit on the quantized input q, handed to ezkl as exact field elements; cached by (vk, q)."""
    q = np.asarray(q, dtype=np.int64).reshape(1, 8)
    key = hashlib.sha256(files.vk.read_bytes() + q.astype("<i8").tobytes()).hexdigest()[:20]
    entry = cache / f"{files.root.name}-{key}"
    if not (entry / "proof.json").is_file():
        tmp = cache / f".{entry.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_quantized_input(tmp / "input.json", q)
        witness = call_ezkl("witness", ezkl.gen_witness, str(tmp / "input.json"), str(files.compiled), str(tmp / "witness.json"))
        prover.prove_witness(files, tmp / "witness.json", tmp / "proof.json")
        (tmp / "output.json").write_text(json.dumps([int(v) for v in witness_outputs(witness)[0]]))
        (tmp / "witness.json").unlink()
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
    data = json.loads((entry / "proof.json").read_text())
    return Proof(
        bytes.fromhex(data["hex_proof"].removeprefix("0x")),
        [felt(v) for column in data["instances"] for v in column],
        np.array(json.loads((entry / "output.json").read_text()), dtype=np.int64),
    )


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    """The four circuits, the boundaries of one honest run (q0 → h → y) and every proof the tests use."""
    env = os.environ.get("IMO_TEST_SEGMENTS")
    root = Path(env) if env else tmp_path_factory.mktemp("segments")
    root.mkdir(parents=True, exist_ok=True)
    if not all((root / f).is_file() for f in ("seg1.onnx", "seg2.onnx", "seg1-calibration.npy", "seg2-calibration.npy")):
        _export_segments(root)
    files = {name: _circuit(root, name) for name in CIRCUITS}
    x = np.random.default_rng(1).uniform(-1, 1, (1, 8)).astype(np.float32)
    q0 = quantize(x, SCALE)
    cache = root / "proofs"
    zk1 = _prove(files["seg1-hp"], q0, cache)  # the hybrid's posted zk proof
    h = zk1.output
    op2 = _prove(files["seg2-pp"], h, cache)  # the honest proof of the hybrid's op segment: a challenger's evidence
    y = op2.output
    eager1 = _prove(files["seg1-hh"], q0, cache)
    eager2 = _prove(files["seg2-hp"], h, cache)
    big = _prove(files["seg2-pp"], BIG, cache)  # S_2 from a boundary beyond 2**24 (finding 12)
    return SimpleNamespace(
        root=root, files=files, q0=q0, h=h, y=y, big_y=big.output,
        c0=felt(poseidon_commitment(q0)), c1=felt(poseidon_commitment(h)),
        zk1=zk1, op2=op2, eager1=eager1, eager2=eager2, big=big,
    )


# ---------------------------------------------------------------- the chain


class RecordingOracleClient(OracleClient):
    """`OracleClient` that records every transaction it sends (for the gas-cap check at the end of the module)."""

    def _send(self, fn, value: int = 0, gas: int | None = None):
        receipt = super()._send(fn, value, gas)
        limit = self.w3.eth.get_transaction(receipt.transactionHash)["gas"]
        TRANSACTIONS.append((fn.fn_name, receipt.gasUsed, limit))
        return receipt

    def as_sender(self, sender) -> "RecordingOracleClient":
        return RecordingOracleClient(self.w3, self.address, sender)


def _register(oracle, token, name, verifiers, zk, windows, code_hashes):
    spec = ModelSpec(Web3.keccak(text=f"onnx {name}"), Web3.keccak(text=f"plan {name}"), token, FEE, BOND,
                     OPERATOR_BPS, *windows, SCALE)
    segments = [SegmentSpec(v, z) for v, z in zip(verifiers, zk)]
    model_id, digest, receipt = oracle.register(spec, segments, SIZES[name])
    assert digest == Registration(spec, tuple(segments), tuple(SIZES[name]), tuple(code_hashes)).digest()
    return model_id, receipt


@pytest.fixture(scope="module")
def deployed(chain, segments):
    """The protocol (deploy_protocol), the four ezkl verifiers and the three models over them."""
    w3 = chain.w3
    accounts = funded_accounts(w3, 6)  # fresh keys, signing locally
    owner = accounts[0]
    dep = deploy_protocol(w3, owner, sale=None)
    gas = {f"deploy {name}": used for name, used in dep.gas.items()}
    verifiers, code_hashes, runtimes = {}, {}, {}
    for name, files in segments.files.items():
        compiled = compile_verifier(files.verifier_sol)
        verifiers[name], used = deploy(w3, compiled, owner)
        gas[f"deploy Halo2Verifier {name}"] = used
        code_hashes[name] = bytes(Web3.keccak(hexstr=compiled.runtime))
        runtimes[f"Halo2Verifier {name}"] = compiled.runtime_size
    for name, used in gas.items():
        TRANSACTIONS.append((name, used, used))
    oracle = RecordingOracleClient(w3, dep.oracle, owner)
    models, receipts = {}, {}
    for name, circuits, zk, windows in [
        ("hybrid", ["seg1-hp", "seg2-pp"], [True, False], (CHALLENGE_WINDOW, RESPONSE_WINDOW)),
        ("eager", ["seg1-hh", "seg2-hp"], [True, True], (0, 0)),
        ("public", ["seg2-pp"], [False], (CHALLENGE_WINDOW, RESPONSE_WINDOW)),
    ]:
        models[name], receipts[name] = _register(oracle, dep.token, name, [verifiers[c].address for c in circuits], zk,
                                                 windows, [code_hashes[c] for c in circuits])
    return SimpleNamespace(
        w3=w3, dep=dep, oracle=oracle, owner=owner, requester=accounts[1], operator=accounts[2],
        challenger=accounts[3], finalizer=accounts[4], other=accounts[5], verifiers=verifiers, models=models,
        register_receipts=receipts, deploy_gas=gas, verifier_runtimes=runtimes, clients={},
        c0_input=segments.c0.to_bytes(32, "big"),  # the request input of the honest run
        consumer=w3.eth.contract(address=dep.consumer, abi=compile_protocol()["OracleConsumer"].abi),
    )


@pytest.fixture
def zk(deployed):
    """The deployed world, rolled back after the test."""
    with rolled_back(deployed.w3):
        yield deployed


# ---------------------------------------------------------------- helpers


def client(zk, account) -> RecordingOracleClient:
    if account.address not in zk.clients:
        zk.clients[account.address] = zk.oracle.as_sender(account)
    return zk.clients[account.address]


def events(contract, name, receipt) -> list:
    return contract.events[name]().process_receipt(receipt, errors=DISCARD)


def balance(zk, account) -> int:
    """Wei held by `account` (a party's LocalAccount or an address)."""
    return zk.w3.eth.get_balance(address_of(account))


def model_revenue() -> int:
    return FEE * (BPS - OPERATOR_BPS) // BPS


def make_claim(sizes, q, commitments, proofs) -> Claim:
    """`claim_from_boundaries` for boundary sizes `sizes` (0: hashed) without a compiled Plan."""
    plan = SimpleNamespace(boundary_sizes=lambda: list(sizes), segments=[None] * (len(sizes) - 1))
    return claim_from_boundaries(plan, q, commitments, proofs)


def hybrid_claim(s, h=None, y=None, proof=None) -> Claim:
    """The hybrid claim for boundaries (C_0, h, y), with the posted proof of S_1 (the honest one unless given)."""
    h = s.h if h is None else h
    y = s.y if y is None else y
    return make_claim(SIZES["hybrid"], [None, h, y], [s.c0, None, None], [s.zk1.proof if proof is None else proof])


def eager_claim(s, proofs=None, c1=None) -> Claim:
    return make_claim(SIZES["eager"], [None, None, s.y], [s.c0, s.c1 if c1 is None else c1, None],
                      list(proofs or [s.eager1.proof, s.eager2.proof]))


def off_by_one(q: np.ndarray, index: int = 0) -> np.ndarray:
    wrong = np.array(q, dtype=np.int64).copy()
    wrong[index] += 1
    return wrong


def tampered(proof: bytes) -> bytes:
    b = bytearray(proof)
    b[len(b) // 2] ^= 1
    return bytes(b)


def request(zk, model="hybrid", input_=None, callback=False, requester=None) -> int:
    """A request of `model` (on C_0 of the honest input unless `input_` is given); returns the request id."""
    target, gas_limit = (zk.dep.consumer, CALLBACK_GAS) if callback else (None, 0)
    input_ = zk.c0_input if input_ is None else input_
    rid, _ = client(zk, requester or zk.requester).request_callback(zk.models[model], input_, target, gas_limit, b"\x2a")
    return rid


def served(zk, claim: Claim, model="hybrid", operator=None, **kwargs) -> int:
    rid = request(zk, model, **kwargs)
    client(zk, operator or zk.operator).submit(rid, claim, bond=BOND)
    return rid


def challenge(zk, rid, claim, k, evidence: Proof, outputs=None, challenger=None):
    """Open a dispute on op segment k with a real ezkl proof; its output instances are the proof's own (y: 4)."""
    outputs = evidence.instances[-4:] if outputs is None else outputs
    return client(zk, challenger or zk.challenger).challenge(rid, k, claim, evidence.proof, outputs, bond=BOND)[1]


# ---------------------------------------------------------------- the circuits link


def test_boundaries_link_across_the_circuits_and_match_the_native_executor(segments):
    s = segments
    assert s.zk1.instances == [s.c0] + [to_field(v) for v in s.h]
    assert s.op2.instances == [to_field(v) for v in s.h] + [to_field(v) for v in s.y]
    assert s.eager1.instances == [s.c0, s.c1]
    assert s.eager2.instances == [s.c1] + [to_field(v) for v in s.y]
    assert (s.h >= 0).all() and (s.y < 0).any()  # ReLU output; negative y travel as p - |v|
    # what an op segment's challenger re-executes is bit-exact with the circuit, also beyond 2**24
    program = FixedPointProgram(s.files["seg2-pp"].onnx, s.files["seg2-pp"].settings_dict())
    assert np.array_equal(program(s.h.reshape(1, 8)).ravel(), s.y)
    assert np.array_equal(program(BIG).ravel(), s.big_y)


# ---------------------------------------------------------------- the honest hybrid request


def test_honest_hybrid_request_finalizes_and_pays_the_token(zk, segments):
    s = segments
    claim = hybrid_claim(s)
    token_before = balance(zk, zk.dep.token)
    rid = request(zk, callback=True)
    _, receipt = client(zk, zk.operator).submit(rid, claim, bond=BOND)
    assert zk.oracle.request(rid).status == Status.SUBMITTED
    assert zk.oracle.submitted_claim(receipt.transactionHash) == (rid, claim)  # h and y are in the calldata
    with reverts("AIOracleChallengeWindowOpen"):
        client(zk, zk.finalizer).finalize(rid, claim)
    advance(zk.w3, CHALLENGE_WINDOW)
    receipt = client(zk, zk.finalizer).finalize(rid, claim)
    assert zk.oracle.request(rid).status == Status.FINALIZED
    assert zk.consumer.functions.outputOf(rid).call() == encode(["int256[]", "uint256"], [[int(v) for v in s.y], SCALE])
    assert events(zk.consumer, "ResultReceived", receipt)[0]["args"]["callbackData"] == b"\x2a"
    assert balance(zk, zk.dep.token) - token_before == model_revenue()
    assert zk.oracle.credits(zk.operator.address) == FEE - model_revenue() + BOND
    assert zk.oracle.credits(zk.finalizer.address) == CALLBACK_GAS * GAS_PRICE


def test_the_posted_zk_proof_verifies_by_eth_call_against_the_claims_instances(zk, segments):
    """What a watcher does: read the claim back from the submit calldata and run the segment's verifier on the
    instances the claim implies (and, for the op segment, on the honest fraud-proof's)."""
    s = segments
    rid = request(zk)
    _, receipt = client(zk, zk.operator).submit(rid, hybrid_claim(s), bond=BOND)
    _, claim = zk.oracle.submitted_claim(receipt.transactionHash)
    inputs, outputs = claim.segment_instances(SIZES["hybrid"], 1)
    assert inputs == [s.c0] and outputs == [to_field(v) for v in s.h]
    verifier1, verifier2 = zk.verifiers["seg1-hp"], zk.verifiers["seg2-pp"]
    assert verifier1.functions.verifyProof(claim.proofs[0], inputs + outputs).call() is True
    assert verifier2.functions.verifyProof(s.op2.proof, sum(claim.segment_instances(SIZES["hybrid"], 2), [])).call() is True
    for wrong in (inputs + [to_field(v) for v in off_by_one(s.h, 3)], [s.c1] + outputs):
        try:
            accepted = verifier1.functions.verifyProof(claim.proofs[0], wrong).call()
        except Exception:  # ezkl's verifier reverts or returns false on a rejected proof
            accepted = False
        assert not accepted


# ---------------------------------------------------------------- lazy zk: disputeProof


def test_dispute_proof_slashes_a_claim_whose_posted_zk_proof_is_corrupted(zk, segments):
    s = segments
    bad = hybrid_claim(s, proof=tampered(s.zk1.proof))
    token_before = balance(zk, zk.dep.token)
    rid = served(zk, bad)  # lazy: posted, not verified at submit
    receipt = client(zk, zk.challenger).dispute_proof(rid, 1, bad)[1]
    slashed = events(zk.oracle.contract, "AIResultSlashed", receipt)[0]["args"]
    assert (slashed["segment"], slashed["challenger"], slashed["reward"], slashed["toToken"]) == (1, zk.challenger.address, BOND // 2, BOND // 2)
    assert zk.oracle.credits(zk.challenger.address) == BOND // 2
    assert balance(zk, zk.dep.token) - token_before == BOND // 2
    assert zk.oracle.request(rid).status == Status.PENDING and not zk.oracle.claim(rid).exists
    # the fee stayed escrowed: the next honest answer is paid
    honest = hybrid_claim(s)
    client(zk, zk.other).submit(rid, honest, bond=BOND)
    advance(zk.w3, CHALLENGE_WINDOW)
    client(zk, zk.finalizer).finalize(rid, honest)
    assert zk.oracle.credits(zk.other.address) == FEE - model_revenue() + BOND


def test_dispute_proof_slashes_a_valid_proof_whose_public_boundary_was_changed(zk, segments):
    s = segments
    bad = hybrid_claim(s, h=off_by_one(s.h, 2))  # the proof is the honest, valid one, but of another h
    rid = served(zk, bad)
    receipt = client(zk, zk.challenger).dispute_proof(rid, 1, bad)[1]
    assert events(zk.oracle.contract, "AIResultSlashed", receipt)[0]["args"]["segment"] == 1
    assert zk.oracle.request(rid).status == Status.PENDING


def test_dispute_proof_of_a_correct_claim_reverts_not_contradicted(zk, segments):
    claim = hybrid_claim(segments)
    rid = served(zk, claim)
    with reverts("AIOracleClaimNotContradicted") as excinfo:
        client(zk, zk.challenger).dispute_proof(rid, 1, claim)
    assert excinfo.value.args_ == (rid, 1)
    with reverts("AIOracleInvalidSegment"):  # segment 2 is op: it is challenged, not proof-disputed
        client(zk, zk.challenger).dispute_proof(rid, 2, claim)
    assert zk.oracle.request(rid).status == Status.SUBMITTED


# ---------------------------------------------------------------- op fraud: challenge with a real ezkl proof


def test_a_wrong_y_is_challenged_with_a_real_proof_the_liar_cannot_answer_and_is_slashed(zk, segments):
    s = segments
    lie = hybrid_claim(s, y=off_by_one(s.y, 1))
    token_before = balance(zk, zk.dep.token)
    rid = served(zk, lie)
    receipt = challenge(zk, rid, lie, 2, s.op2)  # S_2 proven from the claimed h, via write_quantized_input
    opened = events(zk.oracle.contract, "AIResultChallenged", receipt)[0]["args"]
    assert (opened["segment"], opened["challenger"]) == (2, zk.challenger.address)
    assert zk.oracle.dispute(rid, 2).challenger == zk.challenger.address and zk.oracle.claim(rid).open_disputes == 1
    liar = client(zk, zk.operator)
    # the liar's best "proof of its own claim": the real proof (of the true y) and a forged variant of it
    for proof in (s.op2.proof, tampered(s.op2.proof), s.big.proof):
        with reverts("AIOracleInvalidProof") as excinfo:
            liar.respond(rid, 2, lie, proof)
        assert excinfo.value.args_ == (rid, 2)
    with reverts("AIOracleResponseWindowOpen"):
        client(zk, zk.finalizer).resolve(rid, 2)
    advance(zk.w3, RESPONSE_WINDOW)
    with reverts("AIOracleResponseWindowClosed"):
        liar.respond(rid, 2, lie, s.op2.proof)
    receipt = client(zk, zk.finalizer).resolve(rid, 2)
    slashed = events(zk.oracle.contract, "AIResultSlashed", receipt)[0]["args"]
    assert (slashed["segment"], slashed["challenger"], slashed["reward"]) == (2, zk.challenger.address, BOND // 2)
    assert zk.oracle.credits(zk.challenger.address) == BOND + BOND // 2  # its dispute bond back, and half the liar's
    assert zk.oracle.credits(zk.operator.address) == 0
    assert balance(zk, zk.dep.token) - token_before == BOND // 2
    assert zk.oracle.request(rid).status == Status.PENDING


def test_an_honest_claim_challenged_with_a_proof_that_agrees_reverts_not_contradicted(zk, segments):
    s = segments
    claim = hybrid_claim(s)
    rid = served(zk, claim)
    with reverts("AIOracleClaimNotContradicted") as excinfo:
        challenge(zk, rid, claim, 2, s.op2)
    assert excinfo.value.args_ == (rid, 2)
    with reverts("AIOracleInvalidSegment"):  # segment 1 is zk: its posted proof is disputed, not challenged
        challenge(zk, rid, claim, 1, s.zk1, outputs=s.zk1.instances[1:])
    assert not zk.oracle.dispute(rid, 2).open


def test_fraud_proofs_of_another_segment_another_input_or_tampered_bytes_are_invalid(zk, segments):
    s = segments
    lie = hybrid_claim(s, y=off_by_one(s.y, 0))
    rid = served(zk, lie)
    true_y = s.op2.instances[8:]
    cases = {
        "S_1's proof": (s.zk1.proof, true_y),
        "S_2's proof of the hashed-input circuit": (s.eager2.proof, true_y),
        "S_2's proof from another input": (s.big.proof, s.big.instances[8:]),
        "S_2's proof from another input, with the true y": (s.big.proof, true_y),
        "tampered bytes": (tampered(s.op2.proof), true_y),
    }
    for what, (proof, outputs) in cases.items():
        with reverts("AIOracleInvalidProof") as excinfo:
            client(zk, zk.challenger).challenge(rid, 2, lie, proof, outputs, bond=BOND)
        assert excinfo.value.args_ == (rid, 2), what
    with reverts("AIOracleInvalidInstances"):  # S_1's instance layout is not S_2's
        client(zk, zk.challenger).challenge(rid, 2, lie, s.zk1.proof, s.zk1.instances[1:], bond=BOND)
    assert not zk.oracle.dispute(rid, 2).open
    challenge(zk, rid, lie, 2, s.op2)  # the real evidence still works
    assert zk.oracle.dispute(rid, 2).open


def test_fraud_proofs_after_the_challenge_window_revert(zk, segments):
    s = segments
    lie = hybrid_claim(s, y=off_by_one(s.y, 0))
    rid = served(zk, lie)
    advance(zk.w3, CHALLENGE_WINDOW)
    with reverts("AIOracleChallengeWindowClosed"):
        challenge(zk, rid, lie, 2, s.op2)
    with reverts("AIOracleChallengeWindowClosed"):
        client(zk, zk.challenger).dispute_proof(rid, 1, lie)
    client(zk, zk.finalizer).finalize(rid, lie)  # nobody caught it in time
    assert zk.oracle.request(rid).status == Status.FINALIZED


# ---------------------------------------------------------------- eager all-zk model


def test_eager_all_zk_submit_verifies_both_proofs_and_is_final_in_the_next_block(zk, segments):
    s = segments
    claim = eager_claim(s)
    assert claim.segment_instances(SIZES["eager"], 1) == ([s.c0], [s.c1])
    assert claim.segment_instances(SIZES["eager"], 2) == ([s.c1], s.eager2.instances[1:])
    token_before = balance(zk, zk.dep.token)
    rid = served(zk, claim, "eager", callback=True)
    assert zk.oracle.request(rid).deadline <= zk.oracle.now()
    with reverts("AIOracleChallengeWindowClosed"):
        client(zk, zk.challenger).dispute_proof(rid, 1, claim)
    client(zk, zk.finalizer).finalize(rid, claim)
    assert zk.oracle.request(rid).status == Status.FINALIZED
    assert zk.consumer.functions.outputOf(rid).call() == encode(["int256[]", "uint256"], [[int(v) for v in s.y], SCALE])
    assert balance(zk, zk.dep.token) - token_before == model_revenue()
    assert zk.oracle.credits(zk.operator.address) == FEE - model_revenue() + BOND


def test_eager_submit_with_a_tampered_or_mismatched_proof_reverts_invalid_proof(zk, segments):
    s = segments
    rid = request(zk, "eager")
    cases = {
        (rid, 1): [eager_claim(s, proofs=[tampered(s.eager1.proof), s.eager2.proof]),
                   eager_claim(s, c1=(s.c1 + 1) % FIELD_MODULUS),  # a C_1 the proofs do not link
                   eager_claim(s, proofs=[s.eager2.proof, s.eager1.proof])],
        (rid, 2): [eager_claim(s, proofs=[s.eager1.proof, tampered(s.eager2.proof)]),
                   dataclasses.replace(eager_claim(s), output=pack_tensor(off_by_one(s.y, 3)))],
    }
    for args, claims in cases.items():
        for bad in claims:
            with reverts("AIOracleInvalidProof") as excinfo:
                client(zk, zk.operator).submit(rid, bad, bond=BOND)
            assert excinfo.value.args_ == args
    assert zk.oracle.request(rid).status == Status.PENDING
    client(zk, zk.operator).submit(rid, eager_claim(s), bond=BOND)
    assert zk.oracle.request(rid).status == Status.SUBMITTED


# ---------------------------------------------------------------- finding 12: boundaries beyond 2**24


def test_boundary_values_beyond_2_24_cross_into_ezkl_exactly_and_convict_a_wrong_claim(zk, segments):
    """A public boundary with |v| >= 2**24 (here S_2's input) reaches the fraud proof exactly: through floats
    (float32) it would arrive changed, the proof would commit to another input and no challenge could succeed."""
    s = segments
    assert (np.abs(BIG) >= 1 << 24).any()
    assert not np.array_equal(BIG.astype(np.float32).astype(np.int64), BIG)  # what write_input would have handed ezkl
    assert pack_tensor(BIG)[0] == 4
    # in the hybrid, between the zk and the op segment
    lie = hybrid_claim(s, h=BIG.ravel(), y=off_by_one(s.big_y, 2))
    inputs, outputs = lie.segment_instances(SIZES["hybrid"], 2)
    assert s.big.instances[:8] == inputs and s.big.instances[8:] != outputs
    rid = served(zk, lie)
    challenge(zk, rid, lie, 2, s.big)
    assert zk.oracle.dispute(rid, 2).open
    # as a public model input
    big_input = pack_tensor(BIG)
    public_lie = make_claim(SIZES["public"], [BIG.ravel(), off_by_one(s.big_y, 0)], [None, None], [])
    assert public_lie.input == big_input and public_lie.segment_instances(SIZES["public"], 1)[0] == s.big.instances[:8]
    rid2 = served(zk, public_lie, "public", input_=big_input)
    challenge(zk, rid2, public_lie, 1, s.big)
    advance(zk.w3, RESPONSE_WINDOW)
    for r, k in ((rid, 2), (rid2, 1)):
        client(zk, zk.finalizer).resolve(r, k)
        assert zk.oracle.request(r).status == Status.PENDING
    assert zk.oracle.credits(zk.challenger.address) == 2 * (BOND + BOND // 2)
    # the honest answer to the public request stands against the same proof
    honest = make_claim(SIZES["public"], [BIG.ravel(), s.big_y], [None, None], [])
    client(zk, zk.operator).submit(rid2, honest, bond=BOND)
    with reverts("AIOracleClaimNotContradicted"):
        challenge(zk, rid2, honest, 1, s.big)


# ---------------------------------------------------------------- gas


def test_gas_table(zk, segments, tmp_path_factory):
    s = segments
    gas = dict(zk.deploy_gas)
    op, ch, fin = client(zk, zk.operator), client(zk, zk.challenger), client(zk, zk.finalizer)
    gas["register (hybrid: zk + op)"] = zk.register_receipts["hybrid"].gasUsed
    gas["register (eager: zk + zk)"] = zk.register_receipts["eager"].gasUsed

    # an honest hybrid request with the OracleConsumer callback
    rid, receipt = client(zk, zk.requester).request_callback(zk.models["hybrid"], zk.c0_input, zk.dep.consumer, CALLBACK_GAS)
    gas["request (callback)"] = receipt.gasUsed
    honest = hybrid_claim(s)
    commit, submit = op.submit(rid, honest, bond=BOND)
    gas["commit"] = commit.gasUsed
    gas["submit (hybrid lazy: 1 zk proof posted, 12 public values)"] = submit.gasUsed
    # a lie about y, challenged with a real ezkl proof of the op segment and slashed after the response window
    rid2, receipt = client(zk, zk.requester).request_callback(zk.models["hybrid"], zk.c0_input)
    gas["request (no callback)"] = receipt.gasUsed
    lie = hybrid_claim(s, y=off_by_one(s.y, 0))
    op.submit(rid2, lie, bond=BOND)
    gas["challenge (ezkl verify of a real fraud proof of the op segment)"] = challenge(zk, rid2, lie, 2, s.op2).gasUsed
    # a claim whose posted zk proof is corrupted
    rid3 = request(zk)
    bad = hybrid_claim(s, proof=tampered(s.zk1.proof))
    op.submit(rid3, bad, bond=BOND)
    gas["disputeProof (slash; ezkl verify of the zk segment fails)"] = ch.dispute_proof(rid3, 1, bad)[1].gasUsed
    advance(zk.w3, CHALLENGE_WINDOW)
    gas["finalize (OracleConsumer callback storing 4 values)"] = fin.finalize(rid, honest).gasUsed
    gas["resolve (slash)"] = fin.resolve(rid2, 2).gasUsed
    client(zk, zk.other).submit(rid2, honest, bond=BOND)
    advance(zk.w3, CHALLENGE_WINDOW)
    gas["finalize (no callback)"] = fin.finalize(rid2, honest).gasUsed
    # the eager model: both proofs verified at submit
    rid4 = request(zk, "eager")
    gas["submit (eager all-zk: 2 ezkl verifies)"] = op.submit(rid4, eager_claim(s), bond=BOND)[1].gasUsed
    gas["withdraw"] = op.withdraw().gasUsed
    # the verifiers alone (eth_estimateGas of verifyProof)
    for name, proof in [("seg1-hp", s.zk1), ("seg2-pp", s.op2), ("seg1-hh", s.eager1), ("seg2-hp", s.eager2)]:
        gas[f"verifyProof {name} ({len(proof.instances)} instances, eth_estimateGas)"] = (
            zk.verifiers[name].functions.verifyProof(proof.proof, proof.instances).estimate_gas({"from": zk.owner.address}))
    assert all(0 < g < TX_GAS_CAP for g in gas.values()), gas

    out = os.environ.get("IMO_GAS_OUT")
    path = Path(out).resolve() if out else tmp_path_factory.mktemp("gas") / "oracle_zk_gas.json"
    if path.is_dir():
        path = path / "oracle_zk_gas.json"
    path.write_text(json.dumps(gas, indent=2))
    width = max(map(len, gas))
    print(f"\nAIOracle gas with real ezkl proofs ({path})")
    for name, used in gas.items():
        print(f"  {name:<{width}}  {used:>10,}")


# ---------------------------------------------------------------- limits (keep last: checks every transaction above)


def test_contracts_fit_eip170_and_every_transaction_fits_the_gas_cap(deployed):
    runtime = {name: c.runtime_size for name, c in compile_protocol().items()
               if name in ("AIOracle", "RevShareToken", "ModelOffering", "OracleConsumer", "AIGCNFT")}
    runtime.update(deployed.verifier_runtimes)
    assert len(runtime) == 9 and all(0 < size <= EIP170_RUNTIME_LIMIT for size in runtime.values()), runtime
    assert TRANSACTIONS
    too_big = [(what, used, limit) for what, used, limit in TRANSACTIONS if max(used, limit) >= TX_GAS_CAP]
    assert not too_big, too_big
