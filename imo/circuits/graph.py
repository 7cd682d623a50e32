"""ONNX graph analysis: nodes in execution order with op, parameters, output shape, and where the graph can be cut.

An *activation* is a tensor that depends on the model input. Everything else is a constant: weights, Constant
nodes, Identity nodes over weights (torch emits them for parameters with equal values), Shape / Size of a tensor
(shapes are fixed), and any node whose inputs are all constants (ConstantOfShape, Gather over a shape, ...). Such
constant subgraphs are evaluated once (onnx.reference) and folded into the weights of the nodes that use them, so
the analysed model (`Graph.model`) holds only activation nodes, and every segment extracted from it too.

A cut point is a position in the topological order where exactly one activation tensor is live (produced at or
before it and used after it): there the model can be split into two segments linked by that tensor. A residual
connection or a tensor with several consumers keeps more than one tensor live, so it is never cut."""

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from imo.errors import InvalidModelError
from imo.proving import onnx_io

STATIC_SHAPE_OPS = {"Shape", "Size"}  # their output is a constant: shapes are fixed
NONDETERMINISTIC_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}


@dataclass(frozen=True)
class GraphNode:
    index: int
    name: str
    op_type: str
    inputs: tuple[str, ...]  # activation tensors only; weights and folded constants are in `params`
    outputs: tuple[str, ...]
    params: int
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    model: onnx.ModelProto  # constants folded: activation nodes only
    input_name: str
    output_name: str
    nodes: tuple[GraphNode, ...]
    shapes: dict[str, tuple[int, ...]]
    folded: tuple[str, ...] = ()  # names of the nodes that computed constants (folded into the weights)

    def live_tensors(self) -> list[list[str]]:
        """For each position i (after node i), the activation tensors live there: produced at or before node i
        (the model input counts as produced before node 0) and read after it, or the model output."""
        produced = {self.input_name: -1} | {t: n.index for n in self.nodes for t in n.outputs}
        last_use = {self.output_name: len(self.nodes)}
        for node in self.nodes:
            for t in node.inputs:
                last_use[t] = max(last_use.get(t, -1), node.index)
        spans = sorted((produced[t], end, t) for t, end in last_use.items() if t in produced)
        return [[t for start, end, t in spans if start <= i < end] for i in range(len(self.nodes))]

    def cut_tensors(self) -> list[str | None]:
        """For each position i (after node i, i < last), the single activation tensor crossing a cut there, or None
        if it cannot be cut (several tensors live, as inside a residual block, or only the model input)."""
        cuts: list[str | None] = []
        for live in self.live_tensors()[:-1]:
            cuts.append(live[0] if len(live) == 1 and live[0] != self.input_name else None)
        return cuts

    def node(self, name: str) -> GraphNode:
        for node in self.nodes:
            if node.name == name:
                return node
        if name in self.folded:
            raise InvalidModelError(f"node '{name}' computes a constant (it does not depend on the model input): imo folds it into "
                                    f"the weights of the nodes that use it; name one of those instead")
        raise InvalidModelError(f"no node named '{name}' in the model; nodes are: {', '.join(n.name for n in self.nodes)}")

    @functools.cached_property
    def _extractor(self) -> onnx.utils.Extractor:
        return onnx.utils.Extractor(self.model)

    def sub_model(self, input_names: list[str], output_names: list[str]) -> onnx.ModelProto:
        """The sub-model computing output_names from input_names, weights included (checked)."""
        sub = self._extractor.extract_model(list(input_names), list(output_names))
        sub.graph.name = f"{self.model.graph.name or 'model'}:{','.join(input_names)}->{','.join(output_names)}"
        onnx.checker.check_model(sub)
        return sub


