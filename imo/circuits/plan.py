"""Partition a model into zk and op segments: the plan (DESIGN.md, protocol step 1).

The model is cut only where exactly one activation tensor is live (circuits/graph.py); the runs of nodes between
cuts are atoms. Policy, in order: atoms holding a node tagged private are always zk; an atom whose estimated logrows
(ezkl's layout of the atom's sub-model, with the narrow range-check table where that is smaller) exceed the budget is
op; every other atom is zk. Each run of adjacent atoms of one mode is then cut into the segments of least total prover
cost (`_cheapest_cuts`: Σ 2^logrows, hashed I/O weighted by `cost.HASHED_PROVE_FACTOR`), a zk segment within the
budget. Plans are deterministic: the same model and options give the same plan and the same plan hash."""

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ezkl
import numpy as np

from imo.circuits.cost import NARROW_DECOMP, CostModel, SegmentCost, elements, model_cost, prove_cost, segment_logrows, segment_rows
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
    decomp: list[int] | None = None  # an untiled zk segment's (decomp_base, decomp_legs) where the narrow table lowers its logrows

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

    def input_exposure(self) -> str | None:
        """Why a private (hashed) input is not private in this plan, or None. Every public boundary is published with each
        claim; the first one before the final output that has at least as many values as the input can determine it:
        its values are piecewise-linear functions of the input through the zk layers, whose weights anyone can fit from
        about as many chosen requests as the input has values (tests/test_privacy.py recovers mlp-wide's input so)."""
        if self.visibility.get("input") != "hashed":
            return None
        inputs = elements(self.segments[0].input_shape)
        for k in range(1, len(self.segments)):
            if not self.boundary_hashed(k):
                size = elements(self.segments[k].input_shape)
                if size < inputs:
                    return None
                return (f"the private input ({inputs} values) is not private in this plan: boundary {k} ({size} values, the input of op segment {k}) "
                        f"is published with every claim and can determine it (the zk layers' weights can be fitted from about {inputs + 1} chosen requests); "
                        f"keep the layers zk up to a boundary with fewer values than the input (docs/zk-cost.md, 'A private input behind an op segment')")
        return None

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
            for key in ("tiles", "input_chunks", "run_args", "decomp"):
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
    costs, narrow_costs = CostModel(graph, scale), CostModel(graph, scale, NARROW_DECOMP)
    cuts = graph.cut_tensors()
    n_nodes = len(graph.nodes)

    def boundary(position: int) -> str:
        """The tensor crossing position `position` (before node `position`): a cut tensor, the model input or output."""
        if position == 0:
            return graph.input_name
        return graph.output_name if position == n_nodes else cuts[position - 1]

    def cost(node_ids: list[int], model: CostModel = costs) -> SegmentCost:
        return model.between([boundary(node_ids[0])], [boundary(node_ids[-1] + 1)])

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

    def estimate(node_ids: list[int], in_hashed: bool | None = None, out_hashed: bool = False, narrow: bool = True) -> tuple[int, int, list[int] | None] | None:
        """Rows, logrows and range-check table of one segment as a zk circuit (None: ezkl cannot lay it out); while modes are
        undecided only a private model input counts as hashed. narrow: take the narrow range-check table where it lowers
        the logrows (ezkl's default table alone needs 2^14 rows, so a small circuit would pay for 2^15; mlp's input
        layer: 3,072 rows, logrows 12 instead of 15). An op segment's own circuit keeps the default table."""
        segment_cost = cost(node_ids)
        if segment_cost.error:
            return None
        in_elems = elements(graph.shapes[boundary(node_ids[0])])
        out_elems = elements(graph.shapes[boundary(node_ids[-1] + 1)])
        if in_hashed is None:
            in_hashed = private_input and node_ids[0] == 0
        hashed = in_elems * in_hashed + out_elems * out_hashed
        public_outputs = 0 if out_hashed else out_elems
        def laid_out(laid: SegmentCost, table: list[int] | None) -> tuple[int, int, list[int] | None]:
            return segment_rows(laid, hashed, public_outputs), segment_logrows(laid, hashed, public_outputs), table

        best = laid_out(segment_cost, None)
        narrow_cost = cost(node_ids, narrow_costs) if narrow else None
        if narrow_cost is not None and not narrow_cost.error and (smaller := laid_out(narrow_cost, list(NARROW_DECOMP)))[1] < best[1]:
            best = smaller
        return best

    def classify(node_ids: list[int]) -> tuple[str, str]:
        names = [graph.nodes[i].name for i in node_ids]
        if any(n in tagged for n in names):
            return "zk", "private: " + ", ".join(n for n in names if n in tagged)
        logrows = estimate(node_ids)[1]
        if budget_logrows is not None and logrows > budget_logrows:
            return "op", f"estimated logrows {logrows} > budget {budget_logrows}"
        return "zk", "within budget" if budget_logrows is not None else "no budget: fully zk"

    groups = [(atom, *classify(atom)) for atom in atoms]
    merged = []
    run_start = 0
    for k in range(1, len(groups) + 1):  # runs of atoms of one mode, each cut optimally
        if k == len(groups) or groups[k][1] != groups[run_start][1]:
            run = groups[run_start:k]
            in_hashed = private_input and run[0][0][0] == 0
            merged += _cheapest_cuts(estimate, run, budget_logrows, in_hashed) if merge else run
            run_start = k

    segments = []
    supported = executor_ops()
    for index, (node_ids, mode, reason) in enumerate(merged):
        seg_input, seg_output = boundary(node_ids[0]), boundary(node_ids[-1] + 1)
        zk_next = index + 1 < len(merged) and mode == "zk" and merged[index + 1][1] == "zk"
        zk_prev = index > 0 and mode == "zk" and merged[index - 1][1] == "zk"
        rows, logrows, decomp = estimate(node_ids, in_hashed=zk_prev or (index == 0 and private_input), out_hashed=zk_next, narrow=mode == "zk")
        segment = Segment(
            index=index, mode=mode, reason=reason,
            nodes=[graph.nodes[i].name for i in node_ids], ops=[graph.nodes[i].op_type for i in node_ids],
            input=seg_input, output=seg_output,
            input_shape=list(graph.shapes[seg_input]), output_shape=list(graph.shapes[seg_output]),
            est_rows=rows, est_logrows=logrows, decomp=decomp,
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


MERGE_WINDOW = 16  # the most atoms one segment may merge: bounds cut selection at O(atoms x window) ezkl layouts


def _cheapest_cuts(estimate, run: list[tuple[list[int], str, str]], budget: int | None, in_hashed: bool) -> list[tuple[list[int], str, str]]:
    """Split a run of consecutive atoms of one mode into segments of the least total prover cost (`cost.prove_cost`),
    exactly (dynamic programming over the cut positions). Inside a zk run every cut is a hashed boundary: its Poseidon
    rows and the hash columns' prover time in both circuits count. in_hashed: the run reads the private model input.
    A zk segment stays within the budget unless it holds a private node; an op run's boundaries are public."""
    zk = run[0][1] == "zk"
    n = len(run)

    def segment_cost(i: int, j: int) -> float | None:
        nodes = [node for atom, _, _ in run[i:j] for node in atom]
        hashed_in, hashed_out = (in_hashed if i == 0 else zk), zk and j < n
        est = estimate(nodes, in_hashed=hashed_in, out_hashed=hashed_out, narrow=zk)
        if est is None:
            return None
        private = any("private" in reason for _, _, reason in run[i:j])
        if zk and budget is not None and j - i > 1 and est[1] > budget and not private:
            return None
        return prove_cost(est[1], hashed_in or hashed_out)

    best: list[tuple[float, int]] = [(0.0, 0)] + [(math.inf, 0)] * n  # best[j]: cost of run[:j], and where its last segment starts
    for j in range(1, n + 1):
        for i in range(max(0, j - MERGE_WINDOW), j):  # longest segment first: a tie goes to fewer proofs
            cost = segment_cost(i, j)
            if cost is None and j - i == 1:
                cost = 0.0  # an atom may always stand alone (make_plan refused any atom ezkl cannot lay out)
            if cost is not None and best[i][0] + cost < best[j][0]:
                best[j] = (best[i][0] + cost, i)
    cuts, j = [], n
    while j > 0:
        cuts.append((best[j][1], j))
        j = best[j][1]
    return [([node for atom, _, _ in run[i:j] for node in atom], run[i][1], "; ".join(dict.fromkeys(r for _, _, reason in run[i:j] for r in reason.split("; "))))
            for i, j in reversed(cuts)]


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
