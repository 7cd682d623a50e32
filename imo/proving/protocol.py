"""The chain-free half of the hybrid protocol (DESIGN.md, steps 3-5): what a claim is, how its public boundaries are
encoded, the hashes and commitments the contract checks, the instances a proof of one segment carries, the
registration digest, finding what is wrong with a claim, and proving one segment from its input. The oracle node,
the challenger node, the demo and the tests all use this module; `AIOracle.sol` enforces the same rules on chain.

A claim for a plan with segments S_1..S_n and boundaries 0..n (boundary k-1 is S_k's input, boundary n is y) holds,
for each boundary, either its Poseidon commitment (hashed: a private model input, or between two zk segments) or the
tensor itself (public: next to an op segment, and y), packed as one width byte and big-endian integers. Because every
boundary an op segment touches is in the claim, data availability is part of the claim: whoever can read the claim
can re-execute every op segment, and nothing else is needed to build a fraud proof."""

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import ezkl
import numpy as np
from eth_abi import decode as abi_decode
from eth_abi import encode
from eth_utils import keccak

from imo.circuits.fixed_point import FIELD_MODULUS, FixedPointProgram, poseidon_commitment, quantize
from imo.circuits.plan import Plan
from imo.errors import MissingArtifactError, UnprovableClaimError
from imo.proving import prover
from imo.proving.circuit import write_quantized_input
from imo.proving.native import call_ezkl
from imo.proving.segments import CIRCUITS_FILE, circuit_files, prove_plan
from imo.proving.store import ArtifactStore, proof_key

_WIDTHS = (1, 2, 4)


def to_field(v: int) -> int:
    """A fixed-point integer as ezkl's BN254 field element (negative v is p - |v|)."""
    return int(v) % FIELD_MODULUS


def felt(hex_le: str) -> int:
    """ezkl's little-endian hex field element as an integer."""
    return int.from_bytes(bytes.fromhex(hex_le), "little")


# ------------------------------------------------------------------ boundary encoding (BoundaryCodec.sol)


def pack_tensor(q: np.ndarray) -> bytes:
    """One width byte w (the narrowest of 1, 2, 4 that holds every element), then each element as a w-byte big-endian
    two's-complement integer. Raises UnprovableClaimError beyond int32: no circuit value at a boundary gets there."""
    q = np.asarray(q, dtype=np.int64).ravel()
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    for w in _WIDTHS:
        if -(1 << (8 * w - 1)) <= lo and hi < (1 << (8 * w - 1)):
            return bytes([w]) + q.astype(f">i{w}").tobytes()
    raise UnprovableClaimError(f"a boundary value ({lo if -lo > hi else hi}) does not fit in 32 bits")


def unpack_tensor(buf: bytes, offset: int, size: int) -> tuple[np.ndarray, int]:
    """The packed tensor of `size` elements at `offset` and the offset after it; ValueError when malformed."""
    if offset >= len(buf) or buf[offset] not in _WIDTHS:
        raise ValueError(f"malformed packed tensor at byte {offset}")
    w = buf[offset]
    end = offset + 1 + size * w
    if end > len(buf):
        raise ValueError(f"packed tensor at byte {offset} ends early")
    return np.frombuffer(buf, dtype=f">i{w}", count=size, offset=offset + 1).astype(np.int64), end


def request_input(plan: Plan, x: np.ndarray) -> bytes:
    """A request's `input` bytes: the 32-byte Poseidon commitment C_0 of a private (hashed) input, or the packed
    quantized input of a public one."""
    q = quantize(np.asarray(x, dtype=np.float32), plan.scale)
    if plan.boundary_hashed(0):
        return felt(poseidon_commitment(q)).to_bytes(32, "big")
    return pack_tensor(q)


# ------------------------------------------------------------------ generation models


