// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAIOracle} from "./IAIOracle.sol";

/**
 * @title AIOracleCallbackReceiver
 * @dev Base contract for dapps that receive results from an {IAIOracle}. `aiOracleCallback` accepts calls from the
 * oracle only and hands the result to `_aiOracleCallback`, which the dapp implements. `output` is
 * `abi.encode(int256[] values, uint256 scale)`: fixed-point integers, value = v / 2**scale. Porting an OAO dapp:
 * move the body of its `aiOracleCallback` into `_aiOracleCallback`.
 */
abstract contract AIOracleCallbackReceiver {
    IAIOracle public immutable aiOracle;

    error AIOracleCallbackReceiverUnauthorized(address caller);

    modifier onlyAIOracleCallback() {
        if (msg.sender != address(aiOracle)) revert AIOracleCallbackReceiverUnauthorized(msg.sender);
        _;
    }

    constructor(IAIOracle aiOracle_) {
        aiOracle = aiOracle_;
    }

    /**
     * @notice Receive the final result of `requestId` from the oracle.
     * @dev Reverts with {AIOracleCallbackReceiverUnauthorized} unless called by `aiOracle`.
     */
    function aiOracleCallback(uint256 requestId, bytes calldata output, bytes calldata callbackData)
        external
        onlyAIOracleCallback
    {
        _aiOracleCallback(requestId, output, callbackData);
    }

    /// @dev Handle a result; runs with the gas limit given at request time.
    function _aiOracleCallback(uint256 requestId, bytes calldata output, bytes calldata callbackData) internal virtual;
}
