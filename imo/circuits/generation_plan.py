"""The hybrid plan of a generation model (`imo plan LM --generate N`): an optimistic backbone and a private zk head.

A language model too large for any circuit (the zoo's 114M-parameter `gpt`) cannot go through `make_plan`, whose
policy asks ezkl to lay out every layer. Its plan is fixed instead, and every choice in it is written down:

- The model is the generation graph (`imo.models.generation`): T token ids in, the N greedy tokens that follow out.
- Segment 0, op and game-only: everything up to the output head's input, (N, d_model) at the plan's scale. It has no
  whole-segment ezkl circuit (its estimated logrows are printed), so its executor settings are set here, not
  calibrated, and a challenge of it is always a bisection game over its step program.
- Segment 1, zk: the head (Gemm) and the ArgMax, with private weights; compiled and calibrated by ezkl as usual.

The segment files stream the weights from the model's external data (never two copies in memory), and the backbone
gets its own data file holding only its tensors: the head's private weights are in no public file."""

from __future__ import annotations

import json
from pathlib import Path

import ezkl
import numpy as np
import onnx
from onnx import helper

from imo.circuits.cost import elements, logrows_for, model_cost, segment_logrows, segment_rows
from imo.circuits.plan import PLAN_FILE, Plan, Segment
from imo.errors import InvalidModelError
from imo.fsutil import atomic_dir, file_sha256
from imo.models.generation import needed_nodes

GENERATION_SCALE = 10  # the scale `imo generate` decodes at (docs/llm.md: at 8 the greedy tokens diverge from float)
#: the backbone's lookup range: every GELU/exp/reciprocal input of the 16-block gpt at scale 10 lies inside (measured
#: by building its step program: `tests/test_trace.py`); an input outside makes a claim unprovable, never wrong
GENERATION_LOOKUP_RANGE = (-65536, 65536)
#: ezkl rows per multiply-accumulate of a wide GEMM (measured on mlp-wide and a 4096 → 256 layer, ezkl 23.0.5): only
#: to report how far the backbone is beyond any circuit
ROWS_PER_MAC = 0.59
CALIBRATION_TEXTS = 4


def backbone_run_args(scale: int = GENERATION_SCALE, lookup_range: tuple[int, int] = GENERATION_LOOKUP_RANGE) -> dict:
    """The game-only backbone's executor settings: `imo generate`'s (decomposition base 2^14 with 3 legs: LayerNorm's
    mean of squares needs the third leg in the late blocks) and the lookup range its step program's tables cover."""
    return {"input_scale": scale, "param_scale": scale, "scale_rebase_multiplier": 1, "decomp_base": 16384,
            "decomp_legs": 3, "lookup_range": list(lookup_range), "logrows": 17, "variables": [["batch_size", 1]]}


def make_generation_plan(lm_onnx: Path, tokens: int, out_dir: Path, scale: int = GENERATION_SCALE,
                         calibration_texts: list[bytes] | None = None) -> Path:
    """Write the generation plan of the language model `lm_onnx` for `tokens` tokens into out_dir (atomically):
    plan.json, model/ (the generation graph and calibration.json) and segments/. Returns the plan file."""
    from imo.models.generation import generation_onnx, head_onnx

    out_dir = Path(out_dir)
    with atomic_dir(out_dir, derived=("circuits.json", "step_programs.json")) as tmp:
        (tmp / "model").mkdir()
        (tmp / "segments").mkdir()
        gen = generation_onnx(Path(lm_onnx), tokens, tmp / "model" / "model.onnx")
        proto = onnx.load(str(gen.path), load_external_data=False)
        backbone, head = tmp / "segments" / "seg0.onnx", tmp / "segments" / "seg1.onnx"
        d = gen.d_model
        _write_backbone(proto, gen.path.parent, gen.head_input, (gen.tokens, d), backbone)
        head_onnx(gen, head)
        _write_calibration(tmp / "model" / "calibration.json", gen.context, calibration_texts)
        macs = _matmul_macs(backbone)
        head_cost = model_cost(onnx.load(str(head)), scale)
        (backbone_nodes, backbone_ops), (head_nodes, head_ops) = _nodes(backbone), _nodes(head)
        segments = [
            Segment(index=0, mode="op", nodes=backbone_nodes, ops=backbone_ops,
                    reason=f"game only (no whole-segment circuit; disputed by bisection): {macs:,} MACs",
                    input="input", output=gen.head_input, input_shape=[1, gen.context], output_shape=[gen.tokens, d],
                    est_rows=int(macs * ROWS_PER_MAC), est_logrows=logrows_for(int(macs * ROWS_PER_MAC)),
                    onnx="segments/seg0.onnx", onnx_sha256=file_sha256(backbone, backbone.with_name(backbone.name + ".data")),
                    run_args=backbone_run_args(scale)),
            Segment(index=1, mode="zk", reason="private: the output head's weights", nodes=head_nodes, ops=head_ops,
                    input=gen.head_input, output="output", input_shape=[gen.tokens, d], output_shape=[gen.tokens],
                    est_rows=segment_rows(head_cost, 0, gen.tokens), est_logrows=segment_logrows(head_cost, 0, gen.tokens),
                    onnx="segments/seg1.onnx", onnx_sha256=file_sha256(head)),
        ]
        plan = Plan(model=str(out_dir / "model" / "model.onnx"), model_sha256=file_sha256(gen.path), ezkl_version=ezkl.__version__,
                    scale=scale, scale_rebase_multiplier=1,
                    visibility={"input": "public", "between_zk": "hashed", "next_to_op": "public", "final_output": "public",
                                "params": "fixed"},
                    budget_logrows=None, private_nodes=head_nodes, segments=segments, generate=gen.tokens)
        plan.plan_hash = plan.compute_hash()
        (tmp / PLAN_FILE).write_text(plan.to_json(plan_dir=out_dir))
    return out_dir / PLAN_FILE


