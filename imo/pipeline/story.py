"""The IMO story end to end on one chain (`imo demo`): every step is real — contracts, ezkl circuits and proofs,
the oracle and challenger nodes (`imo.pipeline.oracle_node`, `imo.pipeline.challenger_node`) — and every money
claim is checked on chain.

1. IMO: deploy the protocol; three buyers buy the model's RevShareToken in its sale; the sale is finalized and
   the buyers claim their tokens.
2. Plan the classifier hybrid (private input layer zk, the wide layers op), compile every segment (artifact store:
   free after the first run), register it with windows and a bond that fit what a dispute costs.
3. Paid requests on held-out digits answered by an honest OracleNode (commit, then reveal with the posted zk proof
   and the public boundaries); a forger's corrupted zk proof is slashed at once with `disputeProof`; a liar's wrong
   output is disputed with an ezkl proof of the op segment, left unanswered and resolved; the liar's next lie, one
   value an op segment outputs, is caught by a challenger with no prover at all, which bisects the liar's execution
   trace down to one step recomputed in the EVM (the bisection game). Half of each bond to the challenger,
   half to the token; the three requests are re-answered honestly for their escrowed fees.
4. The windows pass; the challenger finalizes every result; fees and slashed halves reach the token; a snapshot;
   the three holders claim exactly their pro-rata share. The protocol gas of one request is reported.
5. The `gen` model draws a digit for a public prompt (label + seed) through the oracle; the finalized image is
   minted as an ERC-7007 AIGC NFT (mint fee to the token) and sold once, its ERC-2981 royalty paid to the token; a
   second snapshot lets the holders claim that too.
Total ETH is conserved: what left all accounts and contracts is exactly the gas paid. Every party is a fresh key funded
by the dev chain (anvil_setBalance) that signs its transactions locally: none is an account the node unlocked."""

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from tqdm import tqdm
from web3 import Web3
from web3.logs import DISCARD

from imo.circuits.plan import Plan, make_plan, write_plan
from imo.errors import ChainError
from imo.models import cached_export
from imo.models.zoo import NOISE_DIM
from imo.pipeline.chain import chain
from imo.pipeline.challenger_node import ChallengerNode
from imo.pipeline.oracle_node import Inbox, OracleNode
from imo.pipeline.state import NodeState
from imo.proving.protocol import Claim, request_input
from imo.proving.segments import compile_plan
from imo.verifier_contracts.contracts import (
    OracleConfig,
    SaleConfig,
    TokenConfig,
    deploy_nft,
    deploy_protocol,
    pay,
    transact,
)
from imo.verifier_contracts.oracle_client import OracleClient, Status
from imo.verifier_contracts.registration import Terms, dispute_costs, register_plan

# plan policies: the private input layer is zk, every other layer goes over budget and runs optimistically; merge=False
# keeps the small last layer its own op segment, so a wrong output is disputed with a cheap fraud proof
HYBRID = {"private_input": True, "budget_logrows": 1, "merge": False}  # mlp-wide: zk (logrows 16) → op (18) → op (15); mlp: zk (12) → op (15)
GEN_PLAN = {"budget_logrows": 0}  # the generator: one op segment (its prompt is public); no proof on the happy path

ETH = 10**18
FEE = 10**15  # per inference
OPERATOR_BPS = 2_000
WINDOW = 300  # shortest challenge and response windows, seconds (longer where a fraud proof needs it)
BUY_WEI = (5 * 10**16, 10 * 10**16, 15 * 10**16)  # three buyers, different amounts
MINT_FEE = 2 * 10**15
ROYALTY_BPS = 500
NFT_PRICE = 5 * 10**16
OWNER, BUYERS, USER, HONEST, DISHONEST, CHALLENGER, COLLECTOR, FORGER = 0, (1, 2, 3), 4, 5, 6, 7, 8, 9
ROLES = {"owner": OWNER, **{f"buyer {n}": i for n, i in enumerate(BUYERS, start=1)}, "user": USER, "honest": HONEST,
         "liar": DISHONEST, "challenger": CHALLENGER, "collector": COLLECTOR, "forger": FORGER}
FUNDING_WEI = 10_000 * ETH  # each party's starting balance (what anvil gives its own dev accounts)
PROMPT = (7, 42)  # the generator's prompt: draw a 7 with noise seed 42
CALLBACK_GAS = 600_000  # the consumer dapp stores the 10 logits (~14 storage slots)


def _eth(wei: int) -> str:
    return f"{wei / ETH:.6g} ETH"


