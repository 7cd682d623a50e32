// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// A stand-in for ezkl's verifier that is sound for a toy segment function, so honest and dishonest claims, valid and
/// tampered proofs behave as with real proofs at no proving cost. Instances are `nIn` input instances then `nOut`
/// output instances (as ezkl lays them out); output i must be toyOutput(salt, inputs, i). The "proof" is
/// keccak256(abi.encode(instances)). Like ezkl's verifier it reverts on a malformed proof and returns false otherwise.
/// `slack` > 0 models ezkl's rounding relation: output i may also be toyOutput + 1 (both answers verify). A hashed
/// output (one instance, a commitment) is a field element; a public one holds small signed values.
contract ToyVerifier {
    uint256 constant P = 21888242871839275222246405745257275088548364400416034343698204186575808495617;
    uint256 public immutable salt;
    uint256 public immutable nIn;
    uint256 public immutable nOut;
    uint256 public immutable slack;
    bool public immutable hashedOut;

    constructor(uint256 salt_, uint256 nIn_, uint256 nOut_, uint256 slack_, bool hashedOut_) {
        hashedOut = hashedOut_;
        salt = salt_;
        nIn = nIn_;
        nOut = nOut_;
        slack = slack_;
    }

    function verifyProof(bytes calldata proof, uint256[] calldata instances) external view returns (bool) {
        require(proof.length == 32 && bytes32(proof) == keccak256(abi.encode(instances)), "bad proof");
        if (instances.length != nIn + nOut) return false;
        bytes32 seed = keccak256(abi.encode(salt, instances[:nIn]));
        for (uint256 i = 0; i < nOut; ++i) {
            uint256 want = toyOutput(seed, i);
            uint256 got = instances[nIn + i];
            if (got != want && (slack == 0 || got != (want + 1) % P)) return false;
        }
        return true;
    }

    /// Output i of the toy function: a field element for a hashed output, else a small signed value.
    function toyOutput(bytes32 seed, uint256 i) public view returns (uint256) {
        uint256 h = uint256(keccak256(abi.encode(seed, i)));
        if (hashedOut) return h % P;
        int256 v = int256(h % 2001) - 1000;
        return v >= 0 ? uint256(v) : P - uint256(-v);
    }
}
