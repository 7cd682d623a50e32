"""`imo demo --llm`: the story's optional act, the zoo's 114M-parameter `gpt` answering a question through the oracle.

The model is served as a generation model (`imo plan gpt --generate N`): the request carries the prompt, the oracle
node decodes N tokens greedily and submits one claim for the teacher-forced pass, whose backbone is optimistic
(game-only: far beyond any circuit) and whose output head, with the owner's private weights, is proven with ezkl.
The challenger re-executes the backbone from the claim and finds nothing to dispute; after the window the result is
finalized, the consumer dapp's callback receives the generated text's bytes, and the fee reaches the token. The head's
posted proof is also checked by its registered verifier (a view call) to show what it costs."""

from __future__ import annotations

import time
from pathlib import Path

from imo.circuits.plan import Plan
from imo.errors import ChainError
from imo.pipeline.challenger_node import ChallengerNode
from imo.pipeline.oracle_node import OracleNode
from imo.pipeline.state import NodeState
from imo.proving.protocol import decode_text_payload, pack_tensor
from imo.verifier_contracts.contracts import compile_protocol
from imo.verifier_contracts.oracle_client import OracleClient, Status
from imo.verifier_contracts.registration import Terms, dispute_costs, register_plan

LLM_TOKENS = 4
LLM_QUESTION = "Q: What does the for statement do?\nA:"
LLM_CALLBACK_GAS = 300_000  # the consumer stores a few bytes


def llm_plan(workdir: Path, tokens: int, quiet: bool) -> tuple[Path, list[dict], float]:
    """The gpt generation plan in workdir/gpt-plan, written once per token count, and compiled (the head's circuit
    is cached in the artifact store). Returns (plan file, compile reports, seconds)."""
    from imo.circuits.generation_plan import make_generation_plan
    from imo.models.gpt import cached_gpt
    from imo.proving import onnx_io
    from imo.proving.segments import compile_plan

    plan_file = Path(workdir) / "gpt-plan" / "plan.json"
    start = time.perf_counter()
    if not plan_file.is_file() or Plan.load(plan_file).generate != tokens:
        make_generation_plan(cached_gpt(progress=not quiet), tokens, plan_file.parent)
    plan = Plan.load(plan_file)
    calibration = onnx_io.load_batch(Path(plan.model).with_name("calibration.json"), plan.input_signature())
    reports = compile_plan(plan_file, calibration, quiet=quiet)
    return plan_file, reports, time.perf_counter() - start


