// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC2981} from "@openzeppelin/contracts/token/common/ERC2981.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {Base64} from "@openzeppelin/contracts/utils/Base64.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {AIOracle} from "./AIOracle.sol";
import {BoundaryCodec} from "./BoundaryCodec.sol";
import {IERC7007} from "./IERC7007.sol";

/**
 * @title AIGCNFT
 * @dev ERC-7007 AI-generated-content NFTs of one image model served by an {AIOracle}: content is accepted only when it
 * is the output of a finalized oracle request of that model for that prompt (`prompt` = the request input: the
 * ABI-encoded commitment C_0 of a private input, or the public input's packed bytes; `proof` =
 * `abi.encode(requestId, bodyHash)` of the finalized claim; `aigcData` = the claim's packed output, 64 pixels in
 * {BoundaryCodec}'s encoding). The oracle keeps only a claim's hash, so the token stores its pixels itself. One token
 * per prompt (tokenId = keccak256(prompt)), minted by the request's requester for `mintFee`, which goes to the model's
 * RevShareToken, as do ERC-2981 royalties. `tokenURI` renders the 8x8 greyscale output onchain as an SVG (pixel value
 * v / 2**scale in [0, 1]).
 */
contract AIGCNFT is ERC721, ERC2981, IERC7007 {
    uint256 public constant PIXELS = 64;

    AIOracle public immutable oracle;
    uint256 public immutable modelId;
    address payable public immutable revShareToken;
    uint256 public immutable mintFee;
    uint256 public immutable scale;
    bool private immutable _hashedInput;

    mapping(uint256 tokenId => uint256 requestId) private _requestOf;
    mapping(uint256 tokenId => bytes) private _pixelsOf;

    error AIGCNFTInvalidModel(uint256 modelId);
    error AIGCNFTWrongMintFee(uint256 required, uint256 paid);
    error AIGCNFTNotRequester(uint256 requestId, address caller);
    error AIGCNFTUnverified();
    error AIGCNFTAlreadyMinted(uint256 tokenId);
    error AIGCNFTPromptMismatch(uint256 tokenId);
    error AIGCNFTUnauthorized(address caller, uint256 tokenId);

    constructor(
        string memory name_,
        string memory symbol_,
        AIOracle oracle_,
        uint256 modelId_,
        uint256 mintFee_,
        uint96 royaltyBps
    ) ERC721(name_, symbol_) {
        (AIOracle.ModelSpec memory spec,, uint32[] memory sizes,) = oracle_.getModel(modelId_);
        if (spec.revShareToken == address(0) || sizes[sizes.length - 1] != PIXELS) revert AIGCNFTInvalidModel(modelId_);
        oracle = oracle_;
        scale = spec.scale;
        _hashedInput = sizes[0] == 0;
        modelId = modelId_;
        revShareToken = spec.revShareToken;
        mintFee = mintFee_;
        _setDefaultRoyalty(spec.revShareToken, royaltyBps);
    }

    /**
     * @notice Mint the token of `prompt` to the caller, with the finalized oracle output `aigcData` and `proof` (the
     * request id); pay exactly `mintFee`, which is forwarded to the model's RevShareToken.
     * @dev Reverts with {AIGCNFTWrongMintFee}, {AIGCNFTNotRequester} (only the request's requester may mint it),
     * {AIGCNFTUnverified} or {AIGCNFTAlreadyMinted}. Emits {Transfer} and {AigcData}.
     */
    function mint(bytes calldata prompt, bytes calldata aigcData, bytes calldata proof)
        external
        payable
        returns (uint256 tokenId)
    {
        if (msg.value != mintFee) revert AIGCNFTWrongMintFee(mintFee, msg.value);
        uint256 requestId = _requestIdOf(proof);
        (AIOracle.Request memory request,) = oracle.getRequest(requestId);
        if (request.requester != msg.sender) revert AIGCNFTNotRequester(requestId, msg.sender);
        if (!verify(prompt, aigcData, proof)) revert AIGCNFTUnverified();
        tokenId = uint256(keccak256(prompt));
        if (_ownerOf(tokenId) != address(0)) revert AIGCNFTAlreadyMinted(tokenId);

        _requestOf[tokenId] = requestId;
        _pixelsOf[tokenId] = aigcData;
        _mint(msg.sender, tokenId);
        emit AigcData(tokenId, prompt, aigcData, proof);
        if (msg.value > 0) Address.sendValue(revShareToken, msg.value);
    }

    /**
     * @notice Re-attest the content of an existing token with another finalized request for the same prompt.
     * @dev Reverts with {ERC721NonexistentToken}, {AIGCNFTUnauthorized} (not owner or approved),
     * {AIGCNFTPromptMismatch} or {AIGCNFTUnverified}. Emits {AigcData}.
     */
    function addAigcData(uint256 tokenId, bytes calldata prompt, bytes calldata aigcData, bytes calldata proof)
        external
    {
        address owner = _requireOwned(tokenId);
        if (!_isAuthorized(owner, msg.sender, tokenId)) revert AIGCNFTUnauthorized(msg.sender, tokenId);
        if (tokenId != uint256(keccak256(prompt))) revert AIGCNFTPromptMismatch(tokenId);
        if (!verify(prompt, aigcData, proof)) revert AIGCNFTUnverified();

        _requestOf[tokenId] = _requestIdOf(proof);
        _pixelsOf[tokenId] = aigcData;
        emit AigcData(tokenId, prompt, aigcData, proof);
    }

    /**
     * @notice True iff `proof` names a finalized request of this model whose input is `prompt` and whose output is
     * `aigcData`.
     */
    function verify(bytes calldata prompt, bytes calldata aigcData, bytes calldata proof) public view returns (bool) {
        if (proof.length != 64) return false;
        (uint256 requestId, bytes32 bodyHash) = abi.decode(proof, (uint256, bytes32));
        if (!oracle.isFinalized(requestId)) return false;
        (AIOracle.Request memory request,) = oracle.getRequest(requestId);
        if (request.modelId != modelId) return false;
        bytes32 input = _hashedInput ? keccak256(abi.encode(request.input)) : request.input;
        if (keccak256(prompt) != input) return false;
        if (!BoundaryCodec.isTensor(aigcData, PIXELS)) return false;
        return keccak256(abi.encode(bodyHash, keccak256(aigcData))) == oracle.getClaim(requestId).claimHash;
    }

    /// @notice The oracle request whose output token `tokenId` shows.
    function requestOf(uint256 tokenId) external view returns (uint256) {
        _requireOwned(tokenId);
        return _requestOf[tokenId];
    }

    /// @notice ERC-721 metadata as a JSON data URI whose `image` is the 8x8 output as an SVG data URI.
    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        uint256 requestId = _requestOf[tokenId];
        string memory image = string.concat("data:image/svg+xml;base64,", Base64.encode(bytes(svg(tokenId))));
        bytes memory json = abi.encodePacked(
            '{"name":"AIGC #', Strings.toString(requestId),
            '","description":"8x8 image generated by model ', Strings.toString(modelId),
            ', verified by AIOracle request ', Strings.toString(requestId),
            '","aigc_type":"image","proof_type":"fraud","image":"', image, '"}'
        );
        return string.concat("data:application/json;base64,", Base64.encode(json));
    }

    /// @notice The token's 8x8 image: 64 grey squares, row-major, grey = clamp(v / 2**scale, 0, 1) * 255.
    function svg(uint256 tokenId) public view returns (string memory) {
        _requireOwned(tokenId);
        bytes memory pixels = _pixelsOf[tokenId];
        bytes memory rects;
        for (uint256 i = 0; i < PIXELS; ++i) {
            string memory grey = Strings.toString(_grey(_pixel(pixels, i), scale));
            rects = abi.encodePacked(
                rects, "<rect x='", Strings.toString(i % 8), "' y='", Strings.toString(i / 8),
                "' width='1' height='1' fill='rgb(", grey, ",", grey, ",", grey, ")'/>"
            );
        }
        return string(abi.encodePacked(
            "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 8 8' shape-rendering='crispEdges'>", rects, "</svg>"
        ));
    }

    /// @notice ERC-165: ERC-7007, ERC-721 (with metadata) and ERC-2981.
    function supportsInterface(bytes4 interfaceId)
        public
        view
        override(ERC721, ERC2981, IERC165)
        returns (bool)
    {
        return interfaceId == type(IERC7007).interfaceId || super.supportsInterface(interfaceId);
    }

    function _grey(int256 v, uint256 scale) private pure returns (uint256) {
        if (v <= 0) return 0;
        uint256 one = 1 << scale;
        return uint256(v) >= one ? 255 : (uint256(v) * 255) / one;
    }

    function _requestIdOf(bytes calldata proof) private pure returns (uint256) {
        if (proof.length != 64) revert AIGCNFTUnverified();
        return abi.decode(proof, (uint256));
    }

    /// @dev Element i of a packed tensor held in memory (see {BoundaryCodec}).
    function _pixel(bytes memory packed, uint256 i) private pure returns (int256 v) {
        uint256 width = uint8(packed[0]);
        assembly ("memory-safe") {
            v := sar(sub(256, mul(8, width)), mload(add(add(packed, 33), mul(i, width))))
        }
    }
}
