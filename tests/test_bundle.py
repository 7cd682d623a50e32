"""The public bundle (`imo compile PLAN --public-bundle DIR`, imo.proving.bundle): no private weight reaches any file of
it, in any encoding ezkl or a careless copy would use, while the operator's own files do hold them (so the search can
fail); and the bundle alone is enough for a challenger: registration_problems accepts the operator's registration,
dispute_costs matches, PlanRuntime.find_dispute checks a claim (and catches a wrong one), a zk proof verifies against
the bundle's vk, and the op segment is proven (a real, fresh proof) from the bundle's files.

The model is a 2-layer MLP (8→8→4) whose first Gemm is private (its weights make segment 0 zk) with a logrows budget
that sends the rest op: zk → op, logrows 15, calibrated on four samples."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from imo import artifacts
from imo.circuits.fixed_point import FIELD_MODULUS, quantize
from imo.circuits.plan import Plan, make_plan, write_plan
from imo.errors import MissingArtifactError
from imo.models.export import export_onnx
from imo.pipeline import cli
from imo.proving import prover
from imo.proving.bundle import write_public_bundle
from imo.proving.circuit import CircuitFiles, write_input
from imo.proving.protocol import DisputeKind, ModelSpec, PlanRuntime, felt
from imo.proving.segments import CIRCUITS_FILE, circuit_files, compile_plan, verify_run
from imo.proving.store import ArtifactStore
from imo.verifier_contracts.oracle_client import ChainModel
from imo.verifier_contracts.registration import dispute_costs, expected_registration, registration_problems

MONTGOMERY_R = pow(2, 256, FIELD_MODULUS)
WINDOW = 8  # consecutive elements searched together: long enough never to match by chance


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bundle-model")
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    rng = np.random.default_rng(1)
    export_onnx(model, rng.uniform(-1, 1, (1, 8)).astype(np.float32), root / "model.onnx")
    plan_file = write_plan(*make_plan(root / "model.onnx", private=["/0/Gemm"], budget_logrows=1), root / "plan")
    write_input(root / "calibration.json", rng.uniform(-1, 1, (4, 1, 8)).astype(np.float32))
    bundle = root / "public"
    assert cli.main(["compile", str(plan_file), "--calibration", str(root / "calibration.json"), "--public-bundle", str(bundle), "--quiet"]) == 0
    private = {"weight": model[0].weight.detach().numpy().copy(), "bias": model[0].bias.detach().numpy().copy()}
    return {"plan": plan_file, "bundle": bundle / "plan.json", "private": private, "root": root}


def _files(directory: Path) -> list[Path]:
    return [p for p in sorted(Path(directory).rglob("*")) if p.is_file()]


def operator_files(plan_file: Path) -> list[Path]:
    """Everything the operator holds for the plan: the plan directory and every segment's circuit directory."""
    plan = Plan.load(plan_file)
    return _files(plan_file.parent) + [p for s in plan.segments for p in _files(circuit_files(plan_file.parent, s).root)]


