"""An op segment's step program and execution trace: what the bisection dispute game narrows down.

`StepProgram.build(model, settings)` compiles the segment with the canonical fixed-point executor
(`imo.circuits.fixed_point.FixedPointProgram`) and turns the executor's declared operations (`TraceOp`) into a list of
`Step` descriptors (`imo.proving.trace_codec`): INPUT chunks of the input boundary first, then per executor op its
tiles (GEMM: one activation row times a block of weight columns, at most `MAX_GEMM_MACS` multiply-accumulates) or
chunks (ADD/MUL/RESCALE/RELU: `ELEMENTWISE_CHUNK` values, LOOKUP: `LOOKUP_CHUNK`), and last one OUTPUT step over the
whole output. Ops that only move values (Reshape, Flatten, Transpose, ...) make no step: the consumers' operand slices
point straight at the producers' leaves. Transformer ops (tests/test_trace_transformer.py): a MatMul of two
activations is MATMUL tiles (one row times <= MAX_GEMM_MACS / K columns of the right operand, read column-major), its
operands copied into contiguous leaves by REPEAT steps (L = 1) first when they would need too many slices; Softmax,
LayerNorm and reductions are SUM/MAX per row, DIVC, RECIP, SQRT and the elementwise kinds, with row broadcasts
(x - mean) materialized by REPEAT; an embedding Gather is GATHER steps against the Merkle root of its table's rows
(`RowTable`). `program.execute(x_q)` computes every step's values (vectorized per op, exact
integers), the leaves and the trace tree; `program.one_step(...)` assembles what the on-chain one-step check needs for
one disputed step; `Bisection` holds the players' moves.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
from eth_hash.auto import keccak

from imo.errors import InvalidModelError
from imo.proving.trace_codec import (
    ZERO,
    MerkleTree,
    Slice,
    Step,
    StepKind,
    TraceDataError,
    evaluate_step,
    int_pack,
    int_unpack,
    leaf_hash,
    merkle_verify,
)

MAX_GEMM_MACS = 4096
"""A GEMM tile is one activation row (K values) times T weight columns with K*T <= MAX_GEMM_MACS (T >= 1)."""
MAX_GEMM_K = 8192
"""Inner dimension beyond which one row times one column is too much for one step (refused for now)."""
ELEMENTWISE_CHUNK = 512
"""Values per ADD/MUL/RESCALE/RELU step, and per INPUT step."""
LOOKUP_CHUNK = 32
"""Values per LOOKUP step (each carries a Merkle proof of its table entry on chain)."""
MAX_STEP_SLICES = 32
"""An elementwise step ends early where its operands would need more slices (each is a leaf and a Merkle proof in the
one-step proof): e.g. a rebase of a GEMM whose tiles are one column each reads 32 one-value leaves, not 512."""
MAX_TABLE = 1 << 22
"""Largest lookup table (entries) a program may register."""
REDUCE_CHUNK = 4096
"""Input values per SUM/MAX step (whole rows; a longer row is one step, up to `MAX_REDUCE_ROW`)."""
MAX_REDUCE_ROW = 8192
"""Longest row one SUM/MAX step reduces (refused above)."""
SQRT_CHUNK = 128
"""Values per SQRT step (each is an integer square root on chain)."""
MATMUL_A_SLICES = 8
"""A MatMul's left operand row is materialized (copied into contiguous leaves) when it needs more slices than this."""
POISON = b"\xff" * 32
"""The leaf of a step that has no valid output (a lookup input outside its table): no value list hashes to it."""

ONE_STEP_ABI = (
    "((uint8,(uint32,uint32,uint32)[][],int256[],bytes32,uint32),"
    "bytes32[],bytes[],bytes32[][],bytes,bytes,int256[],bytes32[][])"
)
"""`StepProof` of the dispute game contract, as an eth_abi type string (`OneStepWitness.abi_tuple()`)."""

_F32_EXACT = float(2**24)
_F64_EXACT = float(2**53)


class NotBisectable(InvalidModelError):
    """The segment has an op that no single step of the dispute game can check (or one too large for a step)."""


# ------------------------------------------------------------------ fast encodings (equal to trace_codec's)


def _word(v: int) -> bytes:
    return (v % (1 << 256)).to_bytes(32, "big")


def step_encoding(step: Step) -> bytes:
    """`abi.encode(step)` (== `step.encode()`, eth_abi's), written out by hand: ~50x faster for big programs."""
    inner = []
    for op in step.operands:
        inner.append(_word(len(op)) + b"".join(_word(s.step) + _word(s.start) + _word(s.count) for s in op))
    offsets, pos = [], 32 * len(inner)
    for body in inner:
        offsets.append(_word(pos))
        pos += len(body)
    ops = _word(len(inner)) + b"".join(offsets) + b"".join(inner)
    params = _word(len(step.params)) + b"".join(_word(int(p)) for p in step.params)
    head = _word(int(step.kind)) + _word(160) + _word(160 + len(ops)) + step.const_hash + _word(step.out_count)
    return _word(32) + head + ops + params


def step_hash(step: Step) -> bytes:
    """`step.hash()`, fast."""
    return keccak(step_encoding(step))


def table_leaves(values: np.ndarray) -> list[bytes]:
    """`leaf_hash([v])` for every v (the leaves of `trace_codec.table_tree`), vectorized packing."""
    v = np.asarray(values, dtype=np.int64).ravel()
    packed: list[bytes | None] = [None] * v.size
    done = np.zeros(v.size, dtype=bool)
    for w in (1, 2, 4, 8):
        lim = 1 << (8 * w - 1)
        sel = np.flatnonzero(~done & (v >= -lim) & (v < lim))
        if sel.size:
            raw = v[sel].astype(f">i{w}").tobytes()
            prefix = bytes([w])
            for j, i in enumerate(sel.tolist()):
                packed[i] = prefix + raw[j * w : (j + 1) * w]
            done[sel] = True
    return [keccak(p) for p in packed]


_TABLE_CACHE: dict[bytes, "LookupTable"] = {}


@dataclass(eq=False)
class LookupTable:
    """A registered lookup table: entry i is the output for input p0 + i."""

    p0: int
    p1: int
    values: np.ndarray  # int64, p1 - p0 + 1 entries
    tree: MerkleTree = field(repr=False)

    @property
    def root(self) -> bytes:
        return self.tree.root

    @classmethod
    def of(cls, p0: int, values: np.ndarray) -> "LookupTable":
        values = np.ascontiguousarray(values, dtype=np.int64)
        key = hashlib.sha256(p0.to_bytes(16, "big", signed=True) + values.tobytes()).digest()
        table = _TABLE_CACHE.get(key)
        if table is None:
            table = _TABLE_CACHE[key] = cls(p0, p0 + values.size - 1, values, MerkleTree(table_leaves(values)))
        return table


@dataclass(eq=False)
class RowTable:
    """A registered GATHER table (an embedding): row j (D values) is leaf j = leaf_hash(row) of its tree."""

    rows: np.ndarray  # (V, D) int64
    tree: MerkleTree = field(repr=False)

    @property
    def root(self) -> bytes:
        return self.tree.root

    @classmethod
    def of(cls, rows: np.ndarray) -> "RowTable":
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        return cls(rows, MerkleTree([leaf_hash(r) for r in rows]))


