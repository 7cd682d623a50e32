"""`imo dashboard`: a read-only web view of one deployment — requests with their status and latency, each model's
segments (zk or op) and the proofs posted for them, disputes and who won them, the RevShareToken's revenue per
snapshot and claims per holder, and the AIGC NFTs' images.

Everything comes from the chain (events and views) on each `/api/summary`, cached for a moment; the server keeps
no state of its own and sends no transactions. It is a standard-library `ThreadingHTTPServer` on 127.0.0.1 serving
one static page (`dashboard_static/`), Chart.js from the npm toolchain and the JSON API:

    GET /                   the page
    GET /static/<file>      its script and style sheet
    GET /vendor/chart.js    Chart.js (node_modules/chart.js, installed by `npm ci`)
    GET /api/summary        everything the page shows, as JSON (also `imo dashboard --once-json`)
"""

import base64
import json
import threading
import time
from collections import defaultdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from web3 import Web3

from imo import toolchain
from imo.errors import ChainError, ImoError, ToolchainError
from imo.pipeline.chain import connect
from imo.proving.protocol import unpack_tensor
from imo.verifier_contracts.contracts import Deployment
from imo.verifier_contracts.oracle_client import OracleClient

STATIC_DIR = Path(__file__).parent / "dashboard_static"
MAX_HOLDERS = 12  # the largest, by revenue claimed and claimable
GAME_DEADLINE = (1 << 40) - 1  # what AIResultChallenged says for a bisection game
ORACLE_EVENTS = ("AICallbackRequest", "AIResultSubmitted", "AIResultChallenged", "AIDisputeAnswered", "AIResultSlashed",
                 "AIRequestFinalized", "AICallbackResult", "AIRequestDeclined", "AIRequestCancelled")
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                  ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def _data_uri_json(uri: str) -> dict:
    """The JSON of an ERC-721 `tokenURI` data URI (base64 or plain)."""
    head, _, body = uri.partition(",")
    if not head.startswith("data:application/json"):
        raise ValueError("tokenURI is not a JSON data URI")
    return json.loads(base64.b64decode(body) if head.endswith(";base64") else body)


def request_record(request_id: int, model_id: int, model: str, **fields) -> dict:
    """A request as the API shows it, before `fold_events` adds what happened to it."""
    return {"id": request_id, "model_id": model_id, "model": model, "requested": None, "submissions": [], "finalized": None,
            "declined": [], "cancelled": None, "disputes": 0, "slashes": 0, "output": None, "delivered": False, **fields}


