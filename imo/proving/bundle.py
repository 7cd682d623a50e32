"""The public bundle of a compiled plan: everything a challenger (or anyone checking claims) needs, and nothing that
only the operator may hold.

A zk segment's weights are the model's secret: they sit in its ONNX file, in its compiled circuit (model.compiled)
and in its proving key (pk.key holds the fixed columns, the weights among them). None of those leave the operator's
plan directory. Its settings, verifying key (commitments to the fixed columns, not the values), Solidity verifier and
circuit report are public: a challenger checks the registered verifier code against Verifier.sol, verifies posted
proofs with vk.key and sizes dispute windows from circuit.json. An op segment is public by design (anyone must be able
to re-execute it and prove fraud), so its ONNX, compiled circuit and proving key are in the bundle too.

Layout (self-contained and relocatable: every path in it is relative to the bundle):

    DIR/plan.json            the operator's plan; a zk segment's "onnx" is "" (private), its onnx_sha256 is kept,
                             so the plan hash is unchanged; "model" (a path on the operator's machine) is ""
    DIR/circuits.json        segment index → {"key", "dir": "circuits/segK", "mode", "files"}
    DIR/segments/segK.onnx   op segments only
    DIR/circuits/segK/       zk: settings.json, vk.key, Verifier.sol, circuit.json; op: also model.onnx,
                             model.compiled, pk.key

circuit.json names the SRS the keys were set up with by path on the operator's machine; the SRS is public (a
challenger passes its own copy of the same file where that path does not exist)."""

import json
import shutil
from pathlib import Path

from imo.circuits.plan import PLAN_FILE, Plan
from imo.errors import MissingArtifactError
from imo.fsutil import atomic_dir
from imo.proving.circuit import CircuitFiles
from imo.proving.segments import CIRCUITS_FILE, circuit_files

PRIVATE_ONNX = ""  # a zk segment's onnx path in a public plan.json: the file is the operator's alone


def public_files(files: CircuitFiles, mode: str) -> list[Path]:
    """The files of a segment's circuit directory that may leave the operator's machine."""
    public = [files.settings, files.vk, files.verifier_sol, files.report]
    if mode == "op":
        public += [files.onnx, files.compiled, files.pk]
    return public


def private_files(files: CircuitFiles, mode: str) -> list[Path]:
    """The files only the operator holds: a zk segment's ONNX, compiled circuit and proving key (its weights)."""
    return [files.onnx, files.compiled, files.pk] if mode == "zk" else []


def is_public_bundle(plan: Plan) -> bool:
    """True for a plan.json written by `write_public_bundle` (some segment's ONNX is withheld)."""
    return any(s.mode == "zk" and s.onnx == PRIVATE_ONNX for s in plan.segments)


def write_public_bundle(plan_path: Path, out_dir: Path) -> dict:
    """Write the public bundle of the compiled plan at plan_path into out_dir (atomically; a previous bundle there is
    replaced). Returns a summary: the bundle's plan.json and, per segment, which files are public and which withheld."""
    plan_path = Path(plan_path)
    plan, plan_dir = Plan.load(plan_path), plan_path.parent
    if is_public_bundle(plan):
        raise MissingArtifactError(f"{plan_path} is already a public bundle; write the bundle from the operator's compiled plan")
    index_file = plan_dir / CIRCUITS_FILE
    circuits = {s.index: circuit_files(plan_dir, s) for s in plan.segments}  # MissingArtifactError if not compiled
    index = json.loads(index_file.read_text())
    body = json.loads(plan_path.read_text())
    body["model"] = ""  # the operator's model path says nothing a challenger needs; model_sha256 stays
    summary = {"plan": str(Path(out_dir) / PLAN_FILE), "plan_hash": plan.plan_hash, "segments": []}
    with atomic_dir(Path(out_dir)) as tmp:
        (tmp / "segments").mkdir()
        (tmp / "circuits").mkdir()
        public_index = {}
        for seg, seg_body in zip(plan.segments, body["segments"]):
            files = circuits[seg.index]
            wanted = [files.settings] if seg.game_only else public_files(files, seg.mode)
            files.require(*wanted)
            dest = CircuitFiles(tmp / "circuits" / f"seg{seg.index}")
            dest.root.mkdir()
            for path in wanted:
                shutil.copyfile(path, dest.root / path.name)
            if seg.mode == "op":
                seg_body["onnx"] = f"segments/seg{seg.index}.onnx"
                shutil.copyfile(plan_dir / seg.onnx, tmp / seg_body["onnx"])
                data = (plan_dir / seg.onnx).with_name(Path(seg.onnx).name + ".data")  # a large op segment's external weights
                if data.is_file():
                    shutil.copyfile(data, tmp / (seg_body["onnx"] + ".data"))
            else:
                seg_body["onnx"] = PRIVATE_ONNX
            public_index[str(seg.index)] = {"key": index[str(seg.index)]["key"], "dir": f"circuits/seg{seg.index}", "mode": seg.mode,
                                            "files": [p.name for p in wanted]}
            summary["segments"].append({"segment": seg.index, "mode": seg.mode, "public": [p.name for p in wanted],
                                        "withheld": [p.name for p in private_files(files, seg.mode)]})
        (tmp / PLAN_FILE).write_text(json.dumps(body, indent=2))
        (tmp / CIRCUITS_FILE).write_text(json.dumps(public_index, indent=2))
        if Plan.load(tmp / PLAN_FILE).compute_hash() != plan.compute_hash():  # withholding files must not change the plan
            raise AssertionError("the public plan.json hashes differently from the operator's")
    return summary
