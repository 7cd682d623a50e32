"""Generation models in the AIOracle protocol, on a real anvil.

A generation model of N tokens (`ModelSpec.genTokens`) takes T token ids and outputs N; a request carries only the
prompt (P = T - N + 1 ids, stored as `prompt_hash`, whatever width packed it), and a claim's input must be
prompt ‖ gen[:N-1] in the canonical packing with gen its own output (teacher forcing: one forward pass checks all N
greedy steps). The model here is one game-only op segment with a made-up step program: only the contract's binding of
input to request and output is under test, not the model. Each attack is a claim that is well formed in every other
respect, so only the binding can reject it.
"""

from types import SimpleNamespace

import numpy as np
import pytest
from eth_abi import encode
from eth_utils import keccak
from web3.logs import DISCARD

from helpers import advance, funded_accounts, reverts, rolled_back
from imo.errors import ChainError
from imo.proving.protocol import (
    NO_VERIFIER,
    Claim,
    ModelSpec,
    Registration,
    SegmentSpec,
    decode_text_payload,
    unpack_tensor,
    pack_tensor,
    prompt_hash,
)
from imo.verifier_contracts.contracts import OracleConfig, compile_protocol, deploy_protocol
from imo.verifier_contracts.game_client import GameClient
from imo.verifier_contracts.oracle_client import OracleClient, Status

ETH = 10**18
FEE = 10**15
BOND = 2 * 10**16
WINDOW = 600
CALLBACK_GAS = 300_000
T, N = 8, 3
P = T - N + 1
SIZES = [T, N]
PROMPT = np.array([72, 101, 108, 108, 111, 32])  # "Hello "
TOKENS = np.array([119, 111, 114])  # "wor": the greedy continuation the (made-up) model claims
GAME_ONLY = SegmentSpec(NO_VERIFIER, False, keccak(b"generation program"), 4)