def _calibration(onnx_path: Path, input_shape: list[int]) -> np.ndarray:
    """The model's held-out inputs (calibration.json), one per row, shaped like the model input."""
    data = json.loads((onnx_path.parent / "calibration.json").read_text())["input_data"][0]
    return np.asarray(data, dtype=np.float32).reshape(-1, *input_shape)


def fresh_accounts(w3: Web3, n: int, wei: int = FUNDING_WEI) -> list[LocalAccount]:
    """`n` new random keys, each given `wei` by the dev chain (anvil_setBalance; hardhat_setBalance): the story's
    parties sign every transaction locally, so it needs no account the node unlocked."""
    accounts = [Account.create() for _ in range(n)]
    for account in accounts:
        for method in ("anvil_setBalance", "hardhat_setBalance"):
            if "error" not in w3.provider.make_request(method, [account.address, hex(wei)]):
                break
        else:
            raise ChainError("the demo funds fresh accounts with anvil_setBalance: its --rpc-url must be an anvil (or a hardhat node)")
    return accounts


def _prompt_input(label: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(NOISE_DIM).astype(np.float32)
    return np.concatenate([np.eye(10, dtype=np.float32)[label], noise])[None]


class Story:
    """State shared by the steps: the chain, the parties (`signers` by role index, `acct` their addresses), the
    deployment, receipts for gas, wall-clock timings."""

    def __init__(self, w3, workdir: Path, quiet: bool, say):
        self.w3, self.workdir, self.quiet, self.say = w3, workdir, quiet, say
        self.signers = fresh_accounts(w3, len(ROLES))
        self.acct = [signer.address for signer in self.signers]
        self.gas: dict[str, list[int]] = {}
        self.timings: dict[str, float] = {}

    def tx(self, step: str, fn, sender: int, value: int = 0):
        receipt = transact(fn, self.signers[sender], value=value)
        self.gas.setdefault(step, []).append(int(receipt.gasUsed))
        return receipt

    def send(self, step: str, sender: int, to: str, value: int):
        receipt = pay(self.w3, self.signers[sender], to, value)
        self.gas.setdefault(step, []).append(int(receipt.gasUsed))
        return receipt

    def advance(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])

    def balance(self, account: int | str) -> int:
        return self.w3.eth.get_balance(self.acct[account] if isinstance(account, int) else account)

    def paid_gas(self, receipt) -> int:
        return receipt.gasUsed * receipt.effectiveGasPrice

    def plan(self, name: str, policy: dict, step: str) -> tuple[Path, list[dict]]:
        exported = cached_export(name)
        plan, graph = make_plan(exported.onnx_path, **policy)
        plan_file = write_plan(plan, graph, self.workdir / f"{name}-plan")
        start = time.perf_counter()
        reports = compile_plan(plan_file, _calibration(exported.onnx_path, plan.segments[0].input_shape), quiet=self.quiet)
        self.timings[step] = round(time.perf_counter() - start, 3)
        return plan_file, reports

    def terms(self, plan_file: Path) -> Terms:
        """The demo's terms for a plan: windows long enough for its worst fraud proof on this machine."""
        window = max(WINDOW, dispute_costs(plan_file).min_window_s)
        return Terms(fee_wei=FEE, operator_share_bps=OPERATOR_BPS, challenge_window_s=window, response_window_s=window)

    @staticmethod
    def claim_of(oracle: OracleClient, watcher: ChallengerNode, request_id: int) -> Claim:
        """The claim of a request as published in its (last) submit transaction's calldata."""
        return oracle.submitted_claim(watcher.state.request(request_id).detail["tx"])[1]

    def happy_path_gas(self, oracle_node: OracleNode, watcher: ChallengerNode, request_id: int) -> dict:
        """Protocol gas of one request without a callback: request + commit + submit + finalize."""
        parts = {"request": self.gas["requestCallback (no callback)"][0]}
        for state, step in ((oracle_node.state, "commit"), (oracle_node.state, "submit"), (watcher.state, "finalize")):
            parts[step] = next(t["gas_used"] for t in state.txs(step) if t["request_id"] == request_id)
        return {**parts, "total": sum(parts.values())}

    def claim_all(self, token, snapshot_id: int, holders: list[int]) -> list[dict]:
        """Every holder claims at snapshot_id; checks claimed == claimableRevenue == balance share × claimable pool."""
        record = token.functions.snapshotRecord(snapshot_id).call()
        pool, supply = record[0], record[2]
        out = []
        for i in holders:
            share = token.functions.balanceOfAt(self.acct[i], snapshot_id).call()
            expected = share * pool // supply
            claimable = token.functions.claimableRevenue(self.acct[i], snapshot_id).call()
            before = self.balance(i)
            receipt = self.tx("claim", token.functions.claim(snapshot_id), i)
            claimed = self.balance(i) - before + self.paid_gas(receipt)
            assert claimed == claimable == expected, (claimed, claimable, expected)
            out.append({"holder": self.acct[i], "share": share / supply, "claimed_wei": claimed, "expected_wei": expected})
        return out


