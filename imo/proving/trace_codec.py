"""The encodings the bisection dispute game shares between Python and `DisputeGame.sol`.

An op segment's canonical execution is a *step program*: a list of `Step` descriptors, registered on chain as the
Merkle root of their hashes. Running it gives a *trace*: one leaf per step, the hash of the step's output values.
The game narrows a disagreement over a trace root to one step, whose output the contract recomputes from operands
proven against the defender's trace, constants proven against the registered descriptor and, for lookups, table
entries proven against a registered table root. Everything here is the single definition of those rules; the
Solidity mirrors it and tests check both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Sequence

import numpy as np
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

ZERO = b"\x00" * 32
_WIDTHS = (1, 2, 4, 8)


class TraceDataError(ValueError):
    """Malformed packed values, an out-of-range index or a step whose inputs make it invalid."""


# ------------------------------------------------------------------ values


def int_pack(values: Sequence[int] | np.ndarray) -> bytes:
    """One width byte w (the narrowest of 1, 2, 4, 8 holding every value), then each value as a w-byte big-endian
    two's-complement integer. Canonical, so a leaf hash names exactly one value list."""
    try:
        q = np.asarray(values, dtype=np.int64).ravel()
    except OverflowError:
        raise TraceDataError("a value does not fit in 64 bits") from None
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    for w in _WIDTHS:
        if -(1 << (8 * w - 1)) <= lo and hi < (1 << (8 * w - 1)):
            return bytes([w]) + q.astype(f">i{w}").tobytes()
    raise TraceDataError(f"value {lo if -lo > hi else hi} does not fit in 64 bits")  # pragma: no cover


def int_unpack(buf: bytes) -> list[int]:
    """Inverse of `int_pack`; rejects a bad width byte, a ragged length or a non-canonical (too wide) width."""
    if not buf or buf[0] not in _WIDTHS or (len(buf) - 1) % buf[0]:
        raise TraceDataError("malformed packed values")
    vals = np.frombuffer(buf, dtype=f">i{buf[0]}", offset=1).astype(np.int64)
    if int_pack(vals) != bytes(buf):
        raise TraceDataError("packed values are not in canonical (narrowest) width")
    return [int(v) for v in vals]


def leaf_hash(values: Sequence[int] | np.ndarray) -> bytes:
    """A trace leaf or table entry: keccak256(int_pack(values))."""
    return keccak(int_pack(values))


# ------------------------------------------------------------------ merkle


def _depth(n: int) -> int:
    return max(1, (max(n, 1) - 1).bit_length())


