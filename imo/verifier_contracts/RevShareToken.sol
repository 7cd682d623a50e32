// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC6372} from "@openzeppelin/contracts/interfaces/IERC6372.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";
import {Checkpoints} from "@openzeppelin/contracts/utils/structs/Checkpoints.sol";
import {Time} from "@openzeppelin/contracts/utils/types/Time.sol";
import {IERC7641} from "./IERC7641.sol";

/**
 * @title RevShareToken
 * @dev The ERC-7641 revenue-share token of one AI model: plain ETH sent to it is revenue. At each snapshot (at most one
 * per `snapshotInterval` seconds) the revenue received since the previous snapshot is split: `claimShareBps` of it is
 * claimable once per holder, pro rata to the balance at that snapshot, and the rest joins the burn pool, redeemable
 * pro rata by burning tokens. Revenue left unclaimed (rounding dust, holders that never claim, contracts that cannot)
 * stays claimable for `claimPeriod` seconds after its snapshot, after which anyone may `sweep` it into the burn pool.
 * Revenue received while the supply is zero stays pending until a snapshot finds holders. The supply is fixed at
 * deploy (minted to `holder`) and only shrinks by burning.
 *
 * Balances at a snapshot are those of the past, not of the moment `snapshot` is called: every balance and the total
 * supply are checkpointed (OpenZeppelin `Checkpoints`; OZ5 has no ERC20Snapshot) on an ERC-6372 clock, the block
 * number, as ERC-5805 votes are, and a snapshot taken at clock T counts them as of T - 1, the end of the previous
 * block. So tokens that arrive in the snapshot's own block count from the next snapshot on, and tokens that leave in
 * it still count for the sender: a flash loan (borrow, `snapshot`, repay in one transaction), or tokens bought or
 * received just before the snapshot in the same block, capture nothing, and the balances and supply a snapshot divides
 * by are final when it is taken. This assumes that whoever holds tokens at the end of a block owns their economic
 * risk: tokens borrowed across a block boundary (an ordinary loan, or a builder who orders the last transaction of
 * one block and the first of the next) count like any others, as with ERC-5805 votes. On chains whose `block.number`
 * is coarser than their own blocks (Arbitrum returns an L1 block number) "the previous block" is the previous value
 * of `block.number`, which only widens the excluded window. Like ERC20Votes, each balance change in a new block adds
 * a checkpoint (one storage slot) for the accounts involved.
 */
