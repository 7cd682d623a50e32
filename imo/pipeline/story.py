"""The IMO story end to end on one chain (`imo demo`): every step is real — contracts, ezkl circuits and proofs,
the oracle and challenger nodes of `imo.pipeline.nodes` — and every money claim is checked on chain.

1. IMO: deploy the protocol; three buyers buy the model's RevShareToken in its sale; the sale is finalized and
   the buyers claim their tokens.
2. Plan the classifier hybrid (private input layer zk, the wide layers op), compile every segment (artifact store:
   free after the first run), register it with a short challenge window.
3. Paid requests on held-out digits answered by an honest OracleNode (a tampered zk proof is rejected at submit);
   one request answered by a dishonest OracleNode (wrong output), caught by the ChallengerNode with a fraud proof
   and slashed; the reopened request is answered honestly.
4. The windows pass; the challenger finalizes every result; fees reach the token; a snapshot; the three holders
   claim exactly their pro-rata share.
5. The `gen` model draws a digit for a prompt (label + seed) through the oracle; the finalized image is minted as
   an ERC-7007 AIGC NFT (mint fee to the token) and sold once, its ERC-2981 royalty paid to the token; a second
   snapshot lets the holders claim that too.
Total ETH is conserved: what left all accounts and contracts is exactly the gas paid."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm
from web3.logs import DISCARD

from imo.circuits.plan import Plan, make_plan, write_plan
from imo.errors import ChainError
from imo.models import cached_export
from imo.models.zoo import NOISE_DIM
from imo.pipeline.chain import chain
from imo.pipeline.nodes import (
    ChallengerNode,
    Inbox,
    OracleNode,
    register_plan,
)
from imo.pipeline.state import NodeState
from imo.proving.segments import compile_plan
from imo.verifier_contracts.contracts import (
    OracleConfig,
    SaleConfig,
    TokenConfig,
    deploy_nft,
    deploy_protocol,
    transact,
)

# plan policies: the private input layer is zk, the wide layers go over budget and run optimistically; merge=False
# keeps the small last layer its own op segment, so a wrong output is disputed with a cheap fraud proof
PLANS = {
    "mlp-wide": {"private_input": True, "budget_logrows": 14, "merge": False},  # zk (logrows 16) → op (18) → op (15)
    "mlp": {"private_input": True, "budget_logrows": 12, "merge": False},  # zk (15) → op (15)
    "cnn": {"private_input": True, "budget_logrows": 14, "merge": False},
}
GEN_PLAN = {"budget_logrows": 0}  # the generator: one op segment (its prompt is public); no proof on the happy path

ETH = 10**18
FEE = 10**15  # per inference
OPERATOR_BPS = 2_000
WINDOW = 300  # challenge window, seconds
BUY_WEI = (5 * 10**16, 10 * 10**16, 15 * 10**16)  # three buyers, different amounts
MINT_FEE = 2 * 10**15
ROYALTY_BPS = 500
NFT_PRICE = 5 * 10**16
OWNER, BUYERS, USER, HONEST, DISHONEST, CHALLENGER, COLLECTOR = 0, (1, 2, 3), 4, 5, 6, 7, 8
PROMPT = (7, 42)  # the generator's prompt: draw a 7 with noise seed 42
CALLBACK_GAS = 600_000  # the consumer dapp stores the 10 logits (~14 storage slots)


def _eth(wei: int) -> str:
    return f"{wei / ETH:.6g} ETH"


def _calibration(onnx_path: Path, input_shape: list[int]) -> np.ndarray:
    """The model's held-out inputs (calibration.json), one per row, shaped like the model input."""
    data = json.loads((onnx_path.parent / "calibration.json").read_text())["input_data"][0]
    return np.asarray(data, dtype=np.float32).reshape(-1, *input_shape)


