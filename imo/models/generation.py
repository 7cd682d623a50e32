"""A language model as a *generation model*: one forward pass, N greedy tokens (teacher forcing).

The oracle serves an LM of the zoo's interface (`imo.models.gpt`: "input" (1, T) int64 token ids -> the logits of the
byte after the window, a graph ending ``Gather(last position, axis 1) -> LayerNormalization -> Gemm``) as a model whose
output is the N tokens it generates. The input is T ids: the prompt (its last P = T - N + 1 bytes, left-padded with
spaces) followed by the first N - 1 generated tokens; under the causal mask position P - 1 + k sees exactly the prompt
and the first k generated tokens, so the argmax of the logits at the last N positions is the whole greedy generation,
checkable in one pass. `generation_onnx` rewrites the LM's tail into

    Gather(positions T-N..T-1, axis 1) -> Reshape (N, d) -> LayerNormalization -> Gemm -> ArgMax(axis 1) -> "output" (N,)

and the cut between the optimistic backbone and the private zk head is the LayerNorm's output (`head_input`, (N, d)).
The new graph reuses the LM's external weight data byte for byte: in the LM's own directory it points at the same file;
elsewhere the file is copied beside it on disk (kernel copy, never through memory), because onnx refuses a data file
that is a symbolic link, a hard link or outside the model's directory. Either way no weight is parsed or held in memory. `decode` produces the N tokens with N passes of the same graph, the final input included."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from imo.errors import InputShapeError, InvalidModelError
from imo.models.gpt import PAD

OUTPUT = "output"
"""Name of the generation graph's output: the N generated token ids, (N,) int64."""


@dataclass(frozen=True)
class GenerationGraph:
    """A generation graph on disk and its geometry. `head_input` is the (N, d_model) tensor at the backbone/head cut."""

    path: Path
    context: int  # T: token ids in
    prompt_len: int  # P = T - N + 1: prompt bytes in the input
    tokens: int  # N: tokens out
    vocab: int
    head_input: str
    d_model: int


@dataclass(frozen=True)
class _Tail:
    """The LM's last three nodes (Gather of the last position, final LayerNorm, Gemm head) and its geometry."""

    gather: onnx.NodeProto
    norm: onnx.NodeProto
    head: onnx.NodeProto
    context: int
    d_model: int
    vocab: int


# ------------------------------------------------------------------ graph surgery


