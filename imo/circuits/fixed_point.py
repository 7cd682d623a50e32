"""Bit-exact numpy re-implementation of ezkl 23.0.5's fixed-point forward pass.

ezkl turns an ONNX graph into a circuit whose witness values are integers
("fixed point" numbers ``v * 2**scale``).  This module reproduces the values
that ``ezkl.gen_witness`` writes to ``witness["outputs"]`` (and the Poseidon
commitments in ``witness["processed_inputs"|"processed_outputs"]``) without
running ezkl, so a model (or a sub-segment of it) can be re-executed cheaply,
e.g. by a fraud-proof challenger.

Rules (pinned by reading ezkl's Rust source and confirmed experimentally
against ``ezkl.gen_witness`` on thousands of random inputs; see
``tests/test_fixed_point.py``):

* **Input quantization** (``graph/input.rs``, ``graph/utilities.rs::quantize_float``):
  the JSON float is first rounded to ``f32`` (the model's input type is F32),
  widened back to ``f64``, multiplied by ``2**input_scale`` and rounded with
  Rust ``f64::round`` = round half *away from zero*.
* **Parameters** (``"Const"`` in ``graph/utilities.rs``): float constants are
  stored as raw ``f32`` and quantized the same way (``round(w * 2**param_scale)``,
  half away from zero).  A constant may later be *re-quantized from the raw
  f32 value* at a larger scale (never by multiplying the quantized value):
  - Conv bias: re-quantized at ``input_scale + kernel_scale``;
  - the constant operand of Add (e.g. a Gemm/Linear bias, which tract splits
    off the matmul into a separate Add), if it has a single use: re-quantized
    at ``max(scales of the Add's inputs)``.
* **Gemm / MatMul** become an integer EinSum; output scale = sum of input scales.
  The Gemm bias is *not* added at that scale: tract splits Gemm into
  EinSum + Add, and the EinSum node is rebased first.
* **Rebase** (``graph/node.rs::RebaseScale::rebase``): after every non-identity
  node whose output scale exceeds ``R = max(input_scale, param_scale) *
  scale_rebase_multiplier`` (or ``rebase_scale`` when set), the result is
  divided by ``2**(out_scale - R)`` with ``tensor::ops::nonlinearities::const_div``:
  ``(a as f64 / d).round()`` i.e. round half away from zero.
* **Homogeneous scales** (Add): inputs with a lower scale are multiplied by
  ``2**(max_scale - scale)`` (``Rescaled``).
* **Relu** is loaded as ``Max(x, 0)`` -> ``LeakyReLU(slope=0)``: ``x * (x > 0)``,
  same scale, applied to the already-rebased value.
* **Sigmoid** is a lookup op at the input scale ``s`` (``m = 2**s``):
  ``round(m / (1 + exp(-(a / m))))`` computed in f64, output scale ``s``.
* **Conv** is an exact integer convolution (bias at ``s_in + s_kernel``),
  followed by the rebase.
* **Flatten / Reshape / Identity** do not change values or scales.
* **Rebase applies to every non-Identity op** whose output scale exceeds ``R`` -- also value-preserving
  ones (Reshape, Flatten, Transpose, Slice, Gather, Expand, MaxPool, Relu, lookups, Sum, Concat): e.g.
  ``(x * 0.5).reshape(...)`` is divided by 2 at the Reshape.  Only ``PolyOp::Identity`` (ONNX
  Identity/Dropout, Cast to float, and ``Mul`` by a scalar ``2**-k``) is exempt.  **Split** is not rebased
  either: each piece keeps the input scale (checked against gen_witness, ``tests/test_fixed_point_ops.py``).
* **Mul** by a constant: a scalar ``c < 1`` with ``log2(1/c)`` integral (f32) is an Identity that only
  raises the scale by ``k`` (no rounding); any other constant is quantized at param_scale (never
  re-quantized), output scale ``s + P``, then rebase.  Activation x activation: scales add.
  ``Mul(x, x)`` / ``Pow(x, k)``: PolyOp::Pow, scale ``k*s``.
* **Div** by a constant: tract rewrites it as ``Mul`` by the f32 reciprocal (so ``x / 2`` is an Identity
  scale+1 and ``x / 3`` is ``x * round(2**P / 3)`` rebased).  ``a / b`` of activations: ``a * Recip(b)``.
* **Sub** is Add with a negated operand (same homogenization and single-use constant rule).
* **Lookups** (Sigmoid, Tanh, Erf, Exp) run at the input scale ``s`` and keep it: ``round(m * f(a / m))``
  in f64 (``m = 2**s``, round half away); Erf is ezkl's own 28-term Chebyshev ``erffunc`` (not libm),
  Exp is ``m * base.powf(a / m)`` with ``base = e as f32`` (2.7182817459106445, not e).
* **Softmax** (``layouts::softmax``): ``e = exp_lookup(x - max)``, ``inv = round(2**S / (sum(e) / m))``
  (``recip``, ``S = max(input_scale, param_scale, s)``), output ``e * inv`` at ``s + S``, rebased.
* **Means** (ReduceMean, GlobalAveragePool): ``Sum`` then ``Mul`` by the f32 ``1/N`` (Identity
  scale+log2 N when N is a power of two).  ``ReduceMean(x**2)`` is fused into MeanOfSquares:
  ``const_div(sum(x*x), N)`` at ``2s`` (one rounding), rebased.
* **LayerNormalization** (and torch's decomposed form, which tract pattern-matches to the same):
  mean, Sub (rebased), MeanOfSquares, Add eps, Rsqrt = ``recip(sqrt_lookup(v))``, Mult, then gamma
  (Mul) / beta (Add) when not 1 / 0.  BatchNormalization: ``x * k + c`` (k, c folded in f32).
* **Pooling**: inputs are padded with *zeros* (MaxPool too); AveragePool sums the window and divides
  by the full kernel size (``const_div``, round half away) regardless of ``count_include_pad``.
* **LeakyRelu**: ``x > 0 ? x * 2**P : x * round(alpha * 2**P)`` at ``s + P``, rebased.  Clip: Max/Min
  with single-use constants re-quantized at the input scale (``Clip(0, hi)`` = ReLU then Min).
* **ArgMax**: the index of the first maximum of the rebased input (ties to the lowest index, as gen_witness),
  an integer at scale 0, not rebased.
* **Comparisons** (Greater, Less, ...) give 0/1 at scale 0 -- except Equal, whose 0/1 keeps the
  input scale (an ezkl quirk: ``(x == c).float()`` adds ``2**-s``, not 1); **Where** is ``Iff`` of homogenized
  branches.  **Concat** homogenizes all inputs to the max scale.  Integer model inputs (token ids)
  are at scale 0; ``Gather`` of a constant table by them yields the table quantized at param_scale.
* Nodes whose inputs are all constants (torch's shape arithmetic) are folded at compile time.
* Field elements in the witness JSON are 32-byte *little-endian* hex strings
  (no ``0x``); negative integers ``v`` are stored as ``p + v``
  (``p`` = BN254 scalar field modulus).
* **Circuit limits** (:class:`CircuitLimits`): where ezkl's circuit has no witness
  (``gen_witness``: "decomposition error", ``mock``: "lookup not satisfied") the executor
  raises :class:`imo.errors.UnprovableClaimError` instead of returning a value: model inputs,
  rebase quotients, ReLU inputs and public outputs must satisfy ``|v| <= decomp_base**decomp_legs - 1``,
  lookup inputs (Sigmoid/Tanh/Erf/Exp, Softmax's ``x - max``) must lie in the lookup table, recip /
  sqrt / const_div claimed outputs (Softmax, Rsqrt, Recip, MeanOfSquares, AveragePool) must fit the
  decomposition, and Gather indices must be in range.
* Hashed visibility: ``processed_*["poseidon_hash"][i]`` is
  halo2 Poseidon (ezkl's ``PoseidonChip::run``, VariableLength) over the
  flattened field elements of the i-th tensor, exactly what
  ``ezkl.poseidon_hash(list_of_felts)`` computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from imo.errors import UnprovableClaimError

__all__ = [
    "FIELD_MODULUS",
    "CircuitLimits",
    "FixedPointProgram",
    "Scales",
    "TraceOp",
    "dequantize",
    "felt_to_hex_be",
    "felt_to_int",
    "int_to_felt",
    "limits_from_settings",
    "poseidon_commitment",
    "quantize",
    "round_half_away",
    "run_fixed_point",
    "scales_from_settings",
    "witness_commitments",
    "witness_inputs",
    "witness_outputs",
]

#: BN254 scalar field modulus (the field ezkl's halo2 circuits live in).
FIELD_MODULUS = 0x30644E72E131A029B85045B68181585D2833E84879B9709143E1F593F0000001
_HALF_FIELD = FIELD_MODULUS // 2



# --------------------------------------------------------------------------- #
# scalar / field helpers
# --------------------------------------------------------------------------- #
def round_half_away(y: np.ndarray) -> np.ndarray:
    """Rust ``f64::round``: round to nearest, ties away from zero (exact, no ``+0.5`` error)."""
    y = np.asarray(y, dtype=np.float64)
    t = np.trunc(y)
    frac = y - t  # exact
    return t + np.where(np.abs(frac) >= 0.5, np.sign(y), 0.0)


def quantize(x: np.ndarray, scale: int) -> np.ndarray:
    """Float -> int64 exactly as ezkl quantizes F32 model inputs.

    ``x`` is rounded to float32 (ezkl's ``InputType::F32`` roundtrip), then
    ``round_half_away(x * 2**scale)`` in f64 (Rust ``f64::round``).
    """
    y = np.asarray(x, dtype=np.float32).astype(np.float64)
    y *= 2.0**scale
    if y.size and not np.isfinite(y).all():
        raise ValueError("cannot quantize non-finite values")
    if y.size and np.abs(y).max() >= 2.0**62:
        raise OverflowError("quantized value does not fit in int64")
    # y has a 24-bit mantissa, so y +- 0.5 is exact and trunc() rounds half away from zero
    y += np.copysign(0.5, y)
    return np.trunc(y, out=y).astype(np.int64)


def _quantize_param(raw_f32: np.ndarray, scale: int) -> np.ndarray:
    """ezkl ``quantize_tensor``: raw f32 constant -> round_half_away(w * 2**scale)."""
    w = np.asarray(raw_f32, dtype=np.float32).astype(np.float64)
    y = round_half_away(w * (2.0**scale))
    if np.any(np.abs(y) >= 2.0**62):
        raise OverflowError("quantized parameter does not fit in int64")
    return y.astype(np.int64)


def dequantize(q: np.ndarray, scale: int) -> np.ndarray:
    """int fixed point -> float64 (``q / 2**scale``)."""
    return np.asarray(q, dtype=np.float64) / (2.0**scale)


def felt_to_int(felt: str | int) -> int:
    """ezkl field element -> signed int (elements above ``p/2`` are negative: ``v - p``).

    Accepts the witness JSON encoding (64 hex chars, 32-byte *little-endian*, no
    prefix; what ``ezkl.felt_to_int`` takes), the ``0x``-prefixed *big-endian*
    encoding used in ``witness["pretty_elements"]``, or a non-negative int.
    Agrees with ``ezkl.felt_to_int`` for every value in ezkl's i128 range.
    """
    if isinstance(felt, (int, np.integer)):
        v = int(felt)
        if not 0 <= v < FIELD_MODULUS:
            raise ValueError(f"{felt!r} is not a canonical field element")
    elif felt.startswith(("0x", "0X")):
        v = int(felt, 16)
    else:
        if len(felt) != 64:
            raise ValueError(f"expected a 32-byte little-endian hex field element, got {felt!r}")
        v = int.from_bytes(bytes.fromhex(felt), "little")
    if v >= FIELD_MODULUS:
        raise ValueError(f"{felt!r} is not a canonical field element")
    return v - FIELD_MODULUS if v > _HALF_FIELD else v


def int_to_felt(v: int) -> str:
    """signed int -> ezkl witness field-element string (32-byte little-endian hex, no prefix)."""
    return (int(v) % FIELD_MODULUS).to_bytes(32, "little").hex()


def felt_to_hex_be(felt: str) -> str:
    """Witness (little-endian) felt string -> ``0x`` big-endian hex (pretty_elements / EVM encoding)."""
    return "0x" + bytes.fromhex(felt)[::-1].hex()


def _felts_to_array(felts: Iterable[str]) -> np.ndarray:
    return np.array([felt_to_int(f) for f in felts], dtype=np.int64)


def _load_witness(witness: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    if isinstance(witness, (str, Path)):
        import json

        with open(witness) as fh:
            return json.load(fh)
    return witness


def witness_inputs(witness: Mapping[str, Any] | str | Path) -> list[np.ndarray]:
    """Quantized (flat int64) model inputs from a witness dict / JSON path."""
    w = _load_witness(witness)
    return [_felts_to_array(t) for t in w["inputs"]]


def witness_outputs(witness: Mapping[str, Any] | str | Path) -> list[np.ndarray]:
    """Quantized (flat int64) model outputs from a witness dict / JSON path."""
    w = _load_witness(witness)
    return [_felts_to_array(t) for t in w["outputs"]]


def witness_commitments(witness: Mapping[str, Any] | str | Path, which: str = "outputs") -> list[str] | None:
    """Poseidon commitments ezkl exposes for hashed visibility (``which`` = inputs/outputs/params)."""
    w = _load_witness(witness)
    processed = w.get(f"processed_{which}")
    if not processed:
        return None
    return processed.get("poseidon_hash")


def poseidon_commitment(q: np.ndarray) -> str:
    """The commitment ezkl exposes for a ``hashed`` input/output tensor.

    ``q`` is the quantized tensor (any shape, flattened in C order).  Returns the
    field element as ezkl's little-endian hex string (use :func:`felt_to_int` or
    ``int(s_le_hex)`` via ``int.from_bytes`` for an integer).
    """
    import ezkl  # deferred: heavy import, only needed for commitments

    flat = np.asarray(q).reshape(-1)
    if flat.size == 0:
        raise ValueError("ezkl does not hash empty tensors")
    (h,) = ezkl.poseidon_hash([int_to_felt(int(v)) for v in flat])
    return h


# --------------------------------------------------------------------------- #
# settings
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Scales:
    """Scales (log2 of the fixed-point multiplier) from ezkl's ``run_args``."""

    input: int
    params: int
    rebase: int  # target scale of every rebase (global scale * multiplier)


