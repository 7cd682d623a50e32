// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAIOracle} from "./IAIOracle.sol";

/**
 * @title AIOracleCallbackReceiver
 * @dev Base contract for dapps that receive results from an {IAIOracle}, in the shape of ORA's OAO receiver so OAO
 * dapps port unchanged: override `aiOracleCallback` and guard it with `onlyAIOracleCallback`. `output` is
 * `abi.encode(int256[] values, uint256 scale)`: fixed-point integers, value = v / 2**scale (for a byte-level model,
 * the values are the bytes of the generated text).
 */
abstract contract AIOracleCallbackReceiver {
    IAIOracle public immutable aiOracle;

    error UnauthorizedCallbackSource(IAIOracle expected, address found);

    modifier onlyAIOracleCallback() {
        if (msg.sender != address(aiOracle)) revert UnauthorizedCallbackSource(aiOracle, msg.sender);
        _;
    }

    constructor(IAIOracle aiOracle_) {
        aiOracle = aiOracle_;
    }

    /**
     * @notice Receive the final result of `requestId` from the oracle; runs with the gas limit given at request time.
     * @dev Implementations must use {onlyAIOracleCallback}.
     */
    function aiOracleCallback(uint256 requestId, bytes calldata output, bytes calldata callbackData) external virtual;

    /// @notice Whether the oracle's result of `requestId` is final.
    function isFinalized(uint256 requestId) external view returns (bool) {
        return aiOracle.isFinalized(requestId);
    }
}