def prompt_hash(prompt_values) -> bytes:
    """A generation request's stored `input`: keccak256 of the prompt's values as int256 words (abi.encodePacked), so
    the width the dapp packed them at does not matter; a node compares it with a claim's first P input values."""
    return keccak(b"".join(int(v).to_bytes(32, "big", signed=True) for v in np.asarray(prompt_values).ravel()))


def decode_text_payload(payload: bytes) -> bytes:
    """The generated tokens from a generation model's callback payload, `abi.encode(bytes)` (each token's low byte)."""
    (text,) = abi_decode(["bytes"], bytes(payload))
    return bytes(text)


# ------------------------------------------------------------------ claims


@dataclass(frozen=True)
class Claim:
    """A submitted result, as `AIOracle.ClaimData`: the request input (public-input models; empty otherwise), a
    commitment per boundary (0 for public ones), the packed public boundaries 1..n-1, the packed output y, and one
    proof per zk segment in segment order."""

    input: bytes
    commitments: tuple[int, ...]
    data: bytes
    output: bytes
    proofs: tuple[bytes, ...]

    def as_tuple(self) -> tuple:
        return (self.input, list(self.commitments), self.data, self.output, list(self.proofs))

    @classmethod
    def from_tuple(cls, t) -> "Claim":
        """From a decoded `ClaimData`: a tuple, or a mapping by field name as web3 decodes calldata."""
        i, c, d, o, p = (t[k] for k in ("input", "commitments", "data", "output", "proofs")) if hasattr(t, "keys") else t
        return cls(bytes(i), tuple(int(v) for v in c), bytes(d), bytes(o), tuple(bytes(x) for x in p))

    @property
    def body_hash(self) -> bytes:
        return keccak(encode(["uint256[]", "bytes", "bytes[]"], [list(self.commitments), self.data, list(self.proofs)]))

    @property
    def claim_hash(self) -> bytes:
        return keccak(encode(["bytes32", "bytes32"], [self.body_hash, keccak(self.output)]))

    def tensors(self, sizes: list[int]) -> dict[int, np.ndarray]:
        """Every public boundary's tensor by index; ValueError when the packed data does not fit `sizes`."""
        n, out, offset = len(sizes) - 1, {}, 0
        if sizes[0]:
            out[0], end = unpack_tensor(self.input, 0, sizes[0])
            if end != len(self.input):
                raise ValueError("trailing bytes after the input tensor")
        for k in range(1, n):
            if sizes[k]:
                out[k], offset = unpack_tensor(self.data, offset, sizes[k])
        if offset != len(self.data):
            raise ValueError("trailing bytes after the boundary data")
        out[n], end = unpack_tensor(self.output, 0, sizes[n])
        if end != len(self.output):
            raise ValueError("trailing bytes after the output")
        return out

    def boundary_bytes(self, sizes: list[int], b: int) -> bytes:
        """Public boundary b's packed tensor exactly as the claim carries it (what a bisection game hashes), as
        `AIOracle._boundaryBytes` cuts it: the input, a part of `data`, or the output."""
        n = len(sizes) - 1
        if b == 0:
            return self.input
        if b == n:
            return self.output
        offset = 0
        for j in range(1, b):
            if sizes[j]:
                _, offset = unpack_tensor(self.data, offset, sizes[j])
        _, end = unpack_tensor(self.data, offset, sizes[b])
        return self.data[offset:end]

    def boundary_instances(self, sizes: list[int], k: int) -> list[int]:
        """Boundary k as proof instances: [C_k] when hashed, its elements as field elements when public."""
        if sizes[k] == 0:
            return [self.commitments[k]]
        return [to_field(v) for v in self.tensors(sizes)[k]]

    def segment_instances(self, sizes: list[int], k: int) -> tuple[list[int], list[int]]:
        """(input, output) instances a proof of segment k (1-based, as the contract numbers them) has if the claim is
        right; ezkl lays a segment's instances out as input then output."""
        return self.boundary_instances(sizes, k - 1), self.boundary_instances(sizes, k)

    def output_values(self, sizes: list[int]) -> list[int]:
        return [int(v) for v in self.tensors(sizes)[len(sizes) - 1]]


