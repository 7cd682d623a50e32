// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {StepContext, StepProof, StepVerifier} from "./StepVerifier.sol";
import {TraceCodec} from "./TraceCodec.sol";

/// @dev What the oracle opens a game with: the disputed segment of a request, the two sides, the segment's registered
/// step program and the hashes of the claim's packed input and output boundaries of the segment, and each side's clock.
struct GameSetup {
    uint256 requestId;
    uint256 segment;
    address defender;
    address challenger;
    bytes32 programRoot;
    uint256 nSteps;
    bytes32 inHash;
    bytes32 outHash;
    uint256 clock;
}

/// @dev What a {DisputeGame} reports its results to.
interface IGameOracle {
    function settleGame(uint256 gameId, uint256 requestId, uint256 segment, bool challengerWon) external;
}

/**
 * @title DisputeGame
 * @dev The bisection game over an op segment's execution trace. The oracle opens a game when a challenger disputes an
 * op segment that has a registered step program (its Merkle root and step count) without a whole-segment proof. The
 * defender (the claim's submitter) posts its trace root with the root's two children; then the challenger picks the
 * child it disputes and the defender opens that node's children, level by level, down to one leaf L[i] of the
 * defender's trace (i < nSteps). The challenger then has step i recomputed on chain by the {StepVerifier} from
 * operands proven against the same trace root: if the recomputed leaf differs from L[i], or step i has no valid output
 * (see {StepVerifier}), the challenger wins; a correct leaf reverts the call ({StepCorrect}). Each side has a chess
 * clock of `clock` seconds in all; anyone may call {timeout} once the side to move has used its clock up, and the other
 * side wins. The result goes back to the oracle ({IGameOracle.settleGame}), which ignores a game whose dispute is gone.
 * Every move emits what the other side needs to answer.
 */
