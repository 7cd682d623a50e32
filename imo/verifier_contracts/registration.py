"""Registering a compiled plan with an AIOracle, and checking a registration before serving it.

A registration is untrusted (anyone may register anything), so a node serves model m only when m's on-chain digest
equals the digest of its own compiled plan: the same plan hash and scale, the same zk/op modes, the same boundary
sizes, and verifiers whose deployed code hash equals the code the node compiled from its own circuits. A copy with
an always-true verifier, another boundary layout or another plan has another digest and is ignored.

Windows and bonds must fit what a dispute costs. Proving a segment takes about as long as its key setup measured at
compile time, times two (measured on 2 cores: mlp setup 11.8 s / prove 25 s, mlp-wide 65.5 s / 85.1 s); both the
challenger's fraud proof and the submitter's answer must fit in their windows, so each window is at least three
worst-case proofs plus a minute. A dispute costs at most DISPUTE_GAS (commit, challenge with an on-chain ezkl verify,
and the answer or resolve); the bond covers it twice at the reference gas price."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from imo.circuits.plan import Plan
from imo.errors import ImoError
from imo.proving.programs import Programs, plan_programs, program_build_seconds
from imo.proving.protocol import NO_VERIFIER, ModelSpec, Registration, SegmentSpec, verifier_code_hash
from imo.proving.segments import circuit_files
from imo.verifier_contracts.contracts import Deployment
from imo.verifier_contracts.evm import compile_verifier
from imo.verifier_contracts.reusable import deploy_circuit_verifier
from imo.verifier_contracts.oracle_client import ChainModel, OracleClient
from imo.verifier_contracts.solc import CompiledContract

DISPUTE_GAS = 3_000_000
# a bisection game's gas on one side (measured on anvil, tests/test_dispute_game.py): opening it (the challenge) ~0.3M,
# postRoot ~0.12M, one choose or reveal ~0.05M per level, the one-step check <= 2.6M (a K=4096 GEMM tile), the end 0.1M
GAME_FIXED_GAS = 3_100_000
GAME_GAS_PER_LEVEL = 100_000
REFERENCE_GAS_PRICE_WEI = 2 * 10**9
BOND_MARGIN = 2


@dataclass(frozen=True)
class Terms:
    """The economics a model is registered with."""

    fee_wei: int = 10**15
    bond_wei: int = 2 * 10**16
    operator_share_bps: int = 2_000
    challenge_window_s: int = 600
    response_window_s: int = 600


@dataclass(frozen=True)
class DisputeCosts:
    """What a dispute of this plan costs, from its compiled circuits."""

    worst_proof_s: float
    min_window_s: int
    min_bond_wei: int
    reference_gas_price_wei: int
    worst_game_gas: int = 0  # both sides of the deepest bisection game of the plan's op segments (0: none)


def dispute_costs(plan_file: Path, reference_gas_price_wei: int = REFERENCE_GAS_PRICE_WEI) -> DisputeCosts:
    plan, plan_dir = Plan.load(plan_file), Path(plan_file).parent
    setup = [json.loads(circuit_files(plan_dir, s).report.read_text())["seconds"].get("setup", 0.0) for s in plan.segments if not s.game_only]
    depths = [max(1, (steps - 1).bit_length()) for _, steps in plan_programs(plan_file).values()]
    # a fraud proof takes about twice its key setup; a game's first move about twice the program's build (rebuild + trace)
    worst = 2 * max(*setup, program_build_seconds(plan_file), 0.0)
    game_gas = GAME_FIXED_GAS + GAME_GAS_PER_LEVEL * max(depths) if depths else 0
    # half of a slashed bond pays the winner: it must cover the worst dispute's gas, a fraud proof's or a game's
    bond = max(DISPUTE_GAS, game_gas) * reference_gas_price_wei * BOND_MARGIN
    return DisputeCosts(round(worst, 1), int(3 * worst + 60), bond, reference_gas_price_wei, game_gas)


def plan_verifiers(plan_file: Path) -> list[CompiledContract | None]:
    """Each segment's ezkl verifier, compiled here from the plan's own circuits; None for a game-only segment."""
    plan, plan_dir = Plan.load(plan_file), Path(plan_file).parent
    return [None if s.game_only else compile_verifier(circuit_files(plan_dir, s).verifier_sol) for s in plan.segments]




def expected_registration(plan_file: Path, spec: ModelSpec, verifier_addresses: list[str],
                          programs: Programs | None = None) -> Registration:
    """The registration of this compiled plan with `spec`, verifiers at these addresses and, for the op segments in
    `programs`, their step programs (root, steps); None: every op segment's that has one (`plan_programs`), which is
    what `imo register` registers and every node expects, so that a bisection game can be opened on them."""
    plan = Plan.load(plan_file)
    # a game-only op segment (verifier zero, `NO_VERIFIER`) has code hash zero, as `registerModel` computes it
    code_hashes = tuple(verifier_code_hash(a, bytes.fromhex(c.runtime.removeprefix("0x")) if c else b"")
                        for a, c in zip(verifier_addresses, plan_verifiers(plan_file)))
    programs = plan_programs(plan_file) if programs is None else programs
    segments = tuple(SegmentSpec(a, s.mode == "zk", *programs.get(k, (b"\x00" * 32, 0)))
                     for k, (a, s) in enumerate(zip(verifier_addresses, plan.segments), start=1))
    return Registration(spec, segments, tuple(plan.boundary_sizes()), code_hashes)


def registration_problems(plan_file: Path, model: ChainModel, terms: Terms | None = None,
                          programs: Programs | None = None) -> list[str]:
    """Why a node must not serve `model` with this plan (empty: serve it). With `terms`, the economics must be those;
    `programs`: the op segments' step programs (as in `expected_registration`; None: built from the plan)."""
    plan = Plan.load(plan_file)
    spec = model.spec
    if spec.plan_hash != bytes.fromhex(plan.plan_hash):
        return [f"model {model.model_id} is another plan ({spec.plan_hash.hex()[:12]}…)"]
    if len(model.registration.segments) != len(plan.segments):
        return [f"model {model.model_id} has {len(model.registration.segments)} segments, the plan {len(plan.segments)}"]
    problems = []
    expected = expected_registration(plan_file, spec, [s.verifier for s in model.registration.segments], programs)
    if expected.digest() != model.digest:
        bad = [k + 1 for k, (a, b) in enumerate(zip(expected.code_hashes, model.registration.code_hashes)) if a != b]
        other_programs = [k + 1 for k, (a, b) in enumerate(zip(expected.segments, model.registration.segments))
                          if (a.program_root, a.program_steps) != (b.program_root, b.program_steps)]
        what = (f"verifier code of segment(s) {bad} differs from this plan's" if bad else
                f"the step program of segment(s) {other_programs} differs from this plan's" if other_programs else
                "modes, boundary sizes or scale differ from this plan's")
        problems.append(f"model {model.model_id}: registration digest {model.digest.hex()[:12]}… ≠ {expected.digest().hex()[:12]}… ({what})")
    if spec.scale != plan.scale:
        problems.append(f"model {model.model_id}: scale {spec.scale} ≠ the plan's {plan.scale}")
    if spec.gen_tokens != (plan.generate or 0):  # the request and claim formats follow it (docs/protocol.md, "Generation models")
        problems.append(f"model {model.model_id}: generates {spec.gen_tokens} tokens, the plan {plan.generate or 0}")
    if terms is not None:
        want = (terms.fee_wei, terms.bond_wei, terms.operator_share_bps, terms.challenge_window_s, terms.response_window_s)
        got = (spec.fee_wei, spec.bond_wei, spec.operator_share_bps, spec.challenge_window_s, spec.response_window_s)
        if want != got:
            problems.append(f"model {model.model_id}: terms (fee, bond, share, windows) {got} ≠ the expected {want}")
    if any(not s.zk for s in model.registration.segments):
        costs = dispute_costs(plan_file)
        if min(spec.challenge_window_s, spec.response_window_s) < costs.min_window_s:
            problems.append(f"model {model.model_id}: windows {spec.challenge_window_s}/{spec.response_window_s} s are shorter than a dispute needs ({costs.min_window_s} s)")
    return problems