def load_graph(path: Path) -> Graph:
    """Load, check and shape-infer an ONNX model with one fixed-shape input and one output; fold its constants."""
    model = onnx_io.load_model(path)
    sig = onnx_io.signature(model)
    if len(model.graph.output) != 1:
        raise InvalidModelError(f"{path} has {len(model.graph.output)} outputs; imo plans models with exactly one output")
    try:
        model = shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError (and others) with multi-line messages
        raise InvalidModelError(f"{path}: ONNX shape inference failed ({type(exc).__name__}: {_first_line(exc)})") from None
    for i, node in enumerate(model.graph.node):  # stable names: segments and --private refer to them
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    output_name = model.graph.output[0].name
    model, folded = _fold_constants(model, sig.input_name, output_name, path)
    weights = {t.name: t for t in model.graph.initializer}
    shapes = {sig.input_name: sig.input_shape}
    for value in (*model.graph.value_info, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            raise InvalidModelError(f"{path}: tensor '{value.name}' has no fixed shape after shape inference; export the model with fixed shapes")
        shapes[value.name] = tuple(d.dim_value for d in dims)
    nodes = []
    for i, node in enumerate(model.graph.node):
        params = sum(int(np.prod(weights[t].dims)) for t in node.input if t in weights)
        activations = tuple(dict.fromkeys(t for t in node.input if t and t not in weights))
        nodes.append(GraphNode(i, node.name, node.op_type, activations, tuple(node.output), params, shapes.get(node.output[0], ())))
    return Graph(model, sig.input_name, output_name, tuple(nodes), shapes, folded)


def extract(graph: Graph, input_name: str, output_name: str, path: Path) -> None:
    """Write the sub-model computing output_name from input_name (weights included) as a standalone ONNX file."""
    onnx.save(graph.sub_model([input_name], [output_name]), str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _fold_constants(model: onnx.ModelProto, input_name: str, output_name: str, path: Path) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """The model with every tensor that does not depend on the input evaluated and stored as an initializer; the names
    of the nodes folded away."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    value_types = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output)}
    dynamic = {input_name}
    active, constant = [], []
    for node in graph.node:
        if node.op_type in NONDETERMINISTIC_OPS:
            raise InvalidModelError(f"node '{node.name}' ({node.op_type}) draws random numbers; imo plans deterministic models only")
        if node.op_type not in STATIC_SHAPE_OPS and any(t in dynamic for t in node.input if t):
            dynamic.update(t for t in node.output if t)
            active.append(node)
        else:
            constant.append(node)
    if output_name not in dynamic:
        raise InvalidModelError(f"{path}: the output '{output_name}' does not depend on the input '{input_name}'")
    if not constant:
        return model, ()

    needed = {t for node in active for t in node.input if t and t not in dynamic and t not in initializers}
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    wanted = _ancestors_needed(constant, needed)
    for node in constant:
        if not set(node.output) & wanted:
            continue
        values.update(_evaluate(node, values, value_types, model, path))
    folded_inits = [numpy_helper.from_array(np.asarray(values[t]), t) for t in sorted(needed)]

    used = {t for node in active for t in node.input}
    new_graph = helper.make_graph(
        active, graph.name,
        inputs=[i for i in graph.input if i.name not in initializers or i.name in used],
        outputs=list(graph.output),
        initializer=[t for t in graph.initializer if t.name in used] + folded_inits,
        value_info=[v for v in graph.value_info if v.name in dynamic],
    )
    new_model = helper.make_model(new_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version, functions=list(model.functions),
                                  producer_name=model.producer_name, producer_version=model.producer_version)
    try:
        new_model = shape_inference.infer_shapes(new_model, strict_mode=True)
        onnx.checker.check_model(new_model)
    except Exception as exc:
        raise InvalidModelError(f"{path}: the model with its constants folded does not check ({type(exc).__name__}: {_first_line(exc)})") from None
    return new_model, tuple(n.name for n in constant)


def _ancestors_needed(constant: list[onnx.NodeProto], needed: set[str]) -> set[str]:
    """Every constant tensor that a needed constant is computed from (needed included)."""
    producers = {t: node for node in constant for t in node.output}
    closure, stack = set(), list(needed)
    while stack:
        t = stack.pop()
        if t in closure:
            continue
        closure.add(t)
        if t in producers:
            stack.extend(i for i in producers[t].input if i)
    return closure


def _evaluate(node: onnx.NodeProto, values: dict, value_types: dict, model: onnx.ModelProto, path: Path) -> dict[str, np.ndarray]:
    """The outputs of a node whose inputs are constants (Shape/Size: of a fixed-shape tensor)."""
    if node.op_type in STATIC_SHAPE_OPS and node.input[0] not in values:
        dims = value_types.get(node.input[0])
        dims = dims.type.tensor_type.shape.dim if dims is not None else None
        if dims is None or any(not d.HasField("dim_value") for d in dims):
            raise InvalidModelError(f"node '{node.name}' ({node.op_type}) reads a tensor without a fixed shape; export the model with fixed shapes")
        shape = np.array([d.dim_value for d in dims], dtype=np.int64)
        if node.op_type == "Size":
            return {node.output[0]: np.array(int(np.prod(shape)), dtype=np.int64)}
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return {node.output[0]: shape[attrs.get("start", 0): attrs.get("end", len(shape))]}
    from onnx.reference import ReferenceEvaluator

    feeds = {t: values[t] for t in node.input if t}
    inputs = [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), np.shape(v)) for t, v in feeds.items()]
    outputs = [helper.make_empty_tensor_value_info(t) for t in node.output if t]
    single = helper.make_model(helper.make_graph([node], "fold", inputs, outputs), opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        results = ReferenceEvaluator(single).run(None, feeds)
    except Exception as exc:
        raise InvalidModelError(f"node '{node.name}' ({node.op_type}) computes a constant that imo cannot evaluate "
                                f"({type(exc).__name__}: {_first_line(exc)})") from None
    return {t: np.asarray(r) for t, r in zip((t for t in node.output if t), results)}


TILEABLE_ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Erf", "Gelu"}  # elementwise: a column block of the output needs only that block


def tileable(model: onnx.ModelProto) -> int | None:
    """The output width M if a one-input segment model is one Gemm (transA 0) or MatMul by a constant on a 2-D input,
    followed only by elementwise activations: then column blocks of its output are independent circuits."""
    nodes = list(model.graph.node)
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 2 or len(model.graph.output) != 1:
        return None
    if not nodes or nodes[0].op_type not in ("Gemm", "MatMul") or nodes[0].input[0] != inputs[0].name:
        return None
    first = nodes[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in first.attribute}
    if attrs.get("transA", 0) or len(first.input) < 2 or first.input[1] not in weights:
        return None
    chain = first.output[0]
    for node in nodes[1:]:
        if node.op_type not in TILEABLE_ACTIVATIONS or node.input[0] != chain or any(t and t not in weights for t in node.input[1:]):
            return None
        chain = node.output[0]
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    return dims[-1] if len(dims) == 2 and chain == model.graph.output[0].name else None


def tile_model(model: onnx.ModelProto, lo: int, hi: int, join: list[int] | None = None) -> onnx.ModelProto:
    """Columns lo:hi of a `tileable` segment model as a standalone model with canonical tensor names, so two tiles with
    equal weights are byte-identical (and share one circuit and keys). join: the input arrives as chunks of these
    widths (a chunked boundary), concatenated first (`join_inputs`)."""
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    (x,) = [i for i in model.graph.input if i.name not in weights]
    x_dims = [d.dim_value for d in x.type.tensor_type.shape.dim]
    first, rest = model.graph.node[0], list(model.graph.node[1:])
    attrs = {a.name: helper.get_attribute_value(a) for a in first.attribute}
    b = weights[first.input[1]]
    b_tile = b[lo:hi, :] if first.op_type == "Gemm" and attrs.get("transB", 0) else b[:, lo:hi]
    inits = [numpy_helper.from_array(np.ascontiguousarray(b_tile), "w")]
    inputs = ["x", "w"]
    if len(first.input) > 2 and first.input[2]:
        c = weights[first.input[2]]
        c_tile = c[..., lo:hi] if c.ndim and c.shape[-1] > 1 else c
        inits.append(numpy_helper.from_array(np.ascontiguousarray(c_tile), "c"))
        inputs.append("c")
    nodes = [helper.make_node(first.op_type, inputs, ["h0"], name="tile/0", **attrs)]
    for i, node in enumerate(rest, start=1):
        extra = []
        for j, t in enumerate(node.input[1:], start=1):
            if t:
                inits.append(numpy_helper.from_array(weights[t], f"k{i}_{j}"))
            extra.append(f"k{i}_{j}" if t else "")
        node_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node(node.op_type, [f"h{i - 1}", *extra], [f"h{i}"], name=f"tile/{i}", **node_attrs))
    nodes[-1].output[0] = "y"
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [x_dims[0], hi - lo])
    tile = helper.make_model(helper.make_graph(nodes, "tile", [x_info], [y_info], initializer=inits),
                             opset_imports=list(model.opset_import), ir_version=model.ir_version)
    if join:
        tile = join_inputs(tile, join)
    onnx.checker.check_model(tile)
    return tile


def join_inputs(model: onnx.ModelProto, widths: list[int]) -> onnx.ModelProto:
    """The model with its one 2-D input replaced by len(widths) inputs (columns chunks, in order) concatenated along the
    last axis: the consumer of a tiled segment takes the tiles' outputs as separate inputs, so with hashed inputs it
    exposes one Poseidon commitment per tile output, the same ones the tiles expose."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    weights = {t.name for t in model.graph.initializer}
    (x,) = [i for i in model.graph.input if i.name not in weights]
    dims = [d.dim_value for d in x.type.tensor_type.shape.dim]
    if sum(widths) != dims[-1]:
        raise ValueError(f"chunks {widths} do not add up to the input width {dims[-1]}")
    chunks = [helper.make_tensor_value_info(f"{x.name}__chunk{j}", TensorProto.FLOAT, dims[:-1] + [w]) for j, w in enumerate(widths)]
    concat = helper.make_node("Concat", [c.name for c in chunks], [x.name], name="join/concat", axis=len(dims) - 1)
    graph = model.graph
    rest_inputs = [i for i in graph.input if i.name in weights]
    del graph.input[:]
    graph.input.extend(chunks + rest_inputs)
    graph.node.insert(0, concat)
    return model