def encodings(values: np.ndarray, scales: list[int]) -> dict[str, list[bytes]]:
    """Byte patterns a copy of `values` would leave, by form: WINDOW consecutive elements (row-major and transposed)."""
    forms: dict[str, list[bytes]] = {}
    for order in (values, values.T):
        flat = np.asarray(order, dtype=np.float32).ravel()
        for start in range(0, max(1, flat.size - WINDOW + 1), WINDOW):
            w = flat[start:start + WINDOW]
            forms.setdefault("float32", []).append(w.astype("<f4").tobytes())
            forms.setdefault("float64", []).append(w.astype("<f8").tobytes())
            forms.setdefault("float16", []).append(w.astype("<f2").tobytes())
            forms.setdefault("float32 big-endian", []).append(w.astype(">f4").tobytes())
            forms.setdefault("float text", []).append(", ".join(repr(float(v)) for v in w).encode())
            forms.setdefault("float text", []).append(",".join(repr(float(v)) for v in w).encode())
            for scale in scales:
                q = quantize(w, scale).astype(np.int64)
                forms.setdefault(f"scale-{scale} int64", []).append(q.astype("<i8").tobytes())
                forms.setdefault(f"scale-{scale} int32", []).append(q.astype("<i4").tobytes())
                forms.setdefault(f"scale-{scale} int128", []).append(b"".join(int(v).to_bytes(16, "little", signed=True) for v in q))
                forms.setdefault(f"scale-{scale} field element", []).append(b"".join((int(v) % FIELD_MODULUS).to_bytes(32, "little") for v in q[:4]))
                forms.setdefault(f"scale-{scale} field element (big-endian)", []).append(b"".join((int(v) % FIELD_MODULUS).to_bytes(32, "big") for v in q[:4]))
                # halo2 keeps field elements in Montgomery form (v·2^256 mod p) in raw key files (one alone is no evidence:
                # every pk holds lookup and range tables of small integers)
                forms.setdefault(f"scale-{scale} field element (Montgomery)", []).append(
                    b"".join((int(v) * MONTGOMERY_R % FIELD_MODULUS).to_bytes(32, "little") for v in q[:4]))
                for sep in (", ", ",", " ", "\n"):
                    forms.setdefault(f"scale-{scale} decimal", []).append(sep.join(str(int(v)) for v in q).encode())
        for v in np.asarray(values, dtype=np.float32).ravel():  # a lone float's full decimal form is distinctive on its own
            text = repr(float(v))
            if len(text.lstrip("-")) >= 12:
                forms.setdefault("float text", []).append(text.encode())
    return forms


def found(files: list[Path], patterns: dict[str, list[bytes]]) -> dict[str, list[str]]:
    """Form → the files that hold any of its patterns."""
    hits: dict[str, list[str]] = {}
    for path in files:
        data = path.read_bytes()
        for form, pats in patterns.items():
            if any(p in data for p in pats):
                hits.setdefault(form, []).append(str(path))
    return hits


def private_patterns(compiled: dict) -> dict[str, list[bytes]]:
    scale = Plan.load(compiled["plan"]).scale
    patterns: dict[str, list[bytes]] = {}
    for name, tensor in compiled["private"].items():
        scales = [scale] if name == "weight" else [scale, 2 * scale]  # ezkl may rescale a bias to input × param scale
        for form, pats in encodings(tensor, scales).items():
            patterns.setdefault(form, []).extend(pats)
    return patterns


def test_the_plan_is_a_private_zk_segment_then_op(compiled):
    plan = Plan.load(compiled["plan"])
    assert [s.mode for s in plan.segments] == ["zk", "op"]
    assert "/0/Gemm" in plan.segments[0].nodes and "/0/Gemm" not in plan.segments[1].nodes
    assert all(quantize(t, plan.scale).any() for t in compiled["private"].values())


def test_no_private_weight_is_in_any_file_of_the_public_bundle(compiled):
    patterns = private_patterns(compiled)
    bundle = _files(compiled["bundle"].parent)
    assert {p.relative_to(compiled["bundle"].parent).as_posix() for p in bundle} == {
        "plan.json", CIRCUITS_FILE, "segments/seg1.onnx",
        *(f"circuits/seg0/{n}" for n in ("settings.json", "vk.key", "Verifier.sol", "circuit.json")),
        *(f"circuits/seg1/{n}" for n in ("settings.json", "vk.key", "Verifier.sol", "circuit.json", "model.onnx", "model.compiled", "pk.key")),
    }
    assert found(bundle, patterns) == {}
    # the search can fail: the operator's own files hold the weights, in each withheld file of the zk segment: its ONNX
    # (raw float32), its compiled circuit (quantized, as field elements) and its proving key (fixed columns, Montgomery form)
    operator = found(operator_files(compiled["plan"]), patterns)
    zk_dir = str(circuit_files(compiled["plan"].parent, Plan.load(compiled["plan"]).segments[0]).root)
    assert str(compiled["plan"].parent / "segments" / "seg0.onnx") in operator["float32"], operator
    assert f"{zk_dir}/model.onnx" in operator["float32"], operator
    assert f"{zk_dir}/model.compiled" in operator["scale-7 field element"], operator
    assert f"{zk_dir}/pk.key" in operator["scale-7 field element (Montgomery)"], operator