def fold_events(requests: dict[int, dict], events: list[tuple[str, dict, dict]], submission, now: int) -> list[dict]:
    """Walk the oracle's events (name, args, where: block/time/tx) in chain order into `requests` (by id: the answers
    each got, finality, declines, cancellation) and return the disputes with their outcomes: `slashed` (the challenger
    won), `answered` (the submitter answered with a valid proof and won), `void` (the claim was slashed on another
    segment; the bond went back) or `open`. `submission(request, args, where)` describes one AIResultSubmitted."""
    disputes: list[dict] = []
    open_: dict[tuple[int, int, str], dict] = {}  # (request, segment, challenger) → its open op dispute or game
    for name, a, where in events:
        req = requests.get(int(a["requestId"]))
        if req is None:
            continue
        rid = req["id"]
        current = req["submissions"][-1] if req["submissions"] else None
        if name == "AICallbackRequest":
            req["requested"] = where
        elif name == "AIResultSubmitted":
            req["submissions"].append({**submission(req, a, where), "outcome": "standing"})
        elif name == "AIResultChallenged":
            game = int(a["deadline"]) == GAME_DEADLINE  # a bisection game: its clocks rule, there is no response window
            d = {"request": rid, "model": req["model"], "segment": int(a["segment"]),
                 "kind": "bisection game (op segment)" if game else "fraud proof (op segment)",
                 "challenger": a["challenger"], "submitter": current and current["submitter"], "opened": where,
                 "response_deadline": None if game else int(a["deadline"]), "closed": None, "outcome": "open", "winner": None}
            disputes.append(d)
            open_[(rid, d["segment"], d["challenger"])] = d
            req["disputes"] += 1
        elif name == "AIDisputeAnswered":
            d = open_.pop((rid, int(a["segment"]), a["challenger"]), None)
            if d is not None:
                d.update(closed=where, outcome="answered", winner="submitter")
        elif name == "AIResultSlashed":
            segment = int(a["segment"])
            d = open_.pop((rid, segment, a["challenger"]), None)
            if d is None:  # disputeProof: a posted zk proof that does not verify slashes at once, with no dispute first
                d = {"request": rid, "model": req["model"], "segment": segment, "kind": "invalid zk proof (disputeProof)",
                     "challenger": a["challenger"], "submitter": current and current["submitter"], "opened": where,
                     "response_deadline": None}
                disputes.append(d)
                req["disputes"] += 1
            d.update(closed=where, outcome="slashed", winner="challenger", reward_wei=int(a["reward"]), to_token_wei=int(a["toToken"]))
            for key in [k for k in open_ if k[0] == rid]:  # the claim is gone: other open disputes get their bonds back
                open_.pop(key).update(closed=where, outcome="void (claim slashed on another segment)", winner=None)
            req["slashes"] += 1
            if current:
                current["outcome"] = "slashed"
        elif name == "AIRequestFinalized":
            req["finalized"] = {**where, "model_revenue_wei": int(a["modelRevenue"]), "operator_payout_wei": int(a["operatorPayout"]),
                                "finalizer_payout_wei": int(a["finalizerPayout"])}
            if current:
                current["outcome"] = "finalized"
        elif name == "AICallbackResult":
            req["delivered"] = True
        elif name == "AIRequestDeclined":
            req["declined"].append({"operator": a["operator"], "reason": a["reason"], **where})
        elif name == "AIRequestCancelled":
            req["cancelled"] = where

    for d in disputes:
        if d["outcome"] == "open" and d["response_deadline"] and now > d["response_deadline"]:
            d["outcome"] = "open (unanswered, resolvable)"
    for req in requests.values():
        standing = next((s for s in reversed(req["submissions"]) if s["outcome"] != "slashed"), None)
        req["submitter"] = standing["submitter"] if standing else None
        req["output"] = standing["output"] if standing else None
        req["segments"] = standing["segments"] if standing else []
        req["latency"] = _latency(req, standing)
    return disputes


def _latency(req: dict, standing: dict | None) -> dict:
    """Chain blocks and seconds from the request to its first answer, to the answer that stood, and to finality."""
    start = req["requested"]
    out = {}
    if start is None:
        return out
    for key, end in (("first_submit", req["submissions"][0] if req["submissions"] else None), ("submit", standing),
                     ("finalized", req["finalized"])):
        if end is not None:
            out[key] = {"blocks": end["block"] - start["block"], "seconds": end["time"] - start["time"]}
    return out


