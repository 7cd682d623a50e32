// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AIOracleCallbackReceiver} from "./AIOracleCallbackReceiver.sol";
import {IAIOracle} from "./IAIOracle.sol";

/**
 * @title OracleConsumer
 * @dev A minimal dapp of an {IAIOracle}: name it as `callbackContract` in a request and it keeps the result.
 * Requests are made by accounts directly, so fee refunds (after a successful challenge or a cancel) are credited to
 * them, not to this contract; a dapp that requests from its own contract must be able to call the oracle's
 * `withdraw` and `cancel` and to receive ETH.
 */
contract OracleConsumer is AIOracleCallbackReceiver {
    /// @notice Enough callback gas for storing an output of up to 8 values.
    uint64 public constant CALLBACK_GAS = 300_000;

    mapping(uint256 requestId => bytes) public outputOf;

    event ResultReceived(uint256 indexed requestId, bytes output, bytes callbackData);

    constructor(IAIOracle aiOracle_) AIOracleCallbackReceiver(aiOracle_) {}

    function aiOracleCallback(uint256 requestId, bytes calldata output, bytes calldata callbackData)
        external
        override
        onlyAIOracleCallback
    {
        outputOf[requestId] = output;
        emit ResultReceived(requestId, output, callbackData);
    }
}