def register_plan(oracle: OracleClient, deployment: Deployment, plan_file: Path, name: str, terms: Terms = Terms(),
                  reference_gas_price_wei: int = REFERENCE_GAS_PRICE_WEI,
                  programs: Programs | None = None) -> tuple[int, bytes, DisputeCosts]:
    """Deploy every segment's ezkl verifier and register the plan as model `name` with `terms` (and the step programs
    of the op segments in `programs`; None: every one the plan has), after checking the terms against what a dispute costs; records the model in
    `deployment`. Returns (model id, digest, costs)."""
    plan = Plan.load(plan_file)
    costs = dispute_costs(plan_file, reference_gas_price_wei)
    has_op = any(s.mode == "op" for s in plan.segments)
    if has_op and min(terms.challenge_window_s, terms.response_window_s) < costs.min_window_s:
        raise ImoError(f"challenge and response windows must be at least {costs.min_window_s} s for this plan (a fraud proof takes up to "
                       f"~{costs.worst_proof_s:.0f} s on this machine); got {terms.challenge_window_s}/{terms.response_window_s} s")
    if terms.bond_wei < costs.min_bond_wei:
        raise ImoError(f"the bond must cover a dispute ({max(DISPUTE_GAS, costs.worst_game_gas):,} gas at {reference_gas_price_wei / 1e9:g} gwei, ×{BOND_MARGIN}): "
                       f"at least {costs.min_bond_wei} wei, got {terms.bond_wei}")
    windows = (terms.challenge_window_s, terms.response_window_s) if has_op else (0, 0)
    spec = ModelSpec(bytes.fromhex(plan.model_sha256), bytes.fromhex(plan.plan_hash), deployment.token, terms.fee_wei,
                     terms.bond_wei, terms.operator_share_bps, *windows, plan.scale, plan.generate or 0)
    sender = oracle.sender if isinstance(oracle.sender, str) else oracle.sender.address
    addresses = []
    for seg in plan.segments:
        if seg.game_only:  # disputed by the bisection game alone
            addresses.append(NO_VERIFIER)
            continue
        verifier, _, gas = deploy_circuit_verifier(oracle.w3, circuit_files(Path(plan_file).parent, seg).verifier_sol, oracle.sender)
        deployment.verifiers[f"{name}/seg{seg.index}"] = verifier.address
        deployment.gas[f"Halo2Verifier {name}/seg{seg.index}"] = gas
        addresses.append(verifier.address)
    expected = expected_registration(plan_file, spec, addresses, programs)
    model_id, digest, receipt = oracle.register(spec, list(expected.segments), list(expected.boundary_sizes))
    if digest != expected.digest():
        raise ImoError(f"registered model {model_id} has digest {digest.hex()}, expected {expected.digest().hex()}")
    deployment.models[name] = model_id
    deployment.registrations[name] = {"model_id": model_id, "digest": "0x" + digest.hex(), "terms": asdict(terms), "registrant": sender}
    deployment.gas[f"registerModel {name}"] = receipt.gasUsed
    return model_id, digest, costs
