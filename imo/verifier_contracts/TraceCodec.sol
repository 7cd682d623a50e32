// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title TraceCodec
 * @dev The encodings of the bisection dispute game (`imo/proving/trace_codec.py` is the reference):
 * - int_pack: one width byte w (1, 2, 4 or 8, the narrowest that holds every value), then every value as a w-byte
 *   big-endian two's-complement integer. A trace leaf (and a lookup table entry) is keccak256(int_pack(values)).
 * - a positional Merkle tree of fixed depth, zero-padded, node = keccak256(left || right); bit i of a leaf's index
 *   says whether the node at level i is a right child.
 */
library TraceCodec {
    error TraceCodecMalformed();

    /// @dev The width and the element count of int_pack bytes (widths 1, 2, 4 and 8 are accepted; BoundaryCodec's
    /// tensors, widths 1, 2 and 4, decode too). Reverts with {TraceCodecMalformed} on a bad width or a ragged length.
    function header(bytes calldata buf) internal pure returns (uint256 width, uint256 count) {
        if (buf.length == 0) revert TraceCodecMalformed();
        width = uint8(buf[0]);
        if (width != 1 && width != 2 && width != 4 && width != 8) revert TraceCodecMalformed();
        uint256 body = buf.length - 1;
        if (body % width != 0) revert TraceCodecMalformed();
        count = body / width;
    }

    /// @dev Element `i` of int_pack bytes of width `width` (the caller checks `i` against the count).
    function at(bytes calldata buf, uint256 width, uint256 i) internal pure returns (int256 v) {
        assembly ("memory-safe") {
            v := sar(sub(256, shl(3, width)), calldataload(add(add(buf.offset, 1), mul(i, width))))
        }
    }

    /// @dev Elements [start, start + count) of int_pack bytes of width `width` into out[pos..] (bounds checked by the
    /// caller).
    function copyInto(bytes calldata buf, uint256 width, uint256 start, uint256 count, int256[] memory out, uint256 pos)
        internal
        pure
    {
        assembly ("memory-safe") {
            let shift := sub(256, shl(3, width))
            let src := add(add(buf.offset, 1), mul(start, width))
            let dst := add(add(out, 0x20), shl(5, pos))
            for { let i := 0 } lt(i, count) { i := add(i, 1) } {
                mstore(add(dst, shl(5, i)), sar(shift, calldataload(add(src, mul(i, width)))))
            }
        }
    }

    /// @dev Every element of int_pack bytes; reverts with {TraceCodecMalformed} when malformed.
    function unpack(bytes calldata buf) internal pure returns (int256[] memory out) {
        (uint256 width, uint256 count) = header(buf);
        out = new int256[](count);
        copyInto(buf, width, 0, count, out, 0);
    }

    /// @dev int_pack(values), canonical (the narrowest width); `fits` is false when a value is outside int64, which no
    /// int_pack holds.
    function pack(int256[] memory values) internal pure returns (bool fits, bytes memory out) {
        int256 lo;
        int256 hi;
        uint256 n = values.length;
        assembly ("memory-safe") {
            let p := add(values, 0x20)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let v := mload(add(p, shl(5, i)))
                if slt(v, lo) { lo := v }
                if sgt(v, hi) { hi := v }
            }
        }
        uint256 width;
        if (lo >= -(1 << 7) && hi < 1 << 7) width = 1;
        else if (lo >= -(1 << 15) && hi < 1 << 15) width = 2;
        else if (lo >= -(1 << 31) && hi < 1 << 31) width = 4;
        else if (lo >= -(1 << 63) && hi < 1 << 63) width = 8;
        else return (false, out);
        fits = true;
        assembly ("memory-safe") {
            out := mload(0x40)
            let len := add(1, mul(n, width))
            mstore(out, len)
            let dst := add(out, 0x21)
            mstore8(add(out, 0x20), width)
            let shift := sub(256, shl(3, width))
            let src := add(values, 0x20)
            // each store writes 32 bytes; the next one overwrites the zero tail, and 32 bytes of slack are reserved
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                mstore(add(dst, mul(i, width)), shl(shift, mload(add(src, shl(5, i)))))
            }
            mstore(0x40, and(add(add(dst, add(mul(n, width), 32)), 31), not(31)))
        }
    }

    /// @dev keccak256(int_pack(values)); `fits` false (and no hash) when a value is outside int64.
    function packHash(int256[] memory values) internal pure returns (bool fits, bytes32 h) {
        bytes memory packed;
        (fits, packed) = pack(values);
        if (fits) h = keccak256(packed);
    }

    /// @dev keccak256(int_pack([v])), a lookup table entry; `fits` false when v is outside int64.
    function entryHash(int256 v) internal pure returns (bool fits, bytes32 h) {
        int256[] memory one = new int256[](1);
        one[0] = v;
        return packHash(one);
    }

    /// @dev Does `leaf` sit at `index` under `root` in a tree of `proof.length` levels (the positional rule of
    /// `trace_codec.merkle_verify`)?
    function verify(bytes32 leaf, uint256 index, bytes32[] calldata proof, bytes32 root) internal pure returns (bool) {
        uint256 depth = proof.length;
        if (depth < 256 && index >> depth != 0) return false;
        bytes32 node = leaf;
        for (uint256 i = 0; i < depth; ++i) {
            bytes32 sib = proof[i];
            assembly ("memory-safe") {
                switch and(index, 1)
                case 0 {
                    mstore(0, node)
                    mstore(0x20, sib)
                }
                default {
                    mstore(0, sib)
                    mstore(0x20, node)
                }
                node := keccak256(0, 0x40)
            }
            index >>= 1;
        }
        return node == root;
    }

    /// @dev The depth of a trace or program tree of `n` leaves: max(1, ceil(log2 n)).
    function depthOf(uint256 n) internal pure returns (uint256 depth) {
        depth = 1;
        while (1 << depth < n) ++depth;
    }
}
