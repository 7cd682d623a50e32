// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AIOracle} from "./AIOracle.sol";
import {AIOracleCallbackReceiver} from "./AIOracleCallbackReceiver.sol";
import {IAIOracle} from "./IAIOracle.sol";

/// @dev Test only. A callback that always reverts.
contract RevertingCallback {
    function aiOracleCallback(uint256, bytes calldata, bytes calldata) external pure {
        revert("callback refuses");
    }
}

/// @dev Test only. A callback that burns all the gas it is given.
contract GasBurningCallback {
    uint256 public spins;

    function aiOracleCallback(uint256, bytes calldata, bytes calldata) external {
        while (true) {
            ++spins;
        }
    }
}

/// @dev Test only. A callback that returns 400 kB, which would cost its caller as much again to copy back.
contract ReturnBombCallback {
    function aiOracleCallback(uint256, bytes calldata, bytes calldata) external pure {
        assembly {
            return(0, 400000)
        }
    }
}

/// @dev Test only. A callback that tries to re-enter the oracle: finalize again, withdraw, cancel.
contract ReentrantCallback {
    AIOracle public immutable oracle;
    uint256 public calls;
    bool public finalizeReentered;
    bool public withdrawReentered;
    bool public cancelReentered;

    constructor(AIOracle oracle_) {
        oracle = oracle_;
    }

    function aiOracleCallback(uint256 requestId, bytes calldata output, bytes calldata) external {
        ++calls;
        try oracle.finalize(requestId, bytes32(0), output) {
            finalizeReentered = true;
        } catch {}
        try oracle.withdraw() {
            withdrawReentered = true;
        } catch {}
        try oracle.cancel(requestId) {
            cancelReentered = true;
        } catch {}
    }

    receive() external payable {}
}

/// @dev Test only. An account that refuses ETH (e.g. a RevShareToken that cannot take a push).
contract RefusingReceiver {
    receive() external payable {
        revert("no ETH");
    }
}

/// @dev Test only. Forwards any call to the oracle, so that a submit comes from a contract rather than an account.
contract OracleCaller {
    address public immutable oracle;

    constructor(address oracle_) {
        oracle = oracle_;
    }

    function forward(bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = oracle.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        return ret;
    }
}

/// @dev Test only. Keeps a digest of a (possibly large) output rather than the output itself.
contract OutputDigestConsumer is AIOracleCallbackReceiver {
    mapping(uint256 requestId => bytes32) public digestOf;
    mapping(uint256 requestId => uint256) public countOf;
    mapping(uint256 requestId => int256) public sumOf;

    constructor(IAIOracle aiOracle_) AIOracleCallbackReceiver(aiOracle_) {}

    function aiOracleCallback(uint256 requestId, bytes calldata output, bytes calldata)
        external
        override
        onlyAIOracleCallback
    {
        (int256[] memory values,) = abi.decode(output, (int256[], uint256));
        int256 sum;
        for (uint256 i = 0; i < values.length; ++i) {
            sum += values[i];
        }
        digestOf[requestId] = keccak256(output);
        countOf[requestId] = values.length;
        sumOf[requestId] = sum;
    }
}

/// @dev Test only. ORA's OAO `Prompt` example, ported as an OAO dapp would be: it overrides `aiOracleCallback` with
/// `onlyAIOracleCallback`, asks `estimateFee` with its callback gas limit and pays it in `requestCallback`. The only
/// change: the prompt's bytes go out as a packed width-1 tensor, and the output comes back as fixed-point values.
contract OraStylePrompt is AIOracleCallbackReceiver {
    event promptsUpdated(uint256 requestId, uint256 modelId, string input, bytes output, bytes callbackData);
    event promptRequest(uint256 requestId, address sender, uint256 modelId, string prompt);

    struct AIOracleRequest {
        address sender;
        uint256 modelId;
        bytes input;
        bytes output;
    }

    mapping(uint256 => AIOracleRequest) public requests;
    mapping(uint256 => uint64) public callbackGasLimit;
    mapping(uint256 => mapping(string => bytes)) public prompts;

    constructor(IAIOracle _aiOracle, uint256 modelId, uint64 gasLimit) AIOracleCallbackReceiver(_aiOracle) {
        callbackGasLimit[modelId] = gasLimit;
    }

    function getAIResult(uint256 modelId, string calldata prompt) external view returns (bytes memory) {
        return prompts[modelId][prompt];
    }

    function aiOracleCallback(uint256 requestId, bytes calldata output, bytes calldata callbackData)
        external
        override
        onlyAIOracleCallback
    {
        AIOracleRequest storage request = requests[requestId];
        require(request.sender != address(0), "request does not exist");
        request.output = output;
        prompts[request.modelId][string(request.input)] = output;
        emit promptsUpdated(requestId, request.modelId, string(request.input), output, callbackData);
    }

    function estimateFee(uint256 modelId) public view returns (uint256) {
        return aiOracle.estimateFee(modelId, callbackGasLimit[modelId]);
    }

    function calculateAIResult(uint256 modelId, string calldata prompt) external payable returns (uint256) {
        bytes memory input = bytes.concat(hex"01", bytes(prompt));
        uint256 requestId =
            aiOracle.requestCallback{value: msg.value}(modelId, input, address(this), callbackGasLimit[modelId], "");
        AIOracleRequest storage request = requests[requestId];
        request.input = bytes(prompt);
        request.sender = msg.sender;
        request.modelId = modelId;
        emit promptRequest(requestId, msg.sender, modelId, prompt);
        return requestId;
    }
}
