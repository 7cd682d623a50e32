"""ONNX graph analysis: nodes in execution order with op, parameters, output shape, and where the graph can be cut.

A cut point is a position in the topological order where exactly one tensor (not a weight) flows from the
nodes before it to the nodes after it: there the model can be split into two segments linked by that tensor."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from imo.errors import InvalidModelError
from imo.proving import onnx_io


@dataclass(frozen=True)
class GraphNode:
    index: int
    name: str
    op_type: str
    inputs: tuple[str, ...]  # activation tensors only; weights are in `params`
    outputs: tuple[str, ...]
    params: int
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    model: onnx.ModelProto
    input_name: str
    output_name: str
    nodes: tuple[GraphNode, ...]
    shapes: dict[str, tuple[int, ...]]

    def cut_tensors(self) -> list[str | None]:
        """For each position i (after node i), the single tensor crossing a cut there, or None if it cannot be cut."""
        last_use = {}
        for node in self.nodes:
            for t in node.inputs:
                last_use[t] = node.index
        cuts: list[str | None] = []
        for i, node in enumerate(self.nodes[:-1]):
            live = {t for n in self.nodes[: i + 1] for t in n.outputs if last_use.get(t, -1) > i}
            graph_input_live = last_use.get(self.input_name, -1) > i
            cuts.append(next(iter(live)) if len(live) == 1 and not graph_input_live else None)
        return cuts

    def node(self, name: str) -> GraphNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise InvalidModelError(f"no node named '{name}' in the model; nodes are: {', '.join(n.name for n in self.nodes)}")


def load_graph(path: Path) -> Graph:
    """Load, check and shape-infer an ONNX model with one fixed-shape input and one output."""
    model = onnx_io.load_model(path)
    sig = onnx_io.signature(model)
    if len(model.graph.output) != 1:
        raise InvalidModelError(f"{path} has {len(model.graph.output)} outputs; imo plans models with exactly one output")
    model = shape_inference.infer_shapes(model, strict_mode=True)
    for i, node in enumerate(model.graph.node):  # stable names: segments and --private refer to them
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    weights = {t.name: t for t in model.graph.initializer}
    shapes = {sig.input_name: sig.input_shape}
    for value in (*model.graph.value_info, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_value for d in dims)
    nodes = []
    for i, node in enumerate(model.graph.node):
        params = sum(int(np.prod(numpy_helper.to_array(weights[t]).shape)) for t in node.input if t in weights)
        activations = tuple(t for t in node.input if t and t not in weights)
        nodes.append(GraphNode(i, node.name, node.op_type, activations, tuple(node.output), params, shapes.get(node.output[0], ())))
    return Graph(model, sig.input_name, model.graph.output[0].name, tuple(nodes), shapes)


def extract(graph: Graph, input_name: str, output_name: str, path: Path) -> None:
    """Write the sub-model computing output_name from input_name (weights included) as a standalone ONNX file."""
    sub = onnx.utils.Extractor(graph.model).extract_model([input_name], [output_name])
    sub.graph.name = f"{graph.model.graph.name or 'model'}:{input_name}->{output_name}"
    onnx.checker.check_model(sub)
    onnx.save(sub, str(path))
