// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/**
 * @title ModelOffering
 * @dev The Initial Model Offering of a model's revenue-share token: buyers pay `price` wei per sale unit of `unitSize`
 * token base units until `deadline` or the hard cap. After it, `finalizeSale` settles: if the soft cap was met,
 * buyers collect their tokens and the proceeds can be withdrawn to `treasury`; otherwise every buyer gets a full
 * refund. The tokens on sale must be held by this contract (transferred in before the first buy); whatever is not
 * sold goes back to `treasury` when the sale is finalized. All payments are pulled.
 */
contract ModelOffering is ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    IERC20 public immutable token;
    address payable public immutable treasury;
    /// @notice Wei per sale unit.
    uint256 public immutable price;
    /// @notice Token base units per sale unit.
    uint256 public immutable unitSize;
    /// @notice Wei to raise for the sale to succeed.
    uint256 public immutable softCap;
    /// @notice Most wei the sale accepts.
    uint256 public immutable hardCap;
    /// @notice Timestamp after which no one can buy and the sale can be finalized.
    uint256 public immutable deadline;

    uint256 public raised;
    bool public finalized;
    bool public succeeded;
    uint256 public proceedsDue;
    mapping(address buyer => uint256) public contributionOf;

    event TokensPurchased(address indexed buyer, uint256 paid, uint256 tokens);
    event SaleFinalized(bool succeeded, uint256 raised, uint256 tokensReturned);
    event TokensClaimed(address indexed buyer, uint256 tokens);
    event Refunded(address indexed buyer, uint256 amount);
    event ProceedsWithdrawn(address indexed treasury, uint256 amount);

    error ModelOfferingInvalidConfig();
    error ModelOfferingClosed(uint256 deadline);
    error ModelOfferingInvalidPayment(uint256 paid, uint256 price);
    error ModelOfferingHardCapExceeded(uint256 wouldRaise, uint256 hardCap);
    error ModelOfferingUnderfunded(uint256 tokensNeeded, uint256 tokensHeld);
    error ModelOfferingStillOpen(uint256 deadline);
    error ModelOfferingAlreadyFinalized();
    error ModelOfferingNotFinalized();
    error ModelOfferingSaleFailed();
    error ModelOfferingSaleSucceeded();
    error ModelOfferingNothingToClaim(address buyer);
    error ModelOfferingNothingToWithdraw();

    constructor(
        IERC20 token_,
        address payable treasury_,
        uint256 price_,
        uint256 unitSize_,
        uint256 softCap_,
        uint256 hardCap_,
        uint256 deadline_
    ) {
        if (
            address(token_) == address(0) || treasury_ == address(0) || price_ == 0 || unitSize_ == 0 ||
            softCap_ > hardCap_ || hardCap_ % price_ != 0 || hardCap_ == 0 || deadline_ <= block.timestamp
        ) revert ModelOfferingInvalidConfig();
        token = token_;
        treasury = treasury_;
        price = price_;
        unitSize = unitSize_;
        softCap = softCap_;
        hardCap = hardCap_;
        deadline = deadline_;
    }

    /**
     * @notice Buy tokens with `msg.value`, an exact multiple of `price`; they can be collected once the sale succeeds.
     * @dev Reverts with {ModelOfferingClosed} after the deadline, {ModelOfferingInvalidPayment},
     * {ModelOfferingHardCapExceeded}, or {ModelOfferingUnderfunded} if this contract does not hold the tokens.
     * Emits {TokensPurchased}.
     */
    function buy() external payable {
        if (block.timestamp >= deadline || finalized) revert ModelOfferingClosed(deadline);
        if (msg.value == 0 || msg.value % price != 0) revert ModelOfferingInvalidPayment(msg.value, price);
        uint256 wouldRaise = raised + msg.value;
        if (wouldRaise > hardCap) revert ModelOfferingHardCapExceeded(wouldRaise, hardCap);
        uint256 held = token.balanceOf(address(this));
        if (tokensFor(wouldRaise) > held) revert ModelOfferingUnderfunded(tokensFor(wouldRaise), held);

        raised = wouldRaise;
        contributionOf[msg.sender] += msg.value;
        emit TokensPurchased(msg.sender, msg.value, tokensFor(msg.value));
    }

    /**
     * @notice Settle the sale once the deadline has passed or the hard cap is reached; anyone may call it, once.
     * @dev Reverts with {ModelOfferingAlreadyFinalized} or {ModelOfferingStillOpen}. Emits {SaleFinalized}, then returns
     * the tokens that are not owed to buyers to `treasury`.
     */
    function finalizeSale() external nonReentrant {
        if (finalized) revert ModelOfferingAlreadyFinalized();
        if (block.timestamp < deadline && raised < hardCap) revert ModelOfferingStillOpen(deadline);

        bool success = raised >= softCap;
        uint256 owed = success ? tokensFor(raised) : 0;
        uint256 unsold = token.balanceOf(address(this)) - owed;
        finalized = true;
        succeeded = success;
        if (success) proceedsDue = raised;
        emit SaleFinalized(success, raised, unsold);
        if (unsold > 0) token.safeTransfer(treasury, unsold);
    }

    /**
     * @notice Collect the tokens bought, after a successful sale.
     * @dev Reverts with {ModelOfferingNotFinalized}, {ModelOfferingSaleFailed} or {ModelOfferingNothingToClaim}.
     * Emits {TokensClaimed}.
     */
    function claimTokens() external nonReentrant {
        if (!finalized) revert ModelOfferingNotFinalized();
        if (!succeeded) revert ModelOfferingSaleFailed();
        uint256 paid = contributionOf[msg.sender];
        if (paid == 0) revert ModelOfferingNothingToClaim(msg.sender);

        contributionOf[msg.sender] = 0;
        uint256 tokens = tokensFor(paid);
        emit TokensClaimed(msg.sender, tokens);
        token.safeTransfer(msg.sender, tokens);
    }

    /**
     * @notice Get back everything paid, after a sale that missed its soft cap.
     * @dev Reverts with {ModelOfferingNotFinalized}, {ModelOfferingSaleSucceeded} or {ModelOfferingNothingToClaim}.
     * Emits {Refunded}.
     */
    function refund() external nonReentrant {
        if (!finalized) revert ModelOfferingNotFinalized();
        if (succeeded) revert ModelOfferingSaleSucceeded();
        uint256 paid = contributionOf[msg.sender];
        if (paid == 0) revert ModelOfferingNothingToClaim(msg.sender);

        contributionOf[msg.sender] = 0;
        emit Refunded(msg.sender, paid);
        Address.sendValue(payable(msg.sender), paid);
    }

    /**
     * @notice Send the proceeds of a successful sale to `treasury`; anyone may trigger it.
     * @dev Reverts with {ModelOfferingNothingToWithdraw}. Emits {ProceedsWithdrawn}.
     */
    function withdrawProceeds() external nonReentrant {
        uint256 amount = proceedsDue;
        if (amount == 0) revert ModelOfferingNothingToWithdraw();

        proceedsDue = 0;
        emit ProceedsWithdrawn(treasury, amount);
        Address.sendValue(treasury, amount);
    }

    /// @notice Token base units bought with `paid` wei.
    function tokensFor(uint256 paid) public view returns (uint256) {
        return (paid / price) * unitSize;
    }
}
