"""The step programs of a compiled plan's op segments: what `imo register` puts in the registration and what every
node recomputes to check it (a bisection game can be opened on a segment registered with one).

Building a program quantizes the segment's weights and hashes every tile (seconds for 10^8 weights), so each root is
cached in `step_programs.json` beside the plan, keyed by the sha256 of the segment's ONNX and settings files: a stale
entry can never be reused."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from imo.circuits.plan import Plan
from imo.fsutil import atomic_write_bytes, file_sha256
from imo.proving.segments import circuit_files
from imo.proving.trace import NotBisectable, StepProgram

log = logging.getLogger("imo.programs")

PROGRAMS_FILE = "step_programs.json"

Programs = dict[int, tuple[bytes, int]]  # 1-based op segment → (program root, step count)


def plan_programs(plan_file: Path) -> Programs:
    """Root and step count of every op segment of the plan that has a step program (a segment with an op the game
    cannot check on chain has none: only a whole-segment fraud proof disputes it)."""
    plan_file = Path(plan_file)
    plan = Plan.load(plan_file)
    plan_dir = plan_file.parent
    cache_file = plan_dir / PROGRAMS_FILE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    out: Programs = {}
    changed = False
    for k, seg in enumerate(plan.segments, start=1):
        if seg.mode != "op" or not seg.onnx:
            continue
        settings = circuit_files(plan_dir, seg).settings
        key = file_sha256(plan_dir / seg.onnx, settings)
        entry = cache.get(key)
        if entry is None:
            try:
                start = time.perf_counter()
                program = StepProgram.build(plan_dir / seg.onnx, settings)
                entry = {"root": program.root.hex(), "steps": program.n_steps, "build_seconds": round(time.perf_counter() - start, 1)}
            except NotBisectable as exc:
                log.info("segment %d has no step program: %s", k, exc)
                entry = {"root": None, "reason": str(exc)}
            cache[key] = entry
            changed = True
        if entry["root"] is not None:
            out[k] = (bytes.fromhex(entry["root"]), int(entry["steps"]))
    if changed:
        try:
            atomic_write_bytes(cache_file, json.dumps(cache, indent=1).encode())
        except OSError:  # a read-only plan (a shared bundle) still works, it just recomputes
            pass
    return out


def program_build_seconds(plan_file: Path) -> float:
    """The longest step-program build of the plan measured here (0 if none was built): a challenger rebuilds the
    program and re-executes its trace before its first move, so the windows must allow for it."""
    try:
        cache = json.loads((Path(plan_file).parent / PROGRAMS_FILE).read_text())
    except (OSError, ValueError):
        return 0.0
    return max((float(e.get("build_seconds", 0.0)) for e in cache.values() if isinstance(e, dict)), default=0.0)
