// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {AIOracleCallbackReceiver} from "./AIOracleCallbackReceiver.sol";
import {AIOracleRegistry} from "./AIOracleRegistry.sol";
import {BoundaryCodec} from "./BoundaryCodec.sol";
import {DisputeGame, GameSetup} from "./DisputeGame.sol";
import {IAIOracle} from "./IAIOracle.sol";
import {IHalo2Verifier} from "./IHalo2Verifier.sol";

/**
 * @title AIOracle
 * @dev An OAO-shaped AI oracle whose results are verified by the opp/ai hybrid (the chain-free rules live in
 * `imo/proving/protocol.py`). A submitter commits to a claim, then reveals it with a bond: every hashed boundary's
 * Poseidon commitment, every public boundary tensor (published in this transaction's calldata and bound by the claim
 * hash, so data availability is part of the claim), the output y and one ezkl proof per zk segment. During the
 * challenge window anyone may (a) show that a posted zk proof does not verify, which slashes at once, or (b) open a
 * dispute on an op segment with a valid ezkl proof that contradicts the claim; ezkl circuits are relations, so the
 * submitter may answer within the response window with a valid proof of its own claim (the claim stands and the
 * challenger's bond pays for the answer), and is slashed otherwise. A slashed bond is split between the challenger
 * and the model's RevShareToken (a self-challenge costs the cheater half); the fee stays escrowed and the request
 * reopens. Challenges are committed before they are revealed, so a copied transaction earns its sender nothing.
 * After the window `finalize` pays the model's revenue to its token, the operator share and bond to the submitter and
 * the callback gas to the finalizer, and delivers y. Every ETH amount owed is pulled with {withdraw}.
 * An op segment registered with a step program may instead be challenged without a proof: that opens a bisection
 * game in {disputeGame} between the submitter and the challenger, whose result ({settleGame}) slashes the claim or pays
 * the challenger's bond to the submitter. Any number of games may run on one segment and a won game settles nothing,
 * so a liar's own accomplice cannot shield its lie by opening (and losing) the only game.
 * A generation model (`genTokens` N > 0) is asked with its prompt only; a claim's input is prompt ‖ gen[0..N-2] and its
 * output gen[0..N-1]: a causal model's one forward pass over that input predicts all N greedy tokens (teacher forcing),
 * so the segments check the whole generation as one inference, and the contract binds the input to both.
 */
