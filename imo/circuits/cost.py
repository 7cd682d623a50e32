"""Proving-cost estimates: circuit rows per ONNX node, and rows/logrows of a segment built from nodes.

A node's rows come from ezkl's own layout (`gen_settings` on the node alone, private I/O, the plan's scale);
a segment's circuit rows are estimated as the sum over its nodes. With hashed I/O ezkl lays the Poseidon
hashes out beside the model, so a segment needs max(model rows, Poseidon rows) — measured on ezkl 23.0.5:
41 rows per hashed element + 4; a public output adds 10.5 model rows per element, a public input none. The estimate is checked against ezkl's settings of real segments in tests."""

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ezkl
import numpy as np

from imo.circuits.graph import Graph, GraphNode, extract
from imo.errors import ProofError
from imo.proving.native import call_ezkl

POSEIDON_ROWS_PER_ELEMENT = 41
POSEIDON_ROWS_FIXED = 4
PUBLIC_OUTPUT_HALF_ROWS = 21  # a public output element adds 10.5 rows
RESERVED_ROWS = 16  # blinding and reserved rows halo2 keeps free at the bottom of the table


@dataclass(frozen=True)
class NodeCost:
    rows: int
    min_logrows: int  # set by the node's lookup / range-check tables
    error: str | None = None  # why ezkl cannot lay the node out, if it cannot


def run_args(scale: int, input_visibility: str = "private", output_visibility: str = "private") -> "ezkl.PyRunArgs":
    """The pinned ezkl settings of every segment of a plan: one common scale, rebase multiplier 1, fixed params."""
    args = ezkl.PyRunArgs()
    args.input_scale = args.param_scale = scale
    args.scale_rebase_multiplier = 1
    args.input_visibility, args.output_visibility, args.param_visibility = input_visibility, output_visibility, "fixed"
    return args


def node_cost(graph: Graph, node: GraphNode, scale: int) -> NodeCost:
    """ezkl's row count for `node` alone, or the reason ezkl cannot prove it."""
    if len(node.inputs) != 1:
        return NodeCost(0, 0, f"node has {len(node.inputs)} activation inputs; imo segments have one")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file, settings_file = Path(tmp) / "node.onnx", Path(tmp) / "settings.json"
        extract(graph, node.inputs[0], node.outputs[0], onnx_file)
        try:
            call_ezkl("gen_settings", ezkl.gen_settings, str(onnx_file), str(settings_file), py_run_args=run_args(scale))
        except ProofError as exc:
            return NodeCost(0, 0, str(exc).removeprefix("ezkl gen_settings failed: "))
        settings = json.loads(settings_file.read_text())
    tables = [hi - lo + 1 for lo, hi in settings["required_range_checks"]] + [1]
    return NodeCost(settings["num_rows"], logrows_for(max(tables)))


def logrows_for(rows: int) -> int:
    return max(1, math.ceil(math.log2(rows + RESERVED_ROWS)))


def segment_rows(node_costs: list[NodeCost], hashed_elements: int, public_outputs: int) -> int:
    """Estimated rows of a segment: model rows (summed over nodes, plus 10.5 rows per public output element; a public
    input costs none) beside the Poseidon hashes of its hashed inputs and outputs (measured on ezkl 23.0.5)."""
    model_rows = sum(c.rows for c in node_costs) + public_outputs * PUBLIC_OUTPUT_HALF_ROWS // 2
    poseidon_rows = POSEIDON_ROWS_PER_ELEMENT * hashed_elements + POSEIDON_ROWS_FIXED if hashed_elements else 0
    return max(model_rows, poseidon_rows)


def segment_logrows(node_costs: list[NodeCost], hashed_elements: int, public_outputs: int) -> int:
    return max([logrows_for(segment_rows(node_costs, hashed_elements, public_outputs))] + [c.min_logrows for c in node_costs])


def elements(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 1
