// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title IAIOracle
 * @dev The dapp-facing shape of ORA's Onchain AI Oracle (OAO), kept so OAO dapps port with few changes: a request
 * names a model, an input and a callback; the result arrives later through `aiOracleCallback` on the callback contract.
 */
interface IAIOracle {
    /// @notice Emitted by {requestCallback}.
    event AICallbackRequest(
        address indexed account,
        uint256 indexed requestId,
        uint256 modelId,
        bytes input,
        address callbackContract,
        uint64 gasLimit,
        bytes callbackData
    );

    /// @notice Emitted when a result is final and delivered to the callback contract.
    event AICallbackResult(address indexed account, uint256 indexed requestId, address invoker, bytes output);

    /**
     * @notice Request an inference of `modelId` on `input`; `callbackContract.aiOracleCallback` receives the result.
     * @param modelId ID of the registered model
     * @param input input of the model
     * @param callbackContract contract to call with the result (zero address: no callback)
     * @param gasLimit gas given to the callback
     * @param callbackData bytes passed back to the callback unchanged
     * @return requestId the id of the request
     */
    function requestCallback(
        uint256 modelId,
        bytes calldata input,
        address callbackContract,
        uint64 gasLimit,
        bytes calldata callbackData
    ) external payable returns (uint256 requestId);

    /// @notice The fee a request of `modelId` with a callback of `gasLimit` gas must pay.
    function estimateFee(uint256 modelId, uint256 gasLimit) external view returns (uint256);

    /// @notice Whether the result of `requestId` is final.
    function isFinalized(uint256 requestId) external view returns (bool);
}
