// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title AIOracleRegistry
 * @dev The models an {AIOracle} serves. A model is a chain of segments S_1..S_n between boundary tensors 0..n: each
 * segment has its ezkl verifier and a mode (`zk`: its proof is posted with every result; `op`: optimistic, proven only
 * in a dispute). A boundary is either hashed (size 0: a Poseidon commitment, allowed only for a private model input
 * and between two zk segments) or public (its element count: the tensor itself is published with the result, so
 * anyone can re-execute the op segments next to it). The output y is always public. Anyone may register; a
 * registration never changes, and its {registrationDigest} (spec, segments, boundary sizes and the code hash of every
 * verifier) is what nodes compare with the plan they compiled before they serve it.
 * A model may be a greedy generation model of N = `genTokens` tokens: its input is T token ids (public, T >= N), its
 * output the N generated ids, and a request carries only the prompt, its first P = T - N + 1 ids (see {AIOracle}).
 */
abstract contract AIOracleRegistry {
    /// @dev One segment: its ezkl verifier and whether its proof is posted with every result (zk) or only given in a
    /// dispute (op). An op segment may also register its step program (`programRoot`: the Merkle root of its step
    /// descriptors, `programSteps` of them; see `imo/proving/trace_codec.py`): a challenge without a whole-segment proof
    /// then opens a bisection game over its trace. Zero: no program (whole-segment fraud proofs only). An op segment
    /// with a program may have no verifier (`verifier` zero: game-only, for a segment too large for one ezkl proof);
    /// its code hash in the digest is then zero.
    struct Segment {
        address verifier;
        bool zk;
        bytes32 programRoot;
        uint32 programSteps;
    }

    /// @dev The registered, immutable economics and format of a model. `challengeWindow` 0 means every segment is zk
    /// and all proofs are verified at submit (instant finality); otherwise proofs are checked lazily. `genTokens`
    /// (0: an ordinary model) makes it a generation model of that many tokens.
    struct ModelSpec {
        bytes32 onnxHash;
        bytes32 planHash;
        address payable revShareToken;
        uint96 fee;
        uint96 bond;
        uint16 operatorShareBps;
        uint32 challengeWindow;
        uint32 responseWindow;
        uint8 scale;
        uint16 genTokens;
    }

    uint256 public constant BPS = 10_000;
    uint256 public constant MAX_SEGMENTS = 64;
    /// @notice Largest public boundary (elements) and output; larger tensors need the bisection game.
    uint256 public constant MAX_BOUNDARY_SIZE = 1 << 16;
    uint256 public constant MAX_OUTPUT_SIZE = 4096;

    /// @notice Smallest bond a model may ask of submitters and challengers.
    uint256 public immutable minBond;

    uint256 public modelCount;
    mapping(uint256 modelId => ModelSpec) internal _models;
    mapping(uint256 modelId => Segment[]) internal _segments;
    mapping(uint256 modelId => uint32[]) internal _boundarySizes;
    mapping(uint256 modelId => bytes32) internal _digests;

    event ModelRegistered(uint256 indexed modelId, address indexed registrant, bytes32 indexed digest, bytes32 planHash);

    error AIOracleInvalidSegments(uint256 count);
    error AIOracleInvalidVerifier(uint256 segment, address verifier);
    error AIOracleInvalidProgram(uint256 segment);
    error AIOracleInvalidRevShareToken();
    error AIOracleInvalidOperatorShare(uint256 bps);
    error AIOracleInvalidBoundary(uint256 boundary, uint256 size);
    error AIOracleInvalidWindows(uint256 challengeWindow, uint256 responseWindow);
    error AIOracleInvalidGeneration(uint256 genTokens, uint256 boundary, uint256 size);
    error AIOracleBondTooLow(uint256 required, uint256 given);
    error AIOracleTooManyModels();
    error AIOracleUnknownModel(uint256 modelId);

    constructor(uint256 minBond_) {
        minBond = minBond_;
    }

    /**
     * @notice Register a model: its spec, its segments in order and the size of each boundary 0..n (0: hashed).
     * @dev Reverts with {AIOracleInvalidSegments}, {AIOracleInvalidVerifier} (no code; zero is allowed only for a
     * game-only op segment, one with a step program), {AIOracleInvalidProgram} (a
     * program on a zk segment, or a root without steps or steps without a root), {AIOracleInvalidRevShareToken},
     * {AIOracleInvalidOperatorShare}, {AIOracleInvalidBoundary} (a hashed boundary next to an op segment, a hashed
     * output, or a size over the limit), {AIOracleInvalidWindows} (an op segment without challenge and response
     * windows), {AIOracleInvalidGeneration} (a generation model whose input is hashed or shorter than `genTokens`, or
     * whose output is not `genTokens` ids) or {AIOracleBondTooLow}. Emits {ModelRegistered}.
     * @return modelId the id of the model (ids start at 1)
     */
    function registerModel(ModelSpec calldata spec, Segment[] calldata segments, uint32[] calldata boundarySizes)
        external
        returns (uint256 modelId)
    {
        uint256 n = segments.length;
        if (n == 0 || n > MAX_SEGMENTS) revert AIOracleInvalidSegments(n);
        if (boundarySizes.length != n + 1) revert AIOracleInvalidBoundary(boundarySizes.length, 0);
        bool hasOp;
        for (uint256 k = 0; k < n; ++k) {
            Segment calldata seg = segments[k];
            bool gameOnly = seg.verifier == address(0) && !seg.zk && seg.programRoot != 0;
            if (!gameOnly && seg.verifier.code.length == 0) revert AIOracleInvalidVerifier(k + 1, seg.verifier);
            if (seg.programRoot == 0 ? seg.programSteps != 0 : (seg.zk || seg.programSteps == 0)) {
                revert AIOracleInvalidProgram(k + 1);
            }
            if (!seg.zk) hasOp = true;
        }
        uint256 gen = spec.genTokens;
        for (uint256 b = 0; b <= n; ++b) {
            uint256 size = boundarySizes[b];
            bool nextToOp = (b > 0 && !segments[b - 1].zk) || (b < n && !segments[b].zk);
            bool tooLarge = size > (b == n ? MAX_OUTPUT_SIZE : MAX_BOUNDARY_SIZE);
            if (tooLarge || (size == 0 && (nextToOp || b == n))) revert AIOracleInvalidBoundary(b, size);
            // a generation model's input holds at least its tokens (so it is public) and its output is exactly them
            if (gen != 0 && (b == 0 ? size < gen : b == n && size != gen)) revert AIOracleInvalidGeneration(gen, b, size);
        }
        if (spec.revShareToken == address(0)) revert AIOracleInvalidRevShareToken();
        if (spec.operatorShareBps > BPS) revert AIOracleInvalidOperatorShare(spec.operatorShareBps);
        if (hasOp && (spec.challengeWindow == 0 || spec.responseWindow == 0)) {
            revert AIOracleInvalidWindows(spec.challengeWindow, spec.responseWindow);
        }
        if (spec.bond < minBond) revert AIOracleBondTooLow(minBond, spec.bond);
        if (modelCount >= type(uint32).max) revert AIOracleTooManyModels();

        modelId = ++modelCount;
        _models[modelId] = spec;
        _boundarySizes[modelId] = boundarySizes;
        Segment[] storage stored = _segments[modelId];
        bytes32[] memory codeHashes = new bytes32[](n);
        for (uint256 k = 0; k < n; ++k) {
            stored.push(segments[k]);
            if (segments[k].verifier != address(0)) codeHashes[k] = segments[k].verifier.codehash;
        }
        bytes32 digest = keccak256(abi.encode(spec, segments, boundarySizes, codeHashes));
        _digests[modelId] = digest;
        emit ModelRegistered(modelId, msg.sender, digest, spec.planHash);
    }

    /// @notice The registration of `modelId`: spec, segments, boundary sizes (0: hashed) and digest.
    function getModel(uint256 modelId)
        external
        view
        returns (ModelSpec memory spec, Segment[] memory segments, uint32[] memory boundarySizes, bytes32 digest)
    {
        return (_models[modelId], _segments[modelId], _boundarySizes[modelId], _digests[modelId]);
    }

    /// @notice keccak256(abi.encode(spec, segments, boundarySizes, verifier code hashes)) of `modelId` (a game-only
    /// segment's code hash: zero).
    function registrationDigest(uint256 modelId) external view returns (bytes32) {
        return _digests[modelId];
    }

    function _requireModel(uint256 modelId) internal view returns (ModelSpec storage model) {
        model = _models[modelId];
        if (model.revShareToken == address(0)) revert AIOracleUnknownModel(modelId);
    }
}