class Collector:
    """Reads one deployment's story from the chain at `w3`: `collect()` returns the `/api/summary` document."""

    def __init__(self, w3: Web3, deployment: Deployment, rpc_url: str | None = None):
        self.w3, self.deployment, self.rpc_url = w3, deployment, rpc_url
        self.oracle = OracleClient(w3, deployment.oracle)
        self.token = deployment.contract(w3, "RevShareToken")
        self.nft = deployment.contract(w3, "AIGCNFT") if deployment.nft else None
        self._times: dict[int, int] = {}  # block number → timestamp, and submit tx → what it posted: both immutable
        self._posted: dict[str, list[dict]] = {}  # (both forgotten if the chain restarts under the same URL)

    # ------------------------------------------------------------------ helpers

    def _time(self, block: int) -> int:
        if block not in self._times:
            self._times[block] = int(self.w3.eth.get_block(block)["timestamp"])
        return self._times[block]

    def _at(self, event) -> dict:
        block = int(event["blockNumber"])
        return {"block": block, "time": self._time(block), "tx": Web3.to_hex(event["transactionHash"])}

    @staticmethod
    def _logs(contract, name: str) -> list:
        return sorted(getattr(contract.events, name)().get_logs(from_block=0), key=lambda e: (e["blockNumber"], e["logIndex"]))

    def check(self) -> None:
        """One line if the deployment is not on this chain (no code at the oracle or the token)."""
        chain_id = self.w3.eth.chain_id
        for name, address in (("AIOracle", self.deployment.oracle), ("RevShareToken", self.deployment.token)):
            if not self.w3.eth.get_code(address):
                where = f" ({self.rpc_url})" if self.rpc_url else ""
                raise ChainError(f"no {name} at {address} on chain {chain_id}{where}: the deployment is for chain "
                                 f"{self.deployment.chain_id}; pass the --rpc-url it was deployed on")

    # ------------------------------------------------------------------ the document

    def collect(self) -> dict:
        latest = self.w3.eth.get_block("latest")
        if self._times and max(self._times) > latest["number"]:  # a new chain behind the same URL
            self._times.clear()
            self._posted.clear()
        models = self._models()
        reqs, disputes = self._requests(models)
        revenue = self._revenue()
        nfts = self._nfts()
        by_status = defaultdict(int)
        for r in reqs:
            by_status[r["status"]] += 1
        d = self.deployment
        return {
            "generated_at": time.time(),
            "chain": {"chain_id": int(self.w3.eth.chain_id), "block": int(latest["number"]), "time": int(latest["timestamp"]),
                      "rpc_url": self.rpc_url},
            "contracts": {"oracle": d.oracle, "token": d.token, "nft": d.nft, "consumer": d.consumer, "offering": d.offering,
                          "deployer": d.deployer},
            "totals": {
                "requests": len(reqs), "by_status": dict(by_status), "disputes": len(disputes),
                "slashed": sum(x["outcome"] == "slashed" for x in disputes), "answered": sum(x["outcome"] == "answered" for x in disputes),
                "fees_wei": sum(r["fee_wei"] for r in reqs),
                "revenue_wei": sum(s["revenue_wei"] for s in revenue["snapshots"]) + revenue["token"]["pending_wei"],
                "claimed_wei": sum(s["claimed_wei"] for s in revenue["snapshots"]), "nfts": len(nfts["tokens"]) if nfts else 0,
            },
            "models": list(models.values()),
            "requests": reqs,
            "disputes": disputes,
            "revenue": revenue,
            "nft": nfts,
        }

    def _models(self) -> dict[int, dict]:
        names = {int(v): k for k, v in self.deployment.models.items()}
        out = {}
        for model_id in range(1, self.oracle.model_count() + 1):
            spec, segments, sizes, digest = self.oracle.fn.getModel(model_id).call()
            _, plan_hash, _, fee, bond, operator_bps, challenge_window, response_window, scale, *_ = spec
            out[model_id] = {
                "id": model_id, "name": names.get(model_id, f"model {model_id}"), "digest": Web3.to_hex(digest),
                "plan_hash": Web3.to_hex(plan_hash), "fee_wei": fee, "bond_wei": bond, "operator_share_bps": operator_bps,
                "challenge_window_s": challenge_window, "response_window_s": response_window, "scale": scale,
                "gen_tokens": spec[9] if len(spec) > 9 else 0,
                "boundary_sizes": list(sizes), "input": "hashed (private)" if sizes and sizes[0] == 0 else "public",
                "segments": [{"k": k, "mode": "zk" if zk else "op", "verifier": verifier,
                              "input": sizes[k - 1] or "hashed", "output": sizes[k] or "hashed",
                              "proof": ("an ezkl proof posted with every result; anyone may check it with disputeProof" if zk
                                        else "optimistic, game only: no proof; a challenge opens a bisection game" if int(verifier, 16) == 0
                                        else "optimistic: no proof unless disputed, then an ezkl fraud proof (challenge) and an answer")}
                             for k, (verifier, zk, *_) in enumerate(segments, start=1)],
            }
        return out

    def _output(self, model: dict | None, packed: bytes) -> dict | None:
        if model is None or not packed:
            return None
        try:
            values, _ = unpack_tensor(bytes(packed), 0, model["boundary_sizes"][-1])
        except (ValueError, IndexError):
            return {"error": "malformed output"}
        values = [int(v) for v in values]
        if model.get("gen_tokens"):  # a generation model's output is the generated bytes
            text = bytes(v & 0xFF for v in values).decode("utf-8", errors="replace")
            return {"values": values, "kind": "text", "text": text}
        scale = model["scale"]
        kind = "image" if len(values) == 64 else "logits"
        out = {"values": values, "scale": scale, "kind": kind, "real": [round(v / 2**scale, 4) for v in values]}
        if kind == "logits" and values:
            out["argmax"] = max(range(len(values)), key=values.__getitem__)
        return out

    def _proofs(self, tx_hash: str, segments: list[dict]) -> list[dict]:
        """Each segment's mode and, for zk segments, the size of the proof the submit transaction posted for it."""
        if tx_hash not in self._posted:
            try:
                proofs = iter(self.oracle.submitted_claim(tx_hash)[1].proofs)
            except (ChainError, ValueError):  # not a direct submit call (the contract only takes those): modes only
                proofs = None
            self._posted[tx_hash] = [{"k": s["k"], "mode": s["mode"],
                                      **({"proof_bytes": len(next(proofs, b""))} if proofs is not None and s["mode"] == "zk" else {})}
                                     for s in segments]
        return self._posted[tx_hash]

    def _requests(self, models: dict[int, dict]) -> tuple[list[dict], list[dict]]:
        oracle = self.oracle.contract
        events = []
        for name in ORACLE_EVENTS:
            events += [(name, e) for e in self._logs(oracle, name)]
        events.sort(key=lambda ne: (ne[1]["blockNumber"], ne[1]["logIndex"]))

        count = self.oracle.fn.requestCount().call()
        per: dict[int, dict] = {}
        for rid in range(1, count + 1):
            r = self.oracle.request(rid)
            model = models.get(r.model_id)
            per[rid] = request_record(rid, r.model_id, model["name"] if model else f"model {r.model_id}", status=r.status.name.lower(),
                                      requester=r.requester, fee_wei=r.fee, gas_limit=r.gas_limit,
                                      callback=None if int(r.callback, 16) == 0 else r.callback)

        def submission(req: dict, args, where: dict) -> dict:
            model = models.get(req["model_id"])
            return {"submitter": args["submitter"], **where, "output": self._output(model, args["output"]),
                    "segments": self._proofs(where["tx"], model["segments"] if model else [])}

        disputes = fold_events(per, [(name, e["args"], self._at(e)) for name, e in events], submission,
                               now=self.w3.eth.get_block("latest")["timestamp"])
        return list(per.values()), disputes

    def _revenue(self) -> dict:
        token, d = self.token, self.deployment
        snaps = self._logs(token, "Snapshot")
        received = self._logs(token, "RevenueReceived")
        claims = self._logs(token, "RevenueClaimed")
        sources = {d.oracle.lower(): "oracle fees and slashed bonds"}
        if d.nft:
            sources[d.nft.lower()] = "NFT mint fees"
        if d.offering:
            sources[d.offering.lower()] = "sale"

        def source(e) -> str:
            return sources.get(e["args"]["from"].lower(), "royalties and other payments")

        snapshots = []
        for e in snaps:
            a = e["args"]
            sid = int(a["snapshotId"])
            record = token.functions.snapshotRecord(sid).call()
            snapshots.append({"id": sid, **self._at(e), "claimable_wei": int(a["claimable"]), "to_burn_pool_wei": int(a["toBurnPool"]),
                              "revenue_wei": int(a["claimable"]) + int(a["toBurnPool"]), "total_supply": int(a["totalSupply"]),
                              "claimed_wei": int(record[1]), "swept": bool(record[5]), "sources": defaultdict(int)})
        pending_sources: dict[str, int] = defaultdict(int)
        for e in received:  # a payment counts in the first snapshot after it
            key = (e["blockNumber"], e["logIndex"])
            into = next((s for s, se in zip(snapshots, snaps) if (se["blockNumber"], se["logIndex"]) > key), None)
            (into["sources"] if into else pending_sources)[source(e)] += int(e["args"]["amount"])
        for s in snapshots:
            s["sources"] = dict(s["sources"])

        supply = token.functions.totalSupply().call()
        holders: dict[str, dict] = {}

        def holder(address: str) -> dict:
            return holders.setdefault(address, {"holder": address, "claimed_wei": 0, "per_snapshot": {}, "unclaimed_wei": 0})

        for e in self._logs(token, "Transfer"):  # everyone who ever held the token
            if int(e["args"]["to"], 16):
                holder(e["args"]["to"])
        for e in claims:
            a = e["args"]
            h = holder(a["account"])
            h["claimed_wei"] += int(a["amount"])
            h["per_snapshot"][str(int(a["snapshotId"]))] = h["per_snapshot"].get(str(int(a["snapshotId"])), 0) + int(a["amount"])
        for h in holders.values():
            balance = token.functions.balanceOf(h["holder"]).call()
            h["balance"], h["share"] = balance, balance / supply if supply else 0.0
            h["unclaimed_wei"] = sum(token.functions.claimableRevenue(h["holder"], s["id"]).call() for s in snapshots)
        ranked = sorted((h for h in holders.values() if h["balance"] or h["claimed_wei"]), key=lambda h: (-h["claimed_wei"] - h["unclaimed_wei"], -h["balance"]))
        return {
            "token": {"address": token.address, "name": token.functions.name().call(), "symbol": token.functions.symbol().call(),
                      "total_supply": supply, "claim_share_bps": token.functions.claimShareBps().call(),
                      "balance_wei": self.w3.eth.get_balance(token.address), "pending_wei": token.functions.pendingRevenue().call(),
                      "pending_sources": dict(pending_sources)},
            "snapshots": snapshots,
            "holders": ranked[:MAX_HOLDERS],
            "holder_count": len(ranked),
        }

    def _nfts(self) -> dict | None:
        nft = self.nft
        if nft is None:
            return None
        tokens = []
        transfers = self._logs(nft, "Transfer")
        for e in transfers:
            if int(e["args"]["from"], 16) != 0:
                continue
            token_id = int(e["args"]["tokenId"])
            entry = {"token_id": hex(token_id), "minted": self._at(e), "minter": e["args"]["to"],
                     "transfers": sum(int(t["args"]["tokenId"]) == token_id for t in transfers) - 1}
            try:
                entry["owner"] = nft.functions.ownerOf(token_id).call()
                entry["request"] = nft.functions.requestOf(token_id).call()
                meta = _data_uri_json(nft.functions.tokenURI(token_id).call())
                image = str(meta.get("image", ""))
                entry.update(name=meta.get("name"), description=meta.get("description"),
                             image=image if image.startswith("data:image/svg+xml;base64,") else None)
                receiver, royalty = nft.functions.royaltyInfo(token_id, 10_000).call()
                entry["royalty"] = {"receiver": receiver, "bps": royalty}
            except Exception as exc:  # burned, or not what this contract should return: shown, not fatal
                entry["error"] = str(exc).splitlines()[0][:200]
            tokens.append(entry)
        return {"address": nft.address, "name": nft.functions.name().call(), "symbol": nft.functions.symbol().call(),
                "model_id": nft.functions.modelId().call(), "mint_fee_wei": nft.functions.mintFee().call(), "tokens": tokens}