def llm_act(s, dep, rpc_url: str, nodes_dir: Path, owner: int, user: int, honest: int, challenger: int,
            tokens: int = LLM_TOKENS, question: str = LLM_QUESTION) -> dict:
    """Plan, compile and register gpt as a generation model; one paid question answered, checked and finalized. `s` is
    the story (chain, signers, gas log); the role arguments index its signers. Returns the act's summary."""
    from imo.pipeline.dapp import prompt_ids

    say, w3 = s.say, s.w3
    say(f"[llm] the zoo's 114M-parameter gpt answers a question through the oracle: {tokens} tokens, optimistic backbone, "
        f"zk output head with private weights …")
    plan_file, reports, compile_s = llm_plan(s.workdir, tokens, s.quiet)
    plan = Plan.load(plan_file)
    head = next(r for r in reports if r["segment"] == 1)
    say(f"      plan: seg0 op ({plan.segments[0].reason}), seg1 zk head+argmax logrows {head['logrows']} "
        f"({'cached' if head['cached'] else 'compiled'}; {compile_s:.0f} s)")
    oracle = OracleClient(w3, dep.oracle, s.signers[owner])
    t = time.perf_counter()
    costs = dispute_costs(plan_file)  # builds the backbone's step program the first time (~2.5 min)
    window = max(600, costs.min_window_s)
    terms = Terms(fee_wei=10**15, bond_wei=max(Terms().bond_wei, costs.min_bond_wei), challenge_window_s=window, response_window_s=window)
    model_id, digest, _ = register_plan(oracle, dep, plan_file, "gpt", terms)
    steps = oracle.model(model_id).registration.segments[0].program_steps
    say(f"      registered as model {model_id} (digest {digest.hex()[:12]}…): the backbone's step program has {steps:,} steps "
        f"(a dispute is ≤ {max(1, (steps - 1).bit_length())} rounds), windows {window} s ({time.perf_counter() - t:.0f} s)")

    common = {"deployment": dep, "plan_file": plan_file, "poll_interval": 0.2}
    node = OracleNode(rpc_url, account=s.signers[honest], state=NodeState(), work_dir=nodes_dir / "gpt-oracle", **common)
    watcher = ChallengerNode(rpc_url, account=s.signers[challenger], state=NodeState(), work_dir=nodes_dir / "gpt-challenger", **common)
    sizes = plan.boundary_sizes()
    prompt = prompt_ids(question, sizes[0] - tokens + 1)
    asker = oracle.as_sender(s.signers[user])
    rid, receipt = asker.request_callback(model_id, pack_tensor(prompt), dep.consumer, LLM_CALLBACK_GAS)
    s.gas.setdefault("requestCallback (gpt)", []).append(receipt.gasUsed)
    t = time.perf_counter()
    node.step()
    answer_s = time.perf_counter() - t
    record = node.state.request(rid)
    if record.status != "submitted":
        raise ChainError(f"the gpt oracle did not submit request {rid}: {record.status} {record.detail}")
    t = time.perf_counter()
    watcher.step()
    check_s = time.perf_counter() - t
    if watcher.state.request(rid).status != "ok":
        raise ChainError(f"the challenger disputes an honest gpt answer: {watcher.state.request(rid).detail}")
    claim = oracle.submitted_claim(record.detail["tx"])[1]
    proof = claim.proofs[0]
    inputs, outputs = claim.segment_instances(sizes, 2)
    verifier = w3.eth.contract(address=dep.verifiers["gpt/seg1"], abi=compile_protocol()["IHalo2Verifier"].abi)
    verified = verifier.functions.verifyProof(proof, inputs + outputs).call()
    verify_gas = verifier.functions.verifyProof(proof, inputs + outputs).estimate_gas()
    s.advance(terms.challenge_window_s)
    watcher.step()
    if oracle.request(rid).status != Status.FINALIZED:
        raise ChainError(f"gpt request {rid} was not finalized: {oracle.request(rid).status}")
    consumer = dep.contract(w3, "OracleConsumer")
    text = decode_text_payload(consumer.functions.outputOf(rid).call())
    finalize_gas = next(x["gas_used"] for x in watcher.state.txs("finalize") if x["request_id"] == rid)
    say(f"      asked {question!r}: the oracle generated {tokens} tokens and proved the head in {answer_s:.0f} s, submit "
        f"{record.detail['gas']:,} gas ({record.detail['data_bytes']:,} B of public boundaries); the challenger re-executed the "
        f"backbone in {check_s:.0f} s: ok")
    say(f"      the head's proof ({len(proof):,} B, {len(inputs) + len(outputs):,} public instances) verifies with its registered verifier: "
        f"{verified}, {verify_gas:,} gas; after the window the result was finalized ({finalize_gas:,} gas)")
    weak = " (the model had 16 training steps, docs/llm.md: its greedy text is mostly spaces)" if not text.strip() else ""
    say(f"      the consumer dapp's callback received {len(text)} bytes: {text.decode('utf-8', errors='replace')!r}{weak}")
    return {"model_id": model_id, "tokens": tokens, "question": question, "answer": text.decode("utf-8", errors="replace"),
            "answer_hex": text.hex(), "request": rid, "program_steps": steps, "head_logrows": head["logrows"],
            "answer_seconds": round(answer_s, 1), "challenger_check_seconds": round(check_s, 1), "window_s": window,
            "gas": {"request": receipt.gasUsed, "submit": record.detail["gas"], "finalize": finalize_gas, "head_verify": verify_gas},
            "head_proof_bytes": len(proof), "head_proof_verifies": bool(verified), "public_instances": len(inputs) + len(outputs)}
