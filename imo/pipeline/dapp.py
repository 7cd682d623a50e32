"""The dapp's and the holder's side: request an inference and wait for it (`imo request`), read requests
(`imo status`), and claim revenue as a token holder (`imo claim`)."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from eth_abi import decode

from imo.circuits.fixed_point import dequantize, poseidon_commitment, quantize
from imo.errors import ChainError, ImoError, InputShapeError, MissingArtifactError
from imo.fsutil import private_dir, write_private
from imo.pipeline.chain import connect
from imo.pipeline.oracle_node import Inbox
from imo.proving.protocol import decode_text_payload, felt, pack_tensor
from imo.verifier_contracts.contracts import Deployment, address_of, transact
from imo.verifier_contracts.oracle_client import OracleClient, Status


@dataclass(frozen=True)
class Session:
    """A chain connection, the deployment and who signs."""

    oracle: OracleClient
    deployment: Deployment

    @classmethod
    def open(cls, deployment_file: Path, rpc_url: str | None, signer=None) -> "Session":
        deployment = Deployment.read(deployment_file)
        url = rpc_url or deployment.rpc_url
        if not url:
            raise ChainError(f"{deployment_file} records no RPC URL; pass --rpc-url")
        return cls(OracleClient(connect(url).w3, deployment.oracle, signer), deployment)


def _read_input(path: Path) -> np.ndarray:
    try:
        data = json.loads(Path(path).read_text())
        return np.asarray(data["input_data"][0], dtype=np.float32)
    except FileNotFoundError:
        raise MissingArtifactError(f"input {path} not found") from None
    except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError):
        raise InputShapeError(f"{path} is not an ezkl input file ({{\"input_data\": [[...]]}})") from None


def prompt_ids(text: str, size: int) -> np.ndarray:
    """A generation model's request input: the UTF-8 prompt as the model reads a window (cropped to its last `size`
    bytes, left-padded with spaces)."""
    from imo.models.gpt import window
    from imo.pipeline.generate import encode_prompt

    return window(encode_prompt(text), size).ravel().astype(np.int64)


def request(session: Session, model_id: int, input_file: Path | None, inbox: Path | None = None, callback: str | None = None,
            gas_limit: int = 0, wait: bool = False, timeout: float = 3600, poll: float = 2.0, prompt: str | None = None) -> dict:
    """Pay `estimateFee` for an inference of `model_id` on the input in `input_file` (or, for a generation model,
    the text `prompt`). A private-input model gets the input's commitment on chain and the input itself in the oracle's
    `inbox`; a public-input model gets the packed input. With `wait`, poll until the result is final and return it."""
    oracle = session.oracle
    model = oracle.model(model_id)
    if not model.registration.segments:
        raise ImoError(f"model {model_id} is not registered on {oracle.address}")
    sizes, scale, tokens = model.boundary_sizes, model.spec.scale, model.spec.gen_tokens
    if (prompt is None) != (tokens == 0) or (prompt is not None and input_file is not None):
        raise InputShapeError(f"model {model_id} is a generation model of {tokens} tokens: pass --prompt TEXT, not an input file" if tokens
                              else f"model {model_id} takes an input file, not --prompt (it is not a generation model)")
    payload = pack_tensor(prompt_ids(prompt, sizes[0] - tokens + 1)) if tokens else _request_payload(model_id, sizes[0], scale, input_file, inbox)
    fee = oracle.estimate_fee(model_id, gas_limit)
    request_id, receipt = oracle.request_callback(model_id, payload, callback, gas_limit)
    out = {"request_id": request_id, "model_id": model_id, "fee_wei": fee, "gas": receipt.gasUsed, "input": "0x" + payload.hex()[:64]}
    if not wait:
        return out
    deadline = time.monotonic() + timeout
    while True:
        r = oracle.request(request_id)
        if r.status in (Status.FINALIZED, Status.CANCELLED):
            break
        if time.monotonic() > deadline:
            raise ChainError(f"request {request_id} is still {r.status.name.lower()} after {timeout:.0f} s; check it later with `imo status {request_id}`")
        time.sleep(poll)
    return {**out, **status(session, request_id)}


def _request_payload(model_id: int, size: int, scale: int, input_file: Path, inbox: Path | None) -> bytes:
    """The request input of an input file: the packed tensor (public input), or the commitment C_0 with the input
    itself written to the oracle's inbox (private input)."""
    x = _read_input(input_file)
    q = quantize(x, scale)
    if size:
        if q.size != size:
            raise InputShapeError(f"model {model_id} takes {size} input values, {input_file} has {q.size}")
        return pack_tensor(q)
    if inbox is None:
        raise ImoError(f"model {model_id} has a private input: pass --inbox DIR, the oracle's inbox, where the input goes off-chain")
    payload = felt(poseidon_commitment(q)).to_bytes(32, "big")
    path = Inbox(inbox).path(payload)
    private_dir(path.parent)
    write_private(path, json.dumps({"input_data": [x.ravel().tolist()]}))
    return payload