class Dashboard:
    """The `/api/summary` document of one deployment, re-read from the chain when older than `cache_s` seconds."""

    def __init__(self, deployment: Deployment, rpc_url: str, w3: Web3 | None = None, cache_s: float = 2.0):
        self.deployment, self.rpc_url, self.cache_s = deployment, rpc_url, cache_s
        if w3 is None:
            try:
                w3 = connect(rpc_url).w3
            except ChainError:
                raise ChainError(f"no JSON-RPC node answers at {rpc_url}; is the chain still running? (pass --rpc-url URL)") from None
        self.w3 = w3
        self.collector = Collector(self.w3, deployment, rpc_url)
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] | None = None

    @classmethod
    def open(cls, deployment_file: Path, rpc_url: str | None = None, cache_s: float = 2.0) -> "Dashboard":
        """The deployment in `deployment_file` on `rpc_url` (default: the one it records); one line if unreachable."""
        deployment = Deployment.read(Path(deployment_file))
        url = rpc_url or deployment.rpc_url
        if not url:
            raise ChainError(f"{deployment_file} records no RPC URL; pass --rpc-url")
        return cls.of(deployment, url, cache_s=cache_s)

    @classmethod
    def of(cls, deployment: Deployment, rpc_url: str, w3: Web3 | None = None, cache_s: float = 2.0) -> "Dashboard":
        dashboard = cls(deployment, rpc_url, w3, cache_s)
        dashboard.collector.check()
        return dashboard

    def summary(self) -> dict:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.cache_s:
                return self._cached[1]
            try:
                doc = self.collector.collect()
            except ImoError:
                raise
            except requests.ConnectionError:
                raise ChainError(f"no JSON-RPC node answers at {self.rpc_url} any more; is the chain still running?") from None
            except Exception as exc:  # the RPC answered nonsense: one line for the page
                raise ChainError(f"reading {self.rpc_url} failed: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}") from None
            self._cached = (time.monotonic(), doc)
            return doc

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> "DashboardServer":
        return DashboardServer(self, port, host)


