// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title IHalo2Verifier
 * @dev The entry point of the Solidity verifier that ezkl generates for one circuit (contract `Halo2Verifier`).
 * It returns true for a valid proof of `instances` (field elements < the BN254 scalar modulus), and reverts or returns
 * false otherwise.
 */
interface IHalo2Verifier {
    function verifyProof(bytes calldata proof, uint256[] calldata instances) external returns (bool);
}