def scales_from_settings(settings: Mapping[str, Any] | str | Path) -> Scales:
    """Extract the scale configuration from an ezkl settings dict/JSON (or its ``run_args``)."""
    if isinstance(settings, (str, Path)):
        import json

        with open(settings) as fh:
            settings = json.load(fh)
    ra = settings.get("run_args", settings)
    s_in = int(ra["input_scale"])
    s_p = int(ra["param_scale"])
    mult = int(ra.get("scale_rebase_multiplier", 1))
    rebase = ra.get("rebase_scale")
    global_scale = int(rebase) if rebase is not None else max(s_in, s_p)
    if ra.get("rebase_frac_zero_constants"):
        raise NotImplementedError("rebase_frac_zero_constants=true is not supported")
    return Scales(input=s_in, params=s_p, rebase=global_scale * mult)


#: Rows of every lookup-table column that ezkl leaves unused: halo2's blinding factors (5 in
#: ezkl's circuits) + ``RESERVED_BLINDING_ROWS_PAD`` (3), see ``circuit/table.rs``.  Pinned
#: against ``ezkl.mock`` at both ends of real tables in ``tests/test_provable_claims.py``.
TABLE_RESERVED_ROWS = 8


@dataclass(frozen=True)
class CircuitLimits:
    """The witness values ezkl's circuit can hold; outside them ``gen_witness`` or ``mock`` fails.

    * ``decomp_bound`` = ``decomp_base**decomp_legs - 1``: ezkl range-checks a value by decomposing
      it into ``decomp_legs`` base-``decomp_base`` digits and a sign (``get_rep``), so ``|v|`` must
      be at most this.  It decomposes the model inputs (any visibility), every rebase quotient
      (``layouts::div`` decomposes its claimed output), every ReLU input (``leaky_relu`` takes the
      sign of a decomposition) and public/fixed outputs (``HybridOp::Output``); the last two groups
      depend on ``range_check_inputs``/``range_check_outputs`` (``ignore_range_check_inputs_outputs``).
      Hashed/private outputs, Add, Rescaled, EinSum/Conv accumulators are not range-checked.
    * ``lookup`` = ``(lo, top)``: every lookup (Sigmoid) input must lie in the table, which starts
      at ``run_args.lookup_range[0]`` and holds ``num_cols * (2**logrows - TABLE_RESERVED_ROWS)``
      consecutive inputs (``Table::configure``/``largest``): beyond ``lookup_range[1]`` up to ``top``.
    ``None`` where the settings do not say (a bare ``run_args`` dict): that check is skipped.
    """

    decomp_bound: int | None = None
    lookup: tuple[int, int] | None = None
    range_check_inputs: bool = True
    range_check_outputs: bool = False
    decomp_base: int | None = None
    decomp_legs: int | None = None

    @property
    def decomp_reason(self) -> str:
        return f"the range ezkl's range check can represent ({self.decomp_legs} base-{self.decomp_base} digits)"


def _is_visibility(vis: Any, *names: str) -> bool:
    return isinstance(vis, str) and vis.lower() in names


def limits_from_settings(settings: Mapping[str, Any] | str | Path) -> CircuitLimits:
    """The :class:`CircuitLimits` of a compiled circuit, from its settings dict/JSON (or ``run_args``)."""
    if isinstance(settings, (str, Path)):
        import json

        with open(settings) as fh:
            settings = json.load(fh)
    ra = settings.get("run_args", settings)
    bound = base = legs = None
    if ra.get("decomp_base") is not None and ra.get("decomp_legs") is not None:
        base, legs = int(ra["decomp_base"]), int(ra["decomp_legs"])
        bound = base**legs - 1
    lookup = None
    if ra.get("lookup_range") is not None and ra.get("logrows") is not None:
        lo, hi = (int(v) for v in ra["lookup_range"])
        col_size = 2 ** int(ra["logrows"]) - TABLE_RESERVED_ROWS
        num_cols = abs(hi - lo) // col_size + 1  # table::num_cols_required
        lookup = (lo, lo + num_cols * col_size - 1)
    ignore = bool(ra.get("ignore_range_check_inputs_outputs", False))
    out_vis = ra.get("output_visibility", "Private")
    return CircuitLimits(
        decomp_bound=bound,
        lookup=lookup,
        range_check_inputs=not ignore,
        range_check_outputs=not ignore and _is_visibility(out_vis, "public", "fixed"),
        decomp_base=base,
        decomp_legs=legs,
    )


def _enforce_range(x: np.ndarray, lo: int, hi: int, where: str, what: str, why: str) -> float:
    """Raise :class:`UnprovableClaimError` unless ``lo <= x <= hi`` everywhere; returns ``max|x|``."""
    if not x.size:
        return 0.0
    mn, mx = x.min(), x.max()
    if mn < lo or mx > hi:
        bad = mn if mn < lo else mx
        index = int(np.flatnonzero(np.asarray(x).reshape(-1) == bad)[0])
        raise UnprovableClaimError(
            f"{where}: {what} at element {index} is {int(bad)}, outside [{lo}, {hi}], {why}; "
            "ezkl has no witness for it, so no proof of this claim can exist"
        )
    return float(max(-mn, mx))


# --------------------------------------------------------------------------- #
# integer kernels
# --------------------------------------------------------------------------- #
# Runtime representation: every activation slot holds an array of exact integers
# plus a float upper bound on its magnitude.  The array is float64 whenever the
# bound is < _F64_LIMIT (exact integer arithmetic in doubles, BLAS matmuls) and
# int64 otherwise.  Matmuls use float32 BLAS when the accumulator bound is
# < _F32_LIMIT.  Limits carry a 2x margin so float rounding of the bounds
# themselves can never matter.
_F64_LIMIT = float(2**51)
_F32_LIMIT = float(2**23)
_I64_LIMIT = float(2**62)