def claim_from_boundaries(plan: Plan, q: list[np.ndarray], commitments: list[int | None], proofs: list[bytes]) -> Claim:
    """The claim for boundary tensors q[0..n] (None where hashed and private) and their commitments (hashed ones)."""
    sizes, n = plan.boundary_sizes(), len(plan.segments)
    return Claim(
        input=pack_tensor(q[0]) if sizes[0] else b"",
        commitments=tuple(0 if sizes[k] else int(commitments[k]) for k in range(n + 1)),
        data=b"".join(pack_tensor(q[k]) for k in range(1, n) if sizes[k]),
        output=pack_tensor(q[n]),
        proofs=tuple(proofs),
    )


def submit_commitment(sender: str, request_id: int, claim: Claim) -> bytes:
    """What {AIOracle.commit} records before {AIOracle.submit}: binds the submitter, so a copied reveal fails."""
    return keccak(encode(["address", "uint256", "bytes32"], [sender, request_id, claim.claim_hash]))


def challenge_commitment(sender: str, request_id: int, segment: int, evidence: bytes = b"") -> bytes:
    """What {AIOracle.commit} records before a challenge (`evidence` = the fraud proof) or a proof dispute (empty)."""
    return keccak(encode(["address", "uint256", "uint256", "bytes32"], [sender, request_id, segment, keccak(evidence)]))


# ------------------------------------------------------------------ registration


@dataclass(frozen=True)
class ModelSpec:
    """`AIOracleRegistry.ModelSpec`: the economics and format of a registered model."""

    onnx_hash: bytes
    plan_hash: bytes
    rev_share_token: str
    fee_wei: int
    bond_wei: int
    operator_share_bps: int
    challenge_window_s: int
    response_window_s: int
    scale: int
    gen_tokens: int = 0  # a greedy generation model of this many tokens (0: an ordinary model); see generation_input

    ABI = "(bytes32,bytes32,address,uint96,uint96,uint16,uint32,uint32,uint8,uint16)"

    def as_tuple(self) -> tuple:
        return (self.onnx_hash, self.plan_hash, self.rev_share_token, self.fee_wei, self.bond_wei,
                self.operator_share_bps, self.challenge_window_s, self.response_window_s, self.scale, self.gen_tokens)


NO_VERIFIER = "0x" + "00" * 20
"""The verifier of a game-only op segment: one registered with a step program but no whole-segment ezkl verifier
(too large for one proof); a challenge of it is always a bisection game."""


def verifier_code_hash(verifier: str, runtime_code: bytes) -> bytes:
    """A segment verifier's code hash as `registerModel` puts it in the digest: keccak256 of its runtime code, or zero
    for a game-only segment's (`NO_VERIFIER`)."""
    return b"\x00" * 32 if int(verifier, 16) == 0 else keccak(bytes(runtime_code))


@dataclass(frozen=True)
class SegmentSpec:
    """`AIOracleRegistry.Segment`: a segment's ezkl verifier, whether its proof is posted with every result, and for
    an op segment optionally its step program (`trace_codec`: the Merkle root of its step descriptors and their count),
    which lets a challenge without a whole-segment proof open a bisection game. Zero root and 0 steps: no program."""

    verifier: str
    zk: bool
    program_root: bytes = b"\x00" * 32
    program_steps: int = 0

    ABI = "(address,bool,bytes32,uint32)"

    def as_tuple(self) -> tuple:
        return (self.verifier, self.zk, bytes(self.program_root), self.program_steps)

    @property
    def game_only(self) -> bool:
        """An op segment with a step program and no verifier: disputed by the bisection game only."""
        return int(self.verifier, 16) == 0 and not self.zk and self.program_steps > 0


