"""Content-addressed artifact store: compiled circuits and proofs under keys derived from what determines them.

A circuit's key hashes (segment ONNX bytes, pinned ezkl settings, calibration inputs, ezkl version); a proof's key
hashes (circuit key, quantized input). Every entry carries a manifest of sha256 digests, checked on every read:
a corrupted or half-written entry is discarded and rebuilt, never used. Entries appear atomically (rename)."""

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import ezkl
import numpy as np

from imo.fsutil import atomic_dir, cache_dir, file_sha256
from imo.proving.circuit import LOOKUP_SAFETY_MARGIN, CircuitFiles, Visibility

MANIFEST = "manifest.json"


#: what a circuit's Verifier.sol is: ezkl's own, or an adapter over ezkl's reusable verifier where ezkl's exceeds EIP-170
#: (imo.verifier_contracts.reusable); part of the key, so an entry cached before adapters existed is rebuilt, not reused
VERIFIER_FORMAT = "eip170-adapter"


def circuit_key(onnx_bytes: bytes, visibility: Visibility, scales: list[int] | None, calibration: np.ndarray,
                decomp: tuple[int, int] | None = None) -> str:
    """Content address of a circuit and its keys: equal ONNX bytes (tiles carry canonical tensor names, so equal shape and
    weights give equal bytes) with equal settings inputs share one entry: compiled once, keys generated once."""
    material = {
        "onnx": hashlib.sha256(onnx_bytes).hexdigest(),
        "visibility": asdict(visibility),
        "scales": scales,
        "calibration": hashlib.sha256(np.ascontiguousarray(calibration, dtype=np.float32).tobytes()).hexdigest(),
        "ezkl": ezkl.__version__,
        "lookup_safety_margin": LOOKUP_SAFETY_MARGIN,
        "verifier": VERIFIER_FORMAT,
    }
    if decomp:
        material["decomp"] = list(decomp)
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def proof_key(circuit: str, quantized_input: np.ndarray) -> str:
    return hashlib.sha256(circuit.encode() + np.ascontiguousarray(quantized_input, dtype=np.int64).tobytes()).hexdigest()


class ArtifactStore:
    """Entries live in <root>/<kind>/<key>/; root defaults to $IMO_CACHE/store."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_dir("store")
        self.rebuilt: list[str] = []  # keys found corrupted during this process's lifetime

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def get(self, kind: str, key: str) -> Path | None:
        """The entry's directory if present and intact; a corrupted entry is removed (and reported in `rebuilt`)."""
        entry = self.path(kind, key)
        manifest = entry / MANIFEST
        if not manifest.is_file():
            return None
        try:
            expected = json.loads(manifest.read_text())["files"]
            intact = all((entry / name).is_file() and file_sha256(entry / name) == digest for name, digest in expected.items())
        except (ValueError, KeyError):
            intact = False
        if not intact:
            shutil.rmtree(entry, ignore_errors=True)
            self.rebuilt.append(key)
            return None
        return entry

    def put(self, kind: str, key: str, build: Callable[[Path], object]) -> Path:
        """Run build(tmp_dir) and publish its files under the key with a manifest; a failed build leaves nothing."""
        entry = self.path(kind, key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(entry) as tmp:
            build(tmp)
            files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / MANIFEST).write_text(json.dumps({"key": key, "files": files}, indent=2))
        return entry

    def get_or_put(self, kind: str, key: str, build: Callable[[Path], object]) -> tuple[Path, bool]:
        """(entry, hit): reuse an intact entry, else build it."""
        found = self.get(kind, key)
        return (found, True) if found else (self.put(kind, key, build), False)

    def circuit(self, key: str, build: Callable[[CircuitFiles], object]) -> tuple[CircuitFiles, bool]:
        entry, hit = self.get_or_put("circuits", key, lambda tmp: build(CircuitFiles(tmp)))
        return CircuitFiles(entry), hit
