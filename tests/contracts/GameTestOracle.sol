// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {DisputeGame, GameSetup} from "./DisputeGame.sol";

/// @dev Test only. Stands in for AIOracle in front of a DisputeGame: opens games for anyone and records every result
/// it is told, refusing a second result for the same game.
contract GameTestOracle {
    DisputeGame public game;
    mapping(uint256 gameId => uint8) public results; // 0: none yet, 1: challenger won, 2: defender won
    uint256 public settlements;

    event Settled(uint256 indexed gameId, uint256 requestId, uint256 segment, bool challengerWon);

    function setGame(DisputeGame game_) external {
        require(address(game) == address(0), "set");
        game = game_;
    }

    function openGame(GameSetup calldata setup) external returns (uint256) {
        return game.open(setup);
    }

    function settleGame(uint256 gameId, uint256 requestId, uint256 segment, bool challengerWon) external {
        require(msg.sender == address(game), "not the game");
        require(results[gameId] == 0, "settled twice");
        results[gameId] = challengerWon ? 1 : 2;
        ++settlements;
        emit Settled(gameId, requestId, segment, challengerWon);
    }
}