def run_story(workdir: Path, rpc_url: str | None = None, quiet: bool = False, model: str = "mlp-wide",
              honest_requests: int = 3, say=print, dashboard=None, llm_tokens: int | None = None) -> dict:
    """Tell the whole story; returns the summary (see `imo demo --summary`). Raises AssertionError if any money
    check fails. `dashboard(deployment, summary)`, if given, is called at the end while the chain is still up
    (`deployment.rpc_url` set); the chain stops when it returns (`imo demo --dashboard` serves until Ctrl-C)."""
    workdir = Path(workdir)
    nodes_dir = workdir / "nodes"
    shutil.rmtree(nodes_dir, ignore_errors=True)  # node work of a previous run (another chain)
    started = time.perf_counter()
    with chain(rpc_url) as node:
        s = Story(node.w3, workdir, quiet, say)
        w3, acct, signers = s.w3, s.acct, s.signers
        tracked = list(acct)
        eth_before = sum(s.balance(a) for a in tracked)
        start_block = w3.eth.block_number
        summary: dict = {"model": model, "rpc_url": node.rpc_url, "accounts": {role: acct[i] for role, i in ROLES.items()}}

        # ------------------------------------------------------------ 1. IMO
        t = time.perf_counter()
        say(f"[1/5] IMO: deploying RevShareToken (ERC-7641), its sale, AIOracle on {node.rpc_url} …")
        sale_cfg = SaleConfig()
        dep = deploy_protocol(w3, signers[OWNER], TokenConfig(name=f"{model} revenue share", symbol="IMO"), sale_cfg, OracleConfig())
        s.gas.update({f"deploy {k}": [v] for k, v in dep.gas.items()})
        token, offering = dep.contract(w3, "RevShareToken"), dep.contract(w3, "ModelOffering")
        for i, paid in zip(BUYERS, BUY_WEI):
            s.tx("sale buy", offering.functions.buy(), i, value=paid)
        s.advance(sale_cfg.duration_s)
        s.tx("sale finalize", offering.functions.finalizeSale(), OWNER)
        buyers = []
        for i, paid in zip(BUYERS, BUY_WEI):
            s.tx("sale claimTokens", offering.functions.claimTokens(), i)
            tokens = token.functions.balanceOf(acct[i]).call()
            buyers.append({"buyer": acct[i], "paid_wei": paid, "tokens": tokens, "share": tokens / token.functions.totalSupply().call()})
        s.tx("sale withdrawProceeds", offering.functions.withdrawProceeds(), OWNER)
        say("      sale finalized: " + ", ".join(f"buyer {n + 1} paid {_eth(b['paid_wei'])} → {b['tokens'] / ETH:,.0f} IMO ({b['share']:.0%})"
                                             for n, b in enumerate(buyers)))
        summary["sale"] = {"token": dep.token, "offering": dep.offering, "raised_wei": sum(BUY_WEI), "buyers": buyers}
        s.timings["1_imo"] = round(time.perf_counter() - t, 3)

        # ------------------------------------------------------------ 2. plan, compile, register
        policy = HYBRID
        say(f"[2/5] planning `{model}` as an opp/ai hybrid ({policy}) and compiling every segment (cached after the first run) …")
        plan_file, reports = s.plan(model, policy, "2_compile")
        plan = Plan.load(plan_file)
        modes = [seg.mode for seg in plan.segments]
        assert modes[0] == "zk" and "op" in modes and plan.segments[-1].mode == "op", modes
        for seg, r in zip(plan.segments, reports):
            say(f"      seg{seg.index} {seg.mode}  {'+'.join(seg.ops):<10} logrows {r.get('logrows', seg.est_logrows)}  "
                f"{'cached' if r['cached'] else 'built in {:.0f} s'.format(r['wall_seconds'])}  ({seg.reason})")
        t = time.perf_counter()
        oracle = OracleClient(w3, dep.oracle, signers[OWNER])
        terms = s.terms(plan_file)
        model_id, digest, costs = register_plan(oracle, dep, plan_file, model, terms)
        s.gas["register model (verifiers + registerModel)"] = [v for k, v in dep.gas.items() if k.startswith(f"Halo2Verifier {model}/")]
        say(f"      registered as model {model_id} (digest {digest.hex()[:12]}…): fee {_eth(FEE)}, operator share {OPERATOR_BPS / 100:.0f} %, "
            f"bond {_eth(terms.bond_wei)} (a dispute needs ≤ {_eth(costs.min_bond_wei)}), windows {terms.challenge_window_s} s "
            f"(a fraud proof takes ~{costs.worst_proof_s:.0f} s here), sizes {plan.boundary_sizes()} (0 = hashed)")
        summary["plan"] = {"plan_hash": plan.plan_hash, "model_id": model_id, "digest": digest.hex(), "boundary_sizes": plan.boundary_sizes(),
                           "terms": asdict(terms), "dispute_costs": asdict(costs),
                           "segments": [{"index": seg.index, "mode": seg.mode, "ops": seg.ops, "logrows": r.get("logrows"), "reason": seg.reason,
                                         "compile_cached": r["cached"], "compile_seconds": r["wall_seconds"]} for seg, r in zip(plan.segments, reports)]}
        s.timings["2_register"] = round(time.perf_counter() - t, 3)

        # ------------------------------------------------------------ 3. requests, fraud, disputes
        token_start = s.balance(dep.token)
        inbox = Inbox({})
        xs = _calibration(cached_export(model).onnx_path, plan.segments[0].input_shape)[: honest_requests + 3]
        common = {"deployment": dep, "plan_file": plan_file, "poll_interval": 0.2}
        honest = OracleNode(node.rpc_url, account=signers[HONEST], inbox=inbox, state=NodeState(), work_dir=nodes_dir / "honest", **common)
        forger = OracleNode(node.rpc_url, account=signers[FORGER], inbox=inbox, state=NodeState(), work_dir=nodes_dir / "forger",
                            dishonest="proof", seed=3, **common)
        liar = OracleNode(node.rpc_url, account=signers[DISHONEST], inbox=inbox, state=NodeState(), work_dir=nodes_dir / "dishonest",
                          dishonest="output", seed=3, **common)
        watcher = ChallengerNode(node.rpc_url, account=signers[CHALLENGER], state=NodeState(), work_dir=nodes_dir / "challenger", **common)
        # the same liar, lying deep inside an op segment; a challenger that runs no prover at all plays the bisection game
        deep_liar = OracleNode(node.rpc_url, account=signers[DISHONEST], inbox=inbox, state=NodeState(), work_dir=nodes_dir / "deep-liar",
                               dishonest="boundary", seed=5, **common)
        bisector = ChallengerNode(node.rpc_url, account=signers[CHALLENGER], state=NodeState(), work_dir=nodes_dir / "bisector",
                                  fast_path_max_logrows=0, **common)
        user = oracle.as_sender(signers[USER])

        def request(x, callback: bool = True) -> tuple[int, float]:
            gas_limit = CALLBACK_GAS if callback else 0
            rid, receipt = user.request_callback(model_id, inbox.put(plan, x), dep.consumer if callback else None, gas_limit)
            s.gas.setdefault("requestCallback" if callback else "requestCallback (no callback)", []).append(receipt.gasUsed)
            return rid, time.time()

        say(f"[3/5] {honest_requests} paid requests on held-out digits, answered by an honest oracle node (commit, then reveal: "
            f"the zk proof of the private layer is posted, the op boundaries travel in calldata) …")
        t = time.perf_counter()
        requested: dict[int, float] = {}
        rids = []
        bar = tqdm(xs[:honest_requests], desc="requests", unit="req", disable=quiet, leave=False)
        for n, x in enumerate(bar):
            rid, requested[rid] = request(x, callback=n > 0)  # the first without a callback: the protocol's own gas
            rids.append(rid)
            honest.step()
        bar.close()
        watcher.step()
        s.timings["3_honest_answers"] = round(time.perf_counter() - t, 3)
        for rid in rids:
            r = honest.state.request(rid)
            assert r.status == "submitted" and watcher.state.request(rid).status == "ok", (rid, r.status)
            digit = int(np.argmax(s.claim_of(oracle, watcher, rid).output_values(plan.boundary_sizes())))
            say(f"      request {rid}: says digit {digit} (answered in {r.detail['prove_seconds']:.1f} s, submit {r.detail['gas']:,} gas, "
                f"{r.detail['data_bytes']} B of public boundaries); the challenger re-executed it: ok")

        say("      a forger answers the next request with a corrupted zk proof …")
        t = time.perf_counter()
        forged_rid, requested[forged_rid] = request(xs[honest_requests])
        forger.step()
        watcher.step()
        forged = watcher.state.request(forged_rid)
        assert forged.status == "slashed" and forger.state.request(forged_rid).status == "submitted", forged
        slashed = [e["args"] for e in oracle.contract.events.AIResultSlashed().get_logs(from_block=start_block)]
        say(f"      the challenger checked the posted proof with the registered verifier: {forged.detail['reason']} → disputeProof "
            f"({forged.detail['challenge_gas']:,} gas): bond slashed, {_eth(slashed[-1]['reward'])} to the challenger, {_eth(slashed[-1]['toToken'])} "
            f"to the token; the fee stays escrowed and the request reopens")
        honest.step()
        forger.step()

        say("      a liar answers the next request with one output logit changed …")
        fraud_rid, requested[fraud_rid] = request(xs[honest_requests + 1])
        liar.step()
        assert liar.state.request(fraud_rid).status == "submitted"
        watcher.step()
        caught = watcher.state.request(fraud_rid)
        assert caught.status == "disputing", caught
        say(f"      the challenger re-executed the op segments: {caught.detail['reason']} → an ezkl proof of segment {caught.detail['segment']} "
            f"from the claimed input, committed and revealed ({caught.detail['challenge_gas']:,} gas, bond posted)")
        liar.step()  # the liar cannot answer: its claim is not what the circuit computes
        s.advance(terms.response_window_s)
        watcher.step()
        assert watcher.state.request(fraud_rid).status == "slashed", watcher.state.request(fraud_rid)
        slashed = [e["args"] for e in oracle.contract.events.AIResultSlashed().get_logs(from_block=start_block)]
        say(f"      the liar did not answer within {terms.response_window_s} s: resolved, bond slashed ({_eth(slashed[-1]['reward'])} + the "
            f"challenger's own bond back to it, {_eth(slashed[-1]['toToken'])} to the token)")
        s.timings["3_fraud_caught"] = round(time.perf_counter() - t, 3)

        say("      the liar tries again, changing one value an op segment outputs, and meets a challenger that runs no prover: "
            "it bisects the liar's execution trace of that segment …")
        t = time.perf_counter()
        honest.step()  # the slashed requests are re-answered first, so the liar finds only the new one open
        game_rid, requested[game_rid] = request(xs[honest_requests + 2])
        deep_liar.step()
        bisector.step()
        gamed = bisector.state.request(game_rid)
        assert gamed.status == "gaming", gamed
        for _ in range(200):  # one move per step and side
            if bisector.state.request(game_rid).status != "gaming":
                break
            deep_liar.step()
            bisector.step()
        assert bisector.state.request(game_rid).status == "slashed", bisector.state.request(game_rid)
        game = bisector.games.game(bisector.state.request(game_rid).detail["game"])
        moves = [x for st in (bisector.state, deep_liar.state) for x in st.txs() if x["step"].startswith("game ") and x["request_id"] == game_rid]
        opened = [x for x in bisector.state.txs("openGame") if x["request_id"] == game_rid]
        game_gas = [x["gas_used"] for x in moves + opened]
        program = bisector.traces.program(game.segment)
        slashed = [e["args"] for e in oracle.contract.events.AIResultSlashed().get_logs(from_block=start_block)]
        say(f"      segment {game.segment}'s step program has {program.n_steps:,} steps ({program.macs:,} multiply-accumulates): "
            f"{game.depth} rounds of bisection, then step {game.index} ({program.steps[game.index].kind.name}) recomputed in the EVM; "
            f"{len(game_gas)} transactions, largest {max(game_gas):,} gas, {sum(game_gas):,} in all; the liar is slashed "
            f"({_eth(slashed[-1]['reward'])} + the challenger's bond back to it, {_eth(slashed[-1]['toToken'])} to the token)")
        game_story = {"request": game_rid, "segment": game.segment, "steps": program.n_steps, "rounds": game.depth, "disputed_step": game.index,
                  "step_kind": program.steps[game.index].kind.name, "transactions": len(game_gas), "max_tx_gas": max(game_gas),
                  "total_gas": sum(game_gas), "reason": gamed.detail["reason"]}
        s.timings["3_game"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        honest.step()
        liar.step()
        deep_liar.step()
        watcher.step()
        for rid in (forged_rid, fraud_rid, game_rid):  # the forged request's re-answer may already be past its window
            assert honest.state.request(rid).status in ("submitted", "finalized") and watcher.state.request(rid).status in ("ok", "finalized")
        reanswered_at = time.time()
        say(f"      requests {forged_rid}, {fraud_rid} and {game_rid} re-answered honestly for their escrowed fees; the challenger checked all "
            f"{len(rids) + 6} submissions")
        s.timings["3_reanswer"] = round(time.perf_counter() - t, 3)

        # ------------------------------------------------------------ 4. finalize, snapshot, claim
        say(f"[4/5] {terms.challenge_window_s} s challenge windows pass; the challenger finalizes (and is paid the callback gas); fees go to "
            f"the token; snapshot; holders claim …")
        s.advance(terms.challenge_window_s)
        t = time.perf_counter()
        watcher.step()
        s.timings["4_finalize"] = round(time.perf_counter() - t, 3)
        all_rids = rids + [forged_rid, fraud_rid, game_rid]
        assert all(oracle.request(r).status == Status.FINALIZED for r in all_rids)
        finalized = [e["args"] for e in oracle.contract.events.AIRequestFinalized().get_logs(from_block=start_block)]
        released = sum(e["modelRevenue"] for e in finalized)
        slashed_to_token = sum(e["toToken"] for e in slashed)
        assert s.balance(dep.token) - token_start == released + slashed_to_token == token.functions.pendingRevenue().call()
        consumer = dep.contract(w3, "OracleConsumer")
        delivered = sum(bool(consumer.functions.outputOf(r).call()) for r in all_rids)
        say(f"      {len(finalized)} results finalized, {delivered} delivered to the consumer dapp; {_eth(released)} of fees released to the "
            f"token ({100 - OPERATOR_BPS / 100:.0f} % of each model fee) and {_eth(slashed_to_token)} of slashed bonds")
        s.advance(TokenConfig().snapshot_interval_s)
        receipt = s.tx("snapshot", token.functions.snapshot(), OWNER)
        snap1 = token.events.Snapshot().process_receipt(receipt, errors=DISCARD)[0]["args"]
        assert snap1["claimable"] == (released + slashed_to_token) * TokenConfig().claim_share_bps // 10_000
        claims = s.claim_all(token, snap1["snapshotId"], list(BUYERS))
        say(f"      snapshot {snap1['snapshotId']}: {_eth(snap1['claimable'])} claimable ({TokenConfig().claim_share_bps / 100:.0f} % of "
            f"{_eth(released + slashed_to_token)}); " + ", ".join(f"buyer {n + 1} claimed {_eth(c['claimed_wei'])} = {c['share']:.0%}" for n, c in enumerate(claims)))

        # latency: request → a submitted result, which is final as soon as its window passes undisputed (windows excluded)
        latencies = [round(dict(honest.state.history(rid))["submitted"] - requested[rid], 3) for rid in rids]
        fraud_latency = round(reanswered_at - requested[fraud_rid], 3)
        say(f"      latency request → submitted result (final when its window passes): {np.mean(latencies):.1f} s mean for honest answers, "
            f"{fraud_latency:.1f} s for the request that went through a dispute (its response window excluded)")
        happy = s.happy_path_gas(honest, watcher, rids[0])
        say(f"      protocol gas of one request (no callback): request {happy['request']:,} + commit {happy['commit']:,} + submit "
            f"{happy['submit']:,} + finalize {happy['finalize']:,} = {happy['total']:,}")

        # ------------------------------------------------------------ 5. gen model, AIGC NFT, royalties
        label, seed = PROMPT
        say(f"[5/5] the `gen` model draws a {label} (noise seed {seed}) through the oracle; the image becomes an AIGC NFT …")
        gen_plan_file, gen_reports = s.plan("gen", GEN_PLAN, "5_gen_compile")
        gen_plan = Plan.load(gen_plan_file)
        gen_id, _, _ = register_plan(oracle, dep, gen_plan_file, "gen", s.terms(gen_plan_file))
        nft = w3.eth.contract(address=deploy_nft(w3, signers[OWNER], dep, gen_id, MINT_FEE, ROYALTY_BPS), abi=dep.contract(w3, "AIGCNFT").abi)
        gen_common = {"deployment": dep, "plan_file": gen_plan_file, "poll_interval": 0.2}
        artist = OracleNode(node.rpc_url, account=signers[HONEST], inbox=Inbox({}), state=NodeState(), work_dir=nodes_dir / "gen-oracle", **gen_common)
        gen_watch = ChallengerNode(node.rpc_url, account=signers[CHALLENGER], state=NodeState(), work_dir=nodes_dir / "gen-challenger", **gen_common)
        t = time.perf_counter()
        prompt = request_input(gen_plan, _prompt_input(label, seed))  # a public input: the prompt itself is the request input
        gen_rid, receipt = user.request_callback(gen_id, prompt)
        s.gas.setdefault("requestCallback (no callback)", []).append(receipt.gasUsed)
        artist.step()
        gen_watch.step()
        assert gen_watch.state.request(gen_rid).status == "ok"
        s.advance(s.terms(gen_plan_file).challenge_window_s)
        gen_watch.step()
        assert oracle.request(gen_rid).status == Status.FINALIZED
        s.timings["5_gen_request"] = round(time.perf_counter() - t, 3)
        gen_claim = s.claim_of(oracle, gen_watch, gen_rid)
        aigc, proof = gen_claim.output, encode(["uint256", "bytes32"], [gen_rid, gen_claim.body_hash])
        token_before = s.balance(dep.token)
        receipt = s.tx("nft mint", nft.functions.mint(prompt, aigc, proof), USER, value=MINT_FEE)
        token_id = nft.events.Transfer().process_receipt(receipt, errors=DISCARD)[0]["args"]["tokenId"]
        assert nft.functions.ownerOf(token_id).call() == acct[USER] and s.balance(dep.token) - token_before == MINT_FEE
        pixels = gen_claim.output_values(gen_plan.boundary_sizes())
        say(f"      request {gen_rid} finalized; NFT {hex(token_id)[:12]}… minted to the requester, mint fee {_eth(MINT_FEE)} → token:")
        if not quiet:
            ramp = " .:-=+*#%@"
            for row in range(8):
                say("        " + "".join(ramp[min(9, max(0, p) * 10 // (1 << gen_plan.scale))] * 2 for p in pixels[8 * row:8 * row + 8]))
        # sold once: the collector pays the seller, and the ERC-2981 royalty (royaltyInfo) to its receiver, the token
        receiver, royalty = nft.functions.royaltyInfo(token_id, NFT_PRICE).call()
        assert receiver == dep.token and royalty == NFT_PRICE * ROYALTY_BPS // 10_000
        token_before, seller_before = s.balance(dep.token), s.balance(USER)
        s.send("nft sale: price to seller", COLLECTOR, acct[USER], NFT_PRICE - royalty)
        s.send("nft sale: royalty to token", COLLECTOR, receiver, royalty)
        r = s.tx("nft sale: transfer", nft.functions.transferFrom(acct[USER], acct[COLLECTOR], token_id), USER)
        assert nft.functions.ownerOf(token_id).call() == acct[COLLECTOR] and s.balance(dep.token) - token_before == royalty
        assert s.balance(USER) - seller_before + s.paid_gas(r) == NFT_PRICE - royalty
        say(f"      sold once for {_eth(NFT_PRICE)}: royalty {_eth(royalty)} ({ROYALTY_BPS / 100:.0f} %, ERC-2981) paid to the token")

        gen_revenue = sum(e["args"]["modelRevenue"] for e in oracle.contract.events.AIRequestFinalized().get_logs(from_block=start_block)
                          if e["args"]["requestId"] == gen_rid)
        s.advance(TokenConfig().snapshot_interval_s)
        receipt = s.tx("snapshot", token.functions.snapshot(), OWNER)
        snap2 = token.events.Snapshot().process_receipt(receipt, errors=DISCARD)[0]["args"]
        assert snap2["claimable"] == (gen_revenue + MINT_FEE + royalty) * TokenConfig().claim_share_bps // 10_000
        claims2 = s.claim_all(token, snap2["snapshotId"], list(BUYERS))
        say(f"      snapshot {snap2['snapshotId']} (gen fee + mint fee + royalty): " + ", ".join(
            f"buyer {n + 1} claimed {_eth(c['claimed_wei'])}" for n, c in enumerate(claims2)))

        # ------------------------------------------------------------ optional: the 114M-parameter LM (`imo demo --llm`)
        if llm_tokens:
            from imo.pipeline.story_llm import llm_act

            t = time.perf_counter()
            summary["llm"] = llm_act(s, dep, node.rpc_url, nodes_dir, OWNER, USER, HONEST, CHALLENGER, tokens=llm_tokens)
            s.timings["llm"] = round(time.perf_counter() - t, 3)

        # ------------------------------------------------------------ money check
        contracts = [dep.token, dep.oracle, dep.offering, dep.consumer, dep.nft, *{a for a in dep.verifiers.values() if int(a, 16)}]
        eth_after = sum(s.balance(a) for a in tracked + contracts)
        gas_paid = 0
        for number in range(start_block + 1, w3.eth.block_number + 1):
            for txh in w3.eth.get_block(number)["transactions"]:
                gas_paid += s.paid_gas(w3.eth.get_transaction_receipt(txh))
        conserved = eth_before - eth_after == gas_paid
        if rpc_url is None:
            assert conserved, (eth_before - eth_after, gas_paid)

        # ------------------------------------------------------------ summary
        requests = []
        for rid in all_rids + [gen_rid]:
            watcher_of = gen_watch if rid == gen_rid else watcher
            requests.append({"id": rid, "model": "gen" if rid == gen_rid else model, "status": oracle.request(rid).status.name.lower(),
                             "disputed": rid in (forged_rid, fraud_rid, game_rid),
                             "output": s.claim_of(oracle, watcher_of, rid).output_values((gen_plan if rid == gen_rid else plan).boundary_sizes()) if rid != gen_rid else None,
                             "latency_s": dict(zip(rids, latencies)).get(rid, fraud_latency if rid == fraud_rid else None)})
        summary.update({
            "requests": requests,
            "fraud_caught": len(slashed),
            "fraud": [{"request": forged_rid, "kind": "invalid zk proof", "segment": forged.detail["segment"], "reason": forged.detail["reason"],
                       "bond_slashed_wei": terms.bond_wei, "to_challenger_wei": slashed[0]["reward"], "to_token_wei": slashed[0]["toToken"]},
                      {"request": fraud_rid, "kind": "wrong output, unanswered dispute", "segment": caught.detail["segment"], "reason": caught.detail["reason"],
                       "bond_slashed_wei": terms.bond_wei, "to_challenger_wei": slashed[1]["reward"], "to_token_wei": slashed[1]["toToken"]},
                      {"kind": "wrong op segment, bisection game", "bond_slashed_wei": terms.bond_wei,
                       "to_challenger_wei": slashed[2]["reward"], "to_token_wei": slashed[2]["toToken"], **game_story}],
            "fees": {
                "paid_wei": sum(oracle.request(r).fee for r in all_rids + [gen_rid]),
                "released_to_token_wei": released + gen_revenue,
                "slashed_to_token_wei": slashed_to_token,
                "credits_wei": {"honest": oracle.credits(acct[HONEST]), "forger": oracle.credits(acct[FORGER]),
                                "liar": oracle.credits(acct[DISHONEST]), "challenger": oracle.credits(acct[CHALLENGER])},
            },
            "snapshots": [
                {"id": snap1["snapshotId"], "revenue_wei": released + slashed_to_token, "claimable_wei": snap1["claimable"], "claims": claims},
                {"id": snap2["snapshotId"], "revenue_wei": gen_revenue + MINT_FEE + royalty, "claimable_wei": snap2["claimable"], "claims": claims2},
            ],
            "claimed_per_holder_wei": {c["holder"]: c["claimed_wei"] + c2["claimed_wei"] for c, c2 in zip(claims, claims2)},
            "nft": {"minted": 1, "contract": dep.nft, "token_id": hex(token_id), "request": gen_rid, "prompt": {"label": label, "seed": seed},
                    "pixels": pixels, "mint_fee_wei": MINT_FEE, "sale_price_wei": NFT_PRICE, "royalty_paid_wei": royalty,
                    "royalty_receiver": receiver, "owner": nft.functions.ownerOf(token_id).call(),
                    "gen_segments": [{"index": g.index, "mode": g.mode, "ops": g.ops, "compile_cached": r["cached"]} for g, r in zip(gen_plan.segments, gen_reports)]},
            "eth_conserved": conserved,
            "gas_paid_wei": gas_paid,
            "gas": {**{k: (v[0] if len(v) == 1 else {"mean": int(np.mean(v)), "count": len(v)}) for k, v in s.gas.items()},
                    **{f"node {step}": int(np.mean([x["gas_used"] for x in st.txs(step)]))
                       for st, step in ((honest.state, "commit"), (honest.state, "submit"), (watcher.state, "challenge"), (watcher.state, "disputeProof"),
                                        (watcher.state, "resolve"), (watcher.state, "finalize")) if st.txs(step)},
                    "happy_path_per_request": happy["total"], "happy_path_parts": happy},
            "latency_s": {"request_to_finalized_excluding_window_mean": round(float(np.mean(latencies)), 3), "per_request": latencies,
                          "with_dispute": fraud_latency},
        })
        if dashboard is not None:  # the chain stays up while the hook runs; its time is not the story's
            dep.rpc_url = node.rpc_url
            paused = time.perf_counter()
            dashboard(dep, summary)
            started += time.perf_counter() - paused
    s.timings["total"] = round(time.perf_counter() - started, 3)
    summary["timings"] = s.timings
    say(f"done in {s.timings['total']:.0f} s: fraud caught {summary['fraud_caught']}, "
        f"{_eth(summary['fees']['released_to_token_wei'] + summary['fees']['slashed_to_token_wei'] + MINT_FEE + royalty)} "
        f"reached the token, holders claimed exactly their share, 1 NFT minted with royalty paid; ETH conserved: {conserved}")
    return summary