def _breaks(st: np.ndarray, of: np.ndarray) -> np.ndarray:
    """1 where element e starts a new operand slice (e = 0, or not the next value of element e-1's leaf), else 0."""
    b = np.ones(st.size, dtype=np.int64)
    if st.size > 1:
        b[1:] = (st[1:] != st[:-1]) | (of[1:] != of[:-1] + 1)
    return b


def _item_bounds(sizes: np.ndarray, slices: np.ndarray, max_values: int, max_slices: int) -> np.ndarray:
    """Cut consecutive items (rows, values) into steps of at most `max_values` values and `max_slices` slice starts
    (at least one item each); returns item boundaries."""
    n = len(sizes)
    cv = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    cs = np.concatenate([[0], np.cumsum(slices, dtype=np.int64)])
    bounds, s = [0], 0
    while s < n:
        e1 = int(np.searchsorted(cv, cv[s] + max_values, side="right")) - 1
        e2 = int(np.searchsorted(cs, cs[s] + max_slices, side="right")) - 1
        e = min(max(min(e1, e2), s + 1), n)
        bounds.append(e)
        s = e
    return np.asarray(bounds, dtype=np.int64)


def _slices_of(st: np.ndarray, of: np.ndarray) -> tuple[Slice, ...]:
    """The run-length slices of one (small) operand."""
    if st.size == 0:
        return ()
    starts = np.flatnonzero(_breaks(st, of))
    ends = np.append(starts[1:], st.size)
    return tuple(Slice(int(st[a]), int(of[a]), int(b - a)) for a, b in zip(starts.tolist(), ends.tolist()))


def _round_div_const(a: np.ndarray, k: int) -> np.ndarray:
    """round_half_away(a / k), k > 0, exact for int64 a."""
    q, r = np.divmod(np.abs(a), np.int64(k))
    q = q + (2 * r >= k)
    return np.where(a < 0, -q, q)


def _recip_int(a: np.ndarray, num: int, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """round_half_away(num / a) (a != 0), `zero` where a == 0; exact (0 < num < 2**62). Also the mask of values
    with no int64 result (a == 0 with a `zero` outside int64)."""
    d = np.abs(a)
    safe = np.where(d == 0, 1, d)
    q, r = np.divmod(np.int64(num), safe)
    q = q + (2 * r >= safe)
    out = np.where(a < 0, -q, q)
    zeros = a == 0
    fits = -(1 << 63) <= zero < (1 << 63)
    out[zeros] = zero if fits else 0
    return out, (zeros if not fits else np.zeros(a.shape, dtype=bool))


def _sqrt_exec(a: np.ndarray, s: int) -> np.ndarray:
    """The executor's sqrt at scale 2**s (`FixedPointProgram._sqrt_values`), as int64."""
    from imo.circuits.fixed_point import round_half_away

    m = 2.0**s
    with np.errstate(invalid="ignore"):
        f = m * np.sqrt(np.asarray(a, dtype=np.float64) / m)
    return np.nan_to_num(round_half_away(f), nan=0.0).astype(np.int64)


# ------------------------------------------------------------------ program


@dataclass(eq=False)
class _Unit:
    """One executor op as the trace runs it: values of slot `dst` from `srcs`, cut into steps [first, first + n)."""

    kind: str  # input, gemm, add, mul, rescale, relu, lookup, view, output
    srcs: tuple[int, ...]
    dst: int
    shape: tuple[int, ...]
    params: tuple[int, ...] = ()
    const: np.ndarray | None = None  # add/mul constant (broadcast to shape)
    weight: int = -1  # gemm: index into StepProgram._weights
    table: bytes | None = None  # lookup: root of its table
    fn: Callable[[np.ndarray], np.ndarray] | None = None  # lookup: the executor's function (outside the table)
    index: Callable[[np.ndarray], np.ndarray] | None = None  # view
    first: int = 0
    bounds: np.ndarray | None = None  # flat offsets in dst of each step's values (len n + 1)
    gemm: tuple[int, int, int, int] = (0, 0, 0, 0)  # M, K, N, T


@dataclass(eq=False)
class _Weight:
    wt: np.ndarray  # W transposed (N, K), narrowest int dtype: the program's one copy of the weights
    col_l1: float  # max over columns of sum |W[:, n]|


def _narrow(a: np.ndarray) -> np.ndarray:
    hi = float(np.abs(a).max(initial=0))
    for dt in (np.int8, np.int16, np.int32):
        if hi <= np.iinfo(dt).max - 1:
            return a.astype(dt)
    return a.astype(np.int64)


def _chunk_slices(st: np.ndarray, of: np.ndarray, bounds: np.ndarray) -> list[tuple[Slice, ...]]:
    """Run-length `Slice`s of each chunk [bounds[j], bounds[j+1]) of an operand whose element e is value of[e] of
    step st[e]'s leaf."""
    n = st.size
    out: list[list[Slice]] = [[] for _ in range(len(bounds) - 1)]
    if n == 0:
        return [tuple(o) for o in out]
    brk = np.empty(n, dtype=bool)
    brk[0] = True
    brk[1:] = (st[1:] != st[:-1]) | (of[1:] != of[:-1] + 1)
    brk[bounds[:-1][bounds[:-1] < n]] = True
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:], n)
    chunk = np.searchsorted(bounds, starts, side="right") - 1
    sts, ofs = st[starts].tolist(), of[starts].tolist()
    for c, s, e, a, b in zip(chunk.tolist(), starts.tolist(), ends.tolist(), sts, ofs):
        out[c].append(Slice(a, b, e - s))
    return [tuple(o) for o in out]