def chart_js() -> Path | None:
    """Chart.js's UMD bundle from the npm toolchain, or None when it is not installed."""
    try:
        path = toolchain.node_modules() / "chart.js" / "dist" / "chart.umd.min.js"
    except ToolchainError:
        return None
    return path if path.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    server_version = "imo-dashboard"
    sys_version = ""

    def log_message(self, format, *args):  # quiet: the dashboard is polled every few seconds
        pass

    def _send(self, status: int, body: bytes, content_type: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._file(STATIC_DIR / "index.html")
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if "/" in name or name.startswith(".") or not (STATIC_DIR / name).is_file():
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such file {path}"})
            return self._file(STATIC_DIR / name)
        if path == "/vendor/chart.js":
            bundle = chart_js()
            if bundle is None:
                return self._json(HTTPStatus.NOT_FOUND, {"error": "chart.js is not installed; run `npm ci` (or `make install`)"})
            return self._send(HTTPStatus.OK, bundle.read_bytes(), _CONTENT_TYPES[".js"], cache="max-age=3600")
        if path == "/api/summary":
            try:
                return self._json(HTTPStatus.OK, self.server.dashboard.summary())
            except ImoError as exc:
                return self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": " ".join(str(exc).split())})
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {path}"})

    def _file(self, path: Path) -> None:
        self._send(HTTPStatus.OK, path.read_bytes(), _CONTENT_TYPES.get(path.suffix, "application/octet-stream"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    dashboard: Dashboard


class DashboardServer:
    """The dashboard's HTTP server on `host:port` (port 0: a free one). `start()` serves in a background thread,
    `serve_forever()` in this one; `close()` stops it. Also a context manager (started on enter)."""

    def __init__(self, dashboard: Dashboard, port: int = 0, host: str = "127.0.0.1"):
        try:
            self.httpd = _Server((host, port), _Handler)
        except OSError as exc:
            raise ImoError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port (0: any free port)") from None
        self.httpd.dashboard = dashboard
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "DashboardServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="imo-dashboard", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> "DashboardServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def serve_until_interrupted(server: DashboardServer, say=print) -> None:
    """Serve in this thread until Ctrl-C, having said where."""
    say(f"dashboard at {server.url} (chain {server.httpd.dashboard.rpc_url}); Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say("dashboard stopped")
    finally:
        server.httpd.server_close()


__all__ = ["Collector", "Dashboard", "DashboardServer", "chart_js", "serve_until_interrupted"]