def _as_int(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == np.int64 else a.astype(np.int64)


def _absmax(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


def _carrier(a: np.ndarray, bound: float) -> np.ndarray:
    """Pick the representation for an exact-integer array with |a| <= bound."""
    if bound >= _I64_LIMIT:
        raise OverflowError("fixed-point value exceeds int64; ezkl values this large are unsupported")
    if bound < _F64_LIMIT:
        return a if a.dtype == np.float64 else a.astype(np.float64)
    return _as_int(a)


def _div_pow2_round(a: np.ndarray, shift: int) -> np.ndarray:
    """ezkl ``const_div`` by ``2**shift``: ``(a as f64 / 2**shift).round()`` (ties away from 0)."""
    if shift <= 0:
        return a
    if a.dtype == np.float64:
        # |a| < 2**52, so a * 2**-shift and r +- 0.5 are exact; trunc -> half-away rounding
        r = a * (2.0**-shift)
        r += np.copysign(0.5, r)
        return np.trunc(r, out=r)
    a = _as_int(a)
    # floor((a + 2**(shift-1) - [a < 0]) / 2**shift) == round_half_away(a / 2**shift)
    return (a + ((np.int64(1) << np.int64(shift - 1)) - (a < 0))) >> np.int64(shift)


def _const_div_int(a: np.ndarray, k: int) -> np.ndarray:
    """``round_half_away(a / k)`` for int64 ``a`` and a positive integer ``k`` (exact)."""
    a = _as_int(a)
    q, r = np.divmod(np.abs(a), np.int64(k))
    q = q + (2 * r >= k)
    return np.where(a < 0, -q, q)


def _sigmoid_lookup(a: np.ndarray, scale: int) -> np.ndarray:
    """ezkl ``nonlinearities::sigmoid``: ``round(m / (1 + exp(-(a / m))))``, m = 2**scale (f64)."""
    m = 2.0**scale
    af = np.asarray(a, dtype=np.float64)
    with np.errstate(over="ignore"):
        fout = m / (1.0 + np.exp(af * (-1.0 / m)))
    out = np.floor(fout + 0.5)  # fout > 0: half away == half up (ties re-checked below)
    # numpy's SIMD exp may differ from libm's exp (used by Rust) in the last ulp, and
    # fout + 0.5 may round; both only matter next to a tie -> recompute those with libm.
    near = np.abs(np.abs(fout - out) - 0.5) < 1e-6
    if near.any():
        out[near] = [_round_half_away_scalar(m / (1.0 + _exp(-(v / m)))) for v in af[near]]
    return out


def _fix_ties(out: np.ndarray, fout: np.ndarray, af: np.ndarray, scalar: Callable[[float], float]) -> np.ndarray:
    """numpy's vectorized transcendental functions may differ from libm (what Rust calls) in the
    last ulp; that only matters next to a rounding tie, so recompute those elements with libm."""
    with np.errstate(invalid="ignore"):
        near = np.abs(np.abs(fout - out) - 0.5) < 1e-6
    if near.any():
        out[near] = [_round_half_away_scalar(scalar(float(v))) for v in af[near]]
    return out


def _tanh_lookup(a: np.ndarray, scale: int) -> np.ndarray:
    """ezkl ``nonlinearities::tanh``: ``round(m * tanh(a / m))`` in f64, m = 2**scale."""
    m = 2.0**scale
    af = np.asarray(a, dtype=np.float64)
    fout = m * np.tanh(af / m)
    return _fix_ties(round_half_away(fout), fout, af, lambda v: m * math.tanh(v / m))


#: ezkl ``nonlinearities::erffunc`` Chebyshev coefficients (Numerical Recipes erfc)
_ERF_COF = (
    -1.3026537197817094, 6.419_697_923_564_902e-1, 1.9476473204185836e-2, -9.561_514_786_808_63e-3,
    -9.46595344482036e-4, 3.66839497852761e-4, 4.2523324806907e-5, -2.0278578112534e-5,
    -1.624290004647e-6, 1.303655835580e-6, 1.5626441722e-8, -8.5238095915e-8, 6.529054439e-9,
    5.059343495e-9, -9.91364156e-10, -2.27365122e-10, 9.6467911e-11, 2.394038e-12, -6.886027e-12,
    8.94487e-13, 3.13092e-13, -1.12708e-13, 3.81e-16, 7.106e-15, -1.523e-15, -9.4e-17, 1.21e-16, -2.8e-17,
)  # fmt: skip


def _erfccheb(z, exp):
    t = 2.0 / (2.0 + z)
    ty = 4.0 * t - 2.0
    d = dd = 0.0 * z
    for j in range(len(_ERF_COF) - 2, 0, -1):  # (1..NCOEF - 1).rev()
        d, dd = ty * d - dd + _ERF_COF[j], d
    return t * exp(-(z * z) + 0.5 * (_ERF_COF[0] + ty * d) - dd)


def _erf_lookup(a: np.ndarray, scale: int) -> np.ndarray:
    """ezkl ``nonlinearities::erffunc`` (its own Chebyshev erf, not libm's): ``round(m * erf(a / m))``."""
    m = 2.0**scale
    af = np.asarray(a, dtype=np.float64)
    k = af / m
    with np.errstate(over="ignore", under="ignore"):
        c = _erfccheb(np.abs(k), np.exp)
    fout = m * np.where(k >= 0, 1.0 - c, c - 1.0)

    def scalar(v: float) -> float:
        kk = v / m
        return m * (1.0 - _erfccheb(kk, _exp) if kk >= 0 else _erfccheb(-kk, _exp) - 1.0)

    return _fix_ties(round_half_away(fout), fout, af, scalar)


#: ``run_args.get_epsilon()`` default (f64::EPSILON), used by recip for a zero input
_F64_EPS = float(np.finfo(np.float64).eps)

#: ezkl loads Exp as ``LookupOp::Exp { base: E.into() }`` with an *f32* base, widened to f64
_EXP_BASE = float(np.float32(math.e))


def _exp_lookup(a: np.ndarray, scale: int) -> np.ndarray:
    """ezkl ``nonlinearities::exp``: ``round(m * base.powf(a / m))`` with ``base = e as f32``."""
    m = 2.0**scale
    af = np.asarray(a, dtype=np.float64)
    with np.errstate(over="ignore"):
        fout = m * np.power(_EXP_BASE, af / m)
    if np.isinf(fout).any():
        raise OverflowError("Exp lookup output exceeds float range; ezkl values this large are unsupported")
    return _fix_ties(round_half_away(fout), fout, af, lambda v: m * math.pow(_EXP_BASE, v / m))


class _Tabled:
    """``fn(a, scale)`` for integer-valued arrays, read from a table of ``fn`` over ``[lo, hi]`` built once per scale;
    elements outside the table are computed by ``fn`` itself.  The same values as ``fn`` (it is elementwise), faster:
    a transformer's GELU and Softmax evaluate these lookups on every activation."""

    def __init__(self, fn: Callable[[np.ndarray, int], np.ndarray], lo: int, hi: int):
        self.fn, self.lo, self.hi = fn, lo, hi
        self.tables: dict[int, np.ndarray] = {}

    def __call__(self, a: np.ndarray, scale: int) -> np.ndarray:
        table = self.tables.get(scale)
        if table is None:
            table = self.tables[scale] = self.fn(np.arange(self.lo, self.hi + 1, dtype=np.float64), scale)
        a = np.asarray(a)
        idx = a.astype(np.int64) - self.lo
        inside = (idx >= 0) & (idx <= self.hi - self.lo)
        if inside.all():
            return table[idx]
        out = np.empty(a.shape, dtype=np.float64)
        out[inside] = table[idx[inside]]
        out[~inside] = self.fn(a[~inside], scale)
        return out


_ERF_TABLE = _Tabled(_erf_lookup, -(1 << 16), 1 << 16)
_EXP_TABLE = _Tabled(_exp_lookup, -(1 << 16), 0)  # Softmax's exp(x - max): inputs <= 0


def _exp_bound(bx: float, scale: int) -> float:
    try:
        return 2.0**scale * math.pow(_EXP_BASE, bx / 2.0**scale) + 1.0
    except OverflowError:
        return math.inf


class _SigmoidTable:
    """Precomputed ezkl sigmoid lookup over the non-saturated integer range."""

    MAX_ENTRIES = 1 << 21

    def __init__(self, scale: int):
        m = 2.0**scale
        half = math.ceil(m * (math.log(2.0 * m) + 2.0)) + 2
        self.ok = 2 * half + 1 <= self.MAX_ENTRIES
        self.scale = scale
        if self.ok:
            table = _sigmoid_lookup(np.arange(-half, half + 1, dtype=np.float64), scale)
            # beyond the table the lookup is saturated (sigmoid is monotone)
            self.ok = table[0] == 0.0 and table[-1] == m and bool(np.all(np.diff(table) >= 0))
            self.half = half
            self.table = table

    def __call__(self, a: np.ndarray) -> np.ndarray:
        if not self.ok:
            return _sigmoid_lookup(a, self.scale)
        idx = np.clip(a, -self.half, self.half).astype(np.intp)
        idx += self.half
        return self.table[idx]


def _exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def _round_half_away_scalar(v: float) -> float:
    t = math.trunc(v)
    return float(t + (math.copysign(1, v) if abs(v - t) >= 0.5 else 0))


_MATMUL_THREADS = 1
_MATMUL_POOL = None


@contextmanager
def matmul_threads(n: int) -> Iterator[None]:
    """Within the block, split the executor's large float matmuls into ``n`` row blocks computed on ``n`` Python threads
    (numpy releases the GIL in BLAS), for use with the BLAS library itself limited to one thread: its own threads
    spin-wait, and on a loaded machine that makes them many times slower. The values are the same (exact integers)."""
    global _MATMUL_THREADS, _MATMUL_POOL
    saved = _MATMUL_THREADS
    if n > 1 and _MATMUL_POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _MATMUL_POOL = ThreadPoolExecutor(max_workers=max(n, 2), thread_name_prefix="imo-matmul")
    _MATMUL_THREADS = n
    try:
        yield
    finally:
        _MATMUL_THREADS = saved


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for float arrays, split into row blocks of ``a`` across threads inside :func:`matmul_threads`."""
    n, rows = _MATMUL_THREADS, a.shape[-2] if a.ndim >= 2 else 1
    if n <= 1 or rows < 2 * n or a.size * b.shape[-1] < (1 << 21):
        return np.matmul(a, b)
    cuts = np.linspace(0, rows, n + 1).astype(int)
    parts = list(_MATMUL_POOL.map(lambda i: np.matmul(a[..., cuts[i] : cuts[i + 1], :], b), range(n)))
    return np.concatenate(parts, axis=-2)


class _ConstMatmul:
    """Exact ``x @ W`` for integer-valued x and a fixed quantized W (K, N).

    ``max|x| * max_n sum_k |W_kn|`` bounds every partial sum, selecting float32
    BLAS, float64 BLAS or int64 arithmetic; all three give the exact integers.
    """

    def __init__(self, w: np.ndarray):
        w = np.asarray(w)
        absw = np.abs(w)
        wmax = float(absw.max(initial=0))
        self.col_l1 = float(absw.sum(axis=0, dtype=np.float64).max()) if w.size else 0.0
        del absw
        self.n_out = w.shape[1]
        # one copy of W (a 100M-parameter model holds its weights once): float32 while every entry is exact in it,
        # switched to float64 on the first call that needs float64 BLAS; int64 only beyond float64
        dtype = np.float32 if wmax < _F32_LIMIT else np.float64 if wmax < _F64_LIMIT else np.int64
        self.w = np.ascontiguousarray(w, dtype=dtype)

    def __call__(self, x: np.ndarray, bx: float) -> tuple[np.ndarray, float]:
        """Returns (x @ W, bound on |x @ W|); ``bx`` is a (possibly loose) bound on |x|."""
        bound = bx * self.col_l1
        if bound >= _F32_LIMIT and x.size:  # loose bound not good enough: measure
            bound = _absmax(x) * self.col_l1
        if bound < _F32_LIMIT and self.w.dtype == np.float32:
            return _matmul(x.astype(np.float32), self.w).astype(np.float64), bound
        if bound < _F64_LIMIT and self.w.dtype != np.int64:
            if self.w.dtype == np.float32:
                self.w = self.w.astype(np.float64)
            return _matmul(x.astype(np.float64), self.w), bound
        if bound >= _I64_LIMIT:
            raise OverflowError("fixed-point accumulator exceeds int64; ezkl values this large are unsupported")
        return _as_int(x) @ self.w.astype(np.int64), bound


# --------------------------------------------------------------------------- #
# graph compilation
# --------------------------------------------------------------------------- #
@dataclass
class _Const:
    raw: np.ndarray  # raw value (float32 for float constants)
    name: str
    uses: int = 0


@dataclass
class _Act:
    slot: int
    scale: int
    shape: tuple[int, ...]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


_Step = Callable[[list, list], None]


@dataclass(frozen=True, eq=False)
class TraceOp:
    """What one emitted closure computes, declared for the bisection game's step program (``imo/proving/trace.py``);
    the closure itself stays the executor.  Slots hold C-order tensors; ``shape`` is the shape written to ``dst``.

    * ``gemm``: ``dst = src0.reshape(-1, K) @ W`` exactly, ``const`` = a zero-argument callable returning the quantized
      (K, N) weight as exact integers (the executor keeps its one copy; never copied here).
    * ``add``: ``dst = src0 * params[0] + B * params[1]``, B = ``src1`` or ``const`` (integers), broadcast to ``shape``.
    * ``mul``: ``dst = src0 * B``, B = ``src1`` or ``const``, broadcast to ``shape``.
    * ``rescale``: ``dst = round_half_away(src0 / 2**params[0])`` (``dst == src0``: rebases rewrite their slot).
    * ``relu``: ``dst = max(src0, 0)``.
    * ``lookup``: ``dst = table(src0)`` elementwise, ``table`` the executor's own function at the input scale.
    * ``view``: ``dst = index(src0)``: only moves values (``index`` maps an array shaped like src0 to one shaped
      like dst: reshape, transpose, broadcast, slice).
    * ``check``: a range check of ``src0``; writes no values.
    * ``lookup`` with ``params = (lo, hi)``: the table need only cover ``[lo, hi]`` (within the circuit's range).
    * ``sum`` / ``max``: ``dst = src0.sum / max(axis=params, keepdims=True)`` (exact integers).
    * ``divc``: ``dst = round_half_away(src0 / params[0])``, a positive integer divisor.
    * ``recip``: ``dst = round_half_away(params[0] / src0)`` (``params[0]`` a power of two below 2**52, so the
      executor's f64 formula is this exact quotient), ``params[1]`` where ``src0 == 0``.
    * ``sqrt``: ``dst = round_half_away(m * sqrt(src0 / m))`` in f64, ``m = 2**params[0]`` (NaN -> 0).
    * ``matmul``: ``dst = src0 @ src1`` (batched over leading dims, broadcast), exact.
    * ``gather``: ``dst = np.take(const, src0, axis=params[0])``, ``const`` an integer table, ``src0`` in range.
    * ``seq``: ``parts`` run in order; their intermediate slots are the program's but no closure writes them.
    """

    kind: str
    srcs: tuple[int, ...] = ()
    dst: int | None = None
    params: tuple[int, ...] = ()
    const: Any = None
    table: Callable[[np.ndarray], np.ndarray] | None = None
    index: Callable[[np.ndarray], np.ndarray] | None = None
    shape: tuple[int, ...] | None = None
    parts: tuple["TraceOp", ...] = ()

_INT_TYPES = (
    onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
)  # fmt: skip


class FixedPointProgram:
    """A compiled ezkl-semantics fixed-point program for one ONNX graph + settings.

    All parameters are quantized once at construction; ``__call__`` runs the
    exact integer forward pass with numpy (BLAS where provably exact).

    Attributes: ``input_names``, ``input_shapes``, ``input_scales``,
    ``output_names``, ``output_shapes``, ``output_scales``, ``scales``.
    """

    #: max entries of the dense matrix used for convolutions on small feature maps
    DENSE_CONV_MAX = 1 << 20

    def __init__(self, model: str | Path | onnx.ModelProto, settings: Mapping[str, Any] | str | Path):
        self._base_dir: Path | None = None
        if isinstance(model, (str, Path)):
            # external weight data is memory-mapped, not loaded: only the quantized weights take memory
            self._base_dir = Path(model).parent
            model = onnx.load(str(model), load_external_data=False)
        if isinstance(settings, (str, Path)):
            import json

            with open(settings) as fh:
                settings = json.load(fh)
        self.scales = scales_from_settings(settings)
        self.limits = limits_from_settings(settings)
        run_args = settings.get("run_args", settings)
        self._variables = {str(k): int(v) for k, v in run_args.get("variables", [["batch_size", 1]])}
        self._steps: list[_Step] = []
        self._trace_ops: list[TraceOp | None] = []  # parallel to _steps: what each closure computes (None: undeclared)
        self._trace_nodes: list[tuple[str, str]] = []  # parallel to _steps: (node name, op type) that emitted it
        self._node: onnx.NodeProto | None = None
        self._n_slots = 0
        self._compile(model)
        in_scales = settings.get("model_input_scales")
        if in_scales and [int(x) for x in in_scales] != self.input_scales:
            raise NotImplementedError(f"model_input_scales {in_scales} differ from the executor's input scales {self.input_scales}")
        expected = settings.get("model_output_scales")
        if expected is not None and [int(x) for x in expected] != self.output_scales:
            raise ValueError(
                f"output scales {self.output_scales} differ from the settings' model_output_scales {expected}: "
                "the graph was interpreted differently from ezkl"
            )

    # ----------------------------------------------------------------- utils
    def _new_slot(self) -> int:
        self._n_slots += 1
        return self._n_slots - 1

    def _emit(self, step: _Step, op: TraceOp | None = None) -> None:
        self._steps.append(step)
        self._trace_ops.append(op)
        node = self._node
        self._trace_nodes.append((node.name, node.op_type) if node is not None else ("", ""))

    def _rebase(self, node: onnx.NodeProto, slot: int, scale: int) -> int:
        """ezkl RebaseScale: divide by 2**(scale - R) (round half away) if scale > R.

        ezkl's ``div`` decomposes the claimed quotient: it must fit the decomposition range."""
        target = self.scales.rebase
        if scale <= target:
            return scale
        shift = scale - target

        def step(v, b, slot=slot, shift=shift):
            v[slot] = _div_pow2_round(v[slot], shift)
            b[slot] = b[slot] / 2.0**shift + 1.0

        self._emit(step, TraceOp("rescale", (slot,), slot, (shift,)))
        self._check_decomposed(slot, f"node {node.name!r} (op {node.op_type})", f"rebased value (divided by 2^{shift})")
        return target

    # ---------------------------------------------------------- circuit limits
    def _check_decomposed(self, slot: int, where: str, what: str) -> None:
        """Emit a check that every value in ``slot`` fits ezkl's range-check decomposition."""
        bound = self.limits.decomp_bound
        if bound is not None:
            self._check_range(slot, -bound, bound, where, what, self.limits.decomp_reason)

    def _check_range(self, slot: int, lo: int, hi: int, where: str, what: str, why: str) -> None:
        def step(v, b, slot=slot):
            bound = b[slot]
            if -bound >= lo and bound <= hi:  # the running bound already proves it
                return
            b[slot] = _enforce_range(v[slot], lo, hi, where, what, why)

        self._emit(step, TraceOp("check", (slot,)))

    # --------------------------------------------------------------- compile
    def _compile(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        # input shapes (all others are derived); symbolic dims are resolved from the
        # settings' run_args.variables, as ezkl does (e.g. batch_size -> 1)
        shapes: dict[str, tuple[int, ...]] = {}
        for vi in graph.input:
            dims = []
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(d.dim_value)
                elif d.HasField("dim_param") and d.dim_param in self._variables:
                    dims.append(self._variables[d.dim_param])
                else:
                    break
            else:
                shapes[vi.name] = tuple(dims)

        vals: dict[str, _Const | _Act] = {}
        inits = {t.name for t in graph.initializer}
        for t in graph.initializer:
            vals[t.name] = _Const(_initializer_array(t, self._base_dir), t.name)

        self.input_names: list[str] = []
        self.input_shapes: list[tuple[int, ...]] = []
        self.input_scales: list[int] = []
        self._input_slots: list[int] = []
        self._input_sizes: list[int] = []
        for inp in graph.input:
            if inp.name in inits:
                continue
            if inp.name not in shapes:
                raise NotImplementedError(f"input {inp.name!r} has a dynamic shape not fixed by run_args.variables")
            ty = inp.type.tensor_type.elem_type
            if ty in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
                in_scale = self.scales.input
            elif ty in _INT_TYPES:
                in_scale = 0  # ezkl: integer inputs (e.g. token ids) are InputType::Int at scale 0
            else:
                raise NotImplementedError(f"input {inp.name!r} has unsupported type {ty}")
            slot = self._new_slot()
            vals[inp.name] = _Act(slot, in_scale, shapes[inp.name])
            self.input_names.append(inp.name)
            self.input_shapes.append(shapes[inp.name])
            self.input_scales.append(in_scale)
            self._input_slots.append(slot)
            self._input_sizes.append(int(np.prod(shapes[inp.name], dtype=np.int64)))

        for node in graph.node:
            if node.op_type == "Constant":
                vals[node.output[0]] = _Const(_constant_node_value(node), node.output[0])
        # count consumers of each constant (ezkl re-quantizes single-use constants)
        for node in graph.node:
            for i in node.input:
                v = vals.get(i)
                if isinstance(v, _Const):
                    v.uses += 1

        self._consumers: dict[str, int] = {}
        self._consumer_ops: dict[str, set[str]] = {}
        for node in graph.node:
            for i in node.input:
                self._consumers[i] = self._consumers.get(i, 0) + 1
                self._consumer_ops.setdefault(i, set()).add(node.op_type)
        self._graph_outputs = {o.name for o in graph.output}
        for o in graph.output:
            self._consumers[o.name] = self._consumers.get(o.name, 0) + 1
        self._squared: dict[str, _Act] = {}  # outputs of Pow(x, 2) / Mul(x, x) -> x

        for node in graph.node:
            op = node.op_type
            if op == "Constant":
                continue
            handler = getattr(self, f"_op_{op}", None)
            self._node = node
            if handler is None:
                raise NotImplementedError(f"fixed-point executor does not support node {node.name!r} (op {op})")
            ins = [vals.get(i) if i else None for i in node.input]
            for name, v in zip(node.input, ins):
                if name and v is None:
                    raise NotImplementedError(f"node {node.name!r} (op {op}): unknown input {name!r}")
            if ins and all(v is None or isinstance(v, _Const) for v in ins) and op != "Shape":
                # constant subgraph (e.g. torch's shape arithmetic): folded, as tract does
                for out, value in zip(node.output, self._fold(node, ins)):
                    vals[out] = _Const(value, out)
                continue
            result = handler(node, ins)
            if isinstance(result, list):  # multi-output op (Split): one value per output
                if len(result) != len(node.output):
                    raise NotImplementedError(f"node {node.name!r} (op {op}): {len(node.output)} outputs, expected {len(result)}")
                for out, value in zip(node.output, result):
                    if out:
                        vals[out] = value
                continue
            if len(node.output) != 1:
                raise NotImplementedError(f"node {node.name!r} (op {op}): multiple outputs not supported")
            vals[node.output[0]] = result

        self.output_names = [o.name for o in graph.output]
        self._output_slots: list[int] = []
        self.output_scales: list[int] = []
        self.output_shapes: list[tuple[int, ...]] = []
        for o in graph.output:
            v = vals[o.name]
            if not isinstance(v, _Act):
                raise NotImplementedError(f"graph output {o.name!r} is a constant")
            self._output_slots.append(v.slot)
            self.output_scales.append(v.scale)
            self.output_shapes.append(v.shape)

    @staticmethod
    def _fold(node: onnx.NodeProto, ins: list) -> list[np.ndarray]:
        """Evaluate a node whose inputs are all constants with onnx's reference evaluator."""
        from onnx.reference import ReferenceEvaluator

        names = [f"in{i}" if name else "" for i, name in enumerate(node.input)]
        n2 = onnx.helper.make_node(node.op_type, names, list(node.output), domain=node.domain or None)
        n2.attribute.extend(node.attribute)
        feeds = {nm: np.asarray(v.raw) for nm, v in zip(names, ins) if nm}
        graph = onnx.helper.make_graph(
            [n2], "fold",
            [onnx.helper.make_tensor_value_info(nm, onnx.helper.np_dtype_to_tensor_dtype(x.dtype), x.shape) for nm, x in feeds.items()],
            [onnx.helper.make_empty_tensor_value_info(o) for o in node.output],
        )  # fmt: skip
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]

    # ops that only ever appear in constant (shape) subgraphs: folded in _compile
    def _op_ConstantOfShape(self, node, ins):
        raise NotImplementedError(f"node {node.name!r} (op ConstantOfShape): non-constant input")

    def _op_Cast(self, node, ins):
        """Cast to a float type is ezkl's PolyOp::Identity (no value change, no rebase)."""
        a = self._need_act(node, ins[0])
        to = _attrs(node)["to"]
        if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            raise NotImplementedError(f"node {node.name!r} (op Cast): cast of a runtime tensor to a non-float type not supported")
        return a

    def _op_Shape(self, node, ins):
        a = ins[0]
        shape = a.shape if isinstance(a, _Act) else np.asarray(a.raw).shape
        at = _attrs(node)
        shp = np.asarray(shape, dtype=np.int64)[at.get("start", 0) : at.get("end", None)]
        return _Const(shp, node.output[0])

    def _need_act(self, node, v, what="input") -> _Act:
        if not isinstance(v, _Act):
            raise NotImplementedError(
                f"node {node.name!r} (op {node.op_type}): constant {what} is not supported (expected a runtime tensor)"
            )
        return v

    def _need_const(self, node, v, what="weight") -> _Const:
        if not isinstance(v, _Const):
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): non-constant {what} is not supported")
        return v

    # ------------------------------------------------------------------ ops
    def _op_Identity(self, node, ins):
        return self._need_act(node, ins[0])

    def _op_Dropout(self, node, ins):  # inference-mode dropout is the identity
        return self._need_act(node, ins[0])

    def _op_Flatten(self, node, ins):
        a = self._need_act(node, ins[0])
        axis = _attrs(node).get("axis", 1)
        if axis < 0:
            axis += len(a.shape)
        new = (int(np.prod(a.shape[:axis], dtype=np.int64)), int(np.prod(a.shape[axis:], dtype=np.int64)))
        return self._reshape(a, new, node)

    def _op_Reshape(self, node, ins):
        a = self._need_act(node, ins[0])
        s = self._need_const(node, ins[1], "shape")
        target = [int(d) for d in np.asarray(s.raw).reshape(-1)]
        if _attrs(node).get("allowzero", 0) == 0:
            target = [a.shape[i] if d == 0 else d for i, d in enumerate(target)]
        new = tuple(int(d) for d in np.empty(a.shape, dtype=np.int8).reshape(target).shape)
        return self._reshape(a, new, node)

    def _reshape(self, a: _Act, new: tuple[int, ...], node=None) -> _Act:
        """Reshape/Flatten (PolyOp::Reshape/Flatten are not ezkl "identity" ops: rebased when above R)."""
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot, new=new):
            v[dst] = v[src].reshape(new)
            b[dst] = b[src]

        self._emit(step, TraceOp("view", (a.slot,), slot, index=lambda x, new=new: x.reshape(new), shape=new))
        scale = self._rebase(node, slot, a.scale) if node is not None else a.scale
        return _Act(slot, scale, new)

    def _op_Transpose(self, node, ins):
        a = self._need_act(node, ins[0])
        perm = tuple(_attrs(node).get("perm", list(range(len(a.shape)))[::-1]))
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot, perm=perm):
            v[dst] = np.ascontiguousarray(v[src].transpose(perm))
            b[dst] = b[src]

        self._emit(step, TraceOp("view", (a.slot,), slot, index=lambda x, perm=perm: x.transpose(perm),
                                 shape=tuple(a.shape[i] for i in perm)))
        return _Act(slot, self._rebase(node, slot, a.scale), tuple(a.shape[i] for i in perm))

    def _op_Relu(self, node, ins):
        a = self._need_act(node, ins[0])
        # LeakyReLU takes the sign from a decomposition of its input
        self._check_decomposed(a.slot, f"node {node.name!r} (op {node.op_type})", "input")
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            x = v[src]
            v[dst] = np.maximum(x, 0.0) if x.dtype == np.float64 else np.maximum(x, np.int64(0))
            b[dst] = b[src]

        self._emit(step, TraceOp("relu", (a.slot,), slot, shape=a.shape))
        return _Act(slot, self._rebase(node, slot, a.scale), a.shape)  # LeakyReLU(slope=0): same scale (rebased only above R)

    def _op_Sigmoid(self, node, ins):
        a = self._need_act(node, ins[0])
        self._check_lookup(node, a)
        slot = self._new_slot()
        out_bound = 2.0**a.scale
        table = _SigmoidTable(a.scale)

        def step(v, b, src=a.slot, dst=slot, table=table, ob=out_bound):
            v[dst] = _carrier(table(v[src]), ob)
            b[dst] = ob

        self._emit(step, TraceOp("lookup", (a.slot,), slot, table=table, shape=a.shape))
        return _Act(slot, self._rebase(node, slot, a.scale), a.shape)  # lookup output scale == input scale

    def _matmul_const(self, node, a: _Act, w_raw: np.ndarray) -> _Act:
        """EinSum of a runtime tensor with a constant (K, N) matrix, then rebase."""
        if w_raw.ndim != 2:
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): only 2-D constant weights supported")
        if a.shape[-1] != w_raw.shape[0]:
            raise ValueError(f"node {node.name!r}: shape mismatch {a.shape} @ {w_raw.shape}")
        mm = _ConstMatmul(_quantize_param(w_raw, self.scales.params))
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot, mm=mm):
            y, by = mm(v[src], b[src])
            v[dst] = _carrier(y, by)
            b[dst] = by

        self._emit(step, TraceOp("gemm", (a.slot,), slot, const=lambda mm=mm: mm.w,
                                 shape=tuple(a.shape[:-1]) + (w_raw.shape[1],)))
        scale = self._rebase(node, slot, a.scale + self.scales.params)
        return _Act(slot, scale, tuple(a.shape[:-1]) + (w_raw.shape[1],))

    def _op_Gemm(self, node, ins):
        at = _attrs(node)
        if at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0:
            raise NotImplementedError(f"node {node.name!r} (op Gemm): alpha/beta != 1 not supported")
        if at.get("transA", 0):
            raise NotImplementedError(f"node {node.name!r} (op Gemm): transA not supported")
        a = self._need_act(node, ins[0], "A")
        if len(a.shape) != 2:
            raise NotImplementedError(f"node {node.name!r} (op Gemm): A must be 2-D")
        w = np.asarray(self._need_const(node, ins[1], "B").raw, dtype=np.float32)
        if at.get("transB", 0):
            w = w.T
        out = self._matmul_const(node, a, w)  # tract: EinSum (rebased) ...
        if len(ins) > 2 and ins[2] is not None:
            out = self._add(node, out, ins[2])  # ... followed by a separate Add of C
        return out

    def _op_MatMul(self, node, ins):
        a, c = ins
        if isinstance(a, _Act) and isinstance(c, _Const):
            return self._matmul_const(node, a, np.asarray(c.raw, dtype=np.float32))
        if isinstance(a, _Act) and isinstance(c, _Act):
            slot = self._new_slot()
            k = a.shape[-1]

            def step(v, b, sa=a.slot, sc=c.slot, dst=slot, k=k):
                x, y = v[sa], v[sc]
                by = b[sa] * b[sc] * k  # bounds every partial sum: BLAS is exact below the float limits
                if by >= _F32_LIMIT and x.size and y.size:
                    by = _absmax(x) * _absmax(y) * k
                if by < _F32_LIMIT:
                    out = _matmul(x.astype(np.float32), y.astype(np.float32)).astype(np.float64)
                elif by < _F64_LIMIT:
                    out = _matmul(x.astype(np.float64), y.astype(np.float64))
                else:
                    out = np.matmul(_as_int(x), _as_int(y))
                v[dst] = _carrier(out, by)
                b[dst] = by

            out_shape = np.matmul(np.empty(a.shape, np.int8), np.empty(c.shape, np.int8)).shape
            self._emit(step, TraceOp("matmul", (a.slot, c.slot), slot, shape=tuple(int(d) for d in out_shape)))
            scale = self._rebase(node, slot, a.scale + c.scale)
            return _Act(slot, scale, tuple(out_shape))
        raise NotImplementedError(f"node {node.name!r} (op MatMul): constant left operand not supported")

    @staticmethod
    def _const_add_fn(cq: np.ndarray) -> Callable[[np.ndarray, float], tuple[np.ndarray, float]]:
        """Exact ``x + cq`` for a fixed integer array, on (array, bound) pairs."""
        cq = np.asarray(cq, dtype=np.int64)
        bc = _absmax(cq)
        cf = cq.astype(np.float64) if bc < _F64_LIMIT else None

        def add(x: np.ndarray, bx: float) -> tuple[np.ndarray, float]:
            bo = bx + bc
            if cf is not None and bo < _F64_LIMIT and x.dtype == np.float64:
                return x + cf, bo
            return _carrier(_as_int(x) + cq, bo), bo

        return add

    def _op_Add(self, node, ins):
        a, c = ins
        if isinstance(a, _Const) and isinstance(c, _Act):
            a, c = c, a
        return self._add(node, self._need_act(node, a), c)

    def _add(self, node, a: _Act, c: _Const | _Act, sign_a: int = 1, sign_c: int = 1) -> _Act:
        """ezkl Add/Sub: homogenize input scales (x * 2**diff for lower scales), add, rebase.

        ``sign_a``/``sign_c`` (+-1) give Sub: ``a - c`` is ``sign_c=-1``, ``c - a`` is ``sign_a=-1``."""
        if isinstance(c, _Const):
            c_scale = self.scales.params
            if c.uses == 1:
                # rescale_const_with_single_use: re-quantize the *raw* value at the max input scale
                c_scale = max(c_scale, a.scale)
        else:
            c_scale = c.scale
        out_scale = max(a.scale, c_scale)
        ma = float(sign_a * (1 << (out_scale - a.scale)))
        mc = sign_c * (1 << (out_scale - c_scale))
        slot = self._new_slot()
        if isinstance(c, _Const):
            cq = _quantize_param(np.asarray(c.raw, dtype=np.float32), c_scale) * np.int64(mc)
            bc = _absmax(cq)
            cf = cq.astype(np.float64) if bc < _F64_LIMIT else cq
            c_shape = cq.shape

            def step(v, b, sa=a.slot, dst=slot, ma=ma, cq=cq, cf=cf, bc=bc):
                x = v[sa]
                if ma != 1.0:
                    x = _as_int(x) * np.int64(ma)
                bo = b[sa] * abs(ma) + bc
                if bo < _F64_LIMIT and x.dtype == np.float64:
                    v[dst] = x + cf
                else:
                    v[dst] = _carrier(_as_int(x) + cq, bo)
                b[dst] = bo

        else:
            c_shape = c.shape
            mcf = float(mc)

            def step(v, b, sa=a.slot, sc=c.slot, dst=slot, ma=ma, mc=mcf):
                x, y = v[sa], v[sc]
                bo = b[sa] * abs(ma) + b[sc] * abs(mc)
                if bo < _F64_LIMIT and x.dtype == np.float64 and y.dtype == np.float64:
                    v[dst] = x * ma + y * mc if (ma != 1.0 or mc != 1.0) else x + y
                else:
                    xi, yi = _as_int(x), _as_int(y)
                    if ma != 1.0:
                        xi = xi * np.int64(ma)
                    if mc != 1.0:
                        yi = yi * np.int64(mc)
                    v[dst] = _carrier(xi + yi, bo)
                b[dst] = bo

        out_shape = np.broadcast_shapes(a.shape, c_shape)
        if isinstance(c, _Const):
            op = TraceOp("add", (a.slot,), slot, (int(ma), 1), const=cq, shape=tuple(out_shape))
        else:
            op = TraceOp("add", (a.slot, c.slot), slot, (int(ma), int(mc)), shape=tuple(out_shape))
        self._emit(step, op)
        scale = self._rebase(node, slot, out_scale)
        return _Act(slot, scale, tuple(out_shape))

    def _op_Sub(self, node, ins):
        a, c = ins
        if isinstance(a, _Const) and isinstance(c, _Act):
            return self._add(node, c, a, sign_a=-1)  # const - act
        return self._add(node, self._need_act(node, a), c, sign_c=-1)

    # ------------------------------------------------------------- Mul / Div
    def _op_Mul(self, node, ins):
        a, c = ins
        if isinstance(a, _Const) and isinstance(c, _Act):
            a, c = c, a
        a = self._need_act(node, a)
        if isinstance(c, _Const):
            return self._mul_const(node, a, np.asarray(c.raw))
        if node.input[0] == node.input[1]:
            self._squared[node.output[0]] = a
            return self._mul_acts(node, a, a)  # tract: Square -> PolyOp::Pow(2), same values
        return self._mul_acts(node, a, c)

    def _op_Div(self, node, ins):
        a, c = ins
        a = self._need_act(node, a, "numerator")
        if isinstance(c, _Act):
            # tract: a / b -> a * recip(b) (and recip(sqrt(v)) is ezkl's Rsqrt: the same values)
            return self._mul_acts(node, a, self._recip(node, c))
        c = self._need_const(node, c, "denominator")
        raw = np.asarray(c.raw)
        if raw.dtype.kind != "f":
            raise NotImplementedError(f"node {node.name!r} (op Div): integer division not supported")
        # tract declutters Div by a constant into Mul by its f32 reciprocal
        with np.errstate(divide="ignore"):
            recip = np.float32(1.0) / raw.astype(np.float32)
        if not np.isfinite(recip).all():
            raise NotImplementedError(f"node {node.name!r} (op Div): division by zero")
        return self._mul_const(node, a, recip)

    def _mul_const(self, node, a: _Act, raw: np.ndarray) -> _Act:
        """ezkl Mul by a constant: a scalar ``2**-k`` (k >= 1) is an Identity that only raises the
        scale by k; otherwise PolyOp::Mult by the constant quantized at param_scale, then rebase."""
        if raw.dtype.kind != "f":
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): integer constant not supported")
        w = raw.astype(np.float32)
        if w.size == 1:
            c0 = np.float32(w.reshape(-1)[0])
            if c0 < np.float32(1.0):
                with np.errstate(divide="ignore", invalid="ignore"):
                    inv = np.float32(1.0) / c0
                    lg = np.log2(inv)  # f32, as ezkl: (1.0 / c).log2().fract() == 0.0
                if np.isfinite(lg) and float(lg) == math.floor(float(lg)):
                    shape = tuple(np.broadcast_shapes(a.shape, w.shape))
                    new_scale = a.scale + int(lg)
                    if shape != a.shape:
                        return self._broadcast(a, shape, new_scale)
                    return _Act(a.slot, new_scale, a.shape)
        wq = _quantize_param(w, self.scales.params)
        shape = tuple(np.broadcast_shapes(a.shape, wq.shape))
        bw = _absmax(wq)
        wf = wq.astype(np.float64)
        slot = self._new_slot()

        def step(v, b, sa=a.slot, dst=slot, wq=wq, wf=wf, bw=bw):
            x = v[sa]
            bo = b[sa] * bw
            if bo < _F64_LIMIT and x.dtype == np.float64:
                v[dst] = np.broadcast_to(x * wf, shape)
            else:
                v[dst] = _carrier(np.broadcast_to(_as_int(x) * wq, shape), bo)
            b[dst] = bo

        self._emit(step, TraceOp("mul", (a.slot,), slot, const=wq, shape=shape))
        scale = self._rebase(node, slot, a.scale + self.scales.params)
        return _Act(slot, scale, shape)

    def _mul_acts(self, node, a: _Act, c: _Act) -> _Act:
        shape = tuple(np.broadcast_shapes(a.shape, c.shape))
        slot = self._new_slot()

        def step(v, b, sa=a.slot, sc=c.slot, dst=slot):
            x, y = v[sa], v[sc]
            bo = b[sa] * b[sc]
            if bo < _F64_LIMIT and x.dtype == np.float64 and y.dtype == np.float64:
                v[dst] = np.broadcast_to(x * y, shape)
            else:
                v[dst] = _carrier(np.broadcast_to(_as_int(x) * _as_int(y), shape), bo)
            b[dst] = bo

        self._emit(step, TraceOp("mul", (a.slot, c.slot), slot, shape=shape))
        scale = self._rebase(node, slot, a.scale + c.scale)
        return _Act(slot, scale, shape)

    def _broadcast(self, a: _Act, shape: tuple[int, ...], scale: int) -> _Act:
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            v[dst] = np.ascontiguousarray(np.broadcast_to(v[src], shape))
            b[dst] = b[src]

        self._emit(step, TraceOp("view", (a.slot,), slot, index=lambda x: np.broadcast_to(x, shape), shape=shape))
        return _Act(slot, scale, shape)

    # ------------------------------------------------------- lookup tables
    def _check_lookup(self, node, a: _Act) -> None:
        """A lookup's inputs must lie in the circuit's table, or no witness exists."""
        if self.limits.lookup is not None:
            lo, top = self.limits.lookup
            self._check_range(a.slot, lo, top, f"node {node.name!r} (op {node.op_type})", "lookup input",
                              "the input range of the circuit's lookup table (from the calibrated run_args.lookup_range)")

    def _lookup(self, node, ins, fn: Callable[[np.ndarray, int], np.ndarray], out_bound: Callable[[float, int], float]) -> _Act:
        """An ezkl LookupOp at the input scale (output scale == input scale); inputs must lie in the table."""
        a = self._need_act(node, ins[0])
        self._check_lookup(node, a)
        slot = self._new_slot()
        scale = a.scale

        def step(v, b, src=a.slot, dst=slot):
            ob = out_bound(b[src], scale)
            y = fn(_as_int(v[src]), scale)
            ob = min(ob, _absmax(y)) if ob >= _F64_LIMIT else ob
            v[dst] = _carrier(y, ob)
            b[dst] = ob

        self._emit(step, TraceOp("lookup", (a.slot,), slot, table=lambda x: fn(x, scale), shape=a.shape))
        return _Act(slot, self._rebase(node, slot, scale), a.shape)

    def _op_Tanh(self, node, ins):
        return self._lookup(node, ins, _tanh_lookup, lambda bx, s: 2.0**s)

    def _op_Erf(self, node, ins):
        return self._lookup(node, ins, _ERF_TABLE, lambda bx, s: 2.0**s)

    def _op_Exp(self, node, ins):
        return self._lookup(node, ins, _exp_lookup, _exp_bound)

    def _check_lookup_values(self, x: np.ndarray, node, what: str = "lookup input") -> None:
        if self.limits.lookup is not None:
            lo, top = self.limits.lookup
            _enforce_range(x, lo, top, f"node {node.name!r} (op {node.op_type})", what,
                           "the input range of the circuit's lookup table (from the calibrated run_args.lookup_range)")

    def _op_Softmax(self, node, ins):
        """ezkl HybridOp::Softmax (``layouts::softmax``) along one axis, at input scale s, S = max(s, global):
        ``e = exp_lookup(x - max(x))`` (scale s), ``inv = recip(sum(e))`` = ``round(2**S / (sum / 2**s))``
        (``nonlinearities::recip``), output ``e * inv`` at scale s + S, then rebase."""
        a = self._need_act(node, ins[0])
        axis = _attrs(node).get("axis", -1)
        if axis < 0:
            axis += len(a.shape)
        s_in = a.scale
        s_out = max(max(self.scales.input, self.scales.params), s_in)  # scales.get_max()
        m_in, m_out = 2.0**s_in, 2.0**s_out
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            x = _as_int(v[src])
            sub = x - x.max(axis=axis, keepdims=True)
            self._check_lookup_values(sub, node, "exp lookup input (x - max)")
            e = _EXP_TABLE(sub, s_in)  # in (0, m_in]
            denom = e.sum(axis=axis, keepdims=True)
            rescaled = denom / m_in
            with np.errstate(divide="ignore"):
                inv = round_half_away(m_out * np.where(rescaled == 0.0, 1.0 / _F64_EPS, 1.0 / np.where(rescaled == 0.0, 1.0, rescaled)))
            if self.limits.decomp_bound is not None:
                _enforce_range(inv, -self.limits.decomp_bound, self.limits.decomp_bound,
                               f"node {node.name!r} (op Softmax)", "reciprocal of the exp sum", self.limits.decomp_reason)
            y = e * inv
            by = _absmax(y)
            v[dst] = _carrier(y, by)
            b[dst] = by

        red = tuple(1 if i == axis else d for i, d in enumerate(a.shape))
        t_max, t_sub, t_exp, t_sum, t_inv = (self._new_slot() for _ in range(5))
        lo = self.limits.lookup[0] if self.limits.lookup is not None else -(1 << 16)
        self._emit(step, TraceOp("seq", parts=(
            TraceOp("max", (a.slot,), t_max, (axis,), shape=red),
            TraceOp("add", (a.slot, t_max), t_sub, (1, -1), shape=a.shape),
            TraceOp("lookup", (t_sub,), t_exp, (lo, 0), table=lambda x: _EXP_TABLE(x, s_in), shape=a.shape),
            TraceOp("sum", (t_exp,), t_sum, (axis,), shape=red),
            TraceOp("recip", (t_sum,), t_inv, (1 << (s_in + s_out), (1 << s_out) << 52), shape=red),
            TraceOp("mul", (t_exp, t_inv), slot, shape=a.shape),
        )) if s_in >= 0 and s_out >= 0 else None)
        scale = self._rebase(node, slot, s_in + s_out)
        return _Act(slot, scale, a.shape)

    # ------------------------------------------------------------ reductions
    def _axes(self, node, ins, a: _Act) -> tuple[tuple[int, ...], bool]:
        at = _attrs(node)
        axes = at.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(v) for v in np.asarray(self._need_const(node, ins[1], "axes").raw).reshape(-1)]
        if axes is None or len(axes) == 0:
            if at.get("noop_with_empty_axes", 0):
                raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): noop_with_empty_axes not supported")
            axes = list(range(len(a.shape)))
        axes = tuple(sorted(ax + len(a.shape) if ax < 0 else ax for ax in axes))
        return axes, bool(at.get("keepdims", 1))

    def _sum(self, node, a: _Act, axes: tuple[int, ...], keepdims: bool) -> _Act:
        """ezkl PolyOp::Sum: exact integer sum, same scale, no rebase."""
        slot = self._new_slot()
        n = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))

        def step(v, b, src=a.slot, dst=slot):
            bo = b[src] * n
            x = v[src] if bo < _F64_LIMIT else _as_int(v[src])
            v[dst] = _carrier(x.sum(axis=axes, keepdims=keepdims), bo)
            b[dst] = bo

        shape = tuple(1 if i in axes else d for i, d in enumerate(a.shape)) if keepdims else tuple(
            d for i, d in enumerate(a.shape) if i not in axes)
        self._emit(step, TraceOp("sum", (a.slot,), slot, tuple(axes), shape=shape) if keepdims else None)
        return _Act(slot, self._rebase(node, slot, a.scale), shape)

    def _op_ReduceSum(self, node, ins):
        a = self._need_act(node, ins[0])
        axes, keep = self._axes(node, ins, a)
        return self._squeeze_reduced(node, self._sum(node, a, axes, True), axes, keep)

    def _squeeze_reduced(self, node, r: _Act, axes: tuple[int, ...], keep: bool) -> _Act:
        """keepdims=0: tract reduces with kept axes then removes them (a Reshape, which ezkl rebases)."""
        if keep:
            return r
        shape = tuple(d for i, d in enumerate(r.shape) if i not in axes)
        out = node.output[0]
        if out not in self._graph_outputs and self._consumer_ops.get(out, set()) <= {"Gemm", "MatMul"}:
            # tract absorbs the axis removal into a consuming EinSum: no Reshape node, no rebase
            return self._reshape(r, shape)
        return self._reshape(r, shape, node)

    def _mean(self, node, a: _Act, axes: tuple[int, ...], keep: bool) -> _Act:
        """tract lowers a mean to Sum then Mul by the f32 constant 1/N: ezkl's Mul rule applies
        (N a power of two: Identity raising the scale by log2 N; otherwise Mult at param_scale + rebase)."""
        n = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))
        summed = self._sum(node, a, axes, True)
        mean = self._mul_const(node, summed, np.asarray(np.float32(1.0) / np.float32(n), dtype=np.float32))
        return self._squeeze_reduced(node, mean, axes, keep)

    def _op_ReduceMean(self, node, ins):
        a = self._need_act(node, ins[0])
        axes, keep = self._axes(node, ins, a)
        base = self._squared.get(node.input[0])
        if base is not None and self._consumers.get(node.input[0], 0) == 1:
            # tract fuses Square + ReduceMean into Reduce<MeanOfSquares> (one division, no rebase between)
            return self._squeeze_reduced(node, self._mean_of_squares(node, base, axes), axes, keep)
        return self._mean(node, a, axes, keep)

    def _op_ArgMax(self, node, ins):
        """ezkl HybridOp::ReduceArgMax: the index of the maximum along ``axis`` of the (rebased) fixed-point input, ties
        to the lowest index (gen_witness's choice, checked on ties; numpy's too), an integer at scale 0. No
        TraceOp: a bisection step cannot check it (the head of a generation model is a zk segment)."""
        a = self._need_act(node, ins[0])
        at = _attrs(node)
        if at.get("select_last_index", 0):
            raise NotImplementedError(f"node {node.name!r} (op ArgMax): select_last_index=1 not supported")
        axis = int(at.get("axis", 0))
        axis = axis + len(a.shape) if axis < 0 else axis
        if not 0 <= axis < len(a.shape):
            raise ValueError(f"node {node.name!r} (op ArgMax): axis {at.get('axis', 0)} out of range for shape {a.shape}")
        keep = bool(at.get("keepdims", 1))
        shape = tuple(1 if i == axis else d for i, d in enumerate(a.shape)) if keep else a.shape[:axis] + a.shape[axis + 1 :]
        slot = self._new_slot()
        top = float(max(a.shape[axis] - 1, 0))

        def step(v, b, src=a.slot, dst=slot):
            v[dst] = _carrier(np.argmax(v[src], axis=axis, keepdims=keep).astype(np.int64), top)
            b[dst] = top

        self._emit(step)
        return _Act(slot, 0, tuple(int(d) for d in shape))

    def _op_GlobalAveragePool(self, node, ins):
        a = self._need_act(node, ins[0])
        return self._mean(node, a, tuple(range(2, len(a.shape))), True)

    # -------------------------------------------------------------- pooling
    def _pool_geometry(self, node, a: _Act):
        at = _attrs(node)
        if len(a.shape) != 4:
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): only 2-D pooling supported")
        if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): auto_pad not supported")
        if at.get("ceil_mode", 0):
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): ceil_mode not supported")
        if any(d != 1 for d in at.get("dilations", [1, 1])):
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): dilations not supported")
        kh, kw = at["kernel_shape"]
        sh, sw = at.get("strides", [1, 1])
        pt, pl, pb, pr = at.get("pads", [0, 0, 0, 0])
        n, c, h, w = a.shape
        oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1

        def windows(x: np.ndarray) -> np.ndarray:
            """(n, c, oh, ow, kh*kw) windows of the zero-padded input (ezkl pads with 0)."""
            xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
            v = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
            return v.reshape(n, c, oh, ow, kh * kw)

        return windows, (n, c, oh, ow), kh * kw

    def _op_MaxPool(self, node, ins):
        """ezkl HybridOp::MaxPool: the input is padded with *zeros* (not -inf), max per window."""
        a = self._need_act(node, ins[0])
        if len(node.output) > 1 and node.output[1]:
            raise NotImplementedError(f"node {node.name!r} (op MaxPool): indices output not supported")
        windows, shape, _ = self._pool_geometry(node, a)
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            v[dst] = windows(v[src]).max(axis=-1)
            b[dst] = b[src]

        self._emit(step)
        return _Act(slot, self._rebase(node, slot, a.scale), shape)

    def _op_AveragePool(self, node, ins):
        """ezkl SumPool(normalized): zero-padded window sums, then ``layouts::div`` by the kernel size
        (round half away; always the full kernel size, whatever count_include_pad says); same scale."""
        a = self._need_act(node, ins[0])
        windows, shape, k = self._pool_geometry(node, a)
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            bo = b[src] * k
            x = v[src] if bo < _F64_LIMIT else _as_int(v[src])
            ssum = windows(x).sum(axis=-1)
            if ssum.dtype == np.float64:
                q = round_half_away(ssum / float(k))
            else:
                q = _const_div_int(ssum, k)
            v[dst] = _carrier(q, bo / k + 1.0)
            b[dst] = bo / k + 1.0

        self._emit(step)
        if k != 1:
            self._check_decomposed(slot, f"node {node.name!r} (op AveragePool)", f"quotient (divided by {k})")
        return _Act(slot, self._rebase(node, slot, a.scale), shape)

    # ---------------------------------------------------- elementwise piecewise
    def _op_LeakyRelu(self, node, ins):
        """ezkl PolyOp::LeakyReLU{slope, scale=param_scale}: ``x > 0 ? x * 2**P : x * round(slope * 2**P)``
        at scale s + P, then rebase; the input is decomposed (its sign)."""
        a = self._need_act(node, ins[0])
        alpha = float(np.float32(_attrs(node).get("alpha", 0.01)))
        if alpha == 0.0:
            return self._op_Relu(node, ins)
        self._check_decomposed(a.slot, f"node {node.name!r} (op {node.op_type})", "input")
        p = self.scales.params
        qa = float(_quantize_param(np.array([alpha], dtype=np.float32), p)[0])
        mp = 2.0**p
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            x = v[src]
            bo = b[src] * max(mp, abs(qa))
            if bo < _F64_LIMIT and x.dtype == np.float64:
                v[dst] = np.where(x > 0, x * mp, x * qa)
            else:
                xi = _as_int(x)
                v[dst] = _carrier(np.where(xi > 0, xi * np.int64(mp), xi * np.int64(qa)), bo)
            b[dst] = bo

        self._emit(step)
        scale = self._rebase(node, slot, a.scale + p)
        return _Act(slot, scale, a.shape)

    def _clamp(self, node, a: _Act, c: _Const, fn) -> _Act:
        """ezkl Max/Min with a constant (homogenous scales: a single-use constant is re-quantized at
        max(param_scale, input scale)); same scale, no rebase."""
        c_scale = max(self.scales.params, a.scale) if c.uses == 1 else self.scales.params
        if c_scale != a.scale:
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): constant at a different scale than the input")
        cq = _quantize_param(np.asarray(c.raw, dtype=np.float32), c_scale)
        cf = cq.astype(np.float64)
        shape = tuple(np.broadcast_shapes(a.shape, cq.shape))
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            x = v[src]
            y = fn(x, cf) if x.dtype == np.float64 else fn(x, cq)
            v[dst] = np.ascontiguousarray(np.broadcast_to(y, shape))
            b[dst] = max(b[src], _absmax(cq))

        self._emit(step)
        return _Act(slot, self._rebase(node, slot, a.scale), shape)

    def _op_Clip(self, node, ins):
        """Clip -> Max(x, lo) then Min(., hi) (ezkl; Max(x, 0) is loaded as ReLU)."""
        a = self._need_act(node, ins[0])
        lo = ins[1] if len(ins) > 1 else None
        hi = ins[2] if len(ins) > 2 else None
        at = _attrs(node)
        if "min" in at or "max" in at:
            raise NotImplementedError(f"node {node.name!r} (op Clip): opset < 11 attributes not supported")
        if lo is not None:
            lo = self._need_const(node, lo, "min")
            if np.all(np.asarray(lo.raw) == 0):
                a = self._op_Relu(node, [a])
            else:
                a = self._clamp(node, a, lo, np.maximum)
        if hi is not None:
            a = self._clamp(node, a, self._need_const(node, hi, "max"), np.minimum)
        return a

    # ---------------------------------------------------------- normalization
    def _pow_int(self, node, a: _Act, k: int) -> _Act:
        """ezkl PolyOp::Pow(k): exact ``x**k`` at scale k*s, then rebase."""
        if k < 1:
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): exponent {k} not supported")
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            bo = b[src] ** k
            x = v[src]
            if bo < _F64_LIMIT and x.dtype == np.float64:
                v[dst] = x**k
            else:
                v[dst] = _carrier(_as_int(x) ** k, bo)
            b[dst] = bo

        self._emit(step, TraceOp("mul", (a.slot, a.slot), slot, shape=a.shape) if k == 2 else None)
        return _Act(slot, self._rebase(node, slot, a.scale * k), a.shape)

    def _op_Pow(self, node, ins):
        a = self._need_act(node, ins[0], "base")
        e = np.asarray(self._need_const(node, ins[1], "exponent").raw).reshape(-1)
        if e.size != 1 or float(e[0]) != math.floor(float(e[0])):
            raise NotImplementedError(f"node {node.name!r} (op Pow): only a scalar integer exponent is supported")
        k = int(e[0])
        if k == 1:
            return a
        if k == 2:
            self._squared[node.output[0]] = a
        return self._pow_int(node, a, k)

    def _sqrt_values(self, x: np.ndarray, m: float) -> np.ndarray:
        """``nonlinearities::sqrt``: ``round(m * sqrt(a / m))`` (NaN for a < 0 casts to 0)."""
        with np.errstate(invalid="ignore"):
            f = m * np.sqrt(np.asarray(x, dtype=np.float64) / m)
        return np.nan_to_num(round_half_away(f), nan=0.0)

    def _recip_values(self, node, x: np.ndarray, m_in: float, m_out: float) -> np.ndarray:
        """``layouts::recip`` claimed output: ``round(m_out / (a / m_in))`` (``1 / (0 + eps)`` for 0), decomposed."""
        r = np.asarray(x, dtype=np.float64) / m_in
        with np.errstate(divide="ignore"):
            inv = round_half_away(m_out * np.where(r == 0.0, 1.0 / _F64_EPS, 1.0 / np.where(r == 0.0, 1.0, r)))
        if self.limits.decomp_bound is not None:
            _enforce_range(inv, -self.limits.decomp_bound, self.limits.decomp_bound,
                           f"node {node.name!r} (op {node.op_type})", "reciprocal", self.limits.decomp_reason)
        return inv

    def _op_Sqrt(self, node, ins):
        a = self._need_act(node, ins[0])
        m = 2.0**a.scale
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            y = self._sqrt_values(_as_int(v[src]), m)
            v[dst] = _carrier(y, _absmax(y))
            b[dst] = _absmax(y)

        self._emit(step, TraceOp("sqrt", (a.slot,), slot, (a.scale,), shape=a.shape))
        return _Act(slot, self._rebase(node, slot, a.scale), a.shape)

    def _recip(self, node, a: _Act) -> _Act:
        """ezkl HybridOp::Recip: ``round(2**S / (x / 2**s))``, S = max(global max scale, s)."""
        s_out = max(max(self.scales.input, self.scales.params), a.scale)
        m_in, m_out = 2.0**a.scale, 2.0**s_out
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            y = self._recip_values(node, _as_int(v[src]), m_in, m_out)
            by = _absmax(y)
            v[dst] = _carrier(y, by)
            b[dst] = by

        self._emit(step, TraceOp("recip", (a.slot,), slot, (1 << (a.scale + s_out), (1 << s_out) << 52), shape=a.shape)
                   if a.scale + s_out >= 0 and s_out >= 0 else None)
        return _Act(slot, self._rebase(node, slot, s_out), a.shape)

    def _op_Reciprocal(self, node, ins):
        return self._recip(node, self._need_act(node, ins[0]))

    def _rsqrt(self, node, a: _Act) -> _Act:
        """ezkl HybridOp::Rsqrt (``layouts::rsqrt``): sqrt at the input scale, then recip to
        output scale max(global max scale, input scale)."""
        s_out = max(max(self.scales.input, self.scales.params), a.scale)
        m_in, m_out = 2.0**a.scale, 2.0**s_out
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            sq = self._sqrt_values(_as_int(v[src]), m_in)
            y = self._recip_values(node, sq, m_in, m_out)
            by = _absmax(y)
            v[dst] = _carrier(y, by)
            b[dst] = by

        t_sq = self._new_slot()
        self._emit(step, TraceOp("seq", parts=(
            TraceOp("sqrt", (a.slot,), t_sq, (a.scale,), shape=a.shape),
            TraceOp("recip", (t_sq,), slot, (1 << (a.scale + s_out), (1 << s_out) << 52), shape=a.shape),
        )) if a.scale >= 0 and s_out >= 0 else None)
        return _Act(slot, self._rebase(node, slot, s_out), a.shape)

    def _mean_of_squares(self, node, a: _Act, axes: tuple[int, ...]) -> _Act:
        """ezkl PolyOp::MeanOfSquares: ``layouts::div(sum(x**2), N)`` (round half away, decomposed),
        scale 2s, then rebase."""
        n = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            xi = _as_int(v[src])
            sq = (xi * xi).sum(axis=axes, keepdims=True)
            q = _const_div_int(sq, n)
            v[dst] = _carrier(q, _absmax(q))
            b[dst] = _absmax(q)

        red = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
        t_sq, t_sum = self._new_slot(), self._new_slot()
        self._emit(step, TraceOp("seq", parts=(
            TraceOp("mul", (a.slot, a.slot), t_sq, shape=a.shape),
            TraceOp("sum", (t_sq,), t_sum, tuple(axes), shape=red),
            TraceOp("divc", (t_sum,), slot, (n,), shape=red),
        )))
        if n != 1:
            self._check_decomposed(slot, f"node {node.name!r} (op {node.op_type})", f"mean of squares (divided by {n})")
        shape = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
        return _Act(slot, self._rebase(node, slot, 2 * a.scale), shape)

    def _op_LayerNormalization(self, node, ins):
        """tract's LayerNorm lowering as ezkl runs it: mean (Sum, Mul 1/N), Sub (rebased),
        MeanOfSquares, Add eps, Rsqrt, Mult, then Mul gamma / Add beta (skipped when 1 / 0)."""
        at = _attrs(node)
        if len(node.output) > 1 and any(node.output[1:]):
            raise NotImplementedError(f"node {node.name!r} (op LayerNormalization): extra outputs not supported")
        if at.get("stash_type", 1) != 1:
            raise NotImplementedError(f"node {node.name!r} (op LayerNormalization): stash_type != 1 not supported")
        x = self._need_act(node, ins[0])
        axis = at.get("axis", -1)
        if axis < 0:
            axis += len(x.shape)
        axes = tuple(range(axis, len(x.shape)))
        eps = np.float32(at.get("epsilon", 1e-5))
        mean = self._mean(node, x, axes, True)
        d = self._add(node, x, mean, sign_c=-1)
        ms = self._mean_of_squares(node, d, axes)
        var = self._add(node, ms, _Const(np.asarray([eps], dtype=np.float32), f"{node.name}.epsilon", uses=1))
        r = self._rsqrt(node, var)
        y = self._mul_acts(node, d, r)
        gamma = ins[1] if len(ins) > 1 else None
        beta = ins[2] if len(ins) > 2 else None
        if gamma is not None:
            g = np.asarray(self._need_const(node, gamma, "scale").raw)
            if not np.all(g == 1):
                y = self._mul_const(node, y, g)
        if beta is not None:
            bt = self._need_const(node, beta, "bias")
            if not np.all(np.asarray(bt.raw) == 0):
                y = self._add(node, y, bt)
        return y

    # ------------------------------------------------------------ shape ops
    def _view(self, node, a: _Act, fn: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...]) -> _Act:
        """A value-preserving shape op (ezkl Reshape/MultiBroadcastTo/Slice...: rebased only above R; Split is not
        rebased at all, checked against gen_witness)."""
        slot = self._new_slot()

        def step(v, b, src=a.slot, dst=slot):
            v[dst] = np.ascontiguousarray(fn(v[src]))
            b[dst] = b[src]

        self._emit(step, TraceOp("view", (a.slot,), slot, index=fn, shape=tuple(int(d) for d in shape)))
        return _Act(slot, self._rebase(node, slot, a.scale), tuple(int(d) for d in shape))

    def _int_list(self, node, v, what: str) -> list[int]:
        return [int(d) for d in np.asarray(self._need_const(node, v, what).raw).reshape(-1)]

    def _op_Unsqueeze(self, node, ins):
        a = self._need_act(node, ins[0])
        axes = _attrs(node).get("axes") or self._int_list(node, ins[1], "axes")
        rank = len(a.shape) + len(axes)
        axes = sorted(ax + rank if ax < 0 else ax for ax in axes)
        shape = list(a.shape)
        for ax in axes:
            shape.insert(ax, 1)
        return self._reshape(a, tuple(shape), node)

    def _op_Squeeze(self, node, ins):
        a = self._need_act(node, ins[0])
        axes = _attrs(node).get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = self._int_list(node, ins[1], "axes")
        if axes is None:
            axes = [i for i, d in enumerate(a.shape) if d == 1]
        axes = {ax + len(a.shape) if ax < 0 else ax for ax in axes}
        return self._reshape(a, tuple(d for i, d in enumerate(a.shape) if i not in axes), node)

    def _op_Expand(self, node, ins):
        a = self._need_act(node, ins[0])
        target = self._int_list(node, ins[1], "shape")
        shape = tuple(np.broadcast_shapes(a.shape, tuple(target)))
        return self._view(node, a, lambda x: np.broadcast_to(x, shape), shape)

    def _op_Slice(self, node, ins):
        a = self._need_act(node, ins[0])
        if _attrs(node).get("starts") is not None:
            raise NotImplementedError(f"node {node.name!r} (op Slice): opset < 10 attributes not supported")
        starts = self._int_list(node, ins[1], "starts")
        ends = self._int_list(node, ins[2], "ends")
        axes = self._int_list(node, ins[3], "axes") if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = self._int_list(node, ins[4], "steps") if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        idx = [slice(None)] * len(a.shape)
        for st_, en, ax, sp in zip(starts, ends, axes, steps):
            ax = ax + len(a.shape) if ax < 0 else ax
            if sp == 0:
                raise ValueError(f"node {node.name!r} (op Slice): step 0")
            # ONNX clamps out-of-range starts/ends (INT64_MAX etc.) exactly like Python slicing
            idx[ax] = slice(st_, en, sp)
        idx = tuple(idx)
        shape = np.empty(a.shape, dtype=np.int8)[idx].shape
        # Known gap: ezkl's rebasing of a Slice whose input is above R depends on its consumers: y[:, :4] * y[:, 4:]
        # with y = x * 0.5 is not rebased in ezkl, y[:, :4] * y[:, 4:] + y[:, 2:6] is; rebased here, as the latter.
        return self._view(node, a, lambda x: x[idx], shape)

    def _op_Split(self, node, ins):
        """ONNX Split: one output per piece along ``axis``, values and scale unchanged.

        Unlike Reshape, ezkl does *not* rebase the pieces when the input is above R: checked
        against gen_witness, ``(x * 0.5).split(4, dim=1)`` keeps scale R + 1 (model_output_scales)
        and ``a * b`` of the pieces is at 2R + 2, rebased once (tests/test_fixed_point_ops.py)."""
        a = self._need_act(node, ins[0])
        at = _attrs(node)
        axis = at.get("axis", 0)
        if axis < 0:
            axis += len(a.shape)
        if not 0 <= axis < len(a.shape):
            raise ValueError(f"node {node.name!r} (op Split): axis {at.get('axis', 0)} out of range")
        dim = a.shape[axis]
        n_out = len(node.output)
        if len(ins) > 1 and ins[1] is not None:  # opset 13+: split sizes as a (constant) input
            sizes = self._int_list(node, ins[1], "split")
        elif at.get("split") is not None:  # opset < 13: split sizes as an attribute
            sizes = [int(d) for d in at["split"]]
        else:  # equal parts (opset 18 ``num_outputs``: the last one may be smaller)
            n = int(at.get("num_outputs", n_out))
            part = -(-dim // n)
            sizes = [min(part, dim - i * part) for i in range(n)]
        if len(sizes) != n_out or sum(sizes) != dim or any(d < 0 for d in sizes):
            raise ValueError(f"node {node.name!r} (op Split): split {sizes} does not divide dim {dim} into {n_out} outputs")
        outs, start = [], 0
        for size in sizes:
            idx = tuple([slice(None)] * axis + [slice(start, start + size)])
            shape = tuple(int(d) for d in a.shape[:axis] + (size,) + a.shape[axis + 1 :])
            slot = self._new_slot()

            def step(v, b, src=a.slot, dst=slot, idx=idx):
                v[dst] = np.ascontiguousarray(v[src][idx])
                b[dst] = b[src]

            self._emit(step, TraceOp("view", (a.slot,), slot, index=lambda x, idx=idx: x[idx], shape=shape))
            outs.append(_Act(slot, a.scale, shape))
            start += size
        return outs

    def _op_Concat(self, node, ins):
        """ezkl Concat: all inputs homogenized to the max scale (lower ones multiplied by 2**diff,
        single-use constants re-quantized from raw), then rebase."""
        axis = _attrs(node)["axis"]
        acts = [v for v in ins if isinstance(v, _Act)]
        if not acts:
            raise NotImplementedError(f"node {node.name!r} (op Concat): all inputs constant")
        rank = len(acts[0].shape)
        if axis < 0:
            axis += rank
        act_scales = [v.scale for v in acts]
        const_scales = [self.scales.params if v.uses != 1 else max([self.scales.params] + act_scales)
                        for v in ins if isinstance(v, _Const)]
        out_scale = max(act_scales + const_scales)
        parts: list[tuple[str, Any, int]] = []
        shapes = []
        for v in ins:
            if isinstance(v, _Act):
                parts.append(("act", v.slot, 1 << (out_scale - v.scale)))
                shapes.append(v.shape)
            else:
                cs = self.scales.params if v.uses != 1 else max([self.scales.params] + act_scales)
                cq = _quantize_param(np.asarray(v.raw, dtype=np.float32), cs) * np.int64(1 << (out_scale - cs))
                parts.append(("const", cq, 1))
                shapes.append(cq.shape)
        shape = list(shapes[0])
        shape[axis] = sum(sh[axis] for sh in shapes)
        slot = self._new_slot()

        def step(v, b, dst=slot):
            arrs, bo = [], 0.0
            for kind, p, mult in parts:
                if kind == "act":
                    arrs.append(_as_int(v[p]) * np.int64(mult) if mult != 1 else _as_int(v[p]))
                    bo = max(bo, b[p] * mult)
                else:
                    arrs.append(p)
                    bo = max(bo, _absmax(p))
            v[dst] = _carrier(np.concatenate(arrs, axis=axis), bo)
            b[dst] = bo

        self._emit(step)
        return _Act(slot, self._rebase(node, slot, out_scale), tuple(shape))

    def _op_Gather(self, node, ins):
        """ezkl HybridOp::Gather: a constant table (quantized at param_scale) indexed by runtime
        integer ids (e.g. an embedding), or a runtime tensor indexed by constant indices."""
        data, idx = ins
        axis = _attrs(node).get("axis", 0)
        if isinstance(data, _Const) and isinstance(idx, _Act):
            if idx.scale != 0:
                raise NotImplementedError(f"node {node.name!r} (op Gather): indices at scale {idx.scale} (not integers)")
            table = _quantize_param(np.asarray(data.raw, dtype=np.float32), self.scales.params) if np.asarray(data.raw).dtype.kind == "f" \
                else np.asarray(data.raw, dtype=np.int64)
            scale = self.scales.params if np.asarray(data.raw).dtype.kind == "f" else 0
            if axis < 0:
                axis += table.ndim
            n = table.shape[axis]
            bt = _absmax(table)
            where = f"node {node.name!r} (op Gather)"
            slot = self._new_slot()

            def step(v, b, src=idx.slot, dst=slot):
                ii = _as_int(v[src])
                _enforce_range(ii, 0, n - 1, where, "index", f"the gathered axis has {n} entries")
                v[dst] = _carrier(np.take(table, ii, axis=axis), bt)
                b[dst] = bt

            shape = table.shape[:axis] + tuple(idx.shape) + table.shape[axis + 1 :]
            self._emit(step, TraceOp("gather", (idx.slot,), slot, (axis,), const=table, shape=tuple(int(d) for d in shape)))
            return _Act(slot, self._rebase(node, slot, scale), tuple(shape))
        a = self._need_act(node, data, "data")
        ii = np.asarray(self._need_const(node, idx, "indices").raw).astype(np.int64)
        if axis < 0:
            axis += len(a.shape)
        ii = np.where(ii < 0, ii + a.shape[axis], ii)
        shape = a.shape[:axis] + ii.shape + a.shape[axis + 1 :]
        return self._view(node, a, lambda x: np.take(x, ii, axis=axis), shape)

    # ------------------------------------------------------ comparisons / Where
    def _homogenize(self, node, items: list) -> tuple[int, list[Callable[[list, list], tuple[np.ndarray, float]]], list]:
        """ezkl homogenous input scales: every input at the max scale (runtime tensors multiplied by
        2**diff; single-use constants re-quantized from raw at the max input scale).  Returns
        (scale, getters (v, b) -> (int array, bound), shapes)."""
        act_scales = [v.scale for v in items if isinstance(v, _Act)]
        cscale = {id(v): (max([self.scales.params] + act_scales) if v.uses == 1 else self.scales.params)
                  for v in items if isinstance(v, _Const)}
        out = max(act_scales + list(cscale.values()))
        getters, shapes = [], []
        for v in items:
            if isinstance(v, _Act):
                mult = np.int64(1 << (out - v.scale))

                def get(vv, bb, slot=v.slot, mult=mult):
                    x = _as_int(vv[slot])
                    return (x * mult if mult != 1 else x), bb[slot] * float(mult)

                shapes.append(v.shape)
            else:
                raw = np.asarray(v.raw)
                cs = cscale[id(v)]
                cq = (_quantize_param(raw.astype(np.float32), cs) if raw.dtype.kind == "f" else raw.astype(np.int64)) \
                    * np.int64(1 << (out - cs))
                bc = _absmax(cq)

                def get(vv, bb, cq=cq, bc=bc):
                    return cq, bc

                shapes.append(cq.shape)
            getters.append(get)
        return out, getters, shapes

    def _cmp(self, node, ins, fn, keep_scale: bool = False):
        """ezkl Greater/Less/...: homogenized inputs, 0/1 result at scale 0.  ezkl's Equals is not in
        HybridOp::out_scale's scale-0 list: its 0/1 result is *labelled with the input scale*
        (so ``(x == c).float()`` is worth 2**-s, not 1)."""
        if not any(isinstance(v, _Act) for v in ins):
            raise NotImplementedError(f"node {node.name!r} (op {node.op_type}): constant comparison")
        in_scale, (ga, gb), shapes = self._homogenize(node, list(ins))
        shape = tuple(np.broadcast_shapes(*shapes))
        slot = self._new_slot()

        def step(v, b, dst=slot):
            x, _ = ga(v, b)
            y, _ = gb(v, b)
            v[dst] = np.broadcast_to(fn(x, y), shape).astype(np.float64)
            b[dst] = 1.0

        self._emit(step)
        if keep_scale:
            return _Act(slot, self._rebase(node, slot, in_scale), shape)
        return _Act(slot, 0, shape)

    def _op_Greater(self, node, ins):
        return self._cmp(node, ins, np.greater)

    def _op_Less(self, node, ins):
        return self._cmp(node, ins, np.less)

    def _op_GreaterOrEqual(self, node, ins):
        return self._cmp(node, ins, np.greater_equal)

    def _op_LessOrEqual(self, node, ins):
        return self._cmp(node, ins, np.less_equal)

    def _op_Equal(self, node, ins):
        return self._cmp(node, ins, np.equal, keep_scale=True)

    def _op_Where(self, node, ins):
        """ezkl PolyOp::Iff(mask, a, b): ``mask * a + (1 - mask) * b`` with a, b homogenized; output
        at their scale (rebased above R)."""
        cond, a, c = ins
        cond = self._need_act(node, cond, "condition")
        if not (isinstance(a, _Act) or isinstance(c, _Act)):
            raise NotImplementedError(f"node {node.name!r} (op Where): both branches constant")
        scale, (ga, gc), shapes = self._homogenize(node, [a, c])
        shape = tuple(np.broadcast_shapes(cond.shape, *shapes))
        slot = self._new_slot()

        def step(v, b, sm=cond.slot, dst=slot):
            m = _as_int(v[sm]) != 0
            x, bx = ga(v, b)
            y, by = gc(v, b)
            bo = max(bx, by)
            v[dst] = _carrier(np.broadcast_to(np.where(m, x, y), shape), bo)
            b[dst] = bo

        self._emit(step)
        return _Act(slot, self._rebase(node, slot, scale), shape)

    def _op_BatchNormalization(self, node, ins):
        """Inference BatchNorm: tract folds it into ``x * k + c`` with k = gamma / sqrt(var + eps) and
        c = beta - mean * k (f32), per channel; ezkl: Mult by k at param_scale (rebase), Add c."""
        at = _attrs(node)
        if at.get("training_mode", 0):
            raise NotImplementedError(f"node {node.name!r} (op BatchNormalization): training mode not supported")
        x = self._need_act(node, ins[0])
        gamma, beta, mean, var = (np.asarray(self._need_const(node, v, "parameter").raw, dtype=np.float32) for v in ins[1:5])
        eps = np.float32(at.get("epsilon", 1e-5))
        k = gamma / np.sqrt(var + eps)
        c = beta - mean * k
        bshape = (1, -1) + (1,) * (len(x.shape) - 2)
        y = self._mul_const(node, x, k.reshape(bshape))
        if np.any(c != 0):
            y = self._add(node, y, _Const(c.reshape(bshape), f"{node.name}.bias", uses=1))
        return y

    def _op_Conv(self, node, ins):
        at = _attrs(node)
        x = self._need_act(node, ins[0])
        w = np.asarray(self._need_const(node, ins[1], "kernel").raw, dtype=np.float32)
        if at.get("group", 1) != 1:
            raise NotImplementedError(f"node {node.name!r} (op Conv): group != 1 not supported")
        if any(d != 1 for d in at.get("dilations", [1, 1])):
            raise NotImplementedError(f"node {node.name!r} (op Conv): dilations not supported")
        if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise NotImplementedError(f"node {node.name!r} (op Conv): auto_pad not supported")
        if w.ndim != 4 or len(x.shape) != 4:
            raise NotImplementedError(f"node {node.name!r} (op Conv): only 2-D convolution supported")
        n, c, h, wd = x.shape
        oc, ic, kh, kw = w.shape
        if ic != c:
            raise ValueError(f"node {node.name!r}: channel mismatch {x.shape} vs kernel {w.shape}")
        sh, sw = at.get("strides", [1, 1])
        pt, pl, pb, pr = at.get("pads", [0, 0, 0, 0])
        oh = (h + pt + pb - kh) // sh + 1
        ow = (wd + pl + pr - kw) // sw + 1
        # im2col gather indices into the flattened input; padding positions point at
        # an extra zero appended after the input (index c*h*w)
        ci, ki, kj = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
        oi, oj = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
        rows = oi.reshape(-1, 1) * sh + ki.reshape(1, -1) - pt
        cols = oj.reshape(-1, 1) * sw + kj.reshape(1, -1) - pl
        valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < wd)
        flat_idx = np.where(valid, ci.reshape(1, -1) * (h * wd) + rows * wd + cols, c * h * wd)
        wq = _quantize_param(w, self.scales.params).reshape(oc, -1)  # (oc, c*kh*kw)
        out_scale = x.scale + self.scales.params
        bias_q = None
        if len(ins) > 2 and ins[2] is not None:
            bc = self._need_const(node, ins[2], "bias")
            # Conv bias is re-quantized from its raw value at input_scale + kernel_scale
            bias_q = _quantize_param(np.asarray(bc.raw, dtype=np.float32), out_scale).reshape(oc)
        slot = self._new_slot()
        n_in, n_pos = c * h * wd, oh * ow

        if n_in * oc * n_pos <= self.DENSE_CONV_MAX:
            # small feature maps: the convolution is one dense (c*h*w, oc*oh*ow) integer matrix
            dense = np.zeros((n_in + 1, oc, n_pos), dtype=np.int64)
            p_idx = np.broadcast_to(np.arange(n_pos).reshape(-1, 1), flat_idx.shape)
            for o in range(oc):
                dense[flat_idx, o, p_idx] = np.broadcast_to(wq[o].reshape(1, -1), flat_idx.shape)
            mm = _ConstMatmul(dense[:n_in].reshape(n_in, oc * n_pos))
            bias_full = None if bias_q is None else np.repeat(bias_q, n_pos)
            bias_step = self._const_add_fn(bias_full) if bias_full is not None else None

            def step(v, b, src=x.slot, dst=slot):
                y, by = mm(v[src].reshape(n, n_in), b[src])
                y = _carrier(y, by)
                if bias_step is not None:
                    y, by = bias_step(y, by)
                v[dst] = y.reshape(n, oc, oh, ow)
                b[dst] = by

        else:
            mm = _ConstMatmul(wq.T)  # (c*kh*kw, oc) applied to im2col patches
            bias_step = self._const_add_fn(bias_q) if bias_q is not None else None

            def step(v, b, src=x.slot, dst=slot):
                xi = v[src].reshape(n, -1)
                xz = np.concatenate([xi, np.zeros((n, 1), dtype=xi.dtype)], axis=1)
                y, by = mm(xz[:, flat_idx], b[src])  # (n, oh*ow, oc)
                y = _carrier(y, by)
                if bias_step is not None:
                    y, by = bias_step(y, by)
                v[dst] = np.ascontiguousarray(y.transpose(0, 2, 1)).reshape(n, oc, oh, ow)
                b[dst] = by

        self._emit(step)
        scale = self._rebase(node, slot, out_scale)
        return _Act(slot, scale, (n, oc, oh, ow))

    # ----------------------------------------------------------------- run
    def run(self, *inputs_q: np.ndarray) -> list[np.ndarray]:
        """Run on quantized inputs (one integer array per model input); returns every output as int64."""
        if len(inputs_q) != len(self._input_slots):
            raise ValueError(f"expected {len(self._input_slots)} inputs, got {len(inputs_q)}")
        v: list[Any] = [None] * self._n_slots
        b: list[float] = [0.0] * self._n_slots
        for name, slot, shape, size, x in zip(self.input_names, self._input_slots, self.input_shapes, self._input_sizes, inputs_q):
            x = np.asarray(x)
            if x.dtype.kind not in "iu":
                raise TypeError("FixedPointProgram expects quantized integer inputs (see quantize())")
            if x.size != size:
                raise ValueError(f"input has {x.size} elements, model expects shape {shape}")
            bx = _absmax(x)
            if self.limits.range_check_inputs and self.limits.decomp_bound is not None and bx > self.limits.decomp_bound:
                _enforce_range(x, -self.limits.decomp_bound, self.limits.decomp_bound, f"model input {name!r}", "value",
                               self.limits.decomp_reason)
            v[slot] = _carrier(x.reshape(shape), bx)
            b[slot] = bx
        for step in self._steps:
            step(v, b)
        if self.limits.range_check_outputs and self.limits.decomp_bound is not None:
            limit = self.limits.decomp_bound
            for name, slot in zip(self.output_names, self._output_slots):
                if b[slot] > limit:
                    _enforce_range(v[slot], -limit, limit, f"model output {name!r}", "value", self.limits.decomp_reason)
        return [_as_int(v[s]).reshape(shape) for s, shape in zip(self._output_slots, self.output_shapes)]

    def __call__(self, x_q: np.ndarray) -> np.ndarray:
        """Single-input, single-output convenience wrapper around :meth:`run`."""
        if len(self._output_slots) != 1 or len(self._input_slots) != 1:
            raise ValueError("model has several inputs/outputs; use run()")
        return self.run(x_q)[0]