def generation_input(prompt: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """A generation model's claimed input for the N greedy `tokens` it generated from `prompt`: prompt ‖ tokens[:N-1]
    (T ids), as the oracle node builds it (`imo.models.generation.decode`)."""
    prompt, tokens = np.asarray(prompt, dtype=np.int64).ravel(), np.asarray(tokens, dtype=np.int64).ravel()
    return np.concatenate([prompt, tokens[:-1]])


def generation_input_matches(claim: Claim, sizes: list[int], gen_tokens: int, stored_input: bytes) -> bool:
    """An off-chain mirror of the contract's check: whether `AIOracle` accepts a generation claim's input for a request whose stored input is `stored_input`: T ids
    packed as `pack_tensor` packs them (the one encoding, so a bisection game's input hash is unambiguous), whose first
    P = T - N + 1 hash to it (`prompt_hash`) and whose rest are the claimed output's first N - 1 tokens."""
    try:
        ids, end = unpack_tensor(claim.input, 0, sizes[0])
        tokens, _ = unpack_tensor(claim.output, 0, gen_tokens)
    except ValueError:
        return False
    p = sizes[0] - gen_tokens + 1
    return (end == len(claim.input) and claim.input == pack_tensor(ids) and prompt_hash(ids[:p]) == bytes(stored_input)
            and np.array_equal(ids[p:], tokens[:-1]))


def packed(values, width: int) -> bytes:
    """`values` packed at `width` (pack_tensor picks the narrowest; a dapp or a cheat may pick another)."""
    return bytes([width]) + np.asarray(values, dtype=np.int64).astype(f">i{width}").tobytes()


def spec(dep, gen_tokens: int, name: bytes = b"gpt") -> ModelSpec:
    return ModelSpec(keccak(name), keccak(name + b" plan"), dep.token, FEE, BOND, 2_000, WINDOW, WINDOW, 0, gen_tokens)


@pytest.fixture(scope="module")
def deployed(chain):
    w3 = chain.w3
    owner, requester, operator, challenger, finalizer = funded_accounts(w3, 5, wei=100 * ETH)
    dep = deploy_protocol(w3, owner, sale=None, oracle=OracleConfig(min_bond_wei=BOND))
    oracle = OracleClient(w3, dep.oracle, owner)
    gen_id, gen_digest, _ = oracle.register(spec(dep, N), [GAME_ONLY], SIZES)
    plain_id, plain_digest, _ = oracle.register(spec(dep, 0, b"mlp"), [GAME_ONLY], SIZES)
    consumer = w3.eth.contract(address=dep.consumer, abi=compile_protocol()["OracleConsumer"].abi)
    return SimpleNamespace(w3=w3, dep=dep, oracle=oracle, gen_id=gen_id, gen_digest=gen_digest, plain_id=plain_id,
                           plain_digest=plain_digest, consumer=consumer, requester=requester, operator=operator,
                           challenger=challenger, finalizer=finalizer)


@pytest.fixture
def world(deployed):
    with rolled_back(deployed.w3):
        yield deployed


def request(w, prompt_bytes: bytes | None = None, model_id: int | None = None, **kwargs) -> int:
    rid, _ = w.oracle.as_sender(w.requester).request_callback(
        w.gen_id if model_id is None else model_id, pack_tensor(PROMPT) if prompt_bytes is None else prompt_bytes, **kwargs)
    return rid


def honest_claim(prompt=PROMPT, tokens=TOKENS) -> Claim:
    return Claim(pack_tensor(generation_input(prompt, tokens)), (0, 0), b"", pack_tensor(tokens), ())


def submitted(w, claim: Claim | None = None, **kwargs) -> tuple[int, Claim]:
    rid, claim = request(w, **kwargs), claim or honest_claim()
    w.oracle.as_sender(w.operator).submit(rid, claim, bond=BOND)
    return rid, claim


# ---------------------------------------------------------------- registration


def test_a_generation_model_registers_and_ordinary_models_are_unchanged(world):
    w = world
    gen, plain = w.oracle.model(w.gen_id), w.oracle.model(w.plain_id)
    assert gen.spec.gen_tokens == N and plain.spec.gen_tokens == 0 and gen.boundary_sizes == plain.boundary_sizes == SIZES
    # the digest covers genTokens, and Python computes the same one
    assert gen.digest == w.gen_digest == Registration(spec(w.dep, N), (GAME_ONLY,), tuple(SIZES), (b"\x00" * 32,)).digest()
    assert plain.digest == w.plain_digest == Registration(spec(w.dep, 0, b"mlp"), (GAME_ONLY,), tuple(SIZES), (b"\x00" * 32,)).digest()
    assert Registration(spec(w.dep, 0), (GAME_ONLY,), tuple(SIZES), (b"\x00" * 32,)).digest() != w.gen_digest
    # an ordinary public-input model still takes its whole input, and stores the keccak256 of its bytes
    whole = packed(np.arange(T), 2)
    rid = request(w, whole, w.plain_id)
    assert w.oracle.request(rid).input == keccak(whole)
    with reverts("AIOracleInvalidInput"):
        request(w, pack_tensor(PROMPT), w.plain_id)


@pytest.mark.parametrize("sizes, gen_tokens, boundary, size", [
    ([0, 4, N], N, 0, 0),  # hashed (private) input: the contract could not bind it to the prompt
    ([T, N + 1], N, 1, N + 1),  # the output is not exactly the generated tokens
    ([N - 1, N], N, 0, N - 1),  # an input shorter than the tokens: no prompt
])
def test_register_model_rejects_an_inconsistent_generation_spec(world, sizes, gen_tokens, boundary, size):
    w = world
    # a zk first segment so that a hashed input is otherwise allowed; any contract with code passes for a verifier
    segments = [SegmentSpec(w.dep.consumer, True), GAME_ONLY] if len(sizes) == 3 else [GAME_ONLY]
    w.oracle.register(spec(w.dep, 0), segments, sizes)  # the same layout registers as an ordinary model
    with pytest.raises(ChainError, match=rf"AIOracleInvalidGeneration\({gen_tokens}, {boundary}, {size}\)"):
        w.oracle.register(spec(w.dep, gen_tokens), segments, sizes)


def test_the_smallest_generation_model_has_a_one_token_prompt(world):
    w = world
    model_id, _, _ = w.oracle.register(spec(w.dep, N), [GAME_ONLY], [N, N])
    rid = request(w, pack_tensor([7]), model_id)
    assert w.oracle.request(rid).input == prompt_hash([7])


# ---------------------------------------------------------------- requests


@pytest.mark.parametrize("prompt_bytes", [
    pack_tensor(PROMPT[:-1]),  # P - 1 ids
    pack_tensor(np.append(PROMPT, 1)),  # P + 1 ids
    pack_tensor(generation_input(PROMPT, TOKENS)),  # the whole model input (T ids), as an ordinary model takes it
    pack_tensor(PROMPT) + b"\x00",  # a trailing byte
    b"\x03" + pack_tensor(PROMPT)[1:],  # no such width
], ids=["short", "long", "whole-input", "trailing", "bad-width"])
def test_a_request_with_a_wrong_size_prompt_reverts(world, prompt_bytes):
    with reverts("AIOracleInvalidInput"):
        request(world, prompt_bytes)


def test_the_stored_prompt_does_not_depend_on_its_packing_width(world):
    w = world
    inputs = {width: w.oracle.request(request(w, packed(PROMPT, width))).input for width in (1, 2, 4)}
    assert inputs[1] == inputs[2] == inputs[4] == prompt_hash(PROMPT)
    assert prompt_hash(PROMPT) == keccak(encode(["int256"] * P, [int(v) for v in PROMPT]))  # abi.encodePacked words
    assert w.oracle.request(request(w, packed(np.append(PROMPT[:-1], -1), 1))).input != inputs[1]  # negative ids too
    assert w.oracle.request(request(w, packed(np.append(PROMPT[:-1], -1), 1))).input == prompt_hash(np.append(PROMPT[:-1], -1))


# ---------------------------------------------------------------- the claim's binding


def tampered(what: str) -> Claim:
    claim = honest_claim()
    ids = generation_input(PROMPT, TOKENS)
    if what == "prompt":  # the model run on another prompt than the request's
        ids[2] += 1
    elif what == "tail":  # teacher-forced on tokens other than the claimed output
        ids[P] += 1
    elif what == "last-token-fed":  # gen[N-1] is not an input: feeding it shifts the window
        ids = np.concatenate([PROMPT[1:], TOKENS])
    elif what == "width":  # the same ids, packed wider than pack_tensor would: another bisection game input hash
        return Claim(packed(ids, 2), claim.commitments, claim.data, claim.output, claim.proofs)
    elif what == "extra-id":
        return Claim(pack_tensor(np.append(ids, 0)), claim.commitments, claim.data, claim.output, claim.proofs)
    return Claim(pack_tensor(ids), claim.commitments, claim.data, claim.output, claim.proofs)


ATTACKS = ["prompt", "tail", "last-token-fed", "width", "extra-id"]


@pytest.mark.parametrize("what", ATTACKS)
def test_submit_rejects_a_claim_input_not_bound_to_the_prompt_and_output(world, what):
    w = world
    rid, claim = request(w), tampered(what)
    assert not generation_input_matches(claim, SIZES, N, w.oracle.request(rid).input)  # the node's mirror agrees
    with pytest.raises(ChainError, match=rf"AIOracleInvalidClaim\({rid}, 0\)"):
        w.oracle.as_sender(w.operator).submit(rid, claim, bond=BOND)
    assert w.oracle.request(rid).status == Status.PENDING


def test_a_prompt_packed_wide_by_the_dapp_is_answered_with_the_canonical_input(world):
    w = world
    rid = request(w, packed(PROMPT, 4))
    assert generation_input_matches(honest_claim(), SIZES, N, w.oracle.request(rid).input)
    w.oracle.as_sender(w.operator).submit(rid, honest_claim(), bond=BOND)
    assert w.oracle.request(rid).status == Status.SUBMITTED


@pytest.mark.parametrize("what", ["prompt", "tail", "width"])
def test_a_challenge_must_name_the_bound_input(world, what):
    """A challenger cannot open a game over another input (the same claim hash: the input is bound by the request):
    the game's input hash is the canonical one the submitter published."""
    w = world
    rid, claim = submitted(w)
    challenger = w.oracle.as_sender(w.challenger)
    with reverts("AIOracleClaimMismatch"):
        challenger.open_game(rid, 1, tampered(what), bond=BOND)
    receipt = challenger.open_game(rid, 1, claim, bond=BOND)[1]
    games = GameClient(w.w3, w.oracle.dispute_game())
    opened = games.games_opened(from_block=receipt.blockNumber, request_id=rid)
    assert [g.in_hash for g in opened] == [keccak(claim.input)] and opened[0].out_hash == keccak(claim.output)


# ---------------------------------------------------------------- finality and the callback


def test_a_consistent_claim_finalizes_and_the_consumer_receives_the_tokens_as_bytes(world):
    w = world
    rid, claim = submitted(w, callback=w.consumer.address, gas_limit=CALLBACK_GAS)
    assert generation_input_matches(claim, SIZES, N, w.oracle.request(rid).input)
    assert w.oracle.request(rid).status == Status.SUBMITTED
    advance(w.w3, WINDOW)
    receipt = w.oracle.as_sender(w.finalizer).finalize(rid, claim)
    assert w.oracle.request(rid).status == Status.FINALIZED
    payload = w.consumer.functions.outputOf(rid).call()
    assert payload == encode(["bytes"], [b"wor"]) and decode_text_payload(payload) == bytes(TOKENS.tolist())
    result = w.oracle.contract.events.AICallbackResult().process_receipt(receipt, errors=DISCARD)
    assert [e["args"]["output"] for e in result] == [payload]


def test_tokens_beyond_a_byte_are_truncated_never_reverting(world):
    """Finalize must not revert on output content (fee and bond would be stuck): each token's low byte is delivered."""
    w = world
    tokens = np.array([300, -1, 65])
    rid, claim = submitted(w, honest_claim(tokens=tokens), callback=w.consumer.address, gas_limit=CALLBACK_GAS)
    advance(w.w3, WINDOW)
    w.oracle.as_sender(w.finalizer).finalize(rid, claim)
    assert w.oracle.request(rid).status == Status.FINALIZED
    assert decode_text_payload(w.consumer.functions.outputOf(rid).call()) == bytes([300 & 0xFF, 0xFF, 65])


def test_an_ordinary_model_still_gets_values_and_scale(world):
    w = world
    whole, y = np.arange(T), np.array([5, -6, 7])
    rid = request(w, pack_tensor(whole), w.plain_id, callback=w.consumer.address, gas_limit=CALLBACK_GAS)
    claim = Claim(pack_tensor(whole), (0, 0), b"", pack_tensor(y), ())
    w.oracle.as_sender(w.operator).submit(rid, claim, bond=BOND)
    advance(w.w3, WINDOW)
    w.oracle.as_sender(w.finalizer).finalize(rid, claim)
    assert w.consumer.functions.outputOf(rid).call() == encode(["int256[]", "uint256"], [y.tolist(), 0])


def test_generation_input_is_prompt_then_all_but_the_last_token():
    ids = generation_input(PROMPT, TOKENS)
    assert ids.tolist() == PROMPT.tolist() + TOKENS[:-1].tolist() and ids.size == T