def test_the_public_plan_keeps_the_hash_and_withholds_the_zk_onnx(compiled):
    operator, public = Plan.load(compiled["plan"]), Plan.load(compiled["bundle"])
    assert public.plan_hash == operator.plan_hash == public.compute_hash()
    assert public.segments[0].onnx == "" and public.segments[0].onnx_sha256 == operator.segments[0].onnx_sha256
    assert json.loads(compiled["bundle"].read_text())["model"] == ""
    index = json.loads((compiled["bundle"].parent / CIRCUITS_FILE).read_text())
    assert all(not Path(e["dir"]).is_absolute() for e in index.values())  # relocatable
    with pytest.raises(MissingArtifactError, match="public bundle"):
        compile_plan(compiled["bundle"], np.zeros((1, 1, 8), np.float32), quiet=True)
    with pytest.raises(MissingArtifactError, match="public bundle"):
        write_public_bundle(compiled["bundle"], compiled["root"] / "again")


def test_the_public_bundle_is_enough_for_a_challenger(compiled, tmp_path):
    moved = tmp_path / "elsewhere"  # self-contained: it works wherever it is copied to
    shutil.copytree(compiled["bundle"].parent, moved)
    bundle_plan = moved / "plan.json"
    artifacts.require(bundle_plan, artifacts.PLAN, role="--plan")  # what `imo node challenger --plan` checks first
    plan = Plan.load(compiled["plan"])

    # registration: the operator's registration is accepted by a node that holds only the bundle
    costs = dispute_costs(bundle_plan)
    assert costs == dispute_costs(compiled["plan"])
    spec = ModelSpec(bytes.fromhex(plan.model_sha256), bytes.fromhex(plan.plan_hash), "0x" + "00" * 19 + "07", 10**15, 10**17, 2_000,
                     costs.min_window_s, costs.min_window_s, plan.scale)
    addresses = [f"0x{'00' * 19}{k + 1:02x}" for k in range(len(plan.segments))]
    registration = expected_registration(compiled["plan"], spec, addresses)
    assert expected_registration(bundle_plan, spec, addresses).digest() == registration.digest()
    assert registration_problems(bundle_plan, ChainModel(1, registration, registration.digest())) == []

    # a claim made by the operator is checked from the bundle; a wrong output is caught
    operator = PlanRuntime(compiled["plan"])
    q = quantize(np.random.default_rng(2).uniform(-1, 1, (1, 8)).astype(np.float32), plan.scale)
    claim = operator.execute(q, tmp_path / "work")
    challenger = PlanRuntime(bundle_plan, store=ArtifactStore(tmp_path / "challenger-store"))
    assert challenger.find_dispute(claim, lambda k, proof, instances: True) is None
    y = claim.tensors(challenger.sizes)[len(plan.segments)]
    wrong = type(claim)(claim.input, claim.commitments, claim.data, bytes([claim.output[0]]) + (y + 1).astype(f">i{claim.output[0]}").tobytes(), claim.proofs)
    dispute = challenger.find_dispute(wrong, lambda k, proof, instances: True)
    assert dispute is not None and dispute.kind is DisputeKind.WRONG_OUTPUT and dispute.segment == 2
    with pytest.raises(MissingArtifactError, match="private"):
        challenger.run_op(1, q)  # the zk segment cannot be run from the bundle

    # the zk proof verifies with the bundle's verifying key, linked to the claim's boundaries
    assert verify_run(bundle_plan, tmp_path / "work" / "run")["verified"][0]["segment"] == 0

    # a real, fresh fraud proof of the op segment from the bundle's files alone
    q_mid = claim.tensors(challenger.sizes)[1]
    proof, instances = challenger.prove_segment(2, q_mid)
    inputs, outputs = claim.segment_instances(challenger.sizes, 2)
    assert proof and instances == inputs + outputs
    proof_dir = next((tmp_path / "challenger-store" / "proofs").iterdir())
    files = CircuitFiles(moved / "circuits" / "seg1")
    assert prover.verify(files, proof_file=proof_dir / "proof.json") >= 0
    assert [felt(v) for column in json.loads((proof_dir / "proof.json").read_text())["instances"] for v in column] == instances