contract AIOracle is IAIOracle, AIOracleRegistry, ReentrancyGuardTransient {
    enum Status {
        None,
        Pending,
        Submitted,
        Finalized,
        Cancelled
    }

    /// @dev A request in three slots. `deadline`: while Pending, when the requester may cancel; while Submitted, the
    /// end of the challenge window. `input`: C_0 for a hashed input, keccak256 of the input bytes for a public one,
    /// and for a generation model keccak256 of the prompt's values as int256 words (whatever width packed them).
    struct Request {
        address requester;
        uint32 modelId;
        uint40 deadline;
        uint24 gasLimit;
        address callbackContract;
        uint88 fee;
        Status status;
        bytes32 input;
    }

    /// @dev A claim as submitted; see {hashClaim}. `proofs` holds one proof per zk segment in segment order.
    struct ClaimData {
        bytes input;
        uint256[] commitments;
        bytes data;
        bytes output;
        bytes[] proofs;
    }

    /// @dev The stored side of a submitted result. `settled` bit k-1: segment k was answered with a valid proof.
    /// `openDisputes` counts fraud-proof disputes and games; `serial` tells this submission from a later one.
    struct Claim {
        address submitter;
        uint96 bond;
        bytes32 claimHash;
        uint64 settled;
        uint16 openDisputes;
        uint64 serial;
    }

    /// @dev An open fraud-proof dispute on one op segment: who posted the bond and when the submitter's time to answer
    /// ends.
    struct Dispute {
        address challenger;
        uint40 deadline;
    }

    /// @dev A bisection game's stake: who challenged, and which submission (`Claim.serial`) the game is about.
    struct GameStake {
        address challenger;
        uint64 serial;
    }

    uint256 public constant FIELD_MODULUS = BoundaryCodec.FIELD_MODULUS;
    uint256 public constant MAX_CALLBACK_GAS = 10_000_000;
    /// @notice Share of a slashed bond paid to the challenger; the rest goes to the model's RevShareToken.
    uint256 public constant SLASH_REWARD_BPS = 5_000;
    /// @dev Gas the revenue push to a RevShareToken may use; a token that needs more is credited instead.
    uint256 private constant _TOKEN_PUSH_GAS = 50_000;
    /// @dev Gas kept for the work after the callback returns.
    uint256 private constant _AFTER_CALLBACK_GAS = 10_000;

    /// @notice Seconds after which the requester may cancel a request that has no submitted result.
    uint256 public immutable requestTimeout;
    /// @notice Wei per unit of callback gas in the fee; paid to whoever finalizes (and so supplies that gas).
    uint256 public immutable callbackGasPrice;
    address private immutable _deployer;

    /// @notice The bisection game contract (set once by the deployer; zero: proofless challenges are refused).
    address public disputeGame;

    uint256 public requestCount;
    uint64 private _submissions;
    mapping(uint256 gameId => GameStake) private _gameStakes;
    mapping(uint256 requestId => Request) private _requests;
    mapping(uint256 requestId => bytes) private _callbackData;
    mapping(uint256 requestId => Claim) private _claims;
    mapping(uint256 requestId => mapping(uint256 segment => Dispute)) private _disputes;
    mapping(bytes32 commitment => uint256 blockNumber) private _commits;
    /// @notice ETH owed to each account, pulled with {withdraw} or {withdrawFor}.
    mapping(address account => uint256) public credits;

    event AIResultSubmitted(uint256 indexed requestId, address indexed submitter, bytes32 bodyHash, bytes output);
    event AIResultChallenged(uint256 indexed requestId, uint256 segment, address indexed challenger, uint256 deadline);
    event AIDisputeAnswered(uint256 indexed requestId, uint256 segment, address indexed challenger);
    event AIResultSlashed(
        uint256 indexed requestId, uint256 segment, address indexed challenger, uint256 reward, uint256 toToken
    );
    event AIRequestFinalized(
        uint256 indexed requestId, uint256 modelRevenue, uint256 operatorPayout, uint256 finalizerPayout
    );
    event AICallbackFailed(uint256 indexed requestId);
    event AIRequestDeclined(uint256 indexed requestId, address indexed operator, string reason);
    event AIRequestCancelled(uint256 indexed requestId);
    event Credited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);

    error AIOracleInvalidInput();
    error AIOracleGasLimitTooHigh(uint256 gasLimit, uint256 max);
    error AIOracleUnderpaid(uint256 required, uint256 paid);
    error AIOracleFeeTooHigh(uint256 paid);
    error AIOracleUnexpectedStatus(uint256 requestId, Status status);
    error AIOracleWrongBond(uint256 required, uint256 paid);
    error AIOracleNotCommitted(bytes32 commitment);
    error AIOracleNotDirectCall(address sender);
    error AIOracleInvalidClaim(uint256 requestId, uint256 boundary);
    error AIOracleWrongProofCount(uint256 expected, uint256 given);
    error AIOracleClaimMismatch(uint256 requestId);
    error AIOracleInvalidProof(uint256 requestId, uint256 segment);
    error AIOracleChallengeWindowClosed(uint256 requestId, uint256 deadline);
    error AIOracleChallengeWindowOpen(uint256 requestId, uint256 deadline);
    error AIOracleDisputesOpen(uint256 requestId, uint256 count);
    error AIOracleInvalidSegment(uint256 requestId, uint256 segment);
    error AIOracleSegmentSettled(uint256 requestId, uint256 segment);
    error AIOracleDisputeExists(uint256 requestId, uint256 segment);
    error AIOracleNoDispute(uint256 requestId, uint256 segment);
    error AIOracleResponseWindowClosed(uint256 requestId, uint256 segment, uint256 deadline);
    error AIOracleResponseWindowOpen(uint256 requestId, uint256 segment, uint256 deadline);
    error AIOracleInvalidInstances(uint256 requestId);
    error AIOracleClaimNotContradicted(uint256 requestId, uint256 segment);
    error AIOracleNotRequester(uint256 requestId, address caller);
    error AIOracleCancelTooEarly(uint256 requestId, uint256 allowedAt);
    error AIOracleInsufficientGas(uint256 needed, uint256 left);
    error AIOracleNothingToWithdraw(address account);
    error AIOracleUnauthorized(address caller);
    error AIOracleNoVerifier(uint256 requestId, uint256 segment);

    constructor(uint256 minBond_, uint256 requestTimeout_, uint256 callbackGasPrice_) AIOracleRegistry(minBond_) {
        requestTimeout = requestTimeout_;
        callbackGasPrice = callbackGasPrice_;
        _deployer = msg.sender;
    }

    /**
     * @notice Wire the bisection game contract, once, by the deployer.
     * @dev Reverts with {AIOracleUnauthorized}.
     */
    function setDisputeGame(address game) external {
        if (msg.sender != _deployer || disputeGame != address(0)) revert AIOracleUnauthorized(msg.sender);
        disputeGame = game;
    }

    // ---------------------------------------------------------------- requests

    /**
     * @notice Request an inference. `input` is, for a model with a hashed (private) input, the ABI-encoded Poseidon
     * commitment C_0 of the input, which goes to the oracle node off-chain; for a model with a public input, the input
     * tensor itself in the packed encoding of {BoundaryCodec} (e.g. a prompt's bytes at width 1); for a generation model
     * of N tokens and T input ids, the packed prompt of T - N + 1 ids. Pay at least
     * {estimateFee}; anything above it is a tip to the operator.
     * @dev Reverts with {AIOracleUnknownModel}, {AIOracleInvalidInput}, {AIOracleGasLimitTooHigh} or
     * {AIOracleUnderpaid}. Emits {AICallbackRequest}.
     */
    function requestCallback(
        uint256 modelId,
        bytes calldata input,
        address callbackContract,
        uint64 gasLimit,
        bytes calldata callbackData
    ) external payable returns (uint256 requestId) {
        _requireModel(modelId);
        uint256 inputSize = _boundarySizes[modelId][0];
        bytes32 stored;
        if (inputSize == 0) {
            if (input.length != 32 || uint256(bytes32(input)) >= FIELD_MODULUS) revert AIOracleInvalidInput();
            stored = bytes32(input);
        } else {
            uint256 gen = _models[modelId].genTokens;
            if (gen != 0) inputSize -= gen - 1;
            if (!BoundaryCodec.isTensor(input, inputSize)) revert AIOracleInvalidInput();
            stored = gen == 0 ? keccak256(input) : _hashInts(BoundaryCodec.toInts(input, 0, inputSize), 0, inputSize);
        }
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
            input: stored
        });
        if (callbackData.length > 0) _callbackData[requestId] = callbackData;
        emit AICallbackRequest(msg.sender, requestId, modelId, input, callbackContract, gasLimit, callbackData);
    }

    /// @notice The model fee plus `gasLimit` callback gas at {callbackGasPrice}; reverts for an unknown model.
    function estimateFee(uint256 modelId, uint256 gasLimit) public view returns (uint256) {
        return _requireModel(modelId).fee + gasLimit * callbackGasPrice;
    }

    /**
     * @notice An operator declines a pending request it cannot answer (e.g. no proof could exist for its input); the
     * requester may cancel it at once. Declining moves no funds, so anyone may do it; another operator may still answer.
     * @dev Reverts with {AIOracleUnexpectedStatus}. Emits {AIRequestDeclined}.
     */
    function decline(uint256 requestId, string calldata reason) external {
        Request storage r = _requests[requestId];
        if (r.status != Status.Pending) revert AIOracleUnexpectedStatus(requestId, r.status);
        if (r.deadline > block.timestamp) r.deadline = uint40(block.timestamp);
        emit AIRequestDeclined(requestId, msg.sender, reason);
    }

    /**
     * @notice Give up a request that has no submitted result `requestTimeout` seconds after it was made (or reopened
     * by a slash, or at once after a decline); its whole fee is credited back to the requester.
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
     * @notice The first half of a submission or a challenge: record `commitment` (see {submit}, {challenge} and
     * {disputeProof} for what it hashes) at this block. The second half must come in a later block, so a copied
     * reveal is worthless: its commitment would name the copier, who made none.
     */
    function commit(bytes32 commitment) external {
        if (_commits[commitment] == 0) _commits[commitment] = block.number;
    }

    /**
     * @notice Reveal a result committed with `keccak256(abi.encode(msg.sender, requestId, claimHash))` (see
     * {hashClaim}) in an earlier block, with exactly the model's bond. The public boundaries travel in this
     * transaction's calldata, which must come straight from the sender's account so that watchers find it. With a
     * challenge window the zk proofs are only posted (checked if disputed); without one they are verified now.
     * @dev Reverts with {AIOracleUnexpectedStatus}, {AIOracleWrongBond}, {AIOracleNotDirectCall},
     * {AIOracleNotCommitted}, {AIOracleInvalidClaim} (a commitment, input or packed tensor that does not fit the
     * registration), {AIOracleWrongProofCount} or {AIOracleInvalidProof}. Emits {AIResultSubmitted}.
     */
    function submit(uint256 requestId, ClaimData calldata claim) external payable nonReentrant {
        Request storage r = _requests[requestId];
        if (r.status != Status.Pending) revert AIOracleUnexpectedStatus(requestId, r.status);
        ModelSpec storage model = _models[r.modelId];
        if (msg.value != model.bond) revert AIOracleWrongBond(model.bond, msg.value);
        if (msg.sender != tx.origin) revert AIOracleNotDirectCall(msg.sender);
        (bytes32 bodyHash, bytes32 claimHash) = hashClaim(claim);
        _useCommit(keccak256(abi.encode(msg.sender, requestId, claimHash)));
        _checkClaim(requestId, r, claim);
        if (model.challengeWindow == 0) _verifyAllZk(requestId, r.modelId, claim);

        _claims[requestId] = Claim({
            submitter: msg.sender, bond: uint96(msg.value), claimHash: claimHash, settled: 0, openDisputes: 0,
            serial: ++_submissions
        });
        r.status = Status.Submitted;
        r.deadline = uint40(block.timestamp + model.challengeWindow);
        emit AIResultSubmitted(requestId, msg.sender, bodyHash, claim.output);
    }

    /**
     * @notice Slash a result whose posted proof of zk segment `k` does not verify against the claim, during the
     * challenge window; committed first as `keccak256(abi.encode(msg.sender, requestId, k, keccak256("")))`.
     * @dev Reverts with {AIOracleUnexpectedStatus}, {AIOracleChallengeWindowClosed}, {AIOracleInvalidSegment} (not a
     * zk segment), {AIOracleNotCommitted}, {AIOracleClaimMismatch} or {AIOracleClaimNotContradicted} (the proof is
     * valid). Emits {AIResultSlashed}.
     */
    function disputeProof(uint256 requestId, uint256 k, ClaimData calldata claim) external nonReentrant {
        Request storage r = _requireChallengeable(requestId);
        uint256 modelId = r.modelId;
        if (k == 0 || k > _segments[modelId].length || !_segments[modelId][k - 1].zk) {
            revert AIOracleInvalidSegment(requestId, k);
        }
        _useCommit(keccak256(abi.encode(msg.sender, requestId, k, keccak256(""))));
        _requireClaim(requestId, claim);
        if (_verifySegment(modelId, k, claim, claim.proofs[_zkIndex(modelId, k)])) {
            revert AIOracleClaimNotContradicted(requestId, k);
        }
        _slash(requestId, r, k, msg.sender);
    }

    /**
     * @notice Open a dispute on op segment `k` with exactly the model's bond: `proof` is a valid ezkl proof of the
     * segment from the claimed input whose output instances (`outputInstances`) differ from the claim. Committed
     * first as `keccak256(abi.encode(msg.sender, requestId, k, keccak256(proof)))`. The submitter then has
     * `responseWindow` seconds to {respond}; otherwise anyone may {resolve} the dispute and slash it.
     * With an empty `proof`, on a segment registered with a step program, the dispute is a bisection game instead
     * (`outputInstances` unused): {disputeGame} opens one with `responseWindow` seconds on each side's clock. A
     * game-only segment (registered without a verifier) can only be challenged so.
     * @dev Reverts with {AIOracleUnexpectedStatus}, {AIOracleChallengeWindowClosed}, {AIOracleInvalidSegment},
     * {AIOracleNoVerifier} (a proof, or no game contract, on a game-only segment),
     * {AIOracleSegmentSettled}, {AIOracleDisputeExists}, {AIOracleWrongBond}, {AIOracleNotCommitted},
     * {AIOracleClaimMismatch}, {AIOracleInvalidInstances}, {AIOracleClaimNotContradicted} or {AIOracleInvalidProof}.
     * Emits {AIResultChallenged}.
     */
    function challenge(
        uint256 requestId,
        uint256 k,
        ClaimData calldata claim,
        bytes calldata proof,
        uint256[] calldata outputInstances
    ) external payable nonReentrant {
        Request storage r = _requireChallengeable(requestId);
        uint256 modelId = r.modelId;
        if (k == 0 || k > _segments[modelId].length || _segments[modelId][k - 1].zk) {
            revert AIOracleInvalidSegment(requestId, k);
        }
        Claim storage c = _claims[requestId];
        if (c.settled & (uint64(1) << (k - 1)) != 0) revert AIOracleSegmentSettled(requestId, k);
        uint256 bond = _models[modelId].bond;
        if (msg.value != bond) revert AIOracleWrongBond(bond, msg.value);
        _useCommit(keccak256(abi.encode(msg.sender, requestId, k, keccak256(proof))));
        _requireClaim(requestId, claim);

        uint40 deadline = type(uint40).max;
        if (proof.length == 0 && _segments[modelId][k - 1].programRoot != 0 && disputeGame != address(0)) {
            uint256 game = _openGame(requestId, modelId, k, c.submitter, claim);
            _gameStakes[game] = GameStake({challenger: msg.sender, serial: c.serial});
        } else {
            if (_disputes[requestId][k].challenger != address(0)) revert AIOracleDisputeExists(requestId, k);
            if (_segments[modelId][k - 1].verifier == address(0)) revert AIOracleNoVerifier(requestId, k);
            _requireContradiction(requestId, modelId, k, claim, proof, outputInstances);
            deadline = uint40(block.timestamp + _models[modelId].responseWindow);
            _disputes[requestId][k] = Dispute({challenger: msg.sender, deadline: deadline});
        }
        ++c.openDisputes;
        emit AIResultChallenged(requestId, k, msg.sender, deadline);
    }

    /**
     * @notice Answer the dispute on segment `k` with a valid proof of the claim's own instances for that segment: the
     * claim stands, the segment cannot be disputed again, and the challenger's bond is credited to the submitter.
     * Anyone may send the answer.
     * @dev Reverts with {AIOracleNoDispute}, {AIOracleResponseWindowClosed},
     * {AIOracleClaimMismatch} or {AIOracleInvalidProof}. Emits {AIDisputeAnswered} and {Credited}.
     */
    function respond(uint256 requestId, uint256 k, ClaimData calldata claim, bytes calldata proof)
        external
        nonReentrant
    {
        Dispute memory d = _disputes[requestId][k];
        if (d.challenger == address(0)) revert AIOracleNoDispute(requestId, k);
        if (block.timestamp >= d.deadline) revert AIOracleResponseWindowClosed(requestId, k, d.deadline);
        _requireClaim(requestId, claim);
        if (!_verifySegment(_requests[requestId].modelId, k, claim, proof)) revert AIOracleInvalidProof(requestId, k);
        Claim storage c = _claims[requestId];
        c.settled |= uint64(1) << (k - 1);
        --c.openDisputes;
        delete _disputes[requestId][k];
        emit AIDisputeAnswered(requestId, k, d.challenger);
        _credit(c.submitter, _models[_requests[requestId].modelId].bond);
    }

    /**
     * @notice The result of bisection game `gameId` on segment `k` of `requestId`, from {disputeGame} only. The
     * challenger won: the claim is slashed as by {resolve} and the challenger's bond comes back. The defender won: the
     * challenger's bond goes to the submitter, and the segment stays open to other games and proofs (a game only shows
     * that this challenger could not convict, not that the segment is right). A game about a submission that is gone
     * (slashed meanwhile) returns the challenger's bond and changes nothing else; every game can end.
     * @dev Reverts with {AIOracleUnauthorized}. Emits what {resolve} emits, or {AIDisputeAnswered}, and {Credited}.
     */
    function settleGame(uint256 gameId, uint256 requestId, uint256 k, bool challengerWon) external nonReentrant {
        if (msg.sender != disputeGame) revert AIOracleUnauthorized(msg.sender);
        GameStake memory stake = _gameStakes[gameId];
        if (stake.challenger == address(0)) return;
        delete _gameStakes[gameId];
        Claim storage c = _claims[requestId];
        uint256 bond = _models[_requests[requestId].modelId].bond;
        if (c.submitter == address(0) || c.serial != stake.serial) return _credit(stake.challenger, bond);
        --c.openDisputes;
        if (challengerWon) {
            _credit(stake.challenger, bond);
            _slash(requestId, _requests[requestId], k, stake.challenger);
        } else {
            emit AIDisputeAnswered(requestId, k, stake.challenger);
            _credit(c.submitter, bond);
        }
    }

    /**
     * @notice Slash a result whose dispute on segment `k` was not answered within the response window: the
     * challenger gets its bond back and {SLASH_REWARD_BPS} of the submitter's bond. Anyone may call it.
     * @dev Reverts with {AIOracleNoDispute} or {AIOracleResponseWindowOpen}. Emits {AIResultSlashed}.
     */
    function resolve(uint256 requestId, uint256 k) external nonReentrant {
        Dispute memory d = _disputes[requestId][k];
        if (d.challenger == address(0)) revert AIOracleNoDispute(requestId, k);
        if (block.timestamp < d.deadline) revert AIOracleResponseWindowOpen(requestId, k, d.deadline);
        _slash(requestId, _requests[requestId], k, d.challenger);
    }

    /**
     * @notice Finalize a submitted result after its challenge window, once no dispute is open: the model's share of
     * the fee goes to its RevShareToken (credited to it instead if it refuses the push), the rest of the fee and the
     * bond are credited to the submitter, the callback gas price of the fee to the caller, who must supply that gas,
     * and y goes to the callback as `abi.encode(int256[] values, uint256 scale)` (a generation model's: `abi.encode(bytes)`
     * of its tokens, see {_callbackOutput}). `bodyHash` and `output` are the
     * submitted claim's (see {hashClaim}). A callback that reverts, runs out of gas or re-enters changes nothing else.
     * @dev Reverts with {AIOracleUnexpectedStatus}, {AIOracleChallengeWindowOpen}, {AIOracleDisputesOpen},
     * {AIOracleClaimMismatch} or {AIOracleInsufficientGas}. Emits {AIRequestFinalized}, {Credited},
     * {AICallbackResult}, and {AICallbackFailed} if the callback failed.
     */
    function finalize(uint256 requestId, bytes32 bodyHash, bytes calldata output) external nonReentrant {
        Request storage r = _requests[requestId];
        if (r.status != Status.Submitted) revert AIOracleUnexpectedStatus(requestId, r.status);
        if (block.timestamp < r.deadline) revert AIOracleChallengeWindowOpen(requestId, r.deadline);
        Claim storage c = _claims[requestId];
        if (c.openDisputes != 0) revert AIOracleDisputesOpen(requestId, c.openDisputes);
        if (keccak256(abi.encode(bodyHash, keccak256(output))) != c.claimHash) revert AIOracleClaimMismatch(requestId);

        (uint256 modelRevenue, uint256 operatorPayout, uint256 finalizerPayout) = _feeSplit(r);
        r.status = Status.Finalized;
        emit AIRequestFinalized(requestId, modelRevenue, operatorPayout, finalizerPayout);
        _credit(c.submitter, operatorPayout + c.bond);
        _credit(msg.sender, finalizerPayout);
        bytes memory payload = _callbackOutput(r.modelId, output);
        emit AICallbackResult(r.requester, requestId, msg.sender, payload);

        _payToken(_models[r.modelId].revShareToken, modelRevenue);
        if (r.callbackContract != address(0)) {
            if (!_deliver(requestId, r.callbackContract, r.gasLimit, payload)) emit AICallbackFailed(requestId);
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

    /// @notice The request `requestId` and its callback data.
    function getRequest(uint256 requestId) external view returns (Request memory request, bytes memory callbackData) {
        return (_requests[requestId], _callbackData[requestId]);
    }

    /// @notice The current submitted (or final) result of `requestId`; empty when there is none.
    function getClaim(uint256 requestId) external view returns (Claim memory) {
        return _claims[requestId];
    }

    /// @notice The open dispute on segment `k` of `requestId`; empty when there is none.
    function getDispute(uint256 requestId, uint256 k) external view returns (Dispute memory) {
        return _disputes[requestId][k];
    }

    /// @notice The block at which `commitment` was recorded (0: never, or already used).
    function commitBlock(bytes32 commitment) external view returns (uint256) {
        return _commits[commitment];
    }

    /// @notice How {finalize} splits the fee of `requestId`: the model's revenue, the operator's payout (bond
    /// excluded) and the finalizer's callback-gas payment.
    function feeSplit(uint256 requestId)
        external
        view
        returns (uint256 modelRevenue, uint256 operatorPayout, uint256 finalizerPayout)
    {
        return _feeSplit(_requests[requestId]);
    }

    /**
     * @notice The hashes a claim is known by: `bodyHash = keccak256(abi.encode(commitments, data, proofs))` and
     * `claimHash = keccak256(abi.encode(bodyHash, keccak256(output)))`. The input is bound by the request instead.
     */
    function hashClaim(ClaimData calldata claim) public pure returns (bytes32 bodyHash, bytes32 claimHash) {
        bodyHash = keccak256(abi.encode(claim.commitments, claim.data, claim.proofs));
        claimHash = keccak256(abi.encode(bodyHash, keccak256(claim.output)));
    }

    // ---------------------------------------------------------------- internal

    /// @dev Open a bisection game on op segment k: the submitter defends, the caller challenges, over the claim's
    /// packed input and output boundaries of the segment.
    function _openGame(uint256 requestId, uint256 modelId, uint256 k, address submitter, ClaimData calldata claim)
        private
        returns (uint56)
    {
        Segment storage seg = _segments[modelId][k - 1];
        GameSetup memory setup;
        setup.requestId = requestId;
        setup.segment = k;
        setup.defender = submitter;
        setup.challenger = msg.sender;
        setup.programRoot = seg.programRoot;
        setup.nSteps = seg.programSteps;
        setup.inHash = keccak256(_boundaryBytes(modelId, k - 1, claim));
        setup.outHash = keccak256(_boundaryBytes(modelId, k, claim));
        setup.clock = _models[modelId].responseWindow;
        return uint56(DisputeGame(disputeGame).open(setup));
    }

    function _feeSplit(Request storage r)
        private
        view
        returns (uint256 modelRevenue, uint256 operatorPayout, uint256 finalizerPayout)
    {
        ModelSpec storage model = _models[r.modelId];
        finalizerPayout = uint256(r.gasLimit) * callbackGasPrice;
        uint256 rest = r.fee - finalizerPayout;
        modelRevenue = Math.min(rest, model.fee) * (BPS - model.operatorShareBps) / BPS;
        operatorPayout = rest - modelRevenue;
    }

    /// @dev What the callback receives: `abi.encode(int256[] values, uint256 scale)` of a packed output; for a
    /// generation model `abi.encode(bytes text)`, text[i] the low byte of token i. Truncating, never reverting: finalize
    /// must not fail on output content (the fee and bond would be stuck); an honest model's tokens are 0..255 and a
    /// lying output is slashed in the challenge window.
    function _callbackOutput(uint256 modelId, bytes calldata output) private view returns (bytes memory) {
        uint32[] storage sizes = _boundarySizes[modelId];
        uint256 n = sizes[sizes.length - 1];
        int256[] memory values = BoundaryCodec.toInts(output, 0, n);
        if (_models[modelId].genTokens == 0) return abi.encode(values, uint256(_models[modelId].scale));
        bytes memory text = new bytes(n);
        assembly ("memory-safe") {
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                mstore8(add(add(text, 0x20), i), mload(add(values, shl(5, add(i, 1))))) // the low byte
            }
        }
        return abi.encode(text);
    }

    function _requireChallengeable(uint256 requestId) private view returns (Request storage r) {
        r = _requests[requestId];
        if (r.status != Status.Submitted) revert AIOracleUnexpectedStatus(requestId, r.status);
        if (block.timestamp >= r.deadline) revert AIOracleChallengeWindowClosed(requestId, r.deadline);
    }

    function _requireClaim(uint256 requestId, ClaimData calldata claim) private view {
        (, bytes32 claimHash) = hashClaim(claim);
        if (claimHash != _claims[requestId].claimHash) revert AIOracleClaimMismatch(requestId);
        Request storage r = _requests[requestId];
        if (_boundarySizes[r.modelId][0] != 0 && !_inputMatches(r, claim)) revert AIOracleClaimMismatch(requestId);
    }

    /// @dev The claim's public input is the request's: the same bytes for an ordinary model. For a generation model of
    /// N tokens and T input ids: exactly T ids in the canonical (narrowest) width, so that a bisection game's input hash
    /// is one the submitter knows, whose first P = T - N + 1 are the prompt (their hash is `r.input`) and whose rest is
    /// the claimed output's first N - 1 tokens (teacher forcing: one forward pass predicts all N).
    function _inputMatches(Request storage r, ClaimData calldata claim) private view returns (bool) {
        uint256 n = _models[r.modelId].genTokens;
        if (n == 0) return keccak256(claim.input) == r.input;
        uint256 t = _boundarySizes[r.modelId][0];
        if (!BoundaryCodec.isTensor(claim.input, t)) return false; // the output was checked first
        int256[] memory ids = BoundaryCodec.toInts(claim.input, 0, t);
        int256[] memory gen = BoundaryCodec.toInts(claim.output, 0, n);
        uint256 p = t - n + 1;
        return _hashInts(ids, 0, p) == r.input && _hashInts(ids, p, n - 1) == _hashInts(gen, 0, n - 1)
            && BoundaryCodec.isNarrowest(ids, uint8(claim.input[0]));
    }

    /// @dev keccak256(abi.encodePacked(values[from..from+count-1])): the int256 words of a slice.
    function _hashInts(int256[] memory values, uint256 from, uint256 count) private pure returns (bytes32 h) {
        assembly ("memory-safe") {
            h := keccak256(add(values, mul(add(from, 1), 0x20)), mul(count, 0x20))
        }
    }

    function _useCommit(bytes32 commitment) private {
        uint256 at = _commits[commitment];
        if (at == 0 || at >= block.number) revert AIOracleNotCommitted(commitment);
        delete _commits[commitment];
    }

    /// @dev Every part of a claim fits the registration: hashed boundaries carry a field element (C_0 the request's),
    /// public ones 0 and a well-formed tensor of the registered size; one proof per zk segment.
    function _checkClaim(uint256 requestId, Request storage r, ClaimData calldata claim) private view {
        uint32[] storage sizes = _boundarySizes[r.modelId];
        uint256 n = sizes.length - 1;
        if (claim.commitments.length != n + 1) revert AIOracleInvalidClaim(requestId, claim.commitments.length);
        uint256 offset;
        for (uint256 b = 0; b <= n; ++b) {
            uint256 size = sizes[b];
            uint256 c = claim.commitments[b];
            if (size == 0 ? (c >= FIELD_MODULUS || (b == 0 && bytes32(c) != r.input)) : c != 0) {
                revert AIOracleInvalidClaim(requestId, b);
            }
            if (size != 0 && b > 0 && b < n) offset = BoundaryCodec.skip(claim.data, offset, size);
        }
        if (offset != claim.data.length) revert AIOracleInvalidClaim(requestId, n + 1);
        if (BoundaryCodec.skip(claim.output, 0, sizes[n]) != claim.output.length) revert AIOracleInvalidClaim(requestId, n);
        if (sizes[0] == 0 ? claim.input.length != 0 : !_inputMatches(r, claim)) {
            revert AIOracleInvalidClaim(requestId, 0);
        }
        uint256 zkCount = _zkIndex(r.modelId, n + 1);
        if (claim.proofs.length != zkCount) revert AIOracleWrongProofCount(zkCount, claim.proofs.length);
    }

    /// @dev The number of zk segments before segment k (1-based): the index of segment k's proof in `proofs`.
    function _zkIndex(uint256 modelId, uint256 k) private view returns (uint256 index) {
        Segment[] storage segments = _segments[modelId];
        for (uint256 j = 1; j < k; ++j) {
            if (segments[j - 1].zk) ++index;
        }
    }

    /// @dev `proof` is a valid proof of segment k from the claimed input whose output instances differ from the claim.
    function _requireContradiction(
        uint256 requestId,
        uint256 modelId,
        uint256 k,
        ClaimData calldata claim,
        bytes calldata proof,
        uint256[] calldata outputInstances
    ) private {
        (uint256[] memory instances, uint256 outputStart) = _claimedInstances(modelId, k, claim);
        if (outputInstances.length != instances.length - outputStart) revert AIOracleInvalidInstances(requestId);
        bool differs;
        for (uint256 i = 0; i < outputInstances.length; ++i) {
            if (outputInstances[i] >= FIELD_MODULUS) revert AIOracleInvalidInstances(requestId);
            if (outputInstances[i] != instances[outputStart + i]) differs = true;
            instances[outputStart + i] = outputInstances[i];
        }
        if (!differs) revert AIOracleClaimNotContradicted(requestId, k);
        if (!_verify(_segments[modelId][k - 1].verifier, proof, instances)) revert AIOracleInvalidProof(requestId, k);
    }

    function _verifyAllZk(uint256 requestId, uint256 modelId, ClaimData calldata claim) private {
        uint256 n = _segments[modelId].length;
        for (uint256 k = 1; k <= n; ++k) {
            // with no challenge window every segment is zk, so proof k-1 belongs to segment k
            if (!_verifySegment(modelId, k, claim, claim.proofs[k - 1])) revert AIOracleInvalidProof(requestId, k);
        }
    }

    function _verifySegment(uint256 modelId, uint256 k, ClaimData calldata claim, bytes calldata proof)
        private
        returns (bool)
    {
        (uint256[] memory instances,) = _claimedInstances(modelId, k, claim);
        return _verify(_segments[modelId][k - 1].verifier, proof, instances);
    }

    /// @dev The public instances a proof of segment k has if the claim is right: boundary k-1 then boundary k, each
    /// its commitment (hashed) or its elements (public); `outputStart` is where boundary k begins.
    function _claimedInstances(uint256 modelId, uint256 k, ClaimData calldata claim)
        private
        view
        returns (uint256[] memory instances, uint256 outputStart)
    {
        uint256[] memory inputs = _boundaryInstances(modelId, k - 1, claim);
        uint256[] memory outputs = _boundaryInstances(modelId, k, claim);
        outputStart = inputs.length;
        instances = new uint256[](inputs.length + outputs.length);
        for (uint256 i = 0; i < inputs.length; ++i) {
            instances[i] = inputs[i];
        }
        for (uint256 i = 0; i < outputs.length; ++i) {
            instances[outputStart + i] = outputs[i];
        }
    }

    function _boundaryInstances(uint256 modelId, uint256 b, ClaimData calldata claim)
        private
        view
        returns (uint256[] memory fields)
    {
        uint256 size = _boundarySizes[modelId][b];
        if (size == 0) {
            fields = new uint256[](1);
            fields[0] = claim.commitments[b];
        } else {
            fields = BoundaryCodec.toFields(_boundaryBytes(modelId, b, claim), 0, size);
        }
    }

    /// @dev The packed tensor of public boundary b in the claim: the input, a part of `data`, or the output.
    function _boundaryBytes(uint256 modelId, uint256 b, ClaimData calldata claim) private view returns (bytes calldata) {
        uint32[] storage sizes = _boundarySizes[modelId];
        if (b == 0) return claim.input;
        if (b == sizes.length - 1) return claim.output;
        uint256 offset;
        for (uint256 j = 1; j < b; ++j) {
            if (sizes[j] != 0) offset = BoundaryCodec.skip(claim.data, offset, sizes[j]);
        }
        return claim.data[offset:BoundaryCodec.skip(claim.data, offset, sizes[b])];
    }

    /// @dev Take a result back: the challenger gets {SLASH_REWARD_BPS} of the bond, the model's token the rest, every
    /// open fraud-proof dispute's bond goes back to its challenger (a game's when it ends: {settleGame}), and the request
    /// reopens with its fee still escrowed.
    function _slash(uint256 requestId, Request storage r, uint256 k, address challenger) private {
        uint256 modelId = r.modelId;
        Claim storage c = _claims[requestId];
        uint256 bond = c.bond;
        uint256 reward = bond * SLASH_REWARD_BPS / BPS;
        uint256 toToken = bond - reward;
        uint256 n = _segments[modelId].length;
        uint256 disputeBond = _models[modelId].bond;
        for (uint256 j = 1; j <= n && c.openDisputes > 0; ++j) {
            address opener = _disputes[requestId][j].challenger;
            if (opener == address(0)) continue;
            delete _disputes[requestId][j];
            --c.openDisputes;
            _credit(opener, disputeBond);
        }
        delete _claims[requestId];
        r.status = Status.Pending;
        r.deadline = uint40(block.timestamp + requestTimeout);
        emit AIResultSlashed(requestId, k, challenger, reward, toToken);
        _credit(challenger, reward);
        _payToken(_models[modelId].revShareToken, toToken);
    }

    /// @dev Push revenue to a RevShareToken; a token that refuses (or needs more gas) is credited instead. The only
    /// state change after an external call in this contract, safe under the reentrancy guard.
    function _payToken(address payable token, uint256 amount) private {
        if (amount == 0) return;
        (bool paid,) = token.call{value: amount, gas: _TOKEN_PUSH_GAS}("");
        if (!paid) _credit(token, amount);
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
