// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title BoundaryCodec
 * @dev The on-chain form of a public boundary tensor, the same bytes `imo.proving.protocol.pack_tensor` writes: one
 * width byte w (1, 2 or 4) and then every element as a w-byte big-endian two's-complement integer (fixed-point values
 * at the model's scale). Several tensors are simply concatenated; their element counts come from the registration, so
 * any byte string that passes {skip} decodes to exactly one tensor sequence. Field elements follow ezkl: a negative
 * v is p - |v| in the BN254 scalar field.
 */
library BoundaryCodec {
    uint256 internal constant FIELD_MODULUS =
        21888242871839275222246405745257275088548364400416034343698204186575808495617;

    error BoundaryCodecMalformed(uint256 offset);

    /// @dev The offset just after a packed tensor of `size` elements that starts at `offset`; reverts with
    /// {BoundaryCodecMalformed} when the width byte is not 1, 2 or 4 or the data ends early.
    function skip(bytes calldata data, uint256 offset, uint256 size) internal pure returns (uint256) {
        if (offset >= data.length) revert BoundaryCodecMalformed(offset);
        uint256 width = uint8(data[offset]);
        if (width != 1 && width != 2 && width != 4) revert BoundaryCodecMalformed(offset);
        uint256 end = offset + 1 + size * width;
        if (end > data.length) revert BoundaryCodecMalformed(offset);
        return end;
    }

    /// @dev Whether `data` is exactly one packed tensor of `size` elements (a valid width byte, no bytes missing or
    /// trailing); unlike {skip} it never reverts.
    function isTensor(bytes calldata data, uint256 size) internal pure returns (bool) {
        if (data.length == 0) return false;
        uint256 width = uint8(data[0]);
        return (width == 1 || width == 2 || width == 4) && data.length == 1 + size * width;
    }

    /// @dev Whether `width` is the narrowest of 1, 2, 4 that holds every value, as `pack_tensor` chooses it: the one
    /// encoding of these values.
    function isNarrowest(int256[] memory values, uint256 width) internal pure returns (bool narrowest) {
        assembly ("memory-safe") {
            narrowest := eq(width, 1)
            let half := sub(shr(1, width), 1) // signextend's byte index for half the width (width 1: none, v unchanged)
            let end := add(values, shl(5, add(mload(values), 1)))
            for { let q := add(values, 0x20) } lt(q, end) { q := add(q, 0x20) } {
                let v := mload(q)
                // a value that does not fit in half the width needs this one
                if iszero(eq(signextend(half, v), v)) { narrowest := 1 }
            }
        }
    }

    /// @dev The `size` elements of the packed tensor at `offset`, as field elements.
    function toFields(bytes calldata data, uint256 offset, uint256 size) internal pure returns (uint256[] memory out) {
        int256[] memory values = toInts(data, offset, size);
        assembly ("memory-safe") {
            out := values
        }
        for (uint256 i = 0; i < size; ++i) {
            int256 v = values[i];
            out[i] = v >= 0 ? uint256(v) : FIELD_MODULUS - uint256(-v);
        }
    }

    /// @dev The `size` elements of the packed tensor at `offset`, as signed integers.
    function toInts(bytes calldata data, uint256 offset, uint256 size) internal pure returns (int256[] memory out) {
        skip(data, offset, size);
        uint256 width = uint8(data[offset]);
        uint256 shift = 256 - 8 * width;
        out = new int256[](size);
        uint256 start;
        assembly ("memory-safe") {
            start := add(add(data.offset, offset), 1)
        }
        for (uint256 i = 0; i < size; ++i) {
            int256 v;
            assembly ("memory-safe") {
                // the element's bytes at the top of the word, then an arithmetic shift sign-extends them
                v := sar(shift, calldataload(add(start, mul(i, width))))
            }
            out[i] = v;
        }
    }
}
