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
}
