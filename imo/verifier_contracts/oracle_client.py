"""A typed client for `AIOracle`: decoded records and enums instead of tuples, one method per protocol step, and
reverts raised as `ContractRevertError(name, args)`. Submissions and challenges are commit-reveal pairs: `submit`,
`challenge` and `dispute_proof` send the commitment first and the reveal in a later block."""

from dataclasses import dataclass
from enum import IntEnum

from web3 import Web3
from web3.exceptions import ContractCustomError

from imo.errors import ChainError
from imo.proving.protocol import (
    Claim,
    ModelSpec,
    Registration,
    SegmentSpec,
    challenge_commitment,
    submit_commitment,
    verifier_code_hash,
)
from imo.verifier_contracts.contracts import (
    ContractRevertError,
    Sender,
    address_of,
    compile_protocol,
    decode_revert,
    transact,
)


class Status(IntEnum):
    """`AIOracle.Status`."""

    NONE = 0
    PENDING = 1
    SUBMITTED = 2
    FINALIZED = 3
    CANCELLED = 4


@dataclass(frozen=True)
class ChainModel:
    model_id: int
    registration: Registration
    digest: bytes

    @property
    def spec(self) -> ModelSpec:
        return self.registration.spec

    @property
    def boundary_sizes(self) -> list[int]:
        return list(self.registration.boundary_sizes)


@dataclass(frozen=True)
class ChainRequest:
    request_id: int
    requester: str
    model_id: int
    deadline: int
    gas_limit: int
    callback: str
    fee: int
    status: Status
    input: bytes  # C_0 (hashed input), keccak256 of the input bytes (public input) or a generation prompt's `prompt_hash`
    callback_data: bytes


@dataclass(frozen=True)
class ChainClaim:
    submitter: str
    bond: int
    claim_hash: bytes
    settled: int
    open_disputes: int  # fraud-proof disputes and bisection games
    serial: int = 0  # which submission: a game about an earlier one changes nothing

    @property
    def exists(self) -> bool:
        return int(self.submitter, 16) != 0


@dataclass(frozen=True)
class ChainDispute:
    """An open fraud-proof dispute (bisection games are `GameClient`'s: any number may run on one segment)."""

    challenger: str
    deadline: int  # the end of the response window

    @property
    def open(self) -> bool:
        return int(self.challenger, 16) != 0