def _nodes(path: Path) -> tuple[list[str], list[str]]:
    """The names and op types of a segment file's nodes (its graph only, no weights)."""
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return [n.name or n.output[0] for n in nodes], [n.op_type for n in nodes]


def _external(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data} if t.data_location == onnx.TensorProto.EXTERNAL else {}


def _write_backbone(proto: onnx.ModelProto, src_dir: Path, cut: str, shape: tuple[int, int], path: Path) -> None:
    """The graph up to `cut`, its external tensors streamed into its own data file beside it (only the bytes its
    nodes use, read and written one tensor at a time)."""
    nodes = needed_nodes(proto.graph, cut, stop="")
    used = {i for n in nodes for i in n.input}
    data_name = path.name + ".data"
    initializers, offset = [], 0
    with open(path.with_name(data_name), "wb") as out:
        for t in proto.graph.initializer:
            if t.name not in used:
                continue
            t = onnx.TensorProto.FromString(t.SerializeToString())
            ext = _external(t)
            if ext:
                with open(src_dir / ext["location"], "rb") as src:
                    src.seek(int(ext.get("offset", 0)))
                    blob = src.read(int(ext["length"]))
                pad = (-offset) % 4096  # onnx's own alignment for memory-mapping
                out.write(b"\0" * pad)
                offset += pad
                out.write(blob)
                del t.external_data[:]
                for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(blob)))):
                    t.external_data.add(key=key, value=value)
                offset += len(blob)
            initializers.append(t)
    graph_input = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    graph = helper.make_graph(nodes, "backbone", graph_input, [helper.make_tensor_value_info(cut, onnx.TensorProto.FLOAT, list(shape))],
                              initializers)
    model = helper.make_model(graph, opset_imports=proto.opset_import)
    model.ir_version = proto.ir_version
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise InvalidModelError(f"the backbone segment {path} is not a valid ONNX graph: {str(e).splitlines()[0]}") from None


def _matmul_macs(path: Path) -> int:
    """Multiply-accumulates of every MatMul and Gemm, from shapes alone (no weights loaded)."""
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*proto.graph.value_info, *proto.graph.input, *proto.graph.output)}
    dims.update({t.name: list(t.dims) for t in proto.graph.initializer})
    macs = 0
    for n in proto.graph.node:
        if n.op_type in ("MatMul", "Gemm") and n.output[0] in dims and n.input[0] in dims:
            out, a = dims[n.output[0]], dims[n.input[0]]
            k = a[-1] if not (n.op_type == "Gemm" and any(x.name == "transA" and x.i for x in n.attribute)) else a[0]
            macs += elements(tuple(out)) * k
    return macs


def _write_calibration(path: Path, context: int, texts: list[bytes] | None) -> None:
    """A few held-out corpus windows of `context` token ids, the calibration `imo compile` reads by default (the head's
    circuit is calibrated on the backbone's real outputs for them)."""
    from imo.models.gpt import held_out_texts, window

    texts = texts if texts is not None else held_out_texts(CALIBRATION_TEXTS, length=context)
    ids = np.concatenate([window(t, context).ravel() for t in texts])
    path.write_text(json.dumps({"input_data": [ids.astype(int).tolist()]}) + "\n")