def _prompt_input(label: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(NOISE_DIM).astype(np.float32)
    return np.concatenate([np.eye(10, dtype=np.float32)[label], noise])[None]


class Story:
    """State shared by the steps: the chain, the deployment, receipts for gas, wall-clock timings."""

    def __init__(self, w3, workdir: Path, quiet: bool, say):
        self.w3, self.workdir, self.quiet, self.say = w3, workdir, quiet, say
        self.acct = w3.eth.accounts
        self.gas: dict[str, list[int]] = {}
        self.timings: dict[str, float] = {}

    def tx(self, step: str, fn, sender: int, value: int = 0):
        receipt = transact(fn, self.acct[sender], value=value)
        self.gas.setdefault(step, []).append(int(receipt.gasUsed))
        return receipt

    def send(self, step: str, sender: int, to: str, value: int):
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_transaction({"from": self.acct[sender], "to": to, "value": value}))
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
              honest_requests: int = 3, say=print) -> dict:
    """Tell the whole story; returns the summary (see `imo demo --summary`). Raises AssertionError if any money
    check fails."""
    workdir = Path(workdir)
    nodes_dir = workdir / "nodes"
    shutil.rmtree(nodes_dir, ignore_errors=True)  # node work of a previous run (another chain)
    started = time.perf_counter()
    with chain(rpc_url) as node:
        s = Story(node.w3, workdir, quiet, say)
        w3, acct = s.w3, s.acct
        tracked = list(acct)
        eth_before = sum(s.balance(a) for a in tracked)
        start_block = w3.eth.block_number
        summary: dict = {"model": model, "rpc_url": node.rpc_url}

        # ------------------------------------------------------------ 1. IMO
        t = time.perf_counter()
        say(f"[1/5] IMO: deploying RevShareToken (ERC-7641), its sale, AIOracle on {node.rpc_url} …")
        sale_cfg = SaleConfig()
        dep = deploy_protocol(w3, acct[OWNER], TokenConfig(name=f"{model} revenue share", symbol="IMO"), sale_cfg, OracleConfig())
        s.gas.update({f"deploy {k}": [v] for k, v in dep.gas.items()})
        token, offering, oracle = dep.contract(w3, "RevShareToken"), dep.contract(w3, "ModelOffering"), dep.contract(w3, "AIOracle")
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
        policy = PLANS.get(model, {"private_input": True, "budget_logrows": 14, "merge": False})
        say(f"[2/5] planning `{model}` as an opp/ai hybrid ({policy}) and compiling every segment (cached after the first run) …")
        plan_file, reports = s.plan(model, policy, "2_compile")
        plan = Plan.load(plan_file)
        modes = [seg.mode for seg in plan.segments]
        assert modes[0] == "zk" and "op" in modes and plan.segments[-1].mode == "op", modes
        for seg, r in zip(plan.segments, reports):
            say(f"      seg{seg.index} {seg.mode}  {'+'.join(seg.ops):<10} logrows {r.get('logrows', seg.est_logrows)}  "
                f"{'cached' if r['cached'] else 'built in {:.0f} s'.format(r['wall_seconds'])}  ({seg.reason})")
        t = time.perf_counter()
        model_id = register_plan(w3, acct[OWNER], dep, plan_file, model, FEE, OPERATOR_BPS, WINDOW)
        s.gas["register model (verifiers + registerModel)"] = [v for k, v in dep.gas.items() if k.startswith(f"Halo2Verifier {model}/")]
        say(f"      registered as model {model_id}: fee {_eth(FEE)}, operator share {OPERATOR_BPS / 100:.0f} %, challenge window {WINDOW} s, "
            f"{len(plan.segments)} verifiers deployed")
        summary["plan"] = {"plan_hash": plan.plan_hash, "model_id": model_id,
                           "segments": [{"index": seg.index, "mode": seg.mode, "ops": seg.ops, "logrows": r.get("logrows"), "reason": seg.reason,
                                         "compile_cached": r["cached"], "compile_seconds": r["wall_seconds"]} for seg, r in zip(plan.segments, reports)]}
        s.timings["2_register"] = round(time.perf_counter() - t, 3)

        # ------------------------------------------------------------ 3. requests, fraud, challenge
        inbox = Inbox({})
        xs = _calibration(cached_export(model).onnx_path, plan.segments[0].input_shape)[: honest_requests + 1]
        common = {"deployment": dep, "plan_file": plan_file, "poll_interval": 0.2}
        honest = OracleNode(node.rpc_url, account=acct[HONEST], inbox=inbox, state=NodeState(), work_dir=nodes_dir / "honest", **common)
        liar = OracleNode(node.rpc_url, account=acct[DISHONEST], inbox=inbox, state=NodeState(), work_dir=nodes_dir / "dishonest",
                          dishonest="output", seed=3, **common)
        watcher = ChallengerNode(node.rpc_url, account=acct[CHALLENGER], state=NodeState(), work_dir=nodes_dir / "challenger", **common)

        def request(x) -> tuple[int, float]:
            c0 = inbox.put(plan, x)
            receipt = s.tx("requestCallback", oracle.functions.requestCallback(model_id, c0.to_bytes(32, "big"), dep.consumer, CALLBACK_GAS, b""),
                           USER, value=oracle.functions.estimateFee(model_id, CALLBACK_GAS).call())
            rid = oracle.events.AICallbackRequest().process_receipt(receipt, errors=DISCARD)[0]["args"]["requestId"]
            return rid, time.time()

        say(f"[3/5] {honest_requests} paid requests on held-out digits, answered by an honest oracle node (zk proof of the private layer, "
            f"op layers published) …")
        t = time.perf_counter()
        requested: dict[int, float] = {}
        rids = []
        bar = tqdm(xs[:honest_requests], desc="requests", unit="req", disable=quiet, leave=False)
        for n, x in enumerate(bar):
            rid, requested[rid] = request(x)
            rids.append(rid)
            if n == 0:  # the first act of the old demo, folded in: a tampered zk proof never gets on chain
                t_first = time.perf_counter()
                claim = honest.execute(x, rid)
                first_prove = time.perf_counter() - t_first
                bad = bytearray(claim["proofs"][0])
                bad[len(bad) // 2] ^= 1
                try:
                    transact(oracle.functions.submit(rid, claim["commitments"], claim["output"], [bytes(bad)], claim["boundary_data"]),
                             acct[HONEST], value=oracle.functions.minBond().call())
                    tampered_rejected = False
                except ChainError as exc:
                    tampered_rejected = "AIOracleInvalidProof" in str(exc)
                assert tampered_rejected
            honest.step()
        bar.close()
        s.timings["3_honest_answers"] = round(time.perf_counter() - t, 3)
        for rid in rids:
            r = honest.state.request(rid)
            assert r.status == "submitted", (rid, r.status)
            seconds = first_prove if rid == rids[0] else r.detail["prove_seconds"]
            say(f"      request {rid}: submitted, says digit {int(np.argmax(oracle.functions.getClaim(rid).call()[3]))} "
                f"(answered in {seconds:.1f} s, submit {r.detail['gas']:,} gas, {r.detail['boundary_bytes']} B boundary data)")
        say("      a submission whose zk proof has one byte flipped: rejected on chain (AIOracleInvalidProof)")

        say("      one more request, answered by a dishonest node that changes one output logit …")
        t = time.perf_counter()
        fraud_rid, requested[fraud_rid] = request(xs[honest_requests])
        liar.step()
        assert liar.state.request(fraud_rid).status == "submitted"
        watcher.step()
        caught = watcher.state.request(fraud_rid)
        assert caught.status == "challenged", caught
        s.timings["3_fraud_caught"] = round(time.perf_counter() - t, 3)
        slash = oracle.events.AIResultChallenged().get_logs(from_block=start_block)
        say(f"      challenger re-executed the op segments: {caught.detail['reason']}; fraud proof of segment {caught.detail['segment']} "
            f"→ bond {_eth(slash[0]['args']['slashed'])} slashed ({caught.detail['gas']:,} gas), fee refunded, request reopened")
        t = time.perf_counter()
        honest.step()
        liar.step()
        watcher.step()
        assert honest.state.request(fraud_rid).status == "submitted"
        assert liar.state.request(fraud_rid).status in ("challenged", "answered_by_other")
        reanswered_at = time.time()
        say(f"      request {fraud_rid} re-answered honestly; the challenger checked all {len(rids) + 1} submissions: "
            f"{sum(watcher.state.request(r).status == 'ok' for r in rids + [fraud_rid])} ok")
        s.timings["3_reanswer"] = round(time.perf_counter() - t, 3)

        # ------------------------------------------------------------ 4. finalize, snapshot, claim
        say(f"[4/5] {WINDOW} s challenge windows pass; the challenger finalizes; fees go to the token; snapshot; holders claim …")
        token_before = s.balance(dep.token)
        s.advance(WINDOW)
        window_passed = time.time()
        t = time.perf_counter()
        watcher.step()
        s.timings["4_finalize"] = round(time.perf_counter() - t, 3)
        all_rids = rids + [fraud_rid]
        assert all(oracle.functions.isFinalized(r).call() for r in all_rids)
        finalized = oracle.events.AIRequestFinalized().get_logs(from_block=start_block)
        released = sum(e["args"]["modelRevenue"] for e in finalized)
        assert s.balance(dep.token) - token_before == released == token.functions.pendingRevenue().call()
        consumer = dep.contract(w3, "OracleConsumer")
        delivered = sum(bool(consumer.functions.outputOf(r).call()) for r in all_rids)
        say(f"      {len(finalized)} results finalized, {delivered} delivered to the consumer dapp; {_eth(released)} released to the token "
            f"({100 - OPERATOR_BPS / 100:.0f} % of each fee; the slashed request's fee was refunded)")
        s.advance(TokenConfig().snapshot_interval_s)
        receipt = s.tx("snapshot", token.functions.snapshot(), OWNER)
        snap1 = token.events.Snapshot().process_receipt(receipt, errors=DISCARD)[0]["args"]
        assert snap1["claimable"] == released * TokenConfig().claim_share_bps // 10_000
        claims = s.claim_all(token, snap1["snapshotId"], list(BUYERS))
        say(f"      snapshot {snap1['snapshotId']}: {_eth(snap1['claimable'])} claimable ({TokenConfig().claim_share_bps / 100:.0f} % of "
            f"{_eth(released)}); " + ", ".join(f"buyer {n + 1} claimed {_eth(c['claimed_wei'])} = {c['share']:.0%}" for n, c in enumerate(claims)))

        # latency: request → submitted, plus window end → finalized (the window itself excluded)
        latencies = []
        for rid in rids:
            submitted_at = dict(honest.state.history(rid))["submitted"]
            finalized_at = dict(watcher.state.history(rid))["finalized"]
            latencies.append(round(submitted_at - requested[rid] + finalized_at - window_passed, 3))
        fraud_latency = round(reanswered_at - requested[fraud_rid] + dict(watcher.state.history(fraud_rid))["finalized"] - window_passed, 3)
        say(f"      end-to-end latency request → finalized result (window excluded): {np.mean(latencies):.1f} s mean for honest answers, "
            f"{fraud_latency:.1f} s for the request that went through a fraud proof")

        # ------------------------------------------------------------ 5. gen model, AIGC NFT, royalties
        label, seed = PROMPT
        say(f"[5/5] the `gen` model draws a {label} (noise seed {seed}) through the oracle; the image becomes an AIGC NFT …")
        gen_plan_file, gen_reports = s.plan("gen", GEN_PLAN, "5_gen_compile")
        gen_plan = Plan.load(gen_plan_file)
        gen_id = register_plan(w3, acct[OWNER], dep, gen_plan_file, "gen", FEE, OPERATOR_BPS, WINDOW)
        nft = w3.eth.contract(address=deploy_nft(w3, acct[OWNER], dep, gen_id, MINT_FEE, ROYALTY_BPS), abi=dep.contract(w3, "AIGCNFT").abi)
        gen_common = {"deployment": dep, "plan_file": gen_plan_file, "poll_interval": 0.2}
        gen_inbox = Inbox({})
        artist = OracleNode(node.rpc_url, account=acct[HONEST], inbox=gen_inbox, state=NodeState(), work_dir=nodes_dir / "gen-oracle", **gen_common)
        gen_watch = ChallengerNode(node.rpc_url, account=acct[CHALLENGER], state=NodeState(), work_dir=nodes_dir / "gen-challenger", **gen_common)
        t = time.perf_counter()
        c0 = gen_inbox.put(gen_plan, _prompt_input(label, seed))
        receipt = s.tx("requestCallback", oracle.functions.requestCallback(gen_id, c0.to_bytes(32, "big"), "0x" + "00" * 20, 0, b""), USER, value=FEE)
        gen_rid = oracle.events.AICallbackRequest().process_receipt(receipt, errors=DISCARD)[0]["args"]["requestId"]
        artist.step()
        gen_watch.step()
        assert gen_watch.state.request(gen_rid).status == "ok"
        s.advance(WINDOW)
        gen_watch.step()
        assert oracle.functions.isFinalized(gen_rid).call()
        s.timings["5_gen_request"] = round(time.perf_counter() - t, 3)
        prompt, aigc, proof = c0.to_bytes(32, "big"), oracle.functions.getOutput(gen_rid).call(), gen_rid.to_bytes(32, "big")
        token_before = s.balance(dep.token)
        receipt = s.tx("nft mint", nft.functions.mint(prompt, aigc, proof), USER, value=MINT_FEE)
        token_id = nft.events.Transfer().process_receipt(receipt, errors=DISCARD)[0]["args"]["tokenId"]
        assert nft.functions.ownerOf(token_id).call() == acct[USER] and s.balance(dep.token) - token_before == MINT_FEE
        pixels = [int.from_bytes(aigc[96 + 32 * i:128 + 32 * i], "big", signed=True) for i in range(64)]
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

        gen_revenue = sum(e["args"]["modelRevenue"] for e in oracle.events.AIRequestFinalized().get_logs(from_block=start_block)
                          if e["args"]["requestId"] == gen_rid)
        s.advance(TokenConfig().snapshot_interval_s)
        receipt = s.tx("snapshot", token.functions.snapshot(), OWNER)
        snap2 = token.events.Snapshot().process_receipt(receipt, errors=DISCARD)[0]["args"]
        assert snap2["claimable"] == (gen_revenue + MINT_FEE + royalty) * TokenConfig().claim_share_bps // 10_000
        claims2 = s.claim_all(token, snap2["snapshotId"], list(BUYERS))
        say(f"      snapshot {snap2['snapshotId']} (gen fee + mint fee + royalty): " + ", ".join(
            f"buyer {n + 1} claimed {_eth(c['claimed_wei'])}" for n, c in enumerate(claims2)))

        # ------------------------------------------------------------ money check
        contracts = [dep.token, dep.oracle, dep.offering, dep.consumer, dep.nft, *dep.verifiers.values()]
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
            req, _ = oracle.functions.getRequest(rid).call()
            requests.append({"id": rid, "model": "gen" if rid == gen_rid else model, "status": "finalized" if oracle.functions.isFinalized(rid).call() else req[6],
                             "fraud_caught": rid == fraud_rid, "output": list(oracle.functions.getClaim(rid).call()[3]) if rid != gen_rid else None,
                             "latency_s": dict(zip(rids, latencies)).get(rid, fraud_latency if rid == fraud_rid else None)})
        refunded = oracle.functions.credits(acct[USER]).call()
        summary.update({
            "requests": requests,
            "fraud_caught": len(slash),
            "fraud": {"request": fraud_rid, "segment": caught.detail["segment"], "reason": caught.detail["reason"],
                      "bond_slashed_wei": slash[0]["args"]["slashed"], "challenger": acct[CHALLENGER]},
            "tampered_zk_proof_rejected": tampered_rejected,
            "fees": {
                "paid_wei": FEE * (len(all_rids) + 1),
                "refunded_to_requester_wei": refunded,
                "released_to_token_wei": released + gen_revenue,
                "operator_credits_wei": {"honest": oracle.functions.credits(acct[HONEST]).call(), "dishonest": oracle.functions.credits(acct[DISHONEST]).call(),
                                         "challenger": oracle.functions.credits(acct[CHALLENGER]).call()},
            },
            "snapshots": [
                {"id": snap1["snapshotId"], "revenue_wei": released, "claimable_wei": snap1["claimable"], "claims": claims},
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
                       for st, step in ((honest.state, "submit"), (watcher.state, "challenge"), (watcher.state, "finalize")) if st.txs(step)}},
            "latency_s": {"request_to_finalized_excluding_window_mean": round(float(np.mean(latencies)), 3), "per_request": latencies,
                          "with_fraud_proof": fraud_latency},
        })
    s.timings["total"] = round(time.perf_counter() - started, 3)
    summary["timings"] = s.timings
    say(f"done in {s.timings['total']:.0f} s: fraud caught {summary['fraud_caught']}, {_eth(summary['fees']['released_to_token_wei'] + MINT_FEE + royalty)} "
        f"reached the token, holders claimed exactly their share, 1 NFT minted with royalty paid; ETH conserved: {conserved}")
    return summary
