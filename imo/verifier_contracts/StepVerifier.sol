// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TraceCodec} from "./TraceCodec.sol";

/// @dev Values [start, start + count) of producer step `step`'s output leaf.
struct Slice {
    uint32 step;
    uint32 start;
    uint32 count;
}

/// @dev One step of a registered step program (`trace_codec.Step`); an operand is the concatenation of its slices.
struct StepDesc {
    uint8 kind;
    Slice[][] operands;
    int256[] params;
    bytes32 constHash;
    uint32 outCount;
}

/// @dev What the challenger gives to have step `index` recomputed: the descriptor and its program proof, the int_pack
/// bytes of each slice's producer leaf (operand by operand, slice by slice) with its proof under the defender's trace
/// root, the constant (GEMM weights, ADD/MUL constant) when the step uses one, the claim's packed boundary for
/// INPUT/OUTPUT, and for LOOKUP the table entry of every input with its proof under the table root (`constHash`).
struct StepProof {
    StepDesc step;
    bytes32[] stepProof;
    bytes[] leaves;
    bytes32[][] leafProofs;
    bytes constValues;
    bytes boundary;
    int256[] tableValues;
    bytes32[][] tableProofs;
}

/// @dev The game's side of a one-step check: the disputed index, the trees' depth, the registered program root, the
/// defender's trace root and the hashes of the segment's packed input and output boundaries.
struct StepContext {
    uint256 index;
    uint256 depth;
    bytes32 programRoot;
    bytes32 traceRoot;
    bytes32 inHash;
    bytes32 outHash;
}

/**
 * @title StepVerifier
 * @dev The one-step semantics of the dispute game, exactly `trace_codec.evaluate_step`: integer arithmetic over
 * operands proven against the defender's trace, a constant proven against the descriptor, boundaries proven against
 * the claim and lookup entries proven against the registered table. {leafOf} returns the leaf step `index` must have,
 * or `valid = false` when no leaf is right (a lookup input outside its table, an OUTPUT operand that differs from the
 * published output, operand lengths that do not fit, an output outside int64). A witness that does not prove what it
 * claims (a descriptor not at `index`, a leaf not in the trace, a producer at or after `index`, a wrong constant,
 * boundary or table entry, wrong counts) reverts with a custom error. Stateless.
 */
