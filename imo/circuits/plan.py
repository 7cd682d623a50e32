"""Partition a model into zk and op segments: the plan (DESIGN.md, protocol step 1).

The model is cut only where exactly one activation tensor is live (circuits/graph.py); the runs of nodes between
cuts are atoms. Policy, in order: atoms holding a node tagged private are always zk; an atom whose estimated logrows
(ezkl's layout of the atom's sub-model) exceed the budget is op; every other atom is zk. Adjacent segments of the
same mode are then merged while merging does not raise the total proving cost (Σ 2^logrows) and keeps a zk segment
within the budget. Plans are deterministic: the same model and options give the same plan and the same plan hash."""

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ezkl
import numpy as np

from imo.circuits.cost import NARROW_DECOMP, CostModel, SegmentCost, elements, model_cost, segment_logrows, segment_rows
from imo.circuits.fixed_point import FixedPointProgram
from imo.circuits.graph import Graph, extract, load_graph, tile_model, tileable
from imo.errors import ImoError, InvalidModelError, MissingArtifactError
from imo.fsutil import atomic_dir
from imo.proving import onnx_io

DEFAULT_SCALE = 7
ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Erf", "Gelu", "Flatten", "Reshape"}  # stay with the layer before them
PLAN_FILE = "plan.json"


class TiledPlanError(ImoError):
    """A tiled segment has one circuit and proof per tile: what expects one per segment (on-chain registration and
    verification, the public bundle) cannot take it."""


@dataclass
class Tile:
    """Columns cols[0]:cols[1] of a tiled zk segment's output: its own circuit (`graph.tile_model` of the segment's ONNX,
    range-check table `Plan.tile_decomp`) and its own proof, over the segment's whole input."""

    index: int
    cols: list[int]
    est_rows: int
    est_logrows: int


@dataclass
class Segment:
    index: int
    mode: str  # "zk" | "op"
    reason: str
    nodes: list[str]
    ops: list[str]
    input: str
    output: str
    input_shape: list[int]
    output_shape: list[int]
    est_rows: int
    est_logrows: int
    onnx: str = ""  # path relative to the plan directory
    onnx_sha256: str = ""
    tiles: list[Tile] = field(default_factory=list)  # zk only: proven as column blocks (a DAG: input → tiles → chunks → consumer)
    input_chunks: list[int] = field(default_factory=list)  # the input is a hashed boundary committed chunk by chunk (a tiled producer)
    run_args: dict | None = None  # a game-only op segment's executor settings, set at plan time (no ezkl circuit to calibrate)

    @property
    def game_only(self) -> bool:
        """An op segment too large for any circuit: no whole-segment fraud proof, disputed by the bisection game only;
        compiled to its executor settings alone."""
        return self.mode == "op" and self.run_args is not None

    def units(self) -> list[int | None]:
        """The proofs of this segment: one per tile, or one (None) for an untiled segment."""
        return [t.index for t in self.tiles] or [None]


