// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {RevShareToken} from "./RevShareToken.sol";

/// @dev Test only. Whoever borrows from a {FlashLender} is called back with the tokens and must return them.
interface IFlashBorrower {
    function onFlashLoan(uint256 amount) external;
}

/// @dev Test only. Lends its whole balance of `token` for the length of one call and requires it back by the end.
contract FlashLender {
    IERC20 public immutable token;

    error FlashLenderNotRepaid(uint256 expected, uint256 actual);

    constructor(IERC20 token_) {
        token = token_;
    }

    function flashLoan(uint256 amount) external {
        uint256 before = token.balanceOf(address(this));
        token.transfer(msg.sender, amount);
        IFlashBorrower(msg.sender).onFlashLoan(amount);
        uint256 afterwards = token.balanceOf(address(this));
        if (afterwards < before) revert FlashLenderNotRepaid(before, afterwards);
    }
}

/// @dev Test only. In one transaction: borrow tokens, take a RevShareToken snapshot while holding them, repay; then try
/// to claim the snapshot's revenue with tokens it never held across a block boundary.
contract FlashSnapshotAttacker is IFlashBorrower {
    RevShareToken public immutable token;
    FlashLender public immutable lender;
    uint256 public lastSnapshotId;

    constructor(RevShareToken token_, FlashLender lender_) {
        token = token_;
        lender = lender_;
    }

    function attack(uint256 amount) external returns (uint256) {
        lender.flashLoan(amount);
        return lastSnapshotId;
    }

    function onFlashLoan(uint256 amount) external {
        require(msg.sender == address(lender), "not the lender");
        lastSnapshotId = token.snapshot();
        token.transfer(address(lender), amount);
    }

    function claim(uint256 snapshotId) external {
        token.claim(snapshotId);
    }

    receive() external payable {}
}