def _chunk_bounds(n: int, chunk: int, operands: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> np.ndarray:
    """Step boundaries over n output values: at most `chunk` values and `MAX_STEP_SLICES` operand slices per step."""
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    if not operands:
        return np.append(np.arange(0, n, chunk), n)
    breaks = np.zeros(n, dtype=np.int64)  # operand slices that start at position p (besides one per operand at a step's start)
    for st, of in operands:
        breaks[1:] += (st[1:] != st[:-1]) | (of[1:] != of[:-1] + 1)
    cum = np.cumsum(breaks)
    spare = max(1, MAX_STEP_SLICES - len(operands))
    bounds, s = [0], 0
    while s < n:
        e = int(np.searchsorted(cum, cum[s] + spare, side="right"))  # first e with slices(s, e + 1) over the cap
        e = min(max(e, s + 1), s + chunk, n)
        bounds.append(e)
        s = e
    return np.asarray(bounds, dtype=np.int64)


def _const_hash(values: np.ndarray) -> bytes:
    return keccak(int_pack(values))


def _exact_matmul(x: np.ndarray, w: _Weight) -> np.ndarray:
    """x (M, K) int64 @ W exactly, W held transposed in a narrow int type; float BLAS in column blocks where exact."""
    wt = w.wt
    m, n = x.shape[0], wt.shape[0]
    out = np.empty((m, n), dtype=np.int64)
    bound = float(np.abs(x).max(initial=0)) * w.col_l1
    block = max(1, (1 << 22) // max(1, wt.shape[1]))
    if bound < _F32_EXACT:
        dt = np.float32
    elif bound < _F64_EXACT:
        dt = np.float64
    else:
        dt = None
    xf = x.astype(dt) if dt is not None else x
    for j in range(0, n, block):
        blk = wt[j : j + block]
        if dt is not None:
            out[:, j : j + block] = (xf @ blk.astype(dt).T).astype(np.int64)
        else:
            if bound >= float(2**62):
                raise OverflowError("GEMM accumulator exceeds int64")
            out[:, j : j + block] = x @ blk.astype(np.int64).T
    return out


def _round_shift(a: np.ndarray, shift: int) -> np.ndarray:
    if shift <= 0:
        return a.copy()
    return (a + ((np.int64(1) << np.int64(shift - 1)) - (a < 0))) >> np.int64(shift)


class _ProofSource(Protocol):
    def proof(self, index: int) -> list[bytes]: ...


@dataclass
class Trace:
    """One execution of a step program: every step's values, leaves (leaf_hash, or POISON), the tree and root."""

    values: list[np.ndarray]
    leaves: list[bytes]
    tree: MerkleTree = field(repr=False)
    poisoned: list[int]  # steps with no valid output (a lookup input outside the table), in order

    @property
    def root(self) -> bytes:
        return self.tree.root

    @property
    def output(self) -> np.ndarray:
        """The OUTPUT step's values (flat)."""
        return self.values[-1]

    def proof(self, index: int) -> list[bytes]:
        return self.tree.proof(index)


class PatchedTree:
    """The defender's tree as a challenger knows it: its own honest tree, with the nodes the defender revealed during
    bisection (``{(level, index): hash}``, level 0 = leaves) in place of its own. Proofs of leaves left of the disputed
    step come out right under the defender's root: each sibling is either agreed (left of the path) or revealed."""

    def __init__(self, honest: MerkleTree, revealed: Mapping[tuple[int, int], bytes]):
        self.honest, self.revealed = honest, dict(revealed)

    def node(self, level: int, index: int) -> bytes:
        return self.revealed.get((level, index), self.honest.node(level, index))

    def proof(self, index: int) -> list[bytes]:
        if not 0 <= index < len(self.honest.leaves):
            raise TraceDataError(f"leaf index {index} outside 0..{len(self.honest.leaves) - 1}")
        return [self.node(level, (index >> level) ^ 1) for level in range(self.honest.depth)]


@dataclass
class OneStepWitness:
    """Everything the on-chain one-step check of step `index` needs (`abi_tuple()` is the contract's `StepProof`)."""

    index: int
    step: Step
    step_proof: list[bytes]
    leaves: list[bytes]
    leaf_proofs: list[list[bytes]]
    const_values: bytes
    boundary: bytes
    table_values: list[int]
    table_proofs: list[list[bytes]]

    def abi_tuple(self) -> tuple:
        return (
            self.step.abi_tuple(), list(self.step_proof), list(self.leaves), [list(p) for p in self.leaf_proofs],
            self.const_values, self.boundary, [int(v) for v in self.table_values], [list(p) for p in self.table_proofs],
        )

    as_tuple = abi_tuple  # what GameClient.step sends

    def recompute(self, program_root: bytes, trace_root: bytes, boundary_hash: bytes | None = None) -> bytes:
        """What the contract does, in Python: check every proof, then evaluate the step; returns the leaf the step
        must have. Raises TraceDataError when a proof fails or the step has no valid output (the defender loses)."""
        step, i = self.step, self.index
        if not merkle_verify(step_hash(step), i, self.step_proof, program_root):
            raise TraceDataError("step descriptor is not the program's step at this index")
        pairs = iter(zip(self.leaves, self.leaf_proofs))
        n_slices = sum(len(op) for op in step.operands)
        if len(self.leaves) != n_slices or len(self.leaf_proofs) != n_slices:
            raise TraceDataError(f"{n_slices} operand leaves expected")
        operands = []
        for op in step.operands:
            vals: list[int] = []
            for s in op:
                leaf, proof = next(pairs)
                if s.step >= i:
                    raise TraceDataError("operand slice of a later step")
                if not merkle_verify(keccak(leaf), s.step, proof, trace_root):
                    raise TraceDataError(f"leaf of step {s.step} not under the trace root")
                v = int_unpack(leaf)
                if s.start + s.count > len(v):
                    raise TraceDataError("slice outside its leaf")
                vals += v[s.start : s.start + s.count]
            operands.append(vals)
        const = None
        if step.kind == StepKind.GEMM or (step.kind in (StepKind.ADD, StepKind.MUL) and len(step.operands) == 1):
            if keccak(self.const_values) != step.const_hash:
                raise TraceDataError("constant does not match the step's constHash")
            const = int_unpack(self.const_values)
        boundary = None
        if step.kind in (StepKind.INPUT, StepKind.OUTPUT):
            if boundary_hash is not None and keccak(self.boundary) != boundary_hash:
                raise TraceDataError("boundary is not the claim's")
            boundary = int_unpack(self.boundary)
        table = None
        if step.kind == StepKind.LOOKUP:
            p0, p1 = step.params[0], step.params[1]
            entries: dict[int, int] = {}
            if len(self.table_values) != len(operands[0]) or len(self.table_proofs) != len(operands[0]):
                raise TraceDataError("one table entry per lookup input expected")
            for a, tv, proof in zip(operands[0], self.table_values, self.table_proofs):
                if p0 <= a <= p1:
                    if not merkle_verify(leaf_hash([tv]), a - p0, proof, step.const_hash):
                        raise TraceDataError(f"table entry for input {a} not under the table root")
                    entries[a] = tv
            table = entries.__getitem__
        if step.kind == StepKind.GATHER:
            vv, dd = step.params[0], step.params[1]
            idx = operands[0]
            if len(self.table_proofs) != len(idx) or len(self.table_values) != len(idx) * dd:
                raise TraceDataError("one table row per gathered index expected")
            rows: dict[int, list[int]] = {}
            for j, (a, proof) in enumerate(zip(idx, self.table_proofs)):
                if 0 <= a < vv:
                    row = [int(v) for v in self.table_values[j * dd : (j + 1) * dd]]
                    if len(proof) != max(1, (vv - 1).bit_length()) or not merkle_verify(leaf_hash(row), a, proof, step.const_hash):
                        raise TraceDataError(f"table row {a} not under the table root")
                    rows[a] = row
            table = rows.__getitem__
        return leaf_hash(evaluate_step(step, operands, const, boundary, table))


class StepProgram:
    """The step program of one op segment (one input, one output)."""

    def __init__(self) -> None:  # use StepProgram.build
        self.steps: list[Step] = []
        self.tables: dict[bytes, LookupTable] = {}
        self.row_tables: dict[bytes, RowTable] = {}  # GATHER tables by root
        self._tmp_slot = 0
        self._units: list[_Unit] = []
        self._weights: list[_Weight] = []
        self._step_unit: np.ndarray = np.zeros(0, dtype=np.int32)
        self.input_shape: tuple[int, ...] = ()
        self.output_shape: tuple[int, ...] = ()
        self.build_seconds = 0.0

    # ---------------------------------------------------------------- build
    @classmethod
    def build(cls, model: str | Path | onnx.ModelProto, settings: Mapping[str, Any] | str | Path) -> "StepProgram":
        from imo.circuits.fixed_point import FixedPointProgram

        t0 = time.perf_counter()
        fp = FixedPointProgram(model, settings)
        self = cls()
        self._compile(fp)
        del fp
        self.tree = MerkleTree([step_hash(s) for s in self.steps])
        self._step_unit = np.empty(len(self.steps), dtype=np.int32)
        for u_i, u in enumerate(self._units):
            if u.bounds is not None:
                self._step_unit[u.first : u.first + len(u.bounds) - 1] = u_i
        self.build_seconds = time.perf_counter() - t0
        return self

    def _compile(self, fp) -> None:
        if len(fp._input_slots) != 1 or len(fp._output_slots) != 1:
            raise NotBisectable("a bisectable segment has one input and one output")
        steps = self.steps
        self._tmp_slot = fp._n_slots  # trace-internal slots (materialized copies) after the executor's
        loc: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # slot -> (producer step, offset in its leaf), slot-shaped
        shapes: dict[int, tuple[int, ...]] = {}

        def cut(u: _Unit, n: int, chunk: int, operands: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> np.ndarray:
            u.first = len(steps)
            u.bounds = _chunk_bounds(n, chunk, operands)
            pos = np.arange(n)
            local = np.searchsorted(u.bounds, pos, side="right") - 1
            loc[u.dst] = ((u.first + local).astype(np.int32).reshape(u.shape),
                          (pos - u.bounds[local]).astype(np.int32).reshape(u.shape))
            shapes[u.dst] = u.shape
            return u.bounds

        def gathered(src: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
            st, of = loc[src]
            return (np.ascontiguousarray(np.broadcast_to(st, shape)).reshape(-1),
                    np.ascontiguousarray(np.broadcast_to(of, shape)).reshape(-1))

        # INPUT
        in_slot = fp._input_slots[0]
        self.input_shape = tuple(fp.input_shapes[0])
        u = _Unit("input", (), in_slot, self.input_shape)
        n_in = int(np.prod(self.input_shape, dtype=np.int64))
        bounds = cut(u, n_in, ELEMENTWISE_CHUNK)
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            steps.append(Step(StepKind.INPUT, (), (s,), ZERO, e - s))
        self._units.append(u)

        limits = fp.limits
        for op, (name, op_type) in zip(fp._trace_ops, fp._trace_nodes):
            if op is None:
                raise NotBisectable(f"op {op_type} in node {name!r} has no one-step check")
            for op in (op.parts if op.kind == "seq" else (op,)):
                kind = op.kind
                if kind == "check":
                    continue
                where = f"op {op_type} in node {name!r}"
                if kind == "view":
                    st, of = loc[op.srcs[0]]
                    shape = tuple(int(d) for d in op.shape)
                    loc[op.dst] = (np.ascontiguousarray(op.index(st)), np.ascontiguousarray(op.index(of)))
                    shapes[op.dst] = shape
                    if loc[op.dst][0].shape != shape:
                        raise NotBisectable(f"{where}: view gives shape {loc[op.dst][0].shape}, expected {shape}")
                    self._units.append(_Unit("view", op.srcs, op.dst, shape, index=op.index))
                    continue
                shape = tuple(int(d) for d in (op.shape if op.shape is not None else shapes[op.srcs[0]]))
                n = int(np.prod(shape, dtype=np.int64))
                if kind == "gemm":
                    self._compile_gemm(op, shape, where, loc, shapes, steps)
                    continue
                if kind in ("add", "mul", "rescale", "relu"):
                    operands = [self._row_broadcast(s, shape, loc, shapes) or gathered(s, shape) for s in op.srcs]
                    const = None
                    if op.const is not None:
                        const = np.asarray(op.const)
                        if const.dtype.kind == "f":
                            if not np.all(np.trunc(const) == const):
                                raise NotBisectable(f"{where}: non-integer constant")
                        const = const.astype(np.int64)
                    u = _Unit(kind, op.srcs, op.dst, shape, params=tuple(int(p) for p in op.params), const=const)
                    bounds = cut(u, n, ELEMENTWISE_CHUNK, operands)
                    sl = [_chunk_slices(st, of, bounds) for st, of in operands]
                    cflat = np.ascontiguousarray(np.broadcast_to(const, shape)).reshape(-1) if const is not None else None
                    skind = {"add": StepKind.ADD, "mul": StepKind.MUL, "rescale": StepKind.RESCALE, "relu": StepKind.RELU}[kind]
                    params = u.params if kind in ("add", "rescale") else ()
                    if kind == "add" and len(params) != 2 or kind == "rescale" and len(params) != 1:
                        raise NotBisectable(f"{where}: malformed {kind} declaration")
                    for j, (s, e) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
                        ch = _const_hash(cflat[s:e]) if cflat is not None else ZERO
                        steps.append(Step(skind, tuple(x[j] for x in sl), params, ch, e - s))
                    self._units.append(u)
                    continue
                if kind == "lookup":
                    if limits.lookup is None:
                        raise NotBisectable(f"{where}: a lookup needs the circuit's table range (settings with run_args.lookup_range and logrows)")
                    p0, p1 = (int(v) for v in limits.lookup)
                    if op.params:  # the op's inputs lie in a narrower range (Softmax's exp(x - max): x - max <= 0)
                        p0, p1 = max(p0, int(op.params[0])), min(p1, int(op.params[1]))
                    if p1 - p0 + 1 > MAX_TABLE:
                        raise NotBisectable(f"{where}: lookup table [{p0}, {p1}] has {p1 - p0 + 1} entries, more than {MAX_TABLE}")
                    with np.errstate(all="ignore"):
                        try:
                            tv = np.asarray(op.table(np.arange(p0, p1 + 1, dtype=np.int64)), dtype=np.float64)
                        except OverflowError:
                            tv = np.array([np.inf])
                    if not np.all(np.isfinite(tv)) or np.abs(tv).max(initial=0) >= 2.0**63 or not np.all(np.trunc(tv) == tv):
                        raise NotBisectable(f"{where}: lookup table over [{p0}, {p1}] has values outside int64")
                    table = LookupTable.of(p0, tv.astype(np.int64))
                    self.tables[table.root] = table
                    u = _Unit("lookup", op.srcs, op.dst, shape, params=(p0, p1), table=table.root, fn=op.table)
                    bounds = cut(u, n, LOOKUP_CHUNK)
                    st, of = gathered(op.srcs[0], shape)
                    sl = _chunk_slices(st, of, bounds)
                    for j, (s, e) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
                        steps.append(Step(StepKind.LOOKUP, (sl[j],), (p0, p1), table.root, e - s))
                    self._units.append(u)
                    continue
                if kind in ("matmul", "sum", "max", "divc", "recip", "sqrt", "gather"):
                    self._compile_transformer(op, kind, shape, n, where, loc, shapes, gathered)
                    continue
                raise NotBisectable(f"{where} has no one-step check (declared as {kind!r})")

        # OUTPUT
        out_slot = fp._output_slots[0]
        self.output_shape = tuple(fp.output_shapes[0])
        n_out = int(np.prod(self.output_shape, dtype=np.int64))
        st, of = gathered(out_slot, shapes.get(out_slot, self.output_shape))
        u = _Unit("output", (out_slot,), -1, (n_out,), first=len(steps), bounds=np.array([0, n_out]))
        steps.append(Step(StepKind.OUTPUT, (_chunk_slices(st, of, u.bounds)[0],), (), ZERO, n_out))
        self._units.append(u)

    def _compile_gemm(self, op, shape, where, loc, shapes, steps) -> None:
        w = np.asarray(op.const())
        if w.ndim != 2:
            raise NotBisectable(f"{where}: GEMM weight is not a matrix")
        k, n_cols = w.shape
        if k > MAX_GEMM_K:
            raise NotBisectable(f"{where}: inner dimension {k} > {MAX_GEMM_K}: one row times one column is too large for one step")
        if w.dtype.kind == "f":
            wi = np.empty((n_cols, k), dtype=np.int64)
            for j in range(0, n_cols, 1024):  # transpose + cast in blocks: no full-size float64 temporary
                wi[j : j + 1024] = w[:, j : j + 1024].T
        else:
            wi = np.ascontiguousarray(w.T, dtype=np.int64)
        col_l1 = float(np.abs(wi).sum(axis=1, dtype=np.float64).max(initial=0))
        weight = _Weight(_narrow(wi), col_l1)
        del wi
        self._weights.append(weight)
        st, of = loc[op.srcs[0]]
        if st.shape[-1] != k:
            raise NotBisectable(f"{where}: activation {st.shape} does not match weight {w.shape}")
        m = int(np.prod(st.shape[:-1], dtype=np.int64))
        t = max(1, min(n_cols, MAX_GEMM_MACS // k))
        blocks = list(range(0, n_cols, t))
        hashes = [_const_hash(np.ascontiguousarray(weight.wt[c0 : c0 + t].T)) for c0 in blocks]
        rows = _chunk_slices(st.reshape(-1), of.reshape(-1), np.arange(0, m * k + 1, k) if k else np.zeros(m + 1, np.int64))
        u = _Unit("gemm", op.srcs, op.dst, shape, weight=len(self._weights) - 1, gemm=(m, k, n_cols, t))
        u.first = len(steps)
        widths = [min(t, n_cols - c0) for c0 in blocks]
        for r in range(m):
            for c0, tc, h in zip(blocks, widths, hashes):
                steps.append(Step(StepKind.GEMM, (rows[r],), (k, tc), h, tc))
        # output flat index r*N + c lies in step first + r*len(blocks) + c // t at offset c % t
        cols = np.arange(n_cols)
        per_row = np.append(np.arange(0, n_cols, t), n_cols)
        u.bounds = (np.arange(m).reshape(-1, 1) * n_cols + per_row[:-1].reshape(1, -1)).reshape(-1)
        u.bounds = np.append(u.bounds, m * n_cols)
        st_out = u.first + np.arange(m).reshape(-1, 1) * len(blocks) + (cols // t).reshape(1, -1)
        of_out = np.broadcast_to((cols % t).reshape(1, -1), (m, n_cols))
        loc[op.dst] = (st_out.astype(np.int32).reshape(shape), np.ascontiguousarray(of_out, dtype=np.int32).reshape(shape))
        shapes[op.dst] = shape
        self._units.append(u)

    # ---------------------------------------------------------------- transformer ops
    def _new_tmp(self) -> int:
        self._tmp_slot += 1
        return self._tmp_slot

    def _place(self, u: _Unit, bounds: np.ndarray, loc, shapes) -> None:
        """Unit u's steps (already appended from u.first on) cover dst's flat values [bounds[j], bounds[j+1])."""
        u.bounds = np.asarray(bounds, dtype=np.int64)
        n = int(u.bounds[-1])
        pos = np.arange(n)
        local = np.searchsorted(u.bounds, pos, side="right") - 1
        loc[u.dst] = ((u.first + local).astype(np.int32).reshape(u.shape),
                      (pos - u.bounds[local]).astype(np.int32).reshape(u.shape))
        shapes[u.dst] = u.shape
        self._units.append(u)

    def _materialize(self, src: int, index: Callable[[np.ndarray], np.ndarray], st: np.ndarray, of: np.ndarray,
                     loc, shapes) -> tuple[np.ndarray, np.ndarray]:
        """Copy values into contiguous leaves: REPEAT steps (L = 1) whose outputs are `index(src values)` flattened,
        whose producers are (st, of) (flat); up to three passes, until leaves hold about `ELEMENTWISE_CHUNK` values.
        Returns the producers of the copy (flat)."""
        st, of = st.reshape(-1), of.reshape(-1)
        n = st.size
        for _ in range(3):
            dst = self._new_tmp()
            u = _Unit("repeat", (src,), dst, (n,), params=(1, 0), index=index)
            bounds = _item_bounds(np.ones(n, dtype=np.int64), _breaks(st, of), ELEMENTWISE_CHUNK, MAX_STEP_SLICES - 1)
            sl = _chunk_slices(st, of, bounds)
            u.first = len(self.steps)
            for j, (s, e) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
                self.steps.append(Step(StepKind.REPEAT, (sl[j],), (1, 0), ZERO, e - s))
            self._place(u, bounds, loc, shapes)
            st, of = loc[dst]
            src, index = dst, (lambda x: x)
            if len(bounds) - 1 <= 1.5 * -(-n // ELEMENTWISE_CHUNK) + 1:
                break
        return st, of

    def _row_broadcast(self, src: int, shape: tuple[int, ...], loc, shapes) -> tuple[np.ndarray, np.ndarray] | None:
        """An operand broadcast along trailing axes (a row's mean, max or sum against the row), materialized by
        REPEAT steps (each value repeated L times), so that an elementwise step reads it in a few slices; None when
        `src` is not such a broadcast."""
        sshape = tuple(shapes[src])
        if sshape == tuple(shape) or len(sshape) > len(shape):
            return None
        pad = (1,) * (len(shape) - len(sshape)) + sshape
        k = len(shape)
        while k > 0 and pad[k - 1] == 1:
            k -= 1
        if pad[:k] != tuple(shape[:k]) or any(d != 1 for d in pad[k:]):
            return None
        ll = int(np.prod(shape[k:], dtype=np.int64))
        st, of = (a.reshape(-1) for a in loc[src])
        n = st.size * ll
        if ll < 2 or n <= 2 * MAX_STEP_SLICES:  # small: one slice per value costs at most one more step
            return None
        dst = self._new_tmp()
        u = _Unit("repeat", (src,), dst, tuple(shape), params=(ll,),
                  index=lambda x, pad=pad, shape=tuple(shape): np.broadcast_to(x.reshape(pad), shape))
        brk = np.zeros(n, dtype=np.int64)
        brk[::ll] = _breaks(st, of)
        bounds = _item_bounds(np.ones(n, dtype=np.int64), brk, ELEMENTWISE_CHUNK, MAX_STEP_SLICES - 1)
        u.first = len(self.steps)
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            r0, r1 = s // ll, (e - 1) // ll + 1
            self.steps.append(Step(StepKind.REPEAT, (_slices_of(st[r0:r1], of[r0:r1]),), (ll, s % ll), ZERO, e - s))
        self._place(u, bounds, loc, shapes)
        sto, ofo = loc[dst]
        return sto.reshape(-1), ofo.reshape(-1)

    def _compile_transformer(self, op, kind: str, shape: tuple[int, ...], n: int, where: str, loc, shapes, gathered) -> None:
        steps = self.steps
        if kind in ("sum", "max"):
            src = op.srcs[0]
            st, of = loc[src]
            axes = tuple(sorted(int(a) for a in op.params))
            keep = [i for i in range(st.ndim) if i not in axes]
            perm = tuple(keep + list(axes))
            ll = int(np.prod([st.shape[i] for i in axes], dtype=np.int64))
            if not 1 <= ll <= MAX_REDUCE_ROW or st.size != ll * n:
                raise NotBisectable(f"{where}: a reduction over {ll} values per row")
            index = lambda x, perm=perm: x.transpose(perm)  # noqa: E731
            stp, ofp = index(st).reshape(-1), index(of).reshape(-1)
            row_sl = _breaks(stp, ofp).reshape(n, ll).sum(axis=1) if n else np.zeros(0, np.int64)
            if n and row_sl.max() > MAX_STEP_SLICES - 1:
                stp, ofp = self._materialize(src, index, stp, ofp, loc, shapes)
                row_sl = _breaks(stp, ofp).reshape(n, ll).sum(axis=1)
            rb = _item_bounds(np.full(n, ll, dtype=np.int64), row_sl, max(REDUCE_CHUNK, ll), MAX_STEP_SLICES - 1) \
                if n else np.zeros(1, dtype=np.int64)
            sl = _chunk_slices(stp, ofp, rb * ll)
            u = _Unit(kind, op.srcs, op.dst, shape, params=axes)
            u.first = len(steps)
            skind = StepKind.SUM if kind == "sum" else StepKind.MAX
            for j, (s, e) in enumerate(zip(rb[:-1].tolist(), rb[1:].tolist())):
                steps.append(Step(skind, (sl[j],), (ll,), ZERO, e - s))
            self._place(u, rb, loc, shapes)
            return
        if kind in ("divc", "recip", "sqrt"):
            params = tuple(int(p) for p in op.params)
            if kind == "divc" and not (len(params) == 1 and 0 < params[0] < 1 << 62):
                raise NotBisectable(f"{where}: divisor {params}")
            if kind == "recip" and not (len(params) == 2 and 0 < params[0] < 1 << 52 and params[0] & (params[0] - 1) == 0):
                raise NotBisectable(f"{where}: the executor's f64 reciprocal of {params[:1]} is exact only for a power of two below 2^52")
            if kind == "sqrt" and not (len(params) == 1 and 0 <= params[0] <= 64):
                raise NotBisectable(f"{where}: sqrt at scale {params}")
            operands = [gathered(op.srcs[0], shape)]
            bounds = _chunk_bounds(n, SQRT_CHUNK if kind == "sqrt" else ELEMENTWISE_CHUNK, operands)
            sl = _chunk_slices(*operands[0], bounds)
            u = _Unit(kind, op.srcs, op.dst, shape, params=params)
            u.first = len(steps)
            skind = {"divc": StepKind.DIVC, "recip": StepKind.RECIP, "sqrt": StepKind.SQRT}[kind]
            for j, (s, e) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
                steps.append(Step(skind, (sl[j],), params, ZERO, e - s))
            self._place(u, bounds, loc, shapes)
            return
        if kind == "gather":
            axis = int(op.params[0]) if op.params else 0
            table = np.asarray(op.const)
            if axis != 0 or table.ndim < 1 or table.dtype.kind not in "iuf" or (table.dtype.kind == "f" and not np.all(np.trunc(table) == table)):
                raise NotBisectable(f"{where}: only a Gather of integer table rows (axis 0) has a one-step check")
            vv = table.shape[0]
            dd = int(np.prod(table.shape[1:], dtype=np.int64))
            if dd == 0 or dd > 2 * ELEMENTWISE_CHUNK:  # a row is one leaf: readers prove whole leaves
                raise NotBisectable(f"{where}: table rows of {dd} values")
            rt = RowTable.of(table.reshape(vv, dd).astype(np.int64))
            self.row_tables[rt.root] = rt
            st, of = (a.reshape(-1) for a in loc[op.srcs[0]])
            m = st.size
            if m * dd != n:
                raise NotBisectable(f"{where}: {m} indices of rows of {dd} values do not give shape {shape}")
            rps = max(1, ELEMENTWISE_CHUNK // dd)
            ib = _item_bounds(np.ones(m, dtype=np.int64), _breaks(st, of), rps, MAX_STEP_SLICES - 1) if m else np.zeros(1, np.int64)
            sl = _chunk_slices(st, of, ib)
            u = _Unit("gather", op.srcs, op.dst, shape, params=(vv, dd), table=rt.root)
            u.first = len(steps)
            for j, (s, e) in enumerate(zip(ib[:-1].tolist(), ib[1:].tolist())):
                steps.append(Step(StepKind.GATHER, (sl[j],), (vv, dd), rt.root, (e - s) * dd))
            self._place(u, ib * dd, loc, shapes)
            return
        # matmul of two activations
        sa, sb = op.srcs
        sta, ofa = loc[sa]
        stb, ofb = loc[sb]
        if sta.ndim < 2 or stb.ndim < 2 or len(shape) < 2:
            raise NotBisectable(f"{where}: a MatMul of vectors")
        mm, kk = sta.shape[-2:]
        k2, nn = stb.shape[-2:]
        batch = tuple(shape[:-2])
        nb = int(np.prod(batch, dtype=np.int64))
        if kk != k2 or tuple(shape) != batch + (mm, nn) or not 1 <= kk <= MAX_GEMM_K:
            raise NotBisectable(f"{where}: MatMul {sta.shape} @ {stb.shape} -> {shape}")
        idx_a = lambda x, s=batch + (mm, kk): np.broadcast_to(x, s)  # noqa: E731
        idx_b = lambda x, s=batch + (kk, nn): np.swapaxes(np.broadcast_to(x, s), -1, -2)  # noqa: E731
        a_st, a_of = (np.ascontiguousarray(idx_a(x)).reshape(-1) for x in (sta, ofa))
        b_st, b_of = (np.ascontiguousarray(idx_b(x)).reshape(-1) for x in (stb, ofb))

        def row_sl(st_, of_, rows):
            return _breaks(st_, of_).reshape(rows, kk).sum(axis=1)

        a_sl = row_sl(a_st, a_of, nb * mm)
        if a_sl.max(initial=0) > MATMUL_A_SLICES:
            a_st, a_of = self._materialize(sa, idx_a, a_st, a_of, loc, shapes)
            a_sl = row_sl(a_st, a_of, nb * mm)
        a_max = int(a_sl.max(initial=0))
        t0 = max(1, min(nn, MAX_GEMM_MACS // kk))

        def fit(b_sl) -> int:
            per = b_sl.reshape(nb, nn)
            t = t0
            while True:
                tiles = np.add.reduceat(per, np.arange(0, nn, t), axis=1) if nn else np.zeros((nb, 1), np.int64)
                if int(tiles.max(initial=0)) + a_max <= MAX_STEP_SLICES or t == 1:
                    return t if int(tiles.max(initial=0)) + a_max <= MAX_STEP_SLICES else 0
                t = max(1, t // 2)

        b_sl = row_sl(b_st, b_of, nb * nn)
        t = fit(b_sl)
        if t < t0:
            b_st, b_of = self._materialize(sb, idx_b, b_st, b_of, loc, shapes)
            t = fit(row_sl(b_st, b_of, nb * nn))
        if t == 0:
            raise NotBisectable(f"{where}: a MatMul tile needs more than {MAX_STEP_SLICES} operand slices")
        rows = _chunk_slices(a_st, a_of, np.arange(0, nb * mm * kk + 1, kk))
        col0 = list(range(0, nn, t))
        tb = (np.arange(nb).reshape(-1, 1) * nn * kk + np.asarray(col0).reshape(1, -1) * kk).reshape(-1)
        tiles = _chunk_slices(b_st, b_of, np.append(tb, nb * nn * kk))
        widths = [min(t, nn - c) for c in col0]
        u = _Unit("matmul", op.srcs, op.dst, shape, params=(nb,), gemm=(mm, kk, nn, t))
        u.first = len(steps)
        for b in range(nb):
            for i in range(mm):
                ra = rows[b * mm + i]
                for j, w in enumerate(widths):
                    steps.append(Step(StepKind.MATMUL, (ra, tiles[b * len(col0) + j]), (kk, w), ZERO, w))
        bounds = (np.arange(nb * mm).reshape(-1, 1) * nn + np.asarray(col0).reshape(1, -1)).reshape(-1)
        self._place(u, np.append(bounds, nb * mm * nn), loc, shapes)

    # ---------------------------------------------------------------- facts
    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def root(self) -> bytes:
        return self.tree.root

    @property
    def depth(self) -> int:
        return self.tree.depth

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape, dtype=np.int64))

    @property
    def output_size(self) -> int:
        return int(np.prod(self.output_shape, dtype=np.int64))

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the segment's GEMMs."""
        return sum(u.gemm[0] * u.gemm[1] * u.gemm[2] * (u.params[0] if u.kind == "matmul" else 1)
                   for u in self._units if u.kind in ("gemm", "matmul"))

    def stats(self) -> dict[str, Any]:
        """What bounds a one-step proof of this program: step counts per kind, the most operand slices (leaves with
        proofs) one step reads and how many values those leaves hold, the largest constant and table."""
        kinds: dict[str, int] = {}
        max_slices = max_leaf_values = max_const = 0
        for step in self.steps:
            kinds[step.kind.name] = kinds.get(step.kind.name, 0) + 1
            slices = [s for op in step.operands for s in op]
            max_slices = max(max_slices, len(slices))
            max_leaf_values = max(max_leaf_values, sum(self.steps[s.step].out_count for s in slices))
            if step.kind == StepKind.GEMM:
                max_const = max(max_const, step.params[0] * step.params[1])
            elif step.kind in (StepKind.ADD, StepKind.MUL) and len(step.operands) == 1:
                max_const = max(max_const, step.out_count)
        return {
            "steps": self.n_steps, "depth": self.depth, "macs": self.macs, "steps_by_kind": kinds,
            "max_operand_slices": max_slices, "max_operand_leaf_values": max_leaf_values, "max_const_values": max_const,
            "tables": [{"p0": t.p0, "p1": t.p1, "entries": int(t.values.size), "depth": t.tree.depth} for t in self.tables.values()],
        }

    def step_const(self, i: int) -> np.ndarray | None:
        """The constant C of step i (GEMM weight tile K x T row-major, ADD/MUL constant chunk), or None."""
        u = self._units[int(self._step_unit[i])]
        step = self.steps[i]
        if u.kind == "gemm":
            m, k, n, t = u.gemm
            per_row = -(-n // t)
            c0 = ((i - u.first) % per_row) * t
            return np.ascontiguousarray(self._weights[u.weight].wt[c0 : c0 + step.params[1]].T, dtype=np.int64)
        if u.kind in ("add", "mul") and u.const is not None:
            j = i - u.first
            s, e = int(u.bounds[j]), int(u.bounds[j + 1])
            return np.ascontiguousarray(np.broadcast_to(u.const, u.shape)).reshape(-1)[s:e].copy()
        return None

    def table(self, i: int) -> LookupTable | None:
        step = self.steps[i]
        return self.tables[step.const_hash] if step.kind == StepKind.LOOKUP else None

    def operands(self, trace: Trace, i: int) -> list[list[int]]:
        """Step i's operand values, assembled from `trace`'s leaves by its slices."""
        out = []
        for op in self.steps[i].operands:
            vals: list[int] = []
            for s in op:
                vals += trace.values[s.step][s.start : s.start + s.count].tolist()
            out.append(vals)
        return out

    def evaluate(self, trace: Trace, i: int, input_q: np.ndarray | None = None, output_q: np.ndarray | None = None) -> list[int]:
        """`evaluate_step` of step i on `trace`'s operands (the slow reference; raises TraceDataError if invalid)."""
        step = self.steps[i]
        boundary = None
        if step.kind == StepKind.INPUT:
            boundary = np.asarray(input_q).ravel().tolist()
        elif step.kind == StepKind.OUTPUT:
            boundary = (np.asarray(output_q) if output_q is not None else trace.output).ravel().tolist()
        const = self.step_const(i)
        table = self.table(i)
        fn = (lambda x: int(table.values[x - table.p0])) if table is not None else None
        if step.kind == StepKind.GATHER:
            rows = self.row_tables[step.const_hash].rows
            fn = lambda x: rows[x].tolist()  # noqa: E731
        return evaluate_step(step, self.operands(trace, i), None if const is None else const.ravel().tolist(), boundary, fn)

    # ---------------------------------------------------------------- execute
    def execute(self, x_q: np.ndarray, tamper: Callable[[int, np.ndarray], np.ndarray] | None = None) -> Trace:
        """Every step's values for quantized input `x_q`, vectorized per op. `tamper(i, values) -> values` replaces
        step i's values as they are produced; later steps compute from the replaced values (a consistent liar)."""
        x = np.asarray(x_q)
        if x.dtype.kind not in "iu":
            raise TypeError("execute expects quantized integer inputs")
        if x.size != self.input_size:
            raise ValueError(f"input has {x.size} elements, the segment expects shape {self.input_shape}")
        vals: dict[int, np.ndarray] = {}
        values: list[np.ndarray | None] = [None] * self.n_steps
        poisoned: list[int] = []
        for u in self._units:
            if u.kind == "view":
                vals[u.dst] = np.ascontiguousarray(u.index(vals[u.srcs[0]]))
                continue
            if u.kind == "input":
                out = x.astype(np.int64).reshape(u.shape).copy()
            elif u.kind == "output":
                out = vals[u.srcs[0]].reshape(-1).astype(np.int64, copy=True)
            elif u.kind == "gemm":
                m, k, n, _ = u.gemm
                out = _exact_matmul(vals[u.srcs[0]].reshape(m, k), self._weights[u.weight]).reshape(u.shape)
            elif u.kind in ("repeat", "matmul", "sum", "max", "divc", "recip", "sqrt", "gather"):
                out = self._execute_transformer(u, vals, poisoned)
            elif u.kind == "lookup":
                a = vals[u.srcs[0]]
                table = self.tables[u.table]
                idx = a.reshape(-1) - table.p0
                inside = (idx >= 0) & (idx < table.values.size)
                flat = table.values[np.clip(idx, 0, table.values.size - 1)]
                if not inside.all():
                    bad = np.flatnonzero(~inside)
                    flat[bad] = np.asarray(u.fn(a.reshape(-1)[bad]), dtype=np.float64).astype(np.int64)
                    chunks = np.unique(np.searchsorted(u.bounds, bad, side="right") - 1)
                    poisoned.extend((u.first + chunks).tolist())
                out = flat.reshape(u.shape)
            else:
                a = vals[u.srcs[0]]
                b = vals[u.srcs[1]] if len(u.srcs) > 1 else u.const
                if u.kind == "add":
                    out = np.broadcast_to(a * np.int64(u.params[0]) + b * np.int64(u.params[1]), u.shape)
                elif u.kind == "mul":
                    out = np.broadcast_to(a * b, u.shape)
                elif u.kind == "rescale":
                    out = _round_shift(a, u.params[0])
                else:  # relu
                    out = np.maximum(a, np.int64(0))
                out = np.ascontiguousarray(out, dtype=np.int64)
            if not (out.flags.c_contiguous and out.flags.writeable):  # `flat` must be a writable view: tamper writes through
                out = np.array(out, dtype=np.int64)
            flat = out.reshape(-1)
            b_ = u.bounds.tolist()
            for j in range(len(b_) - 1):
                i = u.first + j
                v = flat[b_[j] : b_[j + 1]]
                if tamper is not None:
                    new = np.asarray(tamper(i, v.copy()), dtype=np.int64).ravel()
                    if new.size != v.size:
                        raise ValueError(f"tamper changed the size of step {i}'s values")
                    v[:] = new
                values[i] = v
            if u.kind != "output":
                vals[u.dst] = out
        bad = set(poisoned)
        leaves = [POISON if i in bad else leaf_hash(v) for i, v in enumerate(values)]
        return Trace(values, leaves, MerkleTree(leaves), sorted(bad))

    def _execute_transformer(self, u: _Unit, vals: dict[int, np.ndarray], poisoned: list[int]) -> np.ndarray:
        a = vals[u.srcs[0]]
        if u.kind == "repeat":
            return np.ascontiguousarray(u.index(a), dtype=np.int64).reshape(u.shape)
        if u.kind == "matmul":
            b = vals[u.srcs[1]]
            bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0)) * u.gemm[1]
            if bound < _F64_EXACT:
                out = np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
            else:
                if bound >= float(2**62):
                    raise OverflowError("MATMUL accumulator exceeds int64")
                out = np.matmul(a.astype(np.int64), b.astype(np.int64))
            return out.reshape(u.shape)
        if u.kind == "sum":
            return a.sum(axis=u.params, keepdims=True, dtype=np.int64).reshape(u.shape)
        if u.kind == "max":
            return a.max(axis=u.params, keepdims=True).astype(np.int64).reshape(u.shape)
        flat = a.reshape(-1).astype(np.int64)
        bad = None
        if u.kind == "divc":
            out = _round_div_const(flat, u.params[0])
        elif u.kind == "recip":
            out, bad = _recip_int(flat, u.params[0], u.params[1])
        elif u.kind == "sqrt":
            out = _sqrt_exec(flat, u.params[0])
        else:  # gather
            rt = self.row_tables[u.table]
            vv, dd = u.params
            inside = (flat >= 0) & (flat < vv)
            out = rt.rows[np.clip(flat, 0, vv - 1)].reshape(-1)
            bad = np.repeat(~inside, dd)
        if bad is not None and bad.any():
            chunks = np.unique(np.searchsorted(u.bounds, np.flatnonzero(bad), side="right") - 1)
            poisoned.extend((u.first + chunks).tolist())
        return np.ascontiguousarray(out, dtype=np.int64).reshape(u.shape)

    def row_table(self, i: int) -> RowTable | None:
        step = self.steps[i]
        return self.row_tables[step.const_hash] if step.kind == StepKind.GATHER else None

    # ---------------------------------------------------------------- one step
    def one_step(self, trace: Trace | MerkleTree | PatchedTree | _ProofSource, i: int, input_boundary: bytes = b"",
                 output_boundary: bytes = b"", values: Trace | None = None) -> OneStepWitness:
        """The one-step witness of step i. Operand leaf proofs are made against `trace` (the defender's trace, or a
        `PatchedTree` of it); leaf contents come from `values` (default: `trace`; the challenger passes its honest
        trace: every leaf before i is agreed). `input_boundary`/`output_boundary`: the claim's packed boundary tensors
        (only the INPUT resp. OUTPUT step uses one)."""
        if values is None:
            if not isinstance(trace, Trace):
                raise TypeError("pass values=<a Trace> when proofs come from a tree")
            values = trace
        if not 0 <= i < self.n_steps:
            raise TraceDataError(f"step {i} outside 0..{self.n_steps - 1}")
        step = self.steps[i]
        leaves, proofs = [], []
        for op in step.operands:
            for s in op:
                if s.step in values.poisoned:
                    raise TraceDataError(f"operand step {s.step} has no valid values (poisoned)")
                leaves.append(int_pack(values.values[s.step]))
                proofs.append(list(trace.proof(s.step)))
        const = self.step_const(i)
        boundary = input_boundary if step.kind == StepKind.INPUT else output_boundary if step.kind == StepKind.OUTPUT else b""
        tv, tp = [], []
        if step.kind == StepKind.LOOKUP:
            table = self.tables[step.const_hash]
            for a in self.operands(values, i)[0]:
                if table.p0 <= a <= table.p1:
                    tv.append(int(table.values[a - table.p0]))
                    tp.append(table.tree.proof(a - table.p0))
                else:
                    tv.append(0)
                    tp.append([])
        elif step.kind == StepKind.GATHER:
            rt = self.row_tables[step.const_hash]
            vv, dd = step.params[0], step.params[1]
            for a in self.operands(values, i)[0]:
                if 0 <= a < vv:
                    tv += rt.rows[a].tolist()
                    tp.append(rt.tree.proof(a))
                else:
                    tv += [0] * dd
                    tp.append([])
        return OneStepWitness(i, step, self.tree.proof(i), leaves, proofs, int_pack(const) if const is not None else b"",
                              boundary, tv, tp)


# ------------------------------------------------------------------ bisection


class Bisection:
    """The players' moves over trace trees (level 0 = leaves, the root is (depth, 0); node (level, index) has children
    (level - 1, 2 index) and (level - 1, 2 index + 1))."""

    def __init__(self, honest: Trace):
        self.honest = honest
        self.tree = honest.tree
        self._poisoned = np.asarray(honest.poisoned, dtype=np.int64)

    @staticmethod
    def children(tree: MerkleTree, level: int, index: int) -> tuple[bytes, bytes]:
        """Defender: the two children of its node (level, index)."""
        if not 1 <= level <= tree.depth or not 0 <= index < (1 << (tree.depth - level)):
            raise TraceDataError(f"no inner node ({level}, {index}) in a tree of depth {tree.depth}")
        return tree.node(level - 1, 2 * index), tree.node(level - 1, 2 * index + 1)

    def _has_poison(self, level: int, index: int) -> bool:
        lo, hi = index << level, (index + 1) << level
        j = np.searchsorted(self._poisoned, lo)
        return bool(j < self._poisoned.size and self._poisoned[j] < hi)

    def choose(self, level: int, index: int, left: bytes, right: bytes) -> int:
        """Challenger: the defender revealed `left`, `right` under its node (level, index); the index (at level - 1) of
        the child to dispute. The leftmost child that differs from the honest tree or holds a poisoned honest step
        (so the game ends at the first step where the defender's trace leaves the honest one, or at the first step with
        no valid output); if neither does (only when the trace is honest and the published output is not), the child
        holding the OUTPUT step (the last real leaf: the zero padding after it is never the way)."""
        hl, hr = self.children(self.tree, level, index)
        if left != hl or self._has_poison(level - 1, 2 * index):
            return 2 * index
        last = len(self.honest.leaves) - 1
        right_is_real = (2 * index + 1) << (level - 1) <= last
        if right_is_real and right != hr:
            return 2 * index + 1
        # nothing differs among the real steps (the padding after them may: it is never the way, no step lives there)
        return 2 * index + 1 if right_is_real else 2 * index

    def play(self, defender: MerkleTree | Callable[[int, int], tuple[bytes, bytes]]) -> tuple[int, dict[tuple[int, int], bytes]]:
        """A whole bisection against `defender` (its tree, or a function (level, index) -> revealed children), from
        the root down; returns the disputed step and every node the defender revealed."""
        reveal = defender if callable(defender) else (lambda lv, ix: self.children(defender, lv, ix))
        revealed: dict[tuple[int, int], bytes] = {}
        level, index = self.tree.depth, 0
        while level > 0:
            left, right = reveal(level, index)
            revealed[(level - 1, 2 * index)], revealed[(level - 1, 2 * index + 1)] = left, right
            index = self.choose(level, index, left, right)
            level -= 1
        return index, revealed
