// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {AIOracleCallbackReceiver} from "./AIOracleCallbackReceiver.sol";
import {IAIOracle} from "./IAIOracle.sol";
import {IHalo2Verifier} from "./IHalo2Verifier.sol";

/**
 * @title AIOracle
 * @dev An OAO-shaped AI oracle whose results are verified by the opp/ai hybrid: a model is a chain of segments linked
 * by Poseidon commitments C_0..C_n (C_0 is the request input), each segment `zk` (its ezkl proof is checked when the
 * result is submitted) or `op` (optimistic: during the challenge window anyone can slash the submitter with a fraud
 * proof, a valid ezkl proof of that segment from the claimed C_{k-1} whose output contradicts the claim). The last
 * segment's output y is public: fixed-point integers at the model's scale, as BN254 field elements (negative v is
 * p - |v|). After the window, `finalize` pays the model's share of the fee to its RevShareToken, credits the operator
 * share and the bond to the submitter, and delivers y to the callback with bounded gas. Assumes each registered
 * verifier is the ezkl verifier of its segment (the plan hash binds them); all ETH owed to accounts is pulled.
 */
contract AIOracle is IAIOracle, ReentrancyGuardTransient {
    enum Status {
        None,
        Pending,
        Submitted,
        Finalized,
        Cancelled
    }

    /// @dev One segment of a model's plan: `zk` segments are proven at submit; every segment has a verifier.
    struct Segment {
        address verifier;
        bool zk;
    }

    /// @dev The registered, immutable description of a model.
    struct ModelSpec {
        bytes32 onnxHash;
        bytes32 planHash;
        address payable revShareToken;
        uint96 fee;
        uint16 operatorShareBps;
        uint32 challengeWindow;
        uint32 outputSize;
        uint8 scale;
    }

    /// @dev A request, packed in three slots. `deadline`: while Pending, when the requester may cancel; while
    /// Submitted, the end of the challenge window.
    struct Request {
        address requester;
        uint32 modelId;
        uint40 deadline;
        uint24 gasLimit;
        address callbackContract;
        uint88 fee;
        Status status;
        uint256 input;
    }

    /// @dev A submitted result: the bond, every boundary commitment C_0..C_n, and the public output y.
    struct Claim {
        address submitter;
        uint96 bond;
        uint256[] commitments;
        int256[] output;
    }

    /// @notice The BN254 scalar field modulus: every proof instance is an integer below it.
    uint256 public constant FIELD_MODULUS =
        21888242871839275222246405745257275088548364400416034343698204186575808495617;
    uint256 private constant _HALF_FIELD = (FIELD_MODULUS - 1) / 2;
    uint256 public constant BPS = 10_000;
    uint256 public constant MAX_SEGMENTS = 64;
    uint256 public constant MAX_OUTPUT_SIZE = 1024;
    uint256 public constant MAX_CALLBACK_GAS = 10_000_000;
    /// @dev Gas the revenue push to a RevShareToken may use; a token that needs more is credited instead.
    uint256 private constant _TOKEN_PUSH_GAS = 50_000;
    /// @dev Gas kept for the work after the callback returns.
    uint256 private constant _AFTER_CALLBACK_GAS = 10_000;

    /// @notice Smallest bond a submission must carry.
    uint256 public immutable minBond;
    /// @notice Seconds after which the requester may cancel a request that has no submitted result.
    uint256 public immutable requestTimeout;
    /// @notice Wei per unit of callback gas added to the model fee; it goes to the operator.
    uint256 public immutable callbackGasPrice;

    uint256 public modelCount;
    uint256 public requestCount;
    mapping(uint256 modelId => ModelSpec) private _models;
    mapping(uint256 modelId => Segment[]) private _segments;
    mapping(uint256 requestId => Request) private _requests;
    mapping(uint256 requestId => bytes) private _callbackData;
    mapping(uint256 requestId => Claim) private _claims;
    /// @notice ETH owed to each account, pulled with {withdraw} or {withdrawFor}.
    mapping(address account => uint256) public credits;

    event ModelRegistered(
        uint256 indexed modelId,
        address indexed registrant,
        bytes32 onnxHash,
        bytes32 planHash,
        address revShareToken,
        uint256 fee
    );
    event AIResultSubmitted(
        uint256 indexed requestId,
        address indexed submitter,
        uint256 bond,
        uint256[] commitments,
        int256[] output,
        bytes boundaryData
    );
    event AIResultChallenged(uint256 indexed requestId, uint256 segment, address indexed challenger, uint256 slashed);
    event AIRequestFinalized(uint256 indexed requestId, uint256 modelRevenue, uint256 operatorPayout);
    event AICallbackFailed(uint256 indexed requestId);
    event AIRequestCancelled(uint256 indexed requestId);
    event Credited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);

    error AIOracleInvalidSegments(uint256 count);
    error AIOracleInvalidVerifier(uint256 segment, address verifier);
    error AIOracleInvalidRevShareToken();
    error AIOracleInvalidOperatorShare(uint256 bps);
    error AIOracleInvalidOutputSize(uint256 size);
    error AIOracleMissingChallengeWindow();
    error AIOracleTooManyModels();
    error AIOracleUnknownModel(uint256 modelId);
    error AIOracleInvalidInput();
    error AIOracleGasLimitTooHigh(uint256 gasLimit, uint256 max);
    error AIOracleUnderpaid(uint256 required, uint256 paid);
    error AIOracleFeeTooHigh(uint256 paid);
    error AIOracleUnexpectedStatus(uint256 requestId, Status status);
    error AIOracleBondTooLow(uint256 required, uint256 paid);
    error AIOracleInvalidCommitments(uint256 requestId);
    error AIOracleInvalidOutput(uint256 requestId);
    error AIOracleWrongProofCount(uint256 expected, uint256 given);
    error AIOracleMissingBoundaryData(uint256 requestId);
    error AIOracleInvalidProof(uint256 requestId, uint256 segment);
    error AIOracleChallengeWindowClosed(uint256 requestId, uint256 deadline);
    error AIOracleChallengeWindowOpen(uint256 requestId, uint256 deadline);
    error AIOracleInvalidSegment(uint256 requestId, uint256 segment);
    error AIOracleInvalidInstances(uint256 requestId);
    error AIOracleChallengeInputMismatch(uint256 requestId, uint256 expected, uint256 given);
    error AIOracleClaimNotContradicted(uint256 requestId, uint256 segment);
    error AIOracleNotRequester(uint256 requestId, address caller);
    error AIOracleCancelTooEarly(uint256 requestId, uint256 allowedAt);
    error AIOracleInsufficientGas(uint256 needed, uint256 left);
    error AIOracleNothingToWithdraw(address account);

    constructor(uint256 minBond_, uint256 requestTimeout_, uint256 callbackGasPrice_) {
        minBond = minBond_;
        requestTimeout = requestTimeout_;
        callbackGasPrice = callbackGasPrice_;
    }

    // ------------------------------------------------------------------ models

    /**
     * @notice Register a model: its ONNX and plan hashes, its segments in order with their verifiers, the fee, the
     * RevShareToken that receives the model's revenue, the operator's share of the fee, the challenge window and the
     * output format (size and fixed-point scale). Anyone may register; a registration never changes.
     * @dev Reverts with {AIOracleInvalidSegments}, {AIOracleInvalidVerifier} (no code), {AIOracleInvalidRevShareToken},
     * {AIOracleInvalidOperatorShare}, {AIOracleInvalidOutputSize} or {AIOracleMissingChallengeWindow} (a plan with an
     * op segment needs a window). Emits {ModelRegistered}.
     * @return modelId the id of the model (ids start at 1)
     */
    function registerModel(ModelSpec calldata spec, Segment[] calldata segments) external returns (uint256 modelId) {
        if (segments.length == 0 || segments.length > MAX_SEGMENTS) revert AIOracleInvalidSegments(segments.length);
        bool hasOp;
        for (uint256 k = 0; k < segments.length; ++k) {
            if (segments[k].verifier.code.length == 0) revert AIOracleInvalidVerifier(k + 1, segments[k].verifier);
            if (!segments[k].zk) hasOp = true;
        }
        if (spec.revShareToken == address(0)) revert AIOracleInvalidRevShareToken();
        if (spec.operatorShareBps > BPS) revert AIOracleInvalidOperatorShare(spec.operatorShareBps);
        if (spec.outputSize == 0 || spec.outputSize > MAX_OUTPUT_SIZE) revert AIOracleInvalidOutputSize(spec.outputSize);
        if (hasOp && spec.challengeWindow == 0) revert AIOracleMissingChallengeWindow();
        if (modelCount >= type(uint32).max) revert AIOracleTooManyModels();

        modelId = ++modelCount;
        _models[modelId] = spec;
        Segment[] storage stored = _segments[modelId];
        for (uint256 k = 0; k < segments.length; ++k) {
            stored.push(segments[k]);
        }
        emit ModelRegistered(modelId, msg.sender, spec.onnxHash, spec.planHash, spec.revShareToken, spec.fee);
    }

    // ---------------------------------------------------------------- requests

    /**
     * @notice Request an inference. `input` is the ABI-encoded commitment C_0 (uint256) of the private input, which
     * goes to the oracle node off-chain. Pay at least {estimateFee}; anything above it is a tip to the operator.
     * @dev Reverts with {AIOracleUnknownModel}, {AIOracleInvalidInput} (not 32 bytes, or not a field element),
     * {AIOracleGasLimitTooHigh} or {AIOracleUnderpaid}. Emits {AICallbackRequest}.
     */
    function requestCallback(
        uint256 modelId,
        bytes calldata input,
        address callbackContract,
        uint64 gasLimit,
        bytes calldata callbackData
    ) external payable returns (uint256 requestId) {
        if (_models[modelId].revShareToken == address(0)) revert AIOracleUnknownModel(modelId);
        if (input.length != 32 || uint256(bytes32(input)) >= FIELD_MODULUS) revert AIOracleInvalidInput();
        if (gasLimit > MAX_CALLBACK_GAS) revert AIOracleGasLimitTooHigh(gasLimit, MAX_CALLBACK_GAS);
        uint256 required = estimateFee(modelId, gasLimit);
        if (msg.value < required) revert AIOracleUnderpaid(required, msg.value);
        if (msg.value > type(uint88).max) revert AIOracleFeeTooHigh(msg.value);

        requestId = ++requestCount;
        _requests[requestId] = Request({
            requester: msg.sender,
            modelId: uint32(modelId),
            deadline: uint40(block.timestamp + requestTimeout),
            gasLimit: uint24(gasLimit),
            callbackContract: callbackContract,
            fee: uint88(msg.value),
            status: Status.Pending,
            input: uint256(bytes32(input))
        });
        if (callbackData.length > 0) _callbackData[requestId] = callbackData;
        emit AICallbackRequest(msg.sender, requestId, modelId, input, callbackContract, gasLimit, callbackData);
    }

    /// @notice The model fee plus `gasLimit` callback gas at `callbackGasPrice`.
    function estimateFee(uint256 modelId, uint256 gasLimit) public view returns (uint256) {
        return _models[modelId].fee + gasLimit * callbackGasPrice;
    }

    /**
     * @notice Give up a request that has no submitted result `requestTimeout` seconds after it was made (or reopened
     * by a challenge); its fee is credited back to the requester.
     * @dev Reverts with {AIOracleNotRequester}, {AIOracleUnexpectedStatus} or {AIOracleCancelTooEarly}.
     * Emits {AIRequestCancelled} and {Credited}.
     */
    function cancel(uint256 requestId) external {
        Request storage r = _requests[requestId];
        if (r.requester != msg.sender) revert AIOracleNotRequester(requestId, msg.sender);
        if (r.status != Status.Pending) revert AIOracleUnexpectedStatus(requestId, r.status);
        if (block.timestamp < r.deadline) revert AIOracleCancelTooEarly(requestId, r.deadline);

        uint256 fee = r.fee;
        r.status = Status.Cancelled;
        r.fee = 0;
        emit AIRequestCancelled(requestId);
        _credit(msg.sender, fee);
    }

    // ------------------------------------------------------------ submissions

    /**
     * @notice Submit the result of a pending request with a bond of at least `minBond`: every boundary commitment
     * C_0..C_n (C_0 must be the request input; C_n, the commitment of y, is recorded for watchers and binds nothing),
     * the public output y (fixed-point integers at the model's scale), one ezkl proof per zk segment in segment order,
     * and the op boundary tensors for data availability (published in the event; required when the plan has an op
     * segment). Each zk proof is verified now against instances [C_{k-1}, C_k], or [C_{n-1}, y...] for the last segment.
     * @dev Reverts with {AIOracleUnexpectedStatus}, {AIOracleBondTooLow}, {AIOracleInvalidCommitments},
     * {AIOracleInvalidOutput}, {AIOracleWrongProofCount}, {AIOracleMissingBoundaryData} or {AIOracleInvalidProof}.
     * Emits {AIResultSubmitted}; the challenge window starts now.
     */
    function submit(
        uint256 requestId,
        uint256[] calldata commitments,
        int256[] calldata output,
        bytes[] calldata zkProofs,
        bytes calldata boundaryData
    ) external payable nonReentrant {
        Request storage r = _requests[requestId];
        if (r.status != Status.Pending) revert AIOracleUnexpectedStatus(requestId, r.status);
        if (msg.value < minBond || msg.value > type(uint96).max) revert AIOracleBondTooLow(minBond, msg.value);
        _checkClaim(requestId, r, commitments, output, zkProofs.length, boundaryData.length);
        _verifyZkSegments(requestId, _segments[r.modelId], commitments, output, zkProofs);

        Claim storage c = _claims[requestId];
        c.submitter = msg.sender;
        c.bond = uint96(msg.value);
        c.commitments = commitments;
        c.output = output;
        r.status = Status.Submitted;
        r.deadline = uint40(block.timestamp + _models[r.modelId].challengeWindow);
        emit AIResultSubmitted(requestId, msg.sender, msg.value, commitments, output, boundaryData);
    }

    /**
     * @notice Prove a submitted result wrong during its challenge window: `proof` is a valid ezkl proof of segment `k`
     * whose input instance is the claimed C_{k-1} and whose output (C_k, or y for the last segment) differs from the
     * claim. The bond is credited to the challenger, the fee is credited back to the requester, and the request is
     * reopened so that a correct result can be submitted.
     * @dev Reverts with {AIOracleUnexpectedStatus}, {AIOracleChallengeWindowClosed}, {AIOracleInvalidSegment},
     * {AIOracleInvalidInstances} (wrong length for the segment, or not field elements),
     * {AIOracleChallengeInputMismatch} (a proof from another input), {AIOracleClaimNotContradicted} (the proof agrees
     * with the claim) or {AIOracleInvalidProof}. Emits {AIResultChallenged} and {Credited}.
     */
    function challenge(uint256 requestId, uint256 k, bytes calldata proof, uint256[] calldata instances)
        external
        nonReentrant
    {
        Request storage r = _requests[requestId];
        if (r.status != Status.Submitted) revert AIOracleUnexpectedStatus(requestId, r.status);
        if (block.timestamp >= r.deadline) revert AIOracleChallengeWindowClosed(requestId, r.deadline);
        Segment[] storage segments = _segments[r.modelId];
        uint256 n = segments.length;
        if (k == 0 || k > n) revert AIOracleInvalidSegment(requestId, k);
        Claim storage c = _claims[requestId];
        if (instances.length != (k < n ? 2 : 1 + c.output.length)) revert AIOracleInvalidInstances(requestId);
        for (uint256 i = 0; i < instances.length; ++i) {
            if (instances[i] >= FIELD_MODULUS) revert AIOracleInvalidInstances(requestId);
        }
        if (instances[0] != c.commitments[k - 1]) {
            revert AIOracleChallengeInputMismatch(requestId, c.commitments[k - 1], instances[0]);
        }
        if (!_contradicts(c, k, n, instances)) revert AIOracleClaimNotContradicted(requestId, k);
        if (!_verify(segments[k - 1].verifier, proof, instances)) revert AIOracleInvalidProof(requestId, k);

        uint256 bond = c.bond;
        uint256 fee = r.fee;
        address requester = r.requester;
        delete _claims[requestId];
        r.status = Status.Pending;
        r.fee = 0;
        r.deadline = uint40(block.timestamp + requestTimeout);
        emit AIResultChallenged(requestId, k, msg.sender, bond);
        _credit(msg.sender, bond);
        _credit(requester, fee);
    }

    /**
     * @notice Finalize a submitted result after its challenge window: the model's share of the fee goes to its
     * RevShareToken (credited to it instead if it refuses the transfer), the rest of the fee and the bond are credited
     * to the submitter, and the output is delivered to the callback contract with the requested gas. A callback that
     * reverts, runs out of gas or tries to re-enter does not stop finalization; its return data is never copied.
     * @dev Reverts with {AIOracleUnexpectedStatus} (not submitted, or already final), {AIOracleChallengeWindowOpen},
     * or {AIOracleInsufficientGas} when the transaction cannot give the callback its gas limit.
     * Emits {AIRequestFinalized}, {Credited}, {AICallbackResult}, and {AICallbackFailed} if the callback failed.
     */
    function finalize(uint256 requestId) external nonReentrant {
        Request storage r = _requests[requestId];
        if (r.status != Status.Submitted) revert AIOracleUnexpectedStatus(requestId, r.status);
        if (block.timestamp < r.deadline) revert AIOracleChallengeWindowOpen(requestId, r.deadline);

        ModelSpec storage model = _models[r.modelId];
        Claim storage c = _claims[requestId];
        uint256 fee = r.fee;
        uint256 modelRevenue = Math.min(fee, model.fee) * (BPS - model.operatorShareBps) / BPS;
        uint256 operatorPayout = fee - modelRevenue + c.bond;
        address payable token = model.revShareToken;
        r.status = Status.Finalized;
        emit AIRequestFinalized(requestId, modelRevenue, operatorPayout);
        _credit(c.submitter, operatorPayout);
        bytes memory output = abi.encode(c.output, uint256(model.scale));
        emit AICallbackResult(r.requester, requestId, msg.sender, output);

        if (modelRevenue > 0) {
            // A token that refuses the push (or needs more gas) must not block finalization: it is credited instead,
            // the only state change after an external call here, safe under the reentrancy guard.
            (bool paid,) = token.call{value: modelRevenue, gas: _TOKEN_PUSH_GAS}("");
            if (!paid) _credit(token, modelRevenue);
        }
        if (r.callbackContract != address(0)) {
            if (!_deliver(requestId, r.callbackContract, r.gasLimit, output)) emit AICallbackFailed(requestId);
        }
    }

    /**
     * @notice Send the caller everything credited to it.
     * @dev Reverts with {AIOracleNothingToWithdraw}. Emits {Withdrawn}.
     */
    function withdraw() external nonReentrant {
        _withdraw(payable(msg.sender));
    }

    /**
     * @notice Send `account` everything credited to it; anyone may trigger it (for accounts that cannot call, such
     * as a RevShareToken that refused a push).
     * @dev Reverts with {AIOracleNothingToWithdraw}. Emits {Withdrawn}.
     */
    function withdrawFor(address payable account) external nonReentrant {
        _withdraw(account);
    }

    // ------------------------------------------------------------------- views

    /// @notice Whether the result of `requestId` is final.
    function isFinalized(uint256 requestId) external view returns (bool) {
        return _requests[requestId].status == Status.Finalized;
    }

    /// @notice The registration of `modelId`.
    function getModel(uint256 modelId) external view returns (ModelSpec memory spec, Segment[] memory segments) {
        return (_models[modelId], _segments[modelId]);
    }

    /// @notice The request `requestId` and its callback data.
    function getRequest(uint256 requestId) external view returns (Request memory request, bytes memory callbackData) {
        return (_requests[requestId], _callbackData[requestId]);
    }

    /// @notice The current submitted (or final) result of `requestId`; empty when there is none.
    function getClaim(uint256 requestId) external view returns (Claim memory) {
        return _claims[requestId];
    }

    /// @notice The output as the callback receives it, `abi.encode(int256[] values, uint256 scale)`; empty when no
    /// result is submitted.
    function getOutput(uint256 requestId) external view returns (bytes memory) {
        Claim storage c = _claims[requestId];
        if (c.submitter == address(0)) return "";
        return abi.encode(c.output, uint256(_models[_requests[requestId].modelId].scale));
    }

    /// @notice `v` as a BN254 field element, the way ezkl encodes fixed-point integers in proof instances.
    function toField(int256 v) public pure returns (uint256) {
        return v >= 0 ? uint256(v) : FIELD_MODULUS - uint256(-v);
    }

    // ---------------------------------------------------------------- internal

    /// @dev The shape checks of a submission: C_0 is the request input, everything is a field element, one proof per
    /// zk segment, boundary data when there is an op segment.
    function _checkClaim(
        uint256 requestId,
        Request storage r,
        uint256[] calldata commitments,
        int256[] calldata output,
        uint256 proofCount,
        uint256 boundaryDataLength
    ) private view {
        Segment[] storage segments = _segments[r.modelId];
        uint256 n = segments.length;
        if (commitments.length != n + 1 || commitments[0] != r.input) revert AIOracleInvalidCommitments(requestId);
        for (uint256 i = 1; i <= n; ++i) {
            if (commitments[i] >= FIELD_MODULUS) revert AIOracleInvalidCommitments(requestId);
        }
        if (output.length != _models[r.modelId].outputSize) revert AIOracleInvalidOutput(requestId);
        for (uint256 i = 0; i < output.length; ++i) {
            if (output[i] > int256(_HALF_FIELD) || output[i] < -int256(_HALF_FIELD)) revert AIOracleInvalidOutput(requestId);
        }
        uint256 zkCount;
        for (uint256 k = 0; k < n; ++k) {
            if (segments[k].zk) ++zkCount;
        }
        if (proofCount != zkCount) revert AIOracleWrongProofCount(zkCount, proofCount);
        if (zkCount < n && boundaryDataLength == 0) revert AIOracleMissingBoundaryData(requestId);
    }

    /// @dev Verify the proof of every zk segment against the instances the claim implies.
    function _verifyZkSegments(
        uint256 requestId,
        Segment[] storage segments,
        uint256[] calldata commitments,
        int256[] calldata output,
        bytes[] calldata zkProofs
    ) private {
        uint256 n = segments.length;
        uint256 proofIndex;
        for (uint256 k = 1; k <= n; ++k) {
            if (!segments[k - 1].zk) continue;
            uint256[] memory instances = _claimedInstances(k, n, commitments, output);
            if (!_verify(segments[k - 1].verifier, zkProofs[proofIndex++], instances)) {
                revert AIOracleInvalidProof(requestId, k);
            }
        }
    }

    /// @dev The instances a proof of segment k must have if the claim is right.
    function _claimedInstances(uint256 k, uint256 n, uint256[] calldata commitments, int256[] calldata output)
        private
        pure
        returns (uint256[] memory instances)
    {
        if (k < n) {
            instances = new uint256[](2);
            instances[1] = commitments[k];
        } else {
            instances = new uint256[](1 + output.length);
            for (uint256 i = 0; i < output.length; ++i) {
                instances[1 + i] = toField(output[i]);
            }
        }
        instances[0] = commitments[k - 1];
    }

    /// @dev Whether the output instances of a segment-k proof differ from the claim.
    function _contradicts(Claim storage c, uint256 k, uint256 n, uint256[] calldata instances)
        private
        view
        returns (bool)
    {
        if (k < n) return instances[1] != c.commitments[k];
        for (uint256 i = 0; i < c.output.length; ++i) {
            if (instances[1 + i] != toField(c.output[i])) return true;
        }
        return false;
    }

    /// @dev Run an ezkl verifier; a revert counts as rejection.
    function _verify(address verifier, bytes calldata proof, uint256[] memory instances) private returns (bool) {
        try IHalo2Verifier(verifier).verifyProof(proof, instances) returns (bool ok) {
            return ok;
        } catch {
            return false;
        }
    }

    /// @dev Call the callback with exactly `gasLimit` gas and without copying its return data.
    function _deliver(uint256 requestId, address target, uint256 gasLimit, bytes memory output) private returns (bool ok) {
        bytes memory payload = abi.encodeCall(
            AIOracleCallbackReceiver.aiOracleCallback, (requestId, output, _callbackData[requestId])
        );
        // EIP-150 forwards at most 63/64 of what is left: make sure the callback can get all of gasLimit, so that a
        // finalizer cannot starve it by sending a transaction with too little gas.
        uint256 needed = gasLimit + gasLimit / 63 + _AFTER_CALLBACK_GAS;
        if (gasleft() < needed) revert AIOracleInsufficientGas(needed, gasleft());
        assembly ("memory-safe") {
            ok := call(gasLimit, target, 0, add(payload, 0x20), mload(payload), 0, 0)
        }
    }

    function _credit(address account, uint256 amount) private {
        if (amount == 0) return;
        credits[account] += amount;
        emit Credited(account, amount);
    }

    function _withdraw(address payable account) private {
        uint256 amount = credits[account];
        if (amount == 0) revert AIOracleNothingToWithdraw(account);
        credits[account] = 0;
        emit Withdrawn(account, amount);
        Address.sendValue(account, amount);
    }
}