@dataclass
class MerkleTree:
    """Positional binary Merkle tree of fixed depth max(1, ceil(log2 n)), padded with zero leaves;
    node = keccak256(left || right). Fixed depth means a leaf can never pose as an inner node."""

    leaves: list[bytes]
    levels: list[list[bytes]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        depth = _depth(len(self.leaves))
        level = list(self.leaves) + [ZERO] * ((1 << depth) - len(self.leaves))
        self.levels = [level]
        for _ in range(depth):
            level = [keccak(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
            self.levels.append(level)

    @property
    def depth(self) -> int:
        return len(self.levels) - 1

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def node(self, level: int, index: int) -> bytes:
        """The node `level` steps above the leaves (0 = a leaf) at position `index` in that level."""
        return self.levels[level][index]

    def proof(self, index: int) -> list[bytes]:
        """Siblings from the leaf up to (not including) the root."""
        if not 0 <= index < len(self.leaves):
            raise TraceDataError(f"leaf index {index} outside 0..{len(self.leaves) - 1}")
        out = []
        for level in self.levels[:-1]:
            out.append(level[index ^ 1])
            index >>= 1
        return out


def merkle_verify(leaf: bytes, index: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Does `leaf` sit at `index` under `root`? (bit i of index: 1 = the node is a right child at level i)."""
    if index >> len(proof):
        return False
    node = leaf
    for sib in proof:
        node = keccak(sib + node) if index & 1 else keccak(node + sib)
        index >>= 1
    return node == root


# ------------------------------------------------------------------ steps


class StepKind(IntEnum):
    """What a step computes from its operands a (, b), constant C and params p. All integer arithmetic."""

    INPUT = 0  # out = segment input boundary[p0 : p0 + outCount]
    OUTPUT = 1  # out = a, and a must equal the whole segment output boundary (the last step)
    GEMM = 2  # out[t] = sum_k a[k] * C[k*T + t]; p = [K, T]; a is K values (one row), out T values
    ADD = 3  # out = a*p0 + b*p1, b = operand 1 or C (same length as a)
    MUL = 4  # out = a*b, b = operand 1 or C
    RESCALE = 5  # out = round_half_away(a / 2**p0)
    RELU = 6  # out = max(a, 0)
    LOOKUP = 7  # out = table[a - p0] with p0 <= a <= p1; constHash is the table's Merkle root


@dataclass(frozen=True)
class Slice:
    """Values [start, start+count) of producer step `step`'s output leaf."""

    step: int
    start: int
    count: int


Operand = tuple[Slice, ...]  # the operand is the concatenation of its slices

STEP_ABI = "(uint8,(uint32,uint32,uint32)[][],int256[],bytes32,uint32)"


@dataclass(frozen=True)
class Step:
    """One step's descriptor; `const_hash` is keccak(int_pack(C)) (or a LOOKUP's table root; ZERO when unused)."""

    kind: StepKind
    operands: tuple[Operand, ...]
    params: tuple[int, ...]
    const_hash: bytes
    out_count: int

    def abi_tuple(self) -> tuple:
        ops = [[(s.step, s.start, s.count) for s in op] for op in self.operands]
        return (int(self.kind), ops, list(self.params), self.const_hash, self.out_count)

    def encode(self) -> bytes:
        return abi_encode([STEP_ABI], [self.abi_tuple()])

    def hash(self) -> bytes:
        """The program-tree leaf: keccak256(abi.encode(step))."""
        return keccak(self.encode())


def _round_half_away_shift(x: int, shift: int) -> int:
    if shift <= 0:
        return x
    q = (abs(x) + (1 << (shift - 1))) >> shift
    return q if x >= 0 else -q


def evaluate_step(
    step: Step,
    operands: Sequence[Sequence[int]],
    const: Sequence[int] | None = None,
    boundary: Sequence[int] | None = None,
    table: Callable[[int], int] | None = None,
) -> list[int]:
    """The reference semantics of one step (the Solidity one-step check computes exactly this).

    Raises TraceDataError when no output is valid: a lookup input outside the table, an OUTPUT step whose operand
    differs from the published output, wrong operand lengths."""
    k, p, n = step.kind, step.params, step.out_count
    a = list(operands[0]) if operands else []

    def second() -> list[int]:
        b = list(operands[1]) if len(operands) > 1 else list(const or [])
        if len(b) != len(a):
            raise TraceDataError(f"{k.name}: operand lengths {len(a)} and {len(b)} differ")
        return b

    if k == StepKind.INPUT:
        if boundary is None or p[0] + n > len(boundary):
            raise TraceDataError("INPUT: slice outside the input boundary")
        out = list(boundary[p[0] : p[0] + n])
    elif k == StepKind.OUTPUT:
        if boundary is None or list(boundary) != a:
            raise TraceDataError("OUTPUT: the trace's output differs from the published output")
        out = a
    elif k == StepKind.GEMM:
        kk, tt = p[0], p[1]
        c = list(const or [])
        if len(a) != kk or len(c) != kk * tt:
            raise TraceDataError("GEMM: operand or weight size differs from [K, T]")
        out = [sum(a[i] * c[i * tt + t] for i in range(kk)) for t in range(tt)]
    elif k == StepKind.ADD:
        out = [x * p[0] + y * p[1] for x, y in zip(a, second())]
    elif k == StepKind.MUL:
        out = [x * y for x, y in zip(a, second())]
    elif k == StepKind.RESCALE:
        out = [_round_half_away_shift(x, p[0]) for x in a]
    elif k == StepKind.RELU:
        out = [max(x, 0) for x in a]
    elif k == StepKind.LOOKUP:
        if table is None:
            raise TraceDataError("LOOKUP: no table")
        bad = [x for x in a if not p[0] <= x <= p[1]]
        if bad:
            raise TraceDataError(f"LOOKUP: input {bad[0]} outside the table [{p[0]}, {p[1]}]")
        out = [table(x) for x in a]
    else:  # pragma: no cover - IntEnum covers every kind
        raise TraceDataError(f"unknown step kind {k}")
    if len(out) != n:
        raise TraceDataError(f"{k.name}: {len(out)} outputs, descriptor says {n}")
    return out


def table_tree(values: Sequence[int]) -> MerkleTree:
    """A lookup table's tree: entry i (input p0 + i) is leaf_hash([value])."""
    return MerkleTree([leaf_hash([v]) for v in values])