def generation_onnx(lm_onnx: Path, tokens: int, out: Path) -> GenerationGraph:
    """Write the generation graph of `lm_onnx` for `tokens` tokens to `out` (its external weight data beside it: the
    LM's file itself in the same directory, else a copy) and return its description. The LM's weights are never
    loaded: only the graph is rewritten."""
    lm_onnx, out = Path(lm_onnx), Path(out)
    if not isinstance(tokens, (int, np.integer)) or isinstance(tokens, bool) or tokens < 1:
        raise InputShapeError(f"a generation model makes at least 1 token, got tokens={tokens!r}")
    proto = _load_graph(lm_onnx)
    tail = _find_tail(proto, lm_onnx)
    if tokens > tail.context:
        raise InputShapeError(f"{lm_onnx}: {tokens} tokens do not fit a context of {tail.context} (the prompt needs at least 1 byte)")
    if out.resolve() == lm_onnx.resolve():
        raise InvalidModelError(f"the generation graph {out} would overwrite the language model it is made from")
    _rewrite_tail(proto, tail, int(tokens))
    out.parent.mkdir(parents=True, exist_ok=True)
    _relink_external_data(proto, lm_onnx.parent, out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        onnx.save(proto, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        onnx.checker.check_model(str(out), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        out.unlink()
        raise InvalidModelError(f"the generation graph {out} does not check: {str(e).strip().splitlines()[0][:200]}") from None
    return GenerationGraph(out, tail.context, tail.context - int(tokens) + 1, int(tokens), tail.vocab, tail.norm.output[0], tail.d_model)


def _load_graph(path: Path) -> onnx.ModelProto:
    """The LM's graph without its external weights (they stay on disk); one line if it is not an ONNX file."""
    if not path.is_file():
        raise InvalidModelError(f"language model {path} not found")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is the same user error
        raise InvalidModelError(f"{path} is not an ONNX model ({type(e).__name__})") from None


def _constants(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Tensors known without running the graph: initializers (dims only if external) and Constant node values."""
    known = {t.name: t for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            known[n.output[0]] = n.attribute[0].t
    return known


def _find_tail(proto: onnx.ModelProto, path: Path) -> _Tail:
    """Check that the LM has our interface and ends Gather(last position, axis 1) -> LayerNorm -> Gemm -> the output."""
    g = proto.graph

    def bad(why: str) -> InvalidModelError:
        return InvalidModelError(f"{path} is not a language model of the zoo's interface: {why}")

    known = _constants(proto)
    inputs = [i for i in g.input if i.name not in known]
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != TensorProto.INT64 or len(dims) != 2 or dims[0] != 1 or dims[1] < 1:
        raise bad("expected one int64 input of shape (1, context)")
    if len(g.output) != 1:
        raise bad(f"expected one output, found {len(g.output)}")
    producer = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    head = producer.get(g.output[0].name)
    norm = producer.get(head.input[0]) if head is not None and head.op_type == "Gemm" else None
    gather = producer.get(norm.input[0]) if norm is not None and norm.op_type == "LayerNormalization" else None
    if gather is None or gather.op_type != "Gather":
        raise bad("the graph does not end Gather(last position) -> LayerNormalization -> Gemm (the output head)")
    ga, na, ha = ({a.name: helper.get_attribute_value(a) for a in n.attribute} for n in (gather, norm, head))
    context = dims[1]
    idx = known.get(gather.input[1])
    idx = numpy_helper.to_array(idx) if idx is not None and idx.data_location != TensorProto.EXTERNAL else None
    if ga.get("axis", 0) != 1 or idx is None or idx.size != 1 or idx.ndim != 0 or int(idx) not in (-1, context - 1):
        raise bad("its Gather does not pick the last position (a scalar index -1 on axis 1)")
    if ha.get("transA", 0) or na.get("axis", -1) not in (-1, 2):
        raise bad("the head Gemm transposes its input, or the final LayerNorm is not over the last axis")
    if uses.get(gather.output[0], 0) != 1 or uses.get(norm.output[0], 0) != 1 or uses.get(head.output[0], 0) != 0:
        raise bad("the final Gather, LayerNorm or head output has other consumers")
    w = known.get(head.input[1])
    if w is None or len(w.dims) != 2:
        raise bad("the head Gemm has no constant 2-D weight")
    vocab, d_model = (w.dims[0], w.dims[1]) if ha.get("transB", 0) else (w.dims[1], w.dims[0])
    return _Tail(gather, norm, head, context, int(d_model), int(vocab))


def _fresh(proto: onnx.ModelProto, base: str) -> str:
    """A tensor name not used in the graph (so the rewrite never aliases an existing tensor)."""
    used = {t.name for t in proto.graph.initializer} | {i.name for i in proto.graph.input}
    used |= {o for n in proto.graph.node for o in (*n.input, *n.output)}
    name, k = base, 0
    while name in used:
        k += 1
        name = f"{base}_{k}"
    return name


def _rewrite_tail(proto: onnx.ModelProto, tail: _Tail, tokens: int) -> None:
    """In place: Gather the last `tokens` positions, Reshape to (N, d), keep LayerNorm and Gemm (now (N, vocab)
    "logits"), ArgMax over the vocabulary into the single output (N,) int64."""
    g = proto.graph
    t, n, d = tail.context, tokens, tail.d_model
    positions, shape = _fresh(proto, "generation/positions"), _fresh(proto, "generation/shape")
    picked, hidden = _fresh(proto, "generation/last_positions"), _fresh(proto, "generation/hidden")
    logits = _fresh(proto, "generation/logits")
    old_index, old_out = tail.gather.input[1], g.output[0].name
    g.initializer.extend([numpy_helper.from_array(np.arange(t - n, t, dtype=np.int64), positions),
                          numpy_helper.from_array(np.array([n, d], dtype=np.int64), shape)])
    gathered = tail.gather.output[0]
    tail.gather.input[1] = positions
    tail.gather.output[0] = picked
    reshape = helper.make_node("Reshape", [picked, shape], [hidden], name="generation/Reshape")
    tail.norm.input[0] = hidden
    tail.head.output[0] = logits
    argmax = helper.make_node("ArgMax", [logits], [OUTPUT], name="generation/ArgMax", axis=1, keepdims=0)
    nodes = list(g.node)
    at = next(i for i, node in enumerate(nodes) if node.output and node.output[0] == picked)
    nodes.insert(at + 1, reshape)
    nodes.append(argmax)
    still_used = {i for node in nodes for i in node.input}
    nodes = [x for x in nodes if not (x.op_type == "Constant" and x.output[0] == old_index and old_index not in still_used)]
    del g.node[:]
    g.node.extend(nodes)
    if old_index not in still_used:
        kept = [x for x in g.initializer if x.name != old_index]
        del g.initializer[:]
        g.initializer.extend(kept)
    stale = {gathered, tail.norm.output[0], old_out, OUTPUT}
    kept_info = [v for v in g.value_info if v.name not in stale]
    del g.value_info[:]
    g.value_info.extend(kept_info)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.INT64, [n]))


def _relink_external_data(proto: onnx.ModelProto, src_dir: Path, out: Path) -> None:
    """Point every external tensor at a file beside `out`, a copy of the LM's data file (offsets unchanged). In the
    LM's own directory the locations stay as they are and nothing is copied."""
    locations = sorted({e.value for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL
                        for e in t.external_data if e.key == "location"})
    if not locations or src_dir.resolve() == out.parent.resolve():
        return
    renamed = {}
    for k, loc in enumerate(locations):
        name = f"{out.name}.data" if len(locations) == 1 else f"{out.name}.data{k}"
        _copy_data(src_dir / loc, out.parent / name)
        renamed[loc] = name
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = renamed[e.value]


def _copy_data(src: Path, dst: Path) -> None:
    """`dst` gets `src`'s bytes as a file of its own (shutil.copyfile: sendfile in the kernel, no Python buffers). Not a
    link: onnx.load refuses external data that is a symbolic or a hard link ("potential hardlink attack")."""
    if not src.is_file():
        raise InvalidModelError(f"the language model's weight data {src} is missing")
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------ the zk head and its real inputs


def head_onnx(gen: GenerationGraph, out: Path) -> Path:
    """The private zk head alone (Gemm + ArgMax, and the constant nodes it reads, e.g. torch's Identity of a shared
    initializer): `head_input` (N, d) -> "output" (N,), its weights inside. Reads only the head's tensors from the
    external data (the backbone's stay on disk)."""
    proto = onnx.load(str(gen.path), load_external_data=False)
    nodes = needed_nodes(proto.graph, OUTPUT, stop=gen.head_input)
    graph_inputs = {i.name for i in proto.graph.input}
    if any(i in graph_inputs for n in nodes for i in n.input):
        raise InvalidModelError(f"{gen.path}: the head reads the model input past its cut {gen.head_input!r}")
    used = {i for n in nodes for i in n.input}
    inits = [numpy_helper.from_array(numpy_helper.to_array(t, base_dir=str(gen.path.parent)), t.name)
             for t in proto.graph.initializer if t.name in used]
    graph = helper.make_graph(nodes, "generation-head", [helper.make_tensor_value_info(gen.head_input, TensorProto.FLOAT, [gen.tokens, gen.d_model])],
                              list(proto.graph.output), inits)
    model = helper.make_model(graph, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return Path(out)


def needed_nodes(graph: onnx.GraphProto, output: str, stop: str) -> list[onnx.NodeProto]:
    """The nodes `output` depends on, not looking past the tensor `stop`, in graph order."""
    need, keep = {output}, []
    for node in reversed(graph.node):
        if any(o in need for o in node.output):
            keep.append(node)
            need.update(i for i in node.input if i and i != stop)
    return keep[::-1]


def head_inputs(gen: GenerationGraph, inputs: list[np.ndarray], threads: int = 2) -> np.ndarray:
    """The head's real inputs (float, from onnxruntime) for these (1, T) id windows, (k, N, d): what its circuit is
    calibrated on. A weightless copy of the graph that also outputs `head_input`, saved beside it (the data resolves)."""
    from imo.models.gpt import ort_session

    proto = onnx.load(str(gen.path), load_external_data=False)
    proto.graph.output.append(helper.make_empty_tensor_value_info(gen.head_input))
    probe = gen.path.with_name(f".{gen.path.stem}-probe-{os.getpid()}.onnx")
    try:
        onnx.save(proto, str(probe))
        session = ort_session(probe, threads)
        rows = [session.run([gen.head_input], {"input": np.asarray(x, dtype=np.int64).reshape(1, gen.context)})[0] for x in inputs]
    finally:
        probe.unlink(missing_ok=True)
    return np.stack(rows).astype(np.float32)


# ------------------------------------------------------------------ inputs and greedy decoding


def teacher_forced_input(prompt: bytes, generated: list[int], context: int, tokens: int) -> np.ndarray:
    """The generation graph's input (1, context) int64: the prompt's last P = context - tokens + 1 bytes left-padded
    with PAD to P, then `generated` (at most tokens - 1 ids), then PAD up to `context`. Positions after the generated
    ids cannot change the outputs before them (causal mask), so a partial generation is a valid input too."""
    if not 1 <= tokens <= context:
        raise InputShapeError(f"tokens must be between 1 and the context {context}, got {tokens}")
    if len(generated) > tokens - 1:
        raise InputShapeError(f"at most {tokens - 1} generated tokens go into the input, got {len(generated)}")
    if any(not 0 <= int(g) < 256 for g in generated):
        raise InputShapeError("generated tokens must be byte ids in [0, 256)")
    p = context - tokens + 1
    tail = bytes(prompt)[-p:] if p else b""
    body = bytes([PAD]) * (p - len(tail)) + tail + bytes(int(g) for g in generated)
    body += bytes([PAD]) * (context - len(body))
    return np.frombuffer(body, dtype=np.uint8).astype(np.int64).reshape(1, context)


def decode(program_or_callable: Callable[[np.ndarray], np.ndarray], prompt: bytes, tokens: int,
           context: int | None = None) -> tuple[list[int], np.ndarray]:
    """Greedy generation of `tokens` ids with `tokens` passes of the generation graph (pass t feeds the prompt and the
    first t ids and keeps output t) and the final input (prompt and the first N - 1 ids), on which ONE pass yields all
    of them: what the oracle's claim is checked against. A FixedPointProgram gives its own context; a plain callable
    (ids (1, T) -> (N,) ids) needs `context`."""
    shapes = getattr(program_or_callable, "input_shapes", None)
    if context is None:
        if not shapes:
            raise InputShapeError("decode needs the context length for a plain callable")
        context = int(shapes[0][-1])
    out_shapes = getattr(program_or_callable, "output_shapes", None)
    if out_shapes and tuple(out_shapes[0]) != (tokens,):
        raise InputShapeError(f"the program generates {list(out_shapes[0])} tokens, not {tokens}")
    generated: list[int] = []
    for t in range(tokens):
        ids = np.asarray(program_or_callable(teacher_forced_input(prompt, generated, context, tokens))).reshape(-1)
        if ids.size != tokens:
            raise InputShapeError(f"the generation graph returned {ids.size} ids, expected {tokens}")
        generated.append(int(ids[t]))
    return generated, teacher_forced_input(prompt, generated[: tokens - 1], context, tokens)