contract RevShareToken is ERC20, ReentrancyGuardTransient, IERC6372, IERC7641 {
    using BitMaps for BitMaps.BitMap;
    using Checkpoints for Checkpoints.Trace208;

    /**
     * @dev One snapshot: the revenue holders may claim, how much of it was claimed, the supply it is divided by (as of
     * `timepoint - 1`), when it was taken (`timestamp` starts the claim period; `timepoint` is the {clock} value).
     */
    struct SnapshotRecord {
        uint128 claimable;
        uint128 claimed;
        uint128 totalSupply;
        uint64 timestamp;
        uint48 timepoint;
        bool swept;
    }

    uint256 public constant BPS = 10_000;

    /// @notice Share of each snapshot's new revenue (basis points) claimable by holders; the rest goes to the burn pool.
    uint256 public immutable claimShareBps;
    /// @notice Minimum seconds between two snapshots (and between deployment and the first one).
    uint256 public immutable snapshotInterval;
    /// @notice Seconds after a snapshot during which its revenue can only be claimed, not swept.
    uint256 public immutable claimPeriod;

    uint256 private _snapshotCount;
    uint256 private _lastSnapshotTime;
    uint256 private _claimPool;
    uint256 private _burnPool;
    mapping(uint256 snapshotId => SnapshotRecord) private _snapshots;
    mapping(address account => Checkpoints.Trace208) private _balanceHistory;
    Checkpoints.Trace208 private _supplyHistory;
    mapping(address account => BitMaps.BitMap) private _claimed;

    event RevenueReceived(address indexed from, uint256 amount);
    event Snapshot(uint256 indexed snapshotId, uint256 claimable, uint256 toBurnPool, uint256 totalSupply);
    event RevenueClaimed(address indexed account, uint256 indexed snapshotId, uint256 amount);
    event RevenueRedeemed(address indexed account, uint256 burned, uint256 amount);
    event UnclaimedSwept(uint256 indexed snapshotId, uint256 amount);

    error RevShareTokenInvalidClaimShare(uint256 claimShareBps);
    error RevShareTokenInvalidClaimPeriod();
    error RevShareTokenSupplyTooLarge(uint256 supply);
    error RevShareTokenSnapshotTooSoon(uint256 allowedAt);
    error RevShareTokenUnknownSnapshot(uint256 snapshotId);
    error RevShareTokenAlreadyClaimed(address account, uint256 snapshotId);
    error RevShareTokenSnapshotSwept(uint256 snapshotId);
    error RevShareTokenNothingToClaim(address account, uint256 snapshotId);
    error RevShareTokenClaimPeriodOpen(uint256 snapshotId, uint256 sweepableAt);
    error RevShareTokenZeroAmount();
    error RevShareTokenBurnExceedsBalance(address account, uint256 balance, uint256 amount);
    /// @dev {clock} was overridden without {CLOCK_MODE}.
    error ERC6372InconsistentClock();

    constructor(
        string memory name_,
        string memory symbol_,
        uint256 supply,
        address holder,
        uint256 claimShareBps_,
        uint256 snapshotInterval_,
        uint256 claimPeriod_
    ) ERC20(name_, symbol_) {
        if (claimShareBps_ > BPS) revert RevShareTokenInvalidClaimShare(claimShareBps_);
        if (claimPeriod_ == 0) revert RevShareTokenInvalidClaimPeriod();
        if (supply > type(uint128).max) revert RevShareTokenSupplyTooLarge(supply);
        claimShareBps = claimShareBps_;
        snapshotInterval = snapshotInterval_;
        claimPeriod = claimPeriod_;
        _lastSnapshotTime = block.timestamp;
        _mint(holder, supply);
    }

    /// @notice Revenue arrives as plain ETH; it is split between claims and the burn pool at the next snapshot.
    receive() external payable {
        emit RevenueReceived(msg.sender, msg.value);
    }

    /**
     * @notice Fix balances as of the end of the previous block and split the revenue received since the last snapshot
     * (including this block's, up to this call).
     * @dev Reverts with {RevShareTokenSnapshotTooSoon} before `snapshotInterval` has passed. Emits {Snapshot}.
     * When the supply as of the previous block is zero nothing is split and the revenue stays pending.
     * @return snapshotId The id of the new snapshot (ids start at 1).
     */
    function snapshot() external returns (uint256 snapshotId) {
        uint256 allowedAt = _lastSnapshotTime + snapshotInterval;
        if (block.timestamp < allowedAt) revert RevShareTokenSnapshotTooSoon(allowedAt);

        uint48 timepoint = clock();
        uint256 supply = _supplyHistory.upperLookupRecent(timepoint - 1);
        uint256 revenue = supply == 0 ? 0 : pendingRevenue();
        uint256 claimable = Math.mulDiv(revenue, claimShareBps, BPS);
        uint256 toBurnPool = revenue - claimable;
        snapshotId = ++_snapshotCount;
        _lastSnapshotTime = block.timestamp;
        _claimPool += claimable;
        _burnPool += toBurnPool;
        _snapshots[snapshotId] = SnapshotRecord({
            claimable: SafeCast.toUint128(claimable),
            claimed: 0,
            totalSupply: SafeCast.toUint128(supply),
            timestamp: SafeCast.toUint64(block.timestamp),
            timepoint: timepoint,
            swept: false
        });
        emit Snapshot(snapshotId, claimable, toBurnPool, supply);
    }

    /**
     * @notice ETH `account` can still claim at `snapshotId`: its share of the snapshot's claimable revenue, pro rata to
     * its balance then (at the end of the block before the snapshot's). Zero for unknown snapshots, after a claim, and
     * after the snapshot was swept.
     */
    function claimableRevenue(address account, uint256 snapshotId) public view returns (uint256) {
        if (snapshotId == 0 || snapshotId > _snapshotCount) return 0;
        if (_claimed[account].get(snapshotId) || _snapshots[snapshotId].swept) return 0;
        return _entitlement(account, snapshotId);
    }

    /**
     * @notice Claim the caller's revenue at `snapshotId`, once.
     * @dev Reverts with {RevShareTokenUnknownSnapshot}, {RevShareTokenAlreadyClaimed}, {RevShareTokenSnapshotSwept}, or
     * {RevShareTokenNothingToClaim} (no balance at the snapshot, e.g. tokens bought after it or in its block, or only
     * flash-borrowed). Emits {RevenueClaimed}.
     */
    function claim(uint256 snapshotId) external nonReentrant {
        if (snapshotId == 0 || snapshotId > _snapshotCount) revert RevShareTokenUnknownSnapshot(snapshotId);
        if (_claimed[msg.sender].get(snapshotId)) revert RevShareTokenAlreadyClaimed(msg.sender, snapshotId);
        SnapshotRecord storage record = _snapshots[snapshotId];
        if (record.swept) revert RevShareTokenSnapshotSwept(snapshotId);
        uint256 amount = _entitlement(msg.sender, snapshotId);
        if (amount == 0) revert RevShareTokenNothingToClaim(msg.sender, snapshotId);

        _claimed[msg.sender].set(snapshotId);
        record.claimed += uint128(amount);
        _claimPool -= amount;
        emit RevenueClaimed(msg.sender, snapshotId, amount);
        Address.sendValue(payable(msg.sender), amount);
    }

    /**
     * @notice Move what is left unclaimed at `snapshotId` into the burn pool, once its claim period is over.
     * @dev Reverts with {RevShareTokenUnknownSnapshot}, {RevShareTokenSnapshotSwept}, or {RevShareTokenClaimPeriodOpen}.
     * Emits {UnclaimedSwept}. Afterwards nobody can claim at this snapshot.
     */
    function sweep(uint256 snapshotId) external {
        if (snapshotId == 0 || snapshotId > _snapshotCount) revert RevShareTokenUnknownSnapshot(snapshotId);
        SnapshotRecord storage record = _snapshots[snapshotId];
        if (record.swept) revert RevShareTokenSnapshotSwept(snapshotId);
        uint256 sweepableAt = record.timestamp + claimPeriod;
        if (block.timestamp < sweepableAt) revert RevShareTokenClaimPeriodOpen(snapshotId, sweepableAt);

        uint256 amount = record.claimable - record.claimed;
        record.swept = true;
        _claimPool -= amount;
        _burnPool += amount;
        emit UnclaimedSwept(snapshotId, amount);
    }

    /// @notice ETH that burning `amount` tokens redeems now: `amount / totalSupply` of the burn pool.
    function redeemableOnBurn(uint256 amount) public view returns (uint256) {
        uint256 supply = totalSupply();
        return supply == 0 ? 0 : Math.mulDiv(Math.min(amount, supply), _burnPool, supply);
    }

    /**
     * @notice Burn `amount` of the caller's tokens and receive their share of the burn pool.
     * @dev Reverts with {RevShareTokenZeroAmount} or {RevShareTokenBurnExceedsBalance}. Emits {Transfer} and
     * {RevenueRedeemed}. Burned tokens keep their claims at past snapshots (and at one taken later in the
     * same block, which counts balances as of the previous block), and take no part in snapshots of later blocks.
     */
    function burn(uint256 amount) external nonReentrant {
        if (amount == 0) revert RevShareTokenZeroAmount();
        uint256 balance = balanceOf(msg.sender);
        if (amount > balance) revert RevShareTokenBurnExceedsBalance(msg.sender, balance, amount);

        uint256 redeemed = redeemableOnBurn(amount);
        _burnPool -= redeemed;
        _burn(msg.sender, amount);
        emit RevenueRedeemed(msg.sender, amount, redeemed);
        if (redeemed > 0) Address.sendValue(payable(msg.sender), redeemed);
    }

    /**
     * @notice Balance of `account` counted at `snapshotId`: its balance at the end of the block before the snapshot's.
     * Reverts with {RevShareTokenUnknownSnapshot}.
     */
    function balanceOfAt(address account, uint256 snapshotId) public view returns (uint256) {
        if (snapshotId == 0 || snapshotId > _snapshotCount) revert RevShareTokenUnknownSnapshot(snapshotId);
        return _pastBalance(account, _snapshots[snapshotId].timepoint);
    }

    /**
     * @notice Total supply counted at `snapshotId` (at the end of the block before the snapshot's).
     * Reverts with {RevShareTokenUnknownSnapshot}.
     */
    function totalSupplyAt(uint256 snapshotId) external view returns (uint256) {
        if (snapshotId == 0 || snapshotId > _snapshotCount) revert RevShareTokenUnknownSnapshot(snapshotId);
        return _snapshots[snapshotId].totalSupply;
    }

    /// @notice The record of `snapshotId` (all zero for an unknown id).
    function snapshotRecord(uint256 snapshotId) external view returns (SnapshotRecord memory) {
        return _snapshots[snapshotId];
    }

    /// @notice Id of the latest snapshot (0 before the first).
    function currentSnapshotId() external view returns (uint256) {
        return _snapshotCount;
    }

    /// @notice Earliest timestamp at which {snapshot} succeeds.
    function nextSnapshotAt() external view returns (uint256) {
        return _lastSnapshotTime + snapshotInterval;
    }

    /// @notice The ERC-6372 clock that balances are checkpointed on: the block number.
    function clock() public view virtual returns (uint48) {
        return Time.blockNumber();
    }

    /// @notice Machine-readable description of {clock} (ERC-6372).
    // solhint-disable-next-line func-name-mixedcase
    function CLOCK_MODE() public view virtual returns (string memory) {
        if (clock() != Time.blockNumber()) revert ERC6372InconsistentClock();
        return "mode=blocknumber&from=default";
    }

    /// @notice Whether `account` has claimed at `snapshotId`.
    function hasClaimed(address account, uint256 snapshotId) external view returns (bool) {
        return _claimed[account].get(snapshotId);
    }

    /// @notice Claimable revenue of all snapshots not yet claimed or swept.
    function claimPool() external view returns (uint256) {
        return _claimPool;
    }

    /// @notice Revenue redeemable by burning.
    function burnPool() external view returns (uint256) {
        return _burnPool;
    }

    /// @notice Revenue received since the last snapshot (including ETH forced in without a call), not yet split.
    function pendingRevenue() public view returns (uint256) {
        return address(this).balance - _claimPool - _burnPool;
    }

    /// @dev The one formula for a holder's share of a snapshot: balance then / supply then * claimable then.
    function _entitlement(address account, uint256 snapshotId) private view returns (uint256) {
        SnapshotRecord storage record = _snapshots[snapshotId];
        if (record.totalSupply == 0) return 0;
        return Math.mulDiv(_pastBalance(account, record.timepoint), record.claimable, record.totalSupply);
    }

    /**
     * @dev Balance of `account` at the end of the block before `timepoint` (strictly before it, so whatever happened
     * at `timepoint` itself, e.g. a flash loan around the snapshot, is not seen). Final once `clock()` >= `timepoint`.
     */
    function _pastBalance(address account, uint48 timepoint) private view returns (uint256) {
        return _balanceHistory[account].upperLookupRecent(timepoint - 1);
    }

    /**
     * @dev Checkpoint balances (and, on mint and burn, the supply) after every mint, transfer and burn, keyed by
     * {clock}; changes within one block overwrite that block's checkpoint. Casts are safe: the supply fits in uint128.
     */
    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        uint48 key = clock();
        if (from == address(0) || to == address(0)) _supplyHistory.push(key, uint208(totalSupply()));
        if (from != address(0)) _balanceHistory[from].push(key, uint208(balanceOf(from)));
        if (to != address(0)) _balanceHistory[to].push(key, uint208(balanceOf(to)));
    }
}