def _initializer_array(t: onnx.TensorProto, base_dir: Path | None) -> np.ndarray:
    """An initializer's value; one stored as external data is memory-mapped read-only from its file."""
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return np.asarray(numpy_helper.to_array(t))
    info = {e.key: e.value for e in t.external_data}
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    shape = tuple(int(d) for d in t.dims)
    if base_dir is None or dtype.kind not in "fiub" or "location" not in info:
        return np.asarray(numpy_helper.to_array(t, base_dir=str(base_dir or "")))
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(base_dir / info["location"], dtype=dtype, mode="r", offset=int(info.get("offset", 0)), shape=shape)


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray:
    at = {a.name: a for a in node.attribute}
    if "value" in at:
        return np.asarray(numpy_helper.to_array(at["value"].t))
    for k, dt in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64), ("value_ints", np.int64)):
        if k in at:
            return np.asarray(onnx.helper.get_attribute_value(at[k]), dtype=dt)
    raise NotImplementedError(f"node {node.name!r} (op Constant): unsupported attribute {list(at)}")


def run_fixed_point(
    onnx_path: str | Path | onnx.ModelProto,
    settings: Mapping[str, Any] | str | Path,
    x_q: np.ndarray,
) -> np.ndarray:
    """Quantized (int64) output of the model exactly as ``witness["outputs"][0]`` (reshaped).

    Compiles a :class:`FixedPointProgram` each call; build the program once for repeated use.
    """
    return FixedPointProgram(onnx_path, settings)(x_q)