contract StepVerifier {
    uint256 internal constant INPUT = 0;
    uint256 internal constant OUTPUT = 1;
    uint256 internal constant GEMM = 2;
    uint256 internal constant ADD = 3;
    uint256 internal constant MUL = 4;
    uint256 internal constant RESCALE = 5;
    uint256 internal constant RELU = 6;
    uint256 internal constant LOOKUP = 7;
    // transformer kinds (trace_codec.StepKind 8..15)
    uint256 internal constant MATMUL = 8;
    uint256 internal constant SUM = 9;
    uint256 internal constant MAX = 10;
    uint256 internal constant DIVC = 11;
    uint256 internal constant RECIP = 12;
    uint256 internal constant SQRT = 13;
    uint256 internal constant REPEAT = 14;
    uint256 internal constant GATHER = 15;
    /// @dev ADD params must stay below this magnitude (|value| < 2^63, so |a*p0 + b*p1| < 2^255 never wraps).
    int256 internal constant MAX_ADD_PARAM = int256(1) << 190;

    error StepNotInProgram(uint256 index);
    error StepMalformed(uint256 kind);
    error StepParamOutOfRange(uint256 kind);
    error StepWrongLeafCount(uint256 expected, uint256 given);
    error StepSliceNotBefore(uint256 slice, uint256 producer);
    error StepLeafNotInTrace(uint256 slice);
    error StepSliceOutOfRange(uint256 slice);
    error StepConstMismatch();
    error StepBoundaryMismatch();
    error StepTableMismatch(uint256 entry);

    /**
     * @notice The leaf that step `ctx.index` of the program under `ctx.programRoot` must have, given the operands in
     * the defender's trace under `ctx.traceRoot`; `valid` is false when no leaf can be right.
     * @dev Reverts with one of the errors above when the witness `p` proves nothing.
     */
    function leafOf(StepProof calldata p, StepContext calldata ctx) external pure returns (bool valid, bytes32 leaf) {
        StepDesc calldata s = p.step;
        if (p.stepProof.length != ctx.depth || !TraceCodec.verify(keccak256(abi.encode(s)), ctx.index, p.stepProof, ctx.programRoot)) {
            revert StepNotInProgram(ctx.index);
        }
        uint256 kind = s.kind;
        if (kind == INPUT || kind == OUTPUT) {
            if (keccak256(p.boundary) != (kind == INPUT ? ctx.inHash : ctx.outHash)) revert StepBoundaryMismatch();
        }
        int256[][] memory ops = _provenOperands(p, ctx);
        int256[] memory c;
        if (kind == GEMM || ((kind == ADD || kind == MUL) && ops.length < 2)) {
            if (s.constHash == bytes32(0)) {
                if (p.constValues.length != 0) revert StepConstMismatch();
            } else {
                if (keccak256(p.constValues) != s.constHash) revert StepConstMismatch();
                c = TraceCodec.unpack(p.constValues);
            }
        }
        int256[] memory out;
        (valid, out) = _evaluate(s, ops, c, p.boundary, p.tableValues);
        if (!valid) return (false, bytes32(0));
        if (kind == LOOKUP) _checkTable(p, ops);
        if (kind == GATHER) _checkRows(p, ops);
        (valid, leaf) = TraceCodec.packHash(out);
    }

    /**
     * @notice The semantics alone, for tests against `trace_codec.evaluate_step`: the step's canonical int_pack output
     * from its operand values, constant (int_pack bytes; empty: none), boundary (packed) and, for LOOKUP, the table
     * entry of every input; `valid` false when no output is right. Operand values must fit int64 (as trace values do).
     */
    function evaluate(
        StepDesc calldata s,
        int256[][] calldata operands,
        bytes calldata constValues,
        bytes calldata boundary,
        int256[] calldata tableValues
    ) external pure returns (bool valid, bytes memory packed) {
        int256[][] memory ops = new int256[][](operands.length);
        for (uint256 o = 0; o < operands.length; ++o) {
            ops[o] = operands[o];
            for (uint256 i = 0; i < ops[o].length; ++i) {
                if (ops[o][i] < type(int64).min || ops[o][i] > type(int64).max) revert StepMalformed(s.kind);
            }
        }
        int256[] memory c;
        if (constValues.length != 0) c = TraceCodec.unpack(constValues);
        int256[] memory out;
        (valid, out) = _evaluate(s, ops, c, boundary, tableValues);
        if (valid) (valid, packed) = TraceCodec.pack(out);
        if (!valid) packed = "";
    }

    // ---------------------------------------------------------------- internal

    /// @dev Every operand from its slices of producer leaves, each leaf proven under the defender's trace root.
    function _provenOperands(StepProof calldata p, StepContext calldata ctx) private pure returns (int256[][] memory ops) {
        Slice[][] calldata desc = p.step.operands;
        uint256 nLeaves = p.leaves.length;
        if (p.leafProofs.length != nLeaves) revert StepWrongLeafCount(nLeaves, p.leafProofs.length);
        ops = new int256[][](desc.length);
        uint256 j;
        for (uint256 o = 0; o < desc.length; ++o) {
            Slice[] calldata slices = desc[o];
            uint256 total;
            for (uint256 s = 0; s < slices.length; ++s) {
                total += slices[s].count;
            }
            int256[] memory values = new int256[](total);
            uint256 pos;
            for (uint256 s = 0; s < slices.length; ++s) {
                if (j >= nLeaves) revert StepWrongLeafCount(j + 1, nLeaves);
                pos = _readSlice(p, ctx, slices[s], j, values, pos);
                ++j;
            }
            ops[o] = values;
        }
        if (j != nLeaves) revert StepWrongLeafCount(j, nLeaves);
    }

    /// @dev Slice number `j` (its producer leaf `p.leaves[j]`, proven under the trace root) into values[pos..];
    /// returns the position after it.
    function _readSlice(
        StepProof calldata p,
        StepContext calldata ctx,
        Slice calldata sl,
        uint256 j,
        int256[] memory values,
        uint256 pos
    ) private pure returns (uint256) {
        if (sl.step >= ctx.index) revert StepSliceNotBefore(j, sl.step);
        bytes calldata leafBytes = p.leaves[j];
        bytes32[] calldata proof = p.leafProofs[j];
        if (proof.length != ctx.depth || !TraceCodec.verify(keccak256(leafBytes), sl.step, proof, ctx.traceRoot)) {
            revert StepLeafNotInTrace(j);
        }
        (uint256 width, uint256 count) = TraceCodec.header(leafBytes);
        if (uint256(sl.start) + sl.count > count) revert StepSliceOutOfRange(j);
        TraceCodec.copyInto(leafBytes, width, sl.start, sl.count, values, pos);
        return pos + sl.count;
    }

    /// @dev Every LOOKUP output is the table entry of its input, proven under the table root `constHash`.
    function _checkTable(StepProof calldata p, int256[][] memory ops) private pure {
        int256[] memory a = ops.length > 0 ? ops[0] : new int256[](0);
        if (p.tableProofs.length != a.length) revert StepTableMismatch(p.tableProofs.length);
        int256 p0 = p.step.params[0];
        for (uint256 i = 0; i < a.length; ++i) {
            (bool fits, bytes32 h) = TraceCodec.entryHash(p.tableValues[i]);
            uint256 index;
            unchecked {
                index = uint256(a[i]) - uint256(p0); // a[i] >= p0 was checked: the difference is exact
            }
            if (!fits || !TraceCodec.verify(h, index, p.tableProofs[i], p.step.constHash)) revert StepTableMismatch(i);
        }
    }

    function _need(int256[] calldata params, uint256 n, uint256 kind) private pure {
        if (params.length < n) revert StepMalformed(kind);
    }

    /// @dev `trace_codec.evaluate_step`: (false, _) wherever it raises TraceDataError.
    function _evaluate(
        StepDesc calldata s,
        int256[][] memory ops,
        int256[] memory c,
        bytes calldata boundary,
        int256[] calldata table
    ) private pure returns (bool valid, int256[] memory out) {
        uint256 kind = s.kind;
        int256[] memory a = ops.length > 0 ? ops[0] : new int256[](0);
        valid = true;
        if (kind == INPUT) {
            _need(s.params, 1, kind);
            (valid, out) = _input(s.params[0], s.outCount, boundary);
        } else if (kind == OUTPUT) {
            valid = _equalsBoundary(a, boundary);
            out = a;
        } else if (kind == GEMM) {
            _need(s.params, 2, kind);
            (valid, out) = _gemmStep(a, c, s.params[0], s.params[1]);
        } else if (kind == ADD || kind == MUL) {
            if (kind == ADD) _need(s.params, 2, kind);
            (valid, out) = _elementwise(kind, a, ops.length > 1 ? ops[1] : c, s.params);
        } else if (kind == RESCALE) {
            _need(s.params, 1, kind);
            out = _rescale(a, s.params[0]);
        } else if (kind == RELU) {
            out = new int256[](a.length);
            for (uint256 i = 0; i < a.length; ++i) {
                out[i] = a[i] > 0 ? a[i] : int256(0);
            }
        } else if (kind == LOOKUP) {
            _need(s.params, 2, kind);
            (int256 p0, int256 p1) = (s.params[0], s.params[1]);
            for (uint256 i = 0; i < a.length; ++i) {
                if (a[i] < p0 || a[i] > p1) return (false, out);
            }
            if (table.length != a.length) revert StepTableMismatch(table.length);
            out = table;
        } else if (kind >= MATMUL && kind <= GATHER) {
            (valid, out) = _transformer(s, ops, table);
        } else {
            revert StepMalformed(kind);
        }
        valid = valid && out.length == s.outCount;
    }

    function _input(int256 start, uint256 n, bytes calldata boundary) private pure returns (bool, int256[] memory out) {
        (uint256 width, uint256 size) = TraceCodec.header(boundary);
        if (start < 0 || uint256(start) + n > size) return (false, out);
        out = new int256[](n);
        TraceCodec.copyInto(boundary, width, uint256(start), n, out, 0);
        return (true, out);
    }

    function _equalsBoundary(int256[] memory a, bytes calldata boundary) private pure returns (bool) {
        (uint256 width, uint256 size) = TraceCodec.header(boundary);
        if (size != a.length) return false;
        for (uint256 i = 0; i < size; ++i) {
            if (TraceCodec.at(boundary, width, i) != a[i]) return false;
        }
        return true;
    }

    function _gemmStep(int256[] memory a, int256[] memory c, int256 kk, int256 tt)
        private
        pure
        returns (bool, int256[] memory out)
    {
        if (kk != int256(a.length)) return (false, out);
        if (tt < 0) {
            if (kk != 0 || c.length != 0) return (false, out); // K*T is negative unless K = 0
            tt = 0;
        } else if (tt > type(int32).max || c.length != uint256(kk) * uint256(tt)) {
            return (false, out);
        }
        return (true, _gemm(a, c, uint256(tt)));
    }

    function _elementwise(uint256 kind, int256[] memory a, int256[] memory b, int256[] calldata p)
        private
        pure
        returns (bool, int256[] memory out)
    {
        if (b.length != a.length) return (false, out);
        out = new int256[](a.length);
        if (kind == ADD && a.length > 0) {
            (int256 p0, int256 p1) = (p[0], p[1]);
            if (p0 >= MAX_ADD_PARAM || p0 <= -MAX_ADD_PARAM || p1 >= MAX_ADD_PARAM || p1 <= -MAX_ADD_PARAM) {
                revert StepParamOutOfRange(kind);
            }
            unchecked {
                for (uint256 i = 0; i < a.length; ++i) {
                    out[i] = a[i] * p0 + b[i] * p1;
                }
            }
        } else if (kind == MUL) {
            unchecked {
                for (uint256 i = 0; i < a.length; ++i) {
                    out[i] = a[i] * b[i];
                }
            }
        }
        return (true, out);
    }

    /// @dev out[t] = sum_k a[k] * c[k*T + t]; |values| < 2^63 and K < 2^32, so no sum wraps.
    function _gemm(int256[] memory a, int256[] memory c, uint256 tt) private pure returns (int256[] memory out) {
        out = new int256[](tt);
        uint256 kk = a.length;
        assembly ("memory-safe") {
            let ap := add(a, 0x20)
            let cp := add(c, 0x20)
            let op := add(out, 0x20)
            for { let k := 0 } lt(k, kk) { k := add(k, 1) } {
                let ak := mload(add(ap, shl(5, k)))
                if ak {
                    let row := add(cp, shl(5, mul(k, tt)))
                    for { let t := 0 } lt(t, tt) { t := add(t, 1) } {
                        let o := add(op, shl(5, t))
                        mstore(o, add(mload(o), mul(ak, mload(add(row, shl(5, t))))))
                    }
                }
            }
        }
    }

    /// @dev round_half_away(x / 2^shift); shift <= 0 leaves x, and from 128 on every int64 rounds to 0.
    function _rescale(int256[] memory a, int256 shift) private pure returns (int256[] memory out) {
        out = new int256[](a.length);
        if (shift <= 0) {
            for (uint256 i = 0; i < a.length; ++i) {
                out[i] = a[i];
            }
            return out;
        }
        if (shift >= 128) return out;
        uint256 sh = uint256(shift);
        uint256 half = 1 << (sh - 1);
        for (uint256 i = 0; i < a.length; ++i) {
            int256 x = a[i];
            uint256 q = ((x >= 0 ? uint256(x) : uint256(-x)) + half) >> sh;
            out[i] = x >= 0 ? int256(q) : -int256(q);
        }
    }

    // ---------------------------------------------------------------- transformer kinds

    /// @dev Every GATHER output row is the table row of its index, proven under the table root `constHash`
    /// (leaf = keccak256(int_pack(row))) by a proof of the tree's full depth (a 64-byte row must not pose as an inner
    /// node).
    function _checkRows(StepProof calldata p, int256[][] memory ops) private pure {
        int256[] memory a = ops.length > 0 ? ops[0] : new int256[](0);
        if (p.tableProofs.length != a.length) revert StepTableMismatch(p.tableProofs.length);
        uint256 d = uint256(p.step.params[1]); // 0 <= D and a.length * D == tableValues.length were checked
        uint256 depth = a.length > 0 ? TraceCodec.depthOf(uint256(p.step.params[0])) : 0; // V > a[i] >= 0
        for (uint256 i = 0; i < a.length; ++i) {
            if (p.tableProofs[i].length != depth) revert StepTableMismatch(i);
            int256[] memory row = new int256[](d);
            for (uint256 j = 0; j < d; ++j) {
                row[j] = p.tableValues[i * d + j];
            }
            (bool fits, bytes32 h) = TraceCodec.packHash(row);
            if (!fits || !TraceCodec.verify(h, uint256(a[i]), p.tableProofs[i], p.step.constHash)) revert StepTableMismatch(i);
        }
    }

    /// @dev `trace_codec.evaluate_step` for MATMUL .. GATHER.
    function _transformer(StepDesc calldata s, int256[][] memory ops, int256[] calldata table)
        private
        pure
        returns (bool, int256[] memory out)
    {
        uint256 kind = s.kind;
        uint256 n = s.outCount;
        int256[] memory a = ops.length > 0 ? ops[0] : new int256[](0);
        if (kind == MATMUL) {
            _need(s.params, 2, kind);
            int256[] memory b = ops.length > 1 ? ops[1] : new int256[](0);
            (int256 kk, int256 tt) = (s.params[0], s.params[1]);
            if (kk < 0 || tt != int256(n) || uint256(kk) != a.length || b.length != a.length * n) return (false, out);
            return (true, _matmul(a, b, n));
        }
        if (kind == SUM || kind == MAX) {
            _need(s.params, 1, kind);
            int256 ll = s.params[0];
            if (ll < 1 || ll > type(int32).max || a.length != uint256(ll) * n) return (false, out);
            out = new int256[](n);
            uint256 l = uint256(ll);
            for (uint256 r = 0; r < n; ++r) {
                int256 acc = a[r * l];
                for (uint256 j = 1; j < l; ++j) {
                    int256 v = a[r * l + j];
                    if (kind == SUM) acc += v;
                    else if (v > acc) acc = v;
                }
                out[r] = acc;
            }
            return (true, out);
        }
        if (kind == DIVC || kind == RECIP) {
            _need(s.params, kind == DIVC ? 1 : 2, kind);
            int256 c = s.params[0];
            if (c <= 0 || c >= int256(1) << 128) return (false, out);
            out = new int256[](a.length);
            for (uint256 i = 0; i < a.length; ++i) {
                if (kind == DIVC) out[i] = _roundDiv(a[i], c);
                else out[i] = a[i] == 0 ? s.params[1] : _roundDiv(c, a[i]);
            }
            return (true, out);
        }
        if (kind == SQRT) {
            _need(s.params, 1, kind);
            int256 sc = s.params[0];
            if (sc < 0 || sc > 64) return (false, out);
            out = new int256[](a.length);
            for (uint256 i = 0; i < a.length; ++i) {
                out[i] = a[i] <= 0 ? int256(0) : _sqrtF64(uint256(a[i]), uint256(sc));
            }
            return (true, out);
        }
        if (kind == REPEAT) {
            _need(s.params, 2, kind);
            (int256 ll, int256 off) = (s.params[0], s.params[1]);
            if (ll < 1 || off < 0 || off >= ll) return (false, out);
            uint256 l = uint256(ll);
            uint256 o = uint256(off);
            if (a.length != (n == 0 ? 0 : (o + n - 1) / l + 1)) return (false, out);
            out = new int256[](n);
            for (uint256 i = 0; i < n; ++i) {
                out[i] = a[(o + i) / l];
            }
            return (true, out);
        }
        // GATHER
        _need(s.params, 2, kind);
        (int256 vv, int256 dd) = (s.params[0], s.params[1]);
        if (dd < 0 || (a.length != 0 && uint256(dd) > n) || a.length * uint256(dd) != n) return (false, out);
        for (uint256 i = 0; i < a.length; ++i) {
            if (a[i] < 0 || a[i] >= vv) return (false, out);
        }
        if (table.length != n) revert StepTableMismatch(table.length);
        return (true, table);
    }

    /// @dev out[t] = sum_k a[k] * b[t*K + k]; |values| < 2^63 and K < 2^32, so no sum wraps.
    function _matmul(int256[] memory a, int256[] memory b, uint256 tt) private pure returns (int256[] memory out) {
        out = new int256[](tt);
        uint256 kk = a.length;
        assembly ("memory-safe") {
            let ap := add(a, 0x20)
            let bp := add(b, 0x20)
            let op := add(out, 0x20)
            for { let t := 0 } lt(t, tt) { t := add(t, 1) } {
                let col := add(bp, shl(5, mul(t, kk)))
                let acc := 0
                for { let k := 0 } lt(k, kk) { k := add(k, 1) } {
                    acc := add(acc, mul(mload(add(ap, shl(5, k))), mload(add(col, shl(5, k)))))
                }
                mstore(add(op, shl(5, t)), acc)
            }
        }
    }

    /// @dev round_half_away(x / d) for d != 0, |x|, |d| < 2^128.
    function _roundDiv(int256 x, int256 d) private pure returns (int256) {
        uint256 ax = x >= 0 ? uint256(x) : uint256(-x);
        uint256 ad = d >= 0 ? uint256(d) : uint256(-d);
        uint256 q = ax / ad;
        if (2 * (ax % ad) >= ad) ++q;
        return (x >= 0) == (d > 0) ? int256(q) : -int256(q);
    }

    function _bitlen(uint256 x) private pure returns (uint256 n) {
        for (uint256 sh = 128; sh > 0; sh >>= 1) {
            if (x >> sh != 0) {
                x >>= sh;
                n += sh;
            }
        }
        if (x != 0) ++n;
    }

    /// @dev floor(sqrt(x)), Newton's method from above.
    function _isqrt(uint256 x) private pure returns (uint256 r) {
        if (x == 0) return 0;
        r = uint256(1) << ((_bitlen(x) + 1) / 2);
        while (true) {
            uint256 nr = (r + x / r) >> 1;
            if (nr >= r) return r;
            r = nr;
        }
    }

    /// @dev `trace_codec.sqrt_f64_round(a, s)` for 0 < a < 2^63: the executor's f64 round(m * sqrt(a / m)), m = 2^s,
    /// in integers: a rounded to a double (53 bits, ties to even), its square root correctly rounded, rounded half
    /// away from zero.
    function _sqrtF64(uint256 a, uint256 sc) private pure returns (int256) {
        uint256 m = a;
        uint256 e;
        uint256 nbits = _bitlen(a);
        if (nbits > 53) {
            e = nbits - 53;
            m = a >> e;
            uint256 low = a & ((uint256(1) << e) - 1);
            uint256 half = uint256(1) << (e - 1);
            if (low > half || (low == half && m & 1 == 1)) ++m;
        }
        uint256 xexp = e + sc;
        if (xexp % 2 == 1) {
            m <<= 1;
            xexp -= 1;
        }
        uint256 hb = (_bitlen(m) + 1) / 2;
        uint256 k = hb < 56 ? 56 - hb : 0;
        uint256 big = m << (2 * k);
        uint256 y = _isqrt(big);
        bool sticky = y * y != big;
        uint256 sh = _bitlen(y) - 53;
        uint256 mant = y >> sh;
        uint256 lowy = y & ((uint256(1) << sh) - 1);
        uint256 halfy = uint256(1) << (sh - 1);
        if (lowy > halfy || (lowy == halfy && (sticky || mant & 1 == 1))) ++mant;
        int256 e2 = int256(sh) - int256(k) + int256(xexp / 2);
        if (e2 >= 0) return int256(mant << uint256(e2)); // < 2^118: an out-of-int64 value fails the packing
        uint256 ne = uint256(-e2);
        return int256((mant + (uint256(1) << (ne - 1))) >> ne);
    }
}
