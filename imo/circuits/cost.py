"""Proving-cost estimates: circuit rows and logrows of a segment, from ezkl's own layout of the segment.

A segment's model rows come from ezkl's `gen_settings` on the sub-model between its two cut tensors (private I/O,
the plan's scale), cached by the sub-model's ONNX bytes. With hashed I/O ezkl lays the Poseidon hashes out beside
the model, so a segment needs max(model rows, Poseidon rows) — measured on ezkl 23.0.5: 41 rows per hashed element
+ 4; a public output adds 10.5 model rows per element, a public input none. The estimate is checked against ezkl's
settings of real segments in tests."""

import hashlib
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ezkl
import numpy as np
import onnx

from imo.circuits.graph import Graph
from imo.errors import ProofError
from imo.proving.native import call_ezkl

POSEIDON_ROWS_PER_ELEMENT = 41
POSEIDON_ROWS_FIXED = 4
PUBLIC_OUTPUT_HALF_ROWS = 21  # a public output element adds 10.5 rows
NARROW_DECOMP = (1024, 3)
"""(decomp_base, decomp_legs) of tile circuits: ezkl's default (16384, 2) needs a 2^14-row range-check table, so no circuit
gets below logrows 15 however small; base 2^10 with 3 legs represents more (|v| < 2^30 instead of 2^28) for a few % more
rows and lets a small tile prove at logrows 12-14 (measured on ezkl 23.0.5). The executor reads both from the settings."""
RESERVED_ROWS = 16  # blinding and reserved rows halo2 keeps free at the bottom of the table
HASHED_PROVE_FACTOR = 1.7
"""Prover time of a circuit with any Poseidon-hashed input or output over the same circuit with public I/O, at the same
logrows: ezkl lays the hash out in its own columns with a degree-5 S-box gate, and every one of them spans all 2^logrows
rows however few elements are hashed. Measured on ezkl 23.0.5, 2 quiet cores (docs/zk-cost.md): mlp-wide's input
layer 12.3 s hashed / 7.4 s public at logrows 16 (1.67), a 128-column tile of it 3.26 / 1.93 s at 14 (1.69), a
256-column tile 6.43 / 3.65 s at 15 (1.76). Rows alone (41 per hashed element) miss this."""


@dataclass(frozen=True)
class SegmentCost:
    rows: int  # model rows with private I/O
    min_logrows: int  # set by the segment's range-check tables
    error: str | None = None  # why ezkl cannot lay the segment out, if it cannot
    settings: dict | None = field(default=None, compare=False, repr=False)  # ezkl's settings (private I/O, the plan's scale)


def run_args(scale: int, input_visibility: str = "private", output_visibility: str = "private", decomp: tuple[int, int] | None = None) -> "ezkl.PyRunArgs":
    """The pinned ezkl settings of every segment of a plan: one common scale, rebase multiplier 1, fixed params
    (decomp: (decomp_base, decomp_legs), tiles' narrow range-check table)."""
    args = ezkl.PyRunArgs()
    if decomp:
        args.decomp_base, args.decomp_legs = decomp
    args.input_scale = args.param_scale = scale
    args.scale_rebase_multiplier = 1
    args.input_visibility, args.output_visibility, args.param_visibility = input_visibility, output_visibility, "fixed"
    return args


def model_cost(model: onnx.ModelProto, scale: int, decomp: tuple[int, int] | None = None) -> SegmentCost:
    """ezkl's layout of `model` (private I/O, fixed params, the given scale), or the reason ezkl cannot lay it out."""
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file, settings_file = Path(tmp) / "segment.onnx", Path(tmp) / "settings.json"
        onnx.save(model, str(onnx_file))
        try:
            call_ezkl("gen_settings", ezkl.gen_settings, str(onnx_file), str(settings_file), py_run_args=run_args(scale, decomp=decomp))
        except ProofError as exc:
            return SegmentCost(0, 0, str(exc).removeprefix("ezkl gen_settings failed: "))
        settings = json.loads(settings_file.read_text())
    tables = [hi - lo + 1 for lo, hi in settings["required_range_checks"]] + [1]
    return SegmentCost(settings["num_rows"], logrows_for(max(tables)), settings=settings)


class CostModel:
    """Costs of the sub-models of one graph, each laid out by ezkl once (cached by the sub-model's ONNX bytes)."""

    def __init__(self, graph: Graph, scale: int, decomp: tuple[int, int] | None = None):
        self.graph, self.scale, self.decomp = graph, scale, decomp
        self._cache: dict[bytes, SegmentCost] = {}

    def between(self, inputs: list[str], outputs: list[str]) -> SegmentCost:
        """The cost of the sub-model computing `outputs` from `inputs`."""
        model = self.graph.sub_model(inputs, outputs)
        model.graph.name = "segment"  # the name holds the tensor names: the same computation costs the same
        key = hashlib.sha256(model.SerializeToString(deterministic=True)).digest()
        if key not in self._cache:
            self._cache[key] = model_cost(model, self.scale, self.decomp)
        return self._cache[key]


def logrows_for(rows: int) -> int:
    return max(1, math.ceil(math.log2(rows + RESERVED_ROWS)))


def segment_rows(cost: SegmentCost, hashed_elements: int, public_outputs: int) -> int:
    """Estimated rows of a segment: model rows (plus 10.5 rows per public output element; a public input costs none)
    beside the Poseidon hashes of its hashed inputs and outputs (measured on ezkl 23.0.5)."""
    model_rows = cost.rows + public_outputs * PUBLIC_OUTPUT_HALF_ROWS // 2
    poseidon_rows = POSEIDON_ROWS_PER_ELEMENT * hashed_elements + POSEIDON_ROWS_FIXED if hashed_elements else 0
    return max(model_rows, poseidon_rows)


def segment_logrows(cost: SegmentCost, hashed_elements: int, public_outputs: int) -> int:
    return max(logrows_for(segment_rows(cost, hashed_elements, public_outputs)), cost.min_logrows)


def prove_cost(logrows: int, hashed: bool) -> float:
    """Relative prover time of one circuit: linear in its padded rows (4.1x for 4x rows measured at logrows 16 → 18),
    HASHED_PROVE_FACTOR more with any hashed I/O. Cut selection compares sums of these."""
    return 2.0**logrows * (HASHED_PROVE_FACTOR if hashed else 1.0)


def elements(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 1
