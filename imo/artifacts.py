"""Recognise imo's artifacts by their content, not their name, so that a command given the wrong kind of file (an
input where a plan belongs, an ONNX model where JSON is expected, an empty file, a directory) says so in one line.

`kind_of(path)` names what a path holds; `require(path, *kinds)` returns the kind if it is one of `kinds` and
otherwise raises `WrongArtifactError` naming what was found, what was expected and which command writes it."""

import json
from pathlib import Path

from imo.errors import InvalidModelError, MissingArtifactError

# files
ONNX = "onnx"
PLAN = "plan"
RUN = "run"
INPUT = "input"
DEPLOYMENT = "deployment"
PROOF = "proof"
SETTINGS = "settings"
KEYSTORE = "keystore"
OTHER_JSON = "json"
TEXT = "text"
BINARY = "binary"
EMPTY = "empty"
MISSING = "missing"
# directories
RUN_DIR = "run-dir"
PROOF_DIR = "proof-dir"
PLAN_DIR = "plan-dir"
DEPLOYMENT_DIR = "deployment-dir"
DIRECTORY = "directory"

DESCRIPTION = {
    ONNX: "an ONNX model",
    PLAN: "a plan.json (written by `imo plan MODEL --out DIR`)",
    RUN: "a run.json (written by `imo prove PLAN INPUT --out DIR`)",
    INPUT: 'an input file in ezkl\'s format ({"input_data": [[...]]})',
    DEPLOYMENT: "a deployment.json (written by `imo deploy`)",
    PROOF: "an ezkl proof file",
    SETTINGS: "ezkl circuit settings",
    KEYSTORE: "an encrypted keystore",
    OTHER_JSON: "a JSON file imo does not recognise",
    TEXT: "a text file that is not JSON",
    BINARY: "a binary file that is not an ONNX model",
    EMPTY: "an empty file",
    MISSING: "missing",
    RUN_DIR: "a plan run directory (written by `imo prove PLAN INPUT --out DIR`)",
    PROOF_DIR: "a proof directory (written by `imo prove MODEL.onnx INPUT --out DIR`)",
    PLAN_DIR: "a plan directory (holding plan.json)",
    DEPLOYMENT_DIR: "a directory holding deployment.json",
    DIRECTORY: "a directory",
}

# the file inside a directory that a command probably meant, by the kind it expects
_INSIDE = {PLAN: (PLAN_DIR, "plan.json"), RUN: (RUN_DIR, "run.json"), DEPLOYMENT: (DEPLOYMENT_DIR, "deployment.json")}


class WrongArtifactError(MissingArtifactError):
    """A path that holds another kind of artifact than the command needs (or nothing)."""


def _json_kind(data) -> str:
    if not isinstance(data, dict):
        return OTHER_JSON
    if "segments" in data and "plan_hash" in data and "boundaries" not in data:
        return PLAN
    if "boundaries" in data and "plan_hash" in data:
        return RUN
    if "input_data" in data:
        rows = data["input_data"]
        return INPUT if isinstance(rows, list) and rows and isinstance(rows[0], list) else OTHER_JSON
    if {"chain_id", "token", "oracle"} <= data.keys():
        return DEPLOYMENT
    if "hex_proof" in data or {"proof", "instances"} <= data.keys():
        return PROOF
    if "run_args" in data:
        return SETTINGS
    if "crypto" in data or "Crypto" in data:
        return KEYSTORE
    return OTHER_JSON


def _looks_like_onnx(blob: bytes) -> bool:
    import onnx

    model = onnx.ModelProto()
    try:
        model.ParseFromString(blob)
    except Exception:  # protobuf's DecodeError, or anything else a random blob provokes
        return False
    return model.ir_version > 0 and model.HasField("graph") and len(model.graph.node) > 0


def kind_of(path: Path) -> str:
    """What `path` holds: one of the kinds above."""
    path = Path(path)
    if path.is_dir():
        for name, kind in (("run.json", RUN_DIR), ("plan.json", PLAN_DIR), ("deployment.json", DEPLOYMENT_DIR)):
            if (path / name).is_file():
                return kind
        return PROOF_DIR if (path / "proof.json").is_file() else DIRECTORY  # incomplete ones: the verifier names what is missing
    if not path.exists():
        return MISSING
    try:
        blob = path.read_bytes()
    except OSError:
        return MISSING
    if not blob.strip():
        return EMPTY
    if blob.lstrip()[:1] in (b"{", b"["):
        try:
            return _json_kind(json.loads(blob))
        except ValueError:  # also UnicodeDecodeError
            pass
    if _looks_like_onnx(blob):
        return ONNX
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError:
        return BINARY
    return TEXT


def require(path: Path, *kinds: str, role: str = "") -> str:
    """The kind of `path` if it is one of `kinds`; otherwise one line saying what it is and what was expected.
    `role` names the argument (e.g. "--calibration") in the message."""
    path = Path(path)
    found = kind_of(path)
    if found in kinds:
        return found
    expected = " or ".join(DESCRIPTION[k] for k in kinds)
    who = f"{role} " if role else ""
    if found == MISSING:
        raise WrongArtifactError(f"{who}{path} not found; expected {expected}")
    hint = ""
    for kind in kinds:
        if kind in _INSIDE and found == _INSIDE[kind][0]:
            hint = f"; pass {path / _INSIDE[kind][1]}"
        if found in (RUN, PROOF) and kind in (RUN_DIR, PROOF_DIR):
            hint = f"; pass its directory {path.parent}"
    if ONNX in kinds and found in (BINARY, TEXT):
        raise InvalidModelError(f"{who}{path} is not a valid ONNX model ({DESCRIPTION[found]}); expected {expected}")
    raise WrongArtifactError(f"{who}{path} is {DESCRIPTION[found]}, not {expected}{hint}")
