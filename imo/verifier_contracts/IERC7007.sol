// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {IERC721} from "@openzeppelin/contracts/token/ERC721/IERC721.sol";

/**
 * @title IERC7007
 * @dev ERC-7007 Verifiable AI-Generated Content Token: an ERC-721 whose tokens carry AI-generated content (`aigcData`)
 * for a `prompt`, added only with a `proof` that `verify` accepts (a zkML proof, or an opML result past its window).
 */
interface IERC7007 is IERC165, IERC721 {
    /// @dev Emitted when AI Generated Content (AIGC) data is added to token at `tokenId`.
    event AigcData(uint256 indexed tokenId, bytes indexed prompt, bytes indexed aigcData, bytes proof);

    /// @dev Add AIGC data to token at `tokenId` given `prompt`, `aigcData` and `proof`.
    function addAigcData(uint256 tokenId, bytes calldata prompt, bytes calldata aigcData, bytes calldata proof) external;

    /// @dev Verify the `prompt`, `aigcData` and `proof`.
    function verify(bytes calldata prompt, bytes calldata aigcData, bytes calldata proof)
        external
        view
        returns (bool success);
}