class OracleClient:
    """`AIOracle` at `address`, sending as `sender` (a LocalAccount signs locally; an address must be unlocked)."""

    def __init__(self, w3: Web3, address: str, sender: Sender | None = None):
        self.w3 = w3
        self.contract = w3.eth.contract(address=address, abi=compile_protocol()["AIOracle"].abi)
        self.sender = sender
        self.fn = self.contract.functions

    @property
    def address(self) -> str:
        return self.contract.address

    def as_sender(self, sender: Sender) -> "OracleClient":
        return OracleClient(self.w3, self.address, sender)

    def _send(self, fn, value: int = 0, gas: int | None = None):
        if self.sender is None:
            raise ChainError("this oracle client has no sender account")
        return transact(fn, self.sender, value=value, gas=gas)

    def _view(self, fn):
        """Call a view; a revert becomes a ContractRevertError, as for transactions."""
        try:
            return fn.call()
        except ContractCustomError as exc:
            raise ContractRevertError(fn.fn_name, *decode_revert(exc.data)) from None

    # ------------------------------------------------------------------ views

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def model_count(self) -> int:
        return self.fn.modelCount().call()

    def model(self, model_id: int) -> ChainModel:
        spec, segments, sizes, digest = self.fn.getModel(model_id).call()
        registration = Registration(
            ModelSpec(*spec), tuple(SegmentSpec(v, z, bytes(root), steps) for v, z, root, steps in segments), tuple(sizes),
            tuple(verifier_code_hash(s[0], b"" if int(s[0], 16) == 0 else self.w3.eth.get_code(s[0])) for s in segments),
        )
        return ChainModel(model_id, registration, bytes(digest))

    def request(self, request_id: int) -> ChainRequest:
        r, callback_data = self.fn.getRequest(request_id).call()
        requester, model_id, deadline, gas_limit, callback, fee, status, input_ = r
        return ChainRequest(request_id, requester, model_id, deadline, gas_limit, callback, fee, Status(status),
                            bytes(input_), bytes(callback_data))

    def claim(self, request_id: int) -> ChainClaim:
        submitter, bond, claim_hash, settled, open_disputes, serial = self.fn.getClaim(request_id).call()
        return ChainClaim(submitter, bond, bytes(claim_hash), settled, open_disputes, serial)

    def dispute(self, request_id: int, segment: int) -> ChainDispute:
        return ChainDispute(*self.fn.getDispute(request_id, segment).call())

    def dispute_game(self) -> str | None:
        """The address of the bisection game contract wired to this oracle (None: proofless challenges are refused)."""
        address = self.fn.disputeGame().call()
        return None if int(address, 16) == 0 else address

    def estimate_fee(self, model_id: int, gas_limit: int = 0) -> int:
        return self._view(self.fn.estimateFee(model_id, gas_limit))

    def credits(self, account: str) -> int:
        return self.fn.credits(account).call()

    def fee_split(self, request_id: int) -> tuple[int, int, int]:
        """(model revenue, operator payout without the bond, finalizer's callback-gas payment)."""
        return tuple(self.fn.feeSplit(request_id).call())

    def submitted_claim(self, tx_hash) -> tuple[int, Claim]:
        """(request id, claim) from a submit transaction's calldata, where the public boundaries are published."""
        tx = self.w3.eth.get_transaction(tx_hash)
        if tx["to"] is None or Web3.to_checksum_address(tx["to"]) != self.address:
            raise ChainError(f"transaction {Web3.to_hex(tx_hash)} is not a direct call of the oracle")
        fn, args = self.contract.decode_function_input(tx["input"])
        if fn.fn_name != "submit":
            raise ChainError(f"transaction {Web3.to_hex(tx_hash)} is not a submit")
        return args["requestId"], Claim.from_tuple(args["claim"])

    # ------------------------------------------------------------------ transactions

    def register(self, spec: ModelSpec, segments: list[SegmentSpec], boundary_sizes: list[int]):
        """Register a model; returns (model id, digest, receipt)."""
        receipt = self._send(self.fn.registerModel(spec.as_tuple(), [s.as_tuple() for s in segments], list(boundary_sizes)))
        event = self.contract.events.ModelRegistered().process_receipt(receipt)[0]["args"]
        return event["modelId"], bytes(event["digest"]), receipt

    def request_callback(self, model_id: int, input_: bytes, callback: str | None = None, gas_limit: int = 0,
                         callback_data: bytes = b"", value: int | None = None):
        """Pay `estimateFee` (or `value`) for a request; returns (request id, receipt)."""
        fee = self.estimate_fee(model_id, gas_limit) if value is None else value
        receipt = self._send(self.fn.requestCallback(model_id, input_, callback or "0x" + "00" * 20, gas_limit, callback_data), value=fee)
        return self.contract.events.AICallbackRequest().process_receipt(receipt)[0]["args"]["requestId"], receipt

    def commit(self, commitment: bytes):
        return self._send(self.fn.commit(commitment))

    def submit(self, request_id: int, claim: Claim, bond: int | None = None):
        """Commit, then reveal `claim` with the model's bond; returns (commit receipt, submit receipt)."""
        if bond is None:
            bond = self.model(self.request(request_id).model_id).spec.bond_wei
        committed = self.commit(submit_commitment(address_of(self.sender), request_id, claim))
        return committed, self.reveal(request_id, claim, bond)

    def reveal(self, request_id: int, claim: Claim, bond: int):
        """The second half of `submit`, after the commitment is mined."""
        return self._send(self.fn.submit(request_id, claim.as_tuple()), value=bond)

    def dispute_proof(self, request_id: int, segment: int, claim: Claim):
        """Commit, then slash a claim whose posted proof of zk segment `segment` does not verify."""
        committed = self.commit(challenge_commitment(address_of(self.sender), request_id, segment))
        return committed, self.reveal_dispute_proof(request_id, segment, claim)

    def reveal_dispute_proof(self, request_id: int, segment: int, claim: Claim):
        """The second half of `dispute_proof`, after the commitment is mined."""
        return self._send(self.fn.disputeProof(request_id, segment, claim.as_tuple()))

    def challenge(self, request_id: int, segment: int, claim: Claim, proof: bytes, output_instances: list[int],
                  bond: int | None = None):
        """Commit, then open a dispute on op segment `segment` with a contradicting proof and the model's bond."""
        if bond is None:
            bond = self.model(self.request(request_id).model_id).spec.bond_wei
        committed = self.commit(challenge_commitment(address_of(self.sender), request_id, segment, proof))
        return committed, self.reveal_challenge(request_id, segment, claim, proof, output_instances, bond)

    def reveal_challenge(self, request_id: int, segment: int, claim: Claim, proof: bytes, output_instances: list[int], bond: int):
        """The second half of `challenge`, after the commitment is mined."""
        return self._send(self.fn.challenge(request_id, segment, claim.as_tuple(), proof, output_instances), value=bond)

    def open_game(self, request_id: int, segment: int, claim: Claim, bond: int | None = None):
        """Commit, then challenge op segment `segment` without a proof, which opens a bisection game on a segment
        registered with a step program; returns (commit receipt, challenge receipt). `GameClient.game_of` finds it."""
        return self.challenge(request_id, segment, claim, b"", [], bond=bond)

    def respond(self, request_id: int, segment: int, claim: Claim, proof: bytes):
        return self._send(self.fn.respond(request_id, segment, claim.as_tuple(), proof))

    def resolve(self, request_id: int, segment: int):
        return self._send(self.fn.resolve(request_id, segment))

    def finalize(self, request_id: int, claim: Claim, gas: int | None = None):
        return self._send(self.fn.finalize(request_id, claim.body_hash, claim.output), gas=gas)

    def decline(self, request_id: int, reason: str):
        return self._send(self.fn.decline(request_id, reason))

    def cancel(self, request_id: int):
        return self._send(self.fn.cancel(request_id))

    def withdraw(self):
        return self._send(self.fn.withdraw())
