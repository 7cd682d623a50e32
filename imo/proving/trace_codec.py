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
from math import isqrt
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
    # transformer kinds (a MatMul of two activations, Softmax, LayerNorm, an embedding's Gather)
    MATMUL = 8  # out[t] = sum_k a[k] * b[t*K + k]; p = [K, T]; b = T columns of the right operand, each K values
    SUM = 9  # out[r] = sum(a[r*L : (r+1)*L]); p = [L], L >= 1, len(a) = L * outCount
    MAX = 10  # out[r] = max(a[r*L : (r+1)*L]); p = [L], L >= 1, len(a) = L * outCount
    DIVC = 11  # out = round_half_away(a / p0), 0 < p0 < 2**128
    RECIP = 12  # out = round_half_away(p0 / a) (a != 0), p1 where a == 0; 0 < p0 < 2**128
    SQRT = 13  # out = round_half_away(f64(sqrt(f64(a) * 2**p0))) (IEEE-754, exact integer emulation); a <= 0 -> 0
    REPEAT = 14  # out[i] = a[(p1 + i) // p0]; p = [L, off], 1 <= L, 0 <= off < L (L = 1, off = 0: a copy)
    GATHER = 15  # out = rows a[0], a[1], ... of a (V, D) table; p = [V, D]; constHash is the Merkle root of its rows


TRANSFORMER_KINDS = frozenset(k for k in StepKind if k >= StepKind.MATMUL)
"""Kinds that only transformer segments use (the classic MLP kinds are INPUT..LOOKUP)."""


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


def round_half_away_div(n: int, d: int) -> int:
    """round_half_away(n / d) for integers, d != 0 (exact)."""
    q, r = divmod(abs(n), abs(d))
    q += 2 * r >= abs(d)
    return q if (n >= 0) == (d > 0) or q == 0 else -q


def _f64_round(x: int) -> tuple[int, int]:
    """The IEEE-754 double nearest to the integer x >= 0 (ties to even), as (mantissa, exponent): m * 2**e."""
    n = x.bit_length()
    if n <= 53:
        return x, 0
    sh = n - 53
    m, low = x >> sh, x & ((1 << sh) - 1)
    half = 1 << (sh - 1)
    if low > half or (low == half and m & 1):
        m += 1
    return m, sh


def sqrt_f64_round(a: int, s: int) -> int:
    """The canonical executor's sqrt at scale 2**s (``round_half_away(m * sqrt(f64(a) / m))``, f64, NaN -> 0), in
    exact integer arithmetic: f64(a) is a rounded to 53 bits (ties to even), sqrt is correctly rounded (IEEE-754),
    scaling by a power of two is exact and round_half_away is taken of the double. Equal to numpy's for every int64 a
    and 0 <= s <= 64 (tests/test_trace_transformer.py)."""
    if a <= 0:
        return 0
    m, e = _f64_round(a)
    x_num, x_exp = m, e + s  # X = m * 2**(e + s) >= 1; sqrt(X) in [2**52, 2**53) * 2**-k for the k below
    # scale X by 4**k so that isqrt has >= 55 bits, then round to 53 significant bits with a sticky bit
    if x_exp % 2:
        x_num, x_exp = x_num << 1, x_exp - 1
    half_exp = x_exp // 2  # X = x_num * 4**half_exp
    k = max(0, 56 - (x_num.bit_length() + 1) // 2)
    big = x_num << (2 * k)
    y = isqrt(big)
    sticky = y * y != big
    n = y.bit_length()
    sh = n - 53
    mant, low = y >> sh, y & ((1 << sh) - 1)
    half = 1 << (sh - 1)
    if low > half or (low == half and (sticky or mant & 1)):
        mant += 1
    # sqrt(X) ~= mant * 2**(sh - k + half_exp); round half away of that (positive)
    e2 = sh - k + half_exp
    if e2 >= 0:
        return mant << e2
    return (mant + (1 << (-e2 - 1))) >> -e2


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
    elif k == StepKind.MATMUL:
        kk, tt = p[0], p[1]
        b = list(operands[1]) if len(operands) > 1 else []
        if kk < 0 or tt != n or len(a) != kk or len(b) != kk * tt:
            raise TraceDataError("MATMUL: operand sizes differ from [K, T] or T from outCount")
        out = [sum(a[i] * b[t * kk + i] for i in range(kk)) for t in range(tt)]
    elif k in (StepKind.SUM, StepKind.MAX):
        ll = p[0]
        if not 1 <= ll < 1 << 31 or len(a) != ll * n:
            raise TraceDataError(f"{k.name}: {len(a)} inputs are not {n} rows of {ll}")
        red = sum if k == StepKind.SUM else max
        out = [red(a[r * ll : (r + 1) * ll]) for r in range(n)]
    elif k == StepKind.DIVC:
        if not 0 < p[0] < 1 << 128:
            raise TraceDataError("DIVC: divisor outside (0, 2**128)")
        out = [round_half_away_div(x, p[0]) for x in a]
    elif k == StepKind.RECIP:
        if not 0 < p[0] < 1 << 128:
            raise TraceDataError("RECIP: numerator outside (0, 2**128)")
        out = [round_half_away_div(p[0], x) if x else p[1] for x in a]
    elif k == StepKind.SQRT:
        if not 0 <= p[0] <= 64:
            raise TraceDataError("SQRT: scale outside [0, 64]")
        out = [sqrt_f64_round(x, p[0]) for x in a]
    elif k == StepKind.REPEAT:
        ll, off = p[0], p[1]
        if ll < 1 or not 0 <= off < ll or len(a) != ((off + n - 1) // ll + 1 if n else 0):
            raise TraceDataError("REPEAT: operand length differs from [L, off] and outCount")
        out = [a[(off + i) // ll] for i in range(n)]
    elif k == StepKind.GATHER:
        vv, dd = p[0], p[1]
        if table is None:
            raise TraceDataError("GATHER: no table")
        if dd < 0 or len(a) * dd != n:
            raise TraceDataError("GATHER: outCount is not rows times D")
        bad = [x for x in a if not 0 <= x < vv]
        if bad:
            raise TraceDataError(f"GATHER: index {bad[0]} outside [0, {vv})")
        out = []
        for x in a:
            row = list(table(x))
            if len(row) != dd:
                raise TraceDataError("GATHER: a table row is not D values")
            out += row
    else:  # pragma: no cover - IntEnum covers every kind
        raise TraceDataError(f"unknown step kind {k}")
    if len(out) != n:
        raise TraceDataError(f"{k.name}: {len(out)} outputs, descriptor says {n}")
    return out


def rows_tree(rows: Sequence[Sequence[int]]) -> MerkleTree:
    """A GATHER table's tree: row j is leaf_hash(row j)."""
    return MerkleTree([leaf_hash(r) for r in rows])


def table_tree(values: Sequence[int]) -> MerkleTree:
    """A lookup table's tree: entry i (input p0 + i) is leaf_hash([value])."""
    return MerkleTree([leaf_hash([v]) for v in values])