def _result(oracle: OracleClient, request_id: int, model_id: int) -> dict | None:
    events = oracle.contract.events.AICallbackResult().get_logs(from_block=0, argument_filters={"requestId": request_id})
    if not events:
        return None
    payload = events[-1]["args"]["output"]
    if oracle.model(model_id).spec.gen_tokens:
        text = decode_text_payload(payload)
        return {"text": text.decode("utf-8", errors="replace"), "bytes_hex": text.hex(), "tokens": list(text)}
    values, scale = decode(["int256[]", "uint256"], payload)
    return {"values": list(values), "scale": scale, "output": dequantize(np.array(values), scale).tolist()}


def status(session: Session, request_id: int) -> dict:
    oracle = session.oracle
    r = oracle.request(request_id)
    if r.status == Status.NONE:
        raise ImoError(f"there is no request {request_id} on {oracle.address}")
    c = oracle.claim(request_id)
    out = {"request_id": request_id, "model_id": r.model_id, "status": r.status.name.lower(), "requester": r.requester, "fee_wei": r.fee,
           "deadline": r.deadline, "submitter": c.submitter if c.exists else None, "open_disputes": c.open_disputes if c.exists else 0}
    if c.exists and c.open_disputes:
        out["disputes"] = _disputes(session, r.model_id, request_id)
    if r.status == Status.FINALIZED:
        out["result"] = _result(oracle, request_id, r.model_id)
    return out


def _disputes(session: Session, model_id: int, request_id: int) -> list[dict]:
    """The open disputes of a claim: fraud-proof disputes with their response deadline, and bisection games with
    where they stand (round, whose move, clocks left)."""
    from imo.verifier_contracts.game_client import GameClient

    oracle, out = session.oracle, []
    for k in range(1, len(oracle.model(model_id).registration.segments) + 1):
        d = oracle.dispute(request_id, k)
        if d.open:
            out.append({"segment": k, "challenger": d.challenger, "response_deadline": d.deadline})
    address = oracle.dispute_game()
    if address:
        games = GameClient(oracle.w3, address)
        for opened in games.games_opened(request_id=request_id):
            g = games.game(opened.game_id)
            if g.over:
                continue
            defender_left, challenger_left = games.clocks(g.game_id)
            out.append({"segment": g.segment, "challenger": g.challenger, "game": {
                "id": g.game_id, "status": g.status.name.lower(), "round": g.level, "rounds": g.depth, "to_move": g.turn.value,
                "defender_clock_s": defender_left, "challenger_clock_s": challenger_left}})
    return out


def all_statuses(session: Session) -> list[dict]:
    return [status(session, rid) for rid in range(1, session.oracle.fn.requestCount().call() + 1)]


def claim(session: Session, withdraw: bool = False) -> dict:
    """Claim the caller's revenue at every snapshot that still has some for it; with `withdraw`, also pull whatever
    the oracle credits the caller (operator payouts, bonds, refunds)."""
    oracle = session.oracle
    token = session.deployment.contract(oracle.w3, "RevShareToken")
    me = address_of(oracle.sender)
    claimed = []
    for snapshot_id in range(1, token.functions.currentSnapshotId().call() + 1):
        amount = token.functions.claimableRevenue(me, snapshot_id).call()
        if amount:
            receipt = transact(token.functions.claim(snapshot_id), oracle.sender)
            claimed.append({"snapshot": snapshot_id, "wei": amount, "gas": receipt.gasUsed})
    out = {"account": me, "claimed": claimed, "claimed_wei": sum(c["wei"] for c in claimed)}
    if withdraw:
        credit = oracle.credits(me)
        if credit:
            oracle.withdraw()
        out["withdrawn_wei"] = credit
    return out