@dataclass
class Plan:
    model: str
    model_sha256: str
    ezkl_version: str
    scale: int
    scale_rebase_multiplier: int
    visibility: dict
    budget_logrows: int | None
    private_nodes: list[str]
    segments: list[Segment]
    plan_hash: str = ""
    tile_logrows: int | None = None  # zk segments above this are tiled where they can be
    tile_decomp: list[int] | None = None  # tiles' (decomp_base, decomp_legs)
    generate: int | None = None  # a greedy generation model of this many tokens (`imo.models.generation`)

    @property
    def tiled(self) -> bool:
        return any(s.tiles for s in self.segments)

    def require_untiled(self, what: str = "registered, bundled or verified on chain") -> None:
        """One line refusing a tiled plan where one circuit and proof per segment is expected (AIOracle, its registry)."""
        refuse_tiled(self.segments, what)

    def output_chunks(self, k: int) -> list[int]:
        """Widths of the chunks boundary k is committed in: a hashed boundary after a tiled segment has one Poseidon
        commitment per tile output (the consumer takes them as separate inputs); [] for one commitment or a public one."""
        if k == 0 or not self.boundary_hashed(k):
            return []
        return [t.cols[1] - t.cols[0] for t in self.segments[k - 1].tiles]

    def to_json(self, plan_dir: Path | None = None) -> str:
        """plan.json's text; with `plan_dir`, the model path is written relative to it (where plan.json will live)."""
        body = asdict(self)
        if plan_dir is not None:
            body["model"] = os.path.relpath(Path(self.model).resolve(), Path(plan_dir).resolve())
        return json.dumps(body, indent=2)

    @classmethod
    def load(cls, path: Path) -> "Plan":
        """Read plan.json; its model path, recorded relative to the plan's directory, comes back absolute."""
        path = Path(path)
        if not path.is_file():
            raise MissingArtifactError(f"plan {path} not found; write one with `imo plan MODEL --out DIR`")
        try:
            data = json.loads(path.read_text())
            data["segments"] = [Segment(**s) for s in data["segments"]]
            for segment in data["segments"]:
                segment.tiles = [Tile(**t) for t in segment.tiles]
            plan = cls(**data)
            plan.model = str((path.resolve().parent / plan.model).resolve())  # an absolute path (older plans) stays as it is
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # ValueError includes JSON and UTF-8 errors
            raise MissingArtifactError(f"{path} is not a plan written by `imo plan MODEL --out DIR` ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
        return plan

    def boundary_hashed(self, k: int) -> bool:
        """Boundary k (input of segment k; k = n is the output y) is a Poseidon commitment only where nobody needs the
        tensor: a private model input, or between two zk segments. Every boundary next to an op segment is public,
        so anyone can re-execute the op segment from data the claim itself carries; y is always public."""
        n = len(self.segments)
        if k == n:
            return False
        if k == 0:
            return self.visibility.get("input") == "hashed"
        return self.segments[k - 1].mode == "zk" and self.segments[k].mode == "zk"

    def boundary_sizes(self) -> list[int]:
        """Element count of every public boundary 0..n, 0 for a hashed one: the registration's `boundarySizes`."""
        shapes = [self.segments[0].input_shape] + [s.output_shape for s in self.segments]
        return [0 if self.boundary_hashed(k) else elements(shape) for k, shape in enumerate(shapes)]

    def input_signature(self) -> onnx_io.ModelSignature:
        """The model input the first segment expects."""
        return onnx_io.ModelSignature(self.segments[0].input, tuple(self.segments[0].input_shape), ())

    def compute_hash(self) -> str:
        """Commits to segment order, modes, segment ONNX bytes and every pinned setting (not to file locations)."""
        body = asdict(self)
        body.pop("plan_hash")
        body.pop("model")
        for key in ("tile_logrows", "tile_decomp", "generate"):  # older plans hash as they did before these existed
            if body[key] is None:
                body.pop(key)
        for s in body["segments"]:
            s.pop("onnx")
            for key in ("tiles", "input_chunks", "run_args"):
                if not s[key]:
                    s.pop(key)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def refuse_tiled(segments: list[Segment], what: str = "registered, bundled or verified on chain") -> None:
    """Raise TiledPlanError (one line) if any of these segments is tiled."""
    tiled = [s for s in segments if s.tiles]
    if tiled:
        raise TiledPlanError(f"segment {tiled[0].index} is tiled into {len(tiled[0].tiles)} column blocks (one circuit and proof each): the on-chain "
                             f"AIOracle registers and verifies one proof per segment, so a tiled plan cannot be {what} yet; plan without --tile-logrows for that")


def private_input_nodes(graph: Graph) -> set[str]:
    """--private-input: every node up to the first cut point after the last node that reads the user's input."""
    readers = [n.index for n in graph.nodes if graph.input_name in n.inputs]
    cuts = graph.cut_tensors()
    end = next((i for i in range(max(readers), len(cuts)) if cuts[i] is not None), len(graph.nodes) - 1)
    return {n.name for n in graph.nodes[: end + 1]}


def make_plan(onnx_path: Path, private: list[str] = (), private_input: bool = False, private_weights: bool = False,
              budget_logrows: int | None = None, scale: int = DEFAULT_SCALE, merge: bool = True,
              tile_logrows: int | None = None) -> tuple[Plan, Graph]:
    """Decide segments and modes for the model at onnx_path (no files written). merge=False keeps one segment per layer.
    tile_logrows: a zk segment estimated above it that is one Gemm/MatMul (+ elementwise activations) is split into
    column blocks, each its own smaller circuit (`_tile`), proven in parallel.

    Refused here, in one line naming the node and its op, rather than later in compile or prove: a node ezkl cannot
    prove (every segment becomes an ezkl circuit: a zk segment's proof, an op segment's fraud proof), and a node the
    fixed-point executor cannot run (`imo prove` runs every segment on it)."""
    graph = load_graph(onnx_path)
    tagged = {graph.node(name).name for name in private}
    if private_input:
        tagged |= private_input_nodes(graph)
    if private_weights:
        tagged |= {n.name for n in graph.nodes if n.params}
    costs = CostModel(graph, scale)
    cuts = graph.cut_tensors()
    n_nodes = len(graph.nodes)

    def boundary(position: int) -> str:
        """The tensor crossing position `position` (before node `position`): a cut tensor, the model input or output."""
        if position == 0:
            return graph.input_name
        return graph.output_name if position == n_nodes else cuts[position - 1]

    def cost(node_ids: list[int]) -> SegmentCost:
        return costs.between([boundary(node_ids[0])], [boundary(node_ids[-1] + 1)])

    # atoms (layers): maximal runs of nodes between positions where exactly one activation tensor is live (a residual
    # block or a tensor with several consumers stays inside one atom); an activation stays with its layer
    atoms: list[list[int]] = [[0]]
    for i in range(1, n_nodes):
        if cuts[i - 1] is None or graph.nodes[i].op_type in ACTIVATIONS:
            atoms[-1].append(i)
        else:
            atoms.append([i])
    for atom in sorted(atoms, key=lambda a: not any(graph.nodes[i].name in tagged for i in a)):  # private atoms first
        if cost(atom).error:
            raise _unprovable(graph, costs, atom, cost(atom).error, tagged)

    def estimate(node_ids: list[int], in_hashed: bool | None = None, out_hashed: bool = False) -> tuple[int, int] | None:
        """Rows and logrows of one segment (None: ezkl cannot lay it out); while modes are undecided only a private
        model input counts as hashed."""
        segment_cost = cost(node_ids)
        if segment_cost.error:
            return None
        in_elems = elements(graph.shapes[boundary(node_ids[0])])
        out_elems = elements(graph.shapes[boundary(node_ids[-1] + 1)])
        if in_hashed is None:
            in_hashed = private_input and node_ids[0] == 0
        hashed = in_elems * in_hashed + out_elems * out_hashed
        public_outputs = 0 if out_hashed else out_elems
        return segment_rows(segment_cost, hashed, public_outputs), segment_logrows(segment_cost, hashed, public_outputs)

    def classify(node_ids: list[int]) -> tuple[str, str]:
        names = [graph.nodes[i].name for i in node_ids]
        if any(n in tagged for n in names):
            return "zk", "private: " + ", ".join(n for n in names if n in tagged)
        logrows = estimate(node_ids)[1]
        if budget_logrows is not None and logrows > budget_logrows:
            return "op", f"estimated logrows {logrows} > budget {budget_logrows}"
        return "zk", "within budget" if budget_logrows is not None else "no budget: fully zk"

    groups = [(atom, *classify(atom)) for atom in atoms]
    merged = [groups[0]]
    for atom, mode, reason in groups[1:]:
        prev_nodes, prev_mode, prev_reason = merged[-1]
        if merge and mode == prev_mode and _worth_merging(estimate, prev_nodes, atom, mode, budget_logrows, "private" in prev_reason + reason):
            merged[-1] = (prev_nodes + atom, mode, "; ".join(dict.fromkeys(prev_reason.split("; ") + reason.split("; "))))
        else:
            merged.append((atom, mode, reason))

    segments = []
    supported = executor_ops()
    for index, (node_ids, mode, reason) in enumerate(merged):
        seg_input, seg_output = boundary(node_ids[0]), boundary(node_ids[-1] + 1)
        zk_next = index + 1 < len(merged) and mode == "zk" and merged[index + 1][1] == "zk"
        zk_prev = index > 0 and mode == "zk" and merged[index - 1][1] == "zk"
        rows, logrows = estimate(node_ids, in_hashed=zk_prev or (index == 0 and private_input), out_hashed=zk_next)
        segment = Segment(
            index=index, mode=mode, reason=reason,
            nodes=[graph.nodes[i].name for i in node_ids], ops=[graph.nodes[i].op_type for i in node_ids],
            input=seg_input, output=seg_output,
            input_shape=list(graph.shapes[seg_input]), output_shape=list(graph.shapes[seg_output]),
            est_rows=rows, est_logrows=logrows,
        )
        _check_executor(graph, segment, cost(node_ids), supported)
        if mode == "zk" and tile_logrows is not None and logrows > tile_logrows:
            _tile(graph, segment, scale, tile_logrows, in_hashed=zk_prev or (index == 0 and private_input), out_hashed=zk_next)
        segments.append(segment)
    plan = Plan(
        model=str(Path(onnx_path).resolve()), model_sha256=hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest(),
        ezkl_version=ezkl.__version__, scale=scale, scale_rebase_multiplier=1,
        visibility={"input": "hashed" if private_input else "public", "between_zk": "hashed", "next_to_op": "public",
                    "final_output": "public", "params": "fixed"},
        budget_logrows=budget_logrows, private_nodes=sorted(tagged, key=lambda n: graph.node(n).index), segments=segments,
        tile_logrows=tile_logrows, tile_decomp=list(NARROW_DECOMP) if any(s.tiles for s in segments) else None,
    )
    for k, segment in enumerate(plan.segments):
        segment.input_chunks = plan.output_chunks(k)
    return plan, graph


MAX_TILES = 64


def _tile(graph: Graph, segment: Segment, scale: int, tile_logrows: int, in_hashed: bool, out_hashed: bool) -> None:
    """Split a tileable zk segment into the fewest column blocks (1, 2, 4, ...) whose estimated logrows fit tile_logrows
    (else the most that lower the estimate), each laid out by ezkl with the narrow range-check table. Every tile hashes
    the segment's whole input if it is hashed (the same commitment as the producer's output: linking is unchanged), and
    its own output chunk if the output is hashed."""
    model = graph.sub_model([segment.input], [segment.output])
    width = tileable(model)
    if width is None:
        return
    in_elems = elements(segment.input_shape)
    rows_of = elements(segment.output_shape) // width
    best = None
    count = 2
    while count <= min(width, MAX_TILES):
        bounds = np.linspace(0, width, count + 1).round().astype(int)
        w = int(bounds[1] - bounds[0])
        tile_cost = model_cost(tile_model(model, 0, w), scale, NARROW_DECOMP)
        if tile_cost.error:
            return
        hashed = in_elems * in_hashed + rows_of * w * out_hashed
        public = 0 if out_hashed else rows_of * w
        est = (segment_rows(tile_cost, hashed, public), segment_logrows(tile_cost, hashed, public))
        if best is None or est[1] < best[2][1]:
            best = (count, bounds, est)
        if est[1] <= tile_logrows:
            break
        count *= 2
    if best is None or best[2][1] >= segment.est_logrows:
        return
    count, bounds, (rows, logrows) = best
    segment.tiles = [Tile(j, [int(bounds[j]), int(bounds[j + 1])], rows, logrows) for j in range(count)]
    segment.reason += f"; tiled into {count} column blocks (estimated logrows {logrows} each)"


def executor_ops() -> frozenset[str]:
    """The ops the fixed-point executor implements: its `_op_<Name>` handlers, and Constant.
    fixed_point.py has no public list of them (yet); this belongs there."""
    return frozenset(name[len("_op_"):] for name in dir(FixedPointProgram) if name.startswith("_op_")) | {"Constant"}


def _unprovable(graph: Graph, costs: CostModel, node_ids: list[int], error: str, tagged: set[str]) -> InvalidModelError:
    """The one-line error for a segment ezkl cannot lay out, naming the first node that ezkl cannot lay out alone."""
    for i in node_ids:
        node = graph.nodes[i]
        node_error = costs.between(list(node.inputs), [node.outputs[0]]).error
        if node_error:
            if node.name in tagged:
                return InvalidModelError(f"node '{node.name}' ({node.op_type}) must be zk (private) but ezkl {ezkl.__version__} cannot prove it: "
                                         f"{node_error}; replace the op or leave the node out of --private")
            return InvalidModelError(f"node '{node.name}' ({node.op_type}): ezkl {ezkl.__version__} cannot prove it: {node_error}; every segment "
                                     f"becomes an ezkl circuit (the proof of a zk segment, the fraud proof of an op segment): replace the op")
    first, last = graph.nodes[node_ids[0]], graph.nodes[node_ids[-1]]
    ops = ", ".join(dict.fromkeys(graph.nodes[i].op_type for i in node_ids))
    return InvalidModelError(f"nodes '{first.name}' to '{last.name}' ({ops}): ezkl {ezkl.__version__} cannot prove them together: {error}")


def _check_executor(graph: Graph, segment: Segment, cost: SegmentCost, supported: frozenset[str]) -> None:
    """Refuse a segment that the fixed-point executor cannot run: `imo prove` runs every segment on it (an op segment's
    result; a zk segment's check against ezkl's witness), so the plan would fail there, after compiling."""
    advice = "`imo prove` runs every segment on it; replace the op"
    for name, op in zip(segment.nodes, segment.ops):
        if op not in supported:
            raise InvalidModelError(f"node '{name}' ({op}) in {segment.mode} segment {segment.index}: the fixed-point executor cannot run {op} ({advice})")
    try:
        FixedPointProgram(graph.sub_model([segment.input], [segment.output]), cost.settings)
    except (NotImplementedError, ValueError) as exc:  # it names the node and op: "node 'x' (op Conv): group != 1 not supported"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidModelError(f"{segment.mode} segment {segment.index}: the fixed-point executor cannot run it: {detail} ({advice})") from None


def _worth_merging(estimate, a: list[int], b: list[int], mode: str, budget: int | None, private: bool) -> bool:
    """Merge when one proof of the union costs no more than two proofs (Σ 2^logrows) and a zk union stays in budget."""
    union, first, second = estimate(a + b), estimate(a), estimate(b)
    if union is None or first is None or second is None:
        return False
    merged_logrows = union[1]
    if mode == "zk" and budget is not None and merged_logrows > budget and not private:
        return False
    return 2 ** merged_logrows <= 2 ** first[1] + 2 ** second[1]


def write_plan(plan: Plan, graph: Graph, out_dir: Path) -> Path:
    """Write plan.json and one ONNX file per segment into out_dir (atomically); return the plan file."""
    with atomic_dir(Path(out_dir), derived=("circuits.json", "step_programs.json")) as tmp:
        (tmp / "segments").mkdir()
        for seg in plan.segments:
            seg.onnx = f"segments/seg{seg.index}.onnx"
            extract(graph, seg.input, seg.output, tmp / seg.onnx)
            seg.onnx_sha256 = hashlib.sha256((tmp / seg.onnx).read_bytes()).hexdigest()
        plan.plan_hash = plan.compute_hash()
        (tmp / PLAN_FILE).write_text(plan.to_json(plan_dir=out_dir))
    return Path(out_dir) / PLAN_FILE