contract DisputeGame {
    enum Status {
        None,
        AwaitingRoot, // defender: postRoot
        AwaitingChoice, // challenger: choose
        AwaitingReveal, // defender: reveal
        AwaitingStep, // challenger: step
        ChallengerWon,
        DefenderWon
    }

    /// @dev A game. `level`: choices made so far (the current node is `level` steps below the root); `index`: their
    /// bits, the disputed leaf's index once `level == depth`; `node`: the node in dispute; `left`/`right`: its children
    /// while the challenger chooses. Clocks are the seconds each side has left as of `lastMove`.
    struct Game {
        address defender;
        uint40 lastMove;
        uint8 depth;
        uint8 level;
        Status status;
        address challenger;
        uint32 nSteps;
        uint32 index;
        uint64 defenderClock;
        uint64 challengerClock;
        uint64 segment;
        uint256 requestId;
        bytes32 programRoot;
        bytes32 inHash;
        bytes32 outHash;
        bytes32 traceRoot;
        bytes32 node;
        bytes32 left;
        bytes32 right;
    }

    /// @notice The oracle that opens games and is told their results.
    address public immutable oracle;
    /// @notice The one-step semantics.
    StepVerifier public immutable verifier;

    uint256 public gameCount;
    mapping(uint256 gameId => Game) private _games;

    event GameOpened(
        uint256 indexed gameId,
        uint256 indexed requestId,
        uint256 segment,
        address indexed defender,
        address challenger,
        bytes32 programRoot,
        uint256 nSteps,
        bytes32 inHash,
        bytes32 outHash,
        uint256 clock
    );
    event RootPosted(uint256 indexed gameId, bytes32 root, bytes32 left, bytes32 right);
    event ChildChosen(uint256 indexed gameId, uint256 level, bool right, uint256 index);
    event ChildrenRevealed(uint256 indexed gameId, uint256 level, bytes32 left, bytes32 right);
    event GameResolved(uint256 indexed gameId, uint256 indexed requestId, uint256 segment, bool challengerWon);

    error GameNotOracle(address caller);
    error GameInvalidProgram(uint256 nSteps);
    error GameUnexpectedStatus(uint256 gameId, Status status);
    error GameNotYourMove(uint256 gameId, address caller);
    error GameClockExpired(uint256 gameId);
    error GameClockRunning(uint256 gameId, uint256 secondsLeft);
    error GameChildrenMismatch(uint256 gameId);
    error GameIndexOutOfRange(uint256 gameId, uint256 index, uint256 nSteps);
    error StepCorrect(uint256 gameId, uint256 index);

    constructor(address oracle_, StepVerifier verifier_) {
        oracle = oracle_;
        verifier = verifier_;
    }

    /**
     * @notice Open a game (only the oracle): the defender's and the challenger's clocks start with `s.clock` seconds
     * each, the defender to move.
     * @dev Reverts with {GameNotOracle} or {GameInvalidProgram}. Emits {GameOpened}.
     */
    function open(GameSetup calldata s) external returns (uint256 gameId) {
        if (msg.sender != oracle) revert GameNotOracle(msg.sender);
        uint256 nSteps = s.nSteps;
        if (nSteps == 0 || nSteps > type(uint32).max || s.clock > type(uint64).max) revert GameInvalidProgram(nSteps);
        gameId = ++gameCount;
        Game storage g = _games[gameId];
        g.defender = s.defender;
        g.lastMove = uint40(block.timestamp);
        g.depth = uint8(TraceCodec.depthOf(nSteps));
        g.status = Status.AwaitingRoot;
        g.challenger = s.challenger;
        g.nSteps = uint32(nSteps);
        g.defenderClock = uint64(s.clock);
        g.challengerClock = uint64(s.clock);
        g.segment = uint64(s.segment);
        g.requestId = s.requestId;
        g.programRoot = s.programRoot;
        g.inHash = s.inHash;
        g.outHash = s.outHash;
        emit GameOpened(gameId, s.requestId, s.segment, s.defender, s.challenger, s.programRoot, nSteps, s.inHash, s.outHash, s.clock);
    }

    /**
     * @notice The defender's first move: its trace root and the root's children.
     * @dev Reverts with {GameUnexpectedStatus}, {GameNotYourMove}, {GameClockExpired} or {GameChildrenMismatch}.
     * Emits {RootPosted}.
     */
    function postRoot(uint256 gameId, bytes32 root, bytes32 left, bytes32 right) external {
        Game storage g = _move(gameId, Status.AwaitingRoot);
        if (_hash(left, right) != root) revert GameChildrenMismatch(gameId);
        g.traceRoot = root;
        g.node = root;
        g.left = left;
        g.right = right;
        g.status = Status.AwaitingChoice;
        emit RootPosted(gameId, root, left, right);
    }

    /**
     * @notice The challenger disputes the left or the right child of the current node. At the last level the chosen
     * node is the defender's leaf of step `index`, which must exist (`index < nSteps`); a subtree of padding only
     * cannot be chosen.
     * @dev Reverts with {GameUnexpectedStatus}, {GameNotYourMove}, {GameClockExpired} or {GameIndexOutOfRange}.
     * Emits {ChildChosen}.
     */
    function choose(uint256 gameId, bool right) external {
        Game storage g = _move(gameId, Status.AwaitingChoice);
        uint256 index = (uint256(g.index) << 1) | (right ? 1 : 0);
        uint256 level = g.level + 1;
        uint256 depth = g.depth;
        if (index << (depth - level) >= g.nSteps) revert GameIndexOutOfRange(gameId, index << (depth - level), g.nSteps);
        g.index = uint32(index);
        g.level = uint8(level);
        g.node = right ? g.right : g.left;
        g.status = level == depth ? Status.AwaitingStep : Status.AwaitingReveal;
        emit ChildChosen(gameId, level, right, index);
    }

    /**
     * @notice The defender opens the chosen node: its two children, which must hash to it.
     * @dev Reverts with {GameUnexpectedStatus}, {GameNotYourMove}, {GameClockExpired} or {GameChildrenMismatch}.
     * Emits {ChildrenRevealed}.
     */
    function reveal(uint256 gameId, bytes32 left, bytes32 right) external {
        Game storage g = _move(gameId, Status.AwaitingReveal);
        if (_hash(left, right) != g.node) revert GameChildrenMismatch(gameId);
        g.left = left;
        g.right = right;
        g.status = Status.AwaitingChoice;
        emit ChildrenRevealed(gameId, g.level, left, right);
    }

    /**
     * @notice The challenger has the disputed step recomputed: it wins when the defender's leaf differs from the
     * recomputed one or the step has no valid output.
     * @dev Reverts with {GameUnexpectedStatus}, {GameNotYourMove}, {GameClockExpired}, {StepCorrect} (the defender's
     * leaf is right) or a {StepVerifier} error (a witness that proves nothing). Emits {GameResolved}.
     */
    function step(uint256 gameId, StepProof calldata proof) external {
        Game storage g = _move(gameId, Status.AwaitingStep);
        StepContext memory ctx = StepContext(g.index, g.depth, g.programRoot, g.traceRoot, g.inHash, g.outHash);
        (bool valid, bytes32 leaf) = verifier.leafOf(proof, ctx);
        if (valid && leaf == g.node) revert StepCorrect(gameId, g.index);
        _resolve(gameId, g, true);
    }

    /**
     * @notice End a game whose side to move has used up its clock: the other side wins. Anyone may call it.
     * @dev Reverts with {GameUnexpectedStatus} (not running) or {GameClockRunning}. Emits {GameResolved}.
     */
    function timeout(uint256 gameId) external {
        Game storage g = _games[gameId];
        Status status = g.status;
        if (status == Status.None || status >= Status.ChallengerWon) revert GameUnexpectedStatus(gameId, status);
        bool defenderToMove = _defenderToMove(status);
        uint256 used = block.timestamp - g.lastMove;
        uint256 clock = defenderToMove ? g.defenderClock : g.challengerClock;
        if (used < clock) revert GameClockRunning(gameId, clock - used);
        if (defenderToMove) g.defenderClock = 0;
        else g.challengerClock = 0;
        g.lastMove = uint40(block.timestamp);
        _resolve(gameId, g, defenderToMove);
    }

    // ------------------------------------------------------------------- views

    /// @notice Game `gameId` (status None: no such game).
    function getGame(uint256 gameId) external view returns (Game memory) {
        return _games[gameId];
    }

    /// @notice Seconds each side has left now (the side to move is charged the time since the last move).
    function clocks(uint256 gameId) external view returns (uint256 defenderLeft, uint256 challengerLeft) {
        Game storage g = _games[gameId];
        (defenderLeft, challengerLeft) = (g.defenderClock, g.challengerClock);
        Status status = g.status;
        if (status == Status.None || status >= Status.ChallengerWon) return (defenderLeft, challengerLeft);
        uint256 used = block.timestamp - g.lastMove;
        if (_defenderToMove(status)) defenderLeft = used >= defenderLeft ? 0 : defenderLeft - used;
        else challengerLeft = used >= challengerLeft ? 0 : challengerLeft - used;
    }

    // ---------------------------------------------------------------- internal

    function _defenderToMove(Status status) private pure returns (bool) {
        return status == Status.AwaitingRoot || status == Status.AwaitingReveal;
    }

    /// @dev A move by the side whose turn `expected` is: charge its clock the time since the last move.
    function _move(uint256 gameId, Status expected) private returns (Game storage g) {
        g = _games[gameId];
        if (g.status != expected) revert GameUnexpectedStatus(gameId, g.status);
        bool defender = _defenderToMove(expected);
        if (msg.sender != (defender ? g.defender : g.challenger)) revert GameNotYourMove(gameId, msg.sender);
        uint256 used = block.timestamp - g.lastMove;
        uint256 clock = defender ? g.defenderClock : g.challengerClock;
        if (used >= clock) revert GameClockExpired(gameId);
        if (defender) g.defenderClock = uint64(clock - used);
        else g.challengerClock = uint64(clock - used);
        g.lastMove = uint40(block.timestamp);
    }

    function _resolve(uint256 gameId, Game storage g, bool challengerWon) private {
        g.status = challengerWon ? Status.ChallengerWon : Status.DefenderWon;
        emit GameResolved(gameId, g.requestId, g.segment, challengerWon);
        IGameOracle(oracle).settleGame(gameId, g.requestId, g.segment, challengerWon);
    }

    function _hash(bytes32 left, bytes32 right) private pure returns (bytes32 h) {
        assembly ("memory-safe") {
            mstore(0, left)
            mstore(0x20, right)
            h := keccak256(0, 0x40)
        }
    }
}