@dataclass(frozen=True)
class Registration:
    """Everything a registration digest covers."""

    spec: ModelSpec
    segments: tuple[SegmentSpec, ...]
    boundary_sizes: tuple[int, ...]
    code_hashes: tuple[bytes, ...] = field(default=())

    def digest(self) -> bytes:
        """keccak256(abi.encode(spec, segments, boundarySizes, codeHashes)), as `registerModel` computes it."""
        return keccak(encode(
            [ModelSpec.ABI, SegmentSpec.ABI + "[]", "uint32[]", "bytes32[]"],
            [self.spec.as_tuple(), [s.as_tuple() for s in self.segments], list(self.boundary_sizes), list(self.code_hashes)],
        ))


# ------------------------------------------------------------------ executing, checking and proving a plan


class DisputeKind(Enum):
    INVALID_PROOF = "invalid_proof"  # a posted zk proof does not verify against the claim: `disputeProof`
    WRONG_OUTPUT = "wrong_output"  # an op segment's re-execution differs from the claim: `challenge`


@dataclass(frozen=True)
class Dispute:
    kind: DisputeKind
    segment: int  # 1-based, as the contract numbers segments
    reason: str


@dataclass
class PlanRuntime:
    """A compiled plan as the nodes use it: run op segments, prove any segment from its quantized input, execute a
    whole request, and check someone else's claim."""

    plan_file: Path
    store: ArtifactStore = field(default_factory=ArtifactStore)
    _programs: dict = field(default_factory=dict, repr=False)
    _last_run: tuple[bytes, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self):
        self.plan_file = Path(self.plan_file)
        self.plan = Plan.load(self.plan_file)
        self.plan_dir = self.plan_file.parent
        self.sizes = self.plan.boundary_sizes()

    @property
    def n(self) -> int:
        return len(self.plan.segments)

    @property
    def request_size(self) -> int:
        """Elements of a request's public input: the model input, or a generation model's prompt (T - N + 1 ids)."""
        return self.sizes[0] - (self.plan.generate or 1) + 1

    def model_input(self, request_values: np.ndarray) -> np.ndarray:
        """The model input a claim answers for these request values: the values themselves, or for a generation plan
        the prompt followed by the first N-1 greedy tokens (N passes of the whole plan: `generation.decode`)."""
        q = np.asarray(request_values, dtype=np.int64).ravel()
        if not self.plan.generate:
            return q
        from imo.models.generation import decode

        if q.size and (q.min() < 0 or q.max() > 255):
            raise UnprovableClaimError("a generation model's prompt is byte ids in [0, 256); this request's is not")
        _, full = decode(self.run_all, bytes(int(v) for v in q), self.plan.generate, context=self.sizes[0])
        return np.asarray(full, dtype=np.int64).ravel()

    def run_all(self, q_in: np.ndarray) -> np.ndarray:
        """Every segment on the canonical executor, zk ones included (the operator holds their ONNX). The last input's
        output is kept: a generation's final decoding pass and `execute`'s limits check run the same input."""
        q = np.asarray(q_in, dtype=np.int64)
        key = q.tobytes()
        if self._last_run is not None and self._last_run[0] == key:
            return self._last_run[1].copy()
        for k in range(1, self.n + 1):
            q = self.run_op(k, q)
        self._last_run = (key, q.copy())
        return q

    def run_op(self, k: int, q_in: np.ndarray) -> np.ndarray:
        """Segment k (1-based) on the canonical fixed-point executor."""
        seg = self.plan.segments[k - 1]
        if not seg.onnx:  # a public bundle withholds zk segments' ONNX (their weights): only the operator runs them
            raise MissingArtifactError(f"segment {k} is private in {self.plan_file} (a public bundle); only the operator's plan can execute it")
        if k not in self._programs:
            self._programs[k] = FixedPointProgram(self.plan_dir / seg.onnx, circuit_files(self.plan_dir, seg).settings_dict())
        return self._programs[k](np.asarray(q_in, dtype=np.int64).reshape(seg.input_shape)).ravel()

    def prove_segment(self, k: int, q_in: np.ndarray) -> tuple[bytes, list[int]]:
        """An ezkl proof of segment k from the quantized input q_in, handed to ezkl as exact field elements; returns
        (proof bytes, instances). Kept in the artifact store by circuit and input."""
        seg = self.plan.segments[k - 1]
        files = circuit_files(self.plan_dir, seg)
        circuit = json.loads((self.plan_dir / CIRCUITS_FILE).read_text())[str(seg.index)]["key"]
        q_in = np.asarray(q_in, dtype=np.int64).reshape(seg.input_shape)

        def build(tmp: Path) -> None:
            write_quantized_input(tmp / "input.json", q_in)
            call_ezkl("witness", ezkl.gen_witness, str(tmp / "input.json"), str(files.compiled), str(tmp / "witness.json"))
            prover.prove_witness(files, tmp / "witness.json", tmp / "proof.json")
            (tmp / "witness.json").unlink()
            (tmp / "input.json").unlink()

        entry, _ = self.store.get_or_put("proofs", proof_key(circuit, q_in), build)
        data = json.loads((entry / "proof.json").read_text())
        instances = [felt(v) for column in data["instances"] for v in column]
        return bytes.fromhex(data["hex_proof"].removeprefix("0x")), instances

    def execute(self, q_input: np.ndarray, work_dir: Path) -> Claim:
        """Run the plan on the quantized model input (op segments natively, zk segments proven): the honest claim.
        Raises UnprovableClaimError when a value falls outside what a segment's circuit can hold (no proof exists)."""
        from imo.proving.executors import LocalExecutor  # a process pool: only the oracle needs it

        # Every segment natively first, which enforces the circuits' limits: an input a zk segment cannot hold must be
        # refused as unprovable (UnprovableClaimError) before ezkl's witness fails on it with a bare ProofError.
        self.run_all(q_input)
        run = prove_plan(self.plan_file, None, work_dir / "run", executor=LocalExecutor(workers=1), store=self.store, quiet=True,
                         quantized_input=np.asarray(q_input, dtype=np.int64).reshape(self.plan.segments[0].input_shape))
        q = [None if b["quantized"] is None else np.array(b["quantized"], dtype=np.int64) for b in run["boundaries"]]
        commitments = [None if b["commitment"] is None else felt(b["commitment"]) for b in run["boundaries"]]
        proofs = []
        for seg in self.plan.segments:
            if seg.mode == "zk":
                proof = json.loads((work_dir / "run" / f"seg{seg.index}" / "proof.json").read_text())
                proofs.append(bytes.fromhex(proof["hex_proof"].removeprefix("0x")))
        return claim_from_boundaries(self.plan, q, commitments, proofs)

    def find_dispute(self, claim: Claim, proof_is_valid, skip: set[int] = frozenset()) -> Dispute | None:
        """What is wrong with `claim`, or None: a posted zk proof that `proof_is_valid(k, proof, instances)` rejects,
        or an op segment whose canonical re-execution from the claimed input differs from the claimed output. The
        packed data was checked on chain at submit; a claim whose data does not decode here raises ValueError.
        Segments in `skip` (settled on chain by a valid answer) are not checked."""
        tensors = claim.tensors(self.sizes)
        proof_index = 0
        for k, seg in enumerate(self.plan.segments, start=1):
            if seg.mode == "zk":
                proof = claim.proofs[proof_index]
                proof_index += 1
                if k in skip:
                    continue
                inputs, outputs = claim.segment_instances(self.sizes, k)
                if not proof_is_valid(k, proof, inputs + outputs):
                    return Dispute(DisputeKind.INVALID_PROOF, k, f"the posted proof of zk segment {k} does not verify")
                continue
            if k in skip:
                continue
            q_out = self.run_op(k, tensors[k - 1])
            if not np.array_equal(q_out, tensors[k]):
                where = "y" if k == self.n else f"boundary {k}"
                return Dispute(DisputeKind.WRONG_OUTPUT, k, f"{where} differs from re-executing op segment {k}")
        return None
