"""`imo dashboard`: the real demo story (`run_story`, model mlp) is told once on an embedded anvil, and the dashboard
serves it from inside the story's end hook while the chain is still up. The JSON API is checked against the story's
own summary and the chain, the page is rendered in headless Chromium (Debian's `chromium`) and its DOM checked
after the script ran; screenshots go to pytest's tmp dir and, when $IMO_SCREENSHOTS is set, are copied there."""

import base64
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from web3 import Web3

from imo.pipeline.cli import main
from imo.pipeline.dashboard import Dashboard, fold_events, request_record
from imo.pipeline.story import run_story
from imo.verifier_contracts.contracts import Deployment

STORY_TIMEOUT_S = 900


# ------------------------------------------------------------------ the world: the demo, left up at its end


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The demo's chain with the dashboard serving it: {url, dashboard, deployment_file, summary}."""
    root = tmp_path_factory.mktemp("dashboard")
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    outcome: dict = {}

    def hook(deployment, summary):
        dashboard = Dashboard.of(deployment, deployment.rpc_url, cache_s=0.5)
        with dashboard.serve() as server:
            ready.put({"url": server.url, "dashboard": dashboard, "summary": summary,
                       "deployment_file": deployment.write(root / "deployment.json")})
            stop.wait()

    def tell():
        try:
            outcome["summary"] = run_story(root / "work", quiet=True, model="mlp", say=lambda line: None, dashboard=hook)
        except BaseException as exc:  # shown by the fixture, not lost in the thread
            outcome["error"] = exc
            ready.put(None)

    thread = threading.Thread(target=tell, name="story", daemon=True)
    thread.start()
    try:
        got = ready.get(timeout=STORY_TIMEOUT_S)
    except queue.Empty:
        stop.set()
        pytest.fail(f"the demo story did not reach its end within {STORY_TIMEOUT_S} s")
    if got is None:
        raise outcome["error"]
    yield got
    stop.set()
    thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def _api(world) -> dict:
    status, content_type, body = _get(world["url"] + "api/summary")
    assert status == 200 and content_type == "application/json", (status, body[:200])
    return json.loads(body)


# ------------------------------------------------------------------ Chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing and we may (root), else the browser tests skip."""
    found = shutil.which("chromium")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "fonts-dejavu-core", "fonts-liberation"]):
            if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode:
                break
        found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium is not installed and could not be installed (`apt-get install chromium` as root; `make test` does it)")
    return found


def _browse(chromium: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _screenshot(chromium: str, tmp_path: Path, url: str, name: str, height: int) -> Path:
    path = tmp_path / name
    _browse(chromium, tmp_path / "profile", url, f"--screenshot={path}", f"--window-size=1400,{height}")
    assert path.is_file(), f"chromium wrote no screenshot {path}"
    if target := os.environ.get("IMO_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


class _Dom(HTMLParser):
    """Every element's tag and attributes, in document order."""

    def __init__(self, html: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def find(self, tag: str | None = None, **attrs) -> list[dict]:
        """Elements with these attribute values (class_ is class, data_x is data-x)."""
        want = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [a for t, a in self.elements if (tag is None or t == tag) and all(a.get(k) == v for k, v in want.items())]


@pytest.fixture(scope="module")
def rendered(world, chromium, tmp_path_factory) -> tuple[str, _Dom]:
    """The page's DOM after its script fetched /api/summary and drew everything."""
    done = _browse(chromium, tmp_path_factory.mktemp("chromium-profile"), world["url"], "--dump-dom")
    return done.stdout, _Dom(done.stdout)


# ------------------------------------------------------------------ the API against the story and the chain


def test_api_summary_has_every_request_dispute_snapshot_claim_and_nft_of_the_story(world):
    doc, story = _api(world), world["summary"]
    assert [(r["id"], r["model"], r["status"]) for r in doc["requests"]] == [(r["id"], r["model"], r["status"]) for r in story["requests"]]
    for r, s in zip(doc["requests"], story["requests"]):
        assert r["latency"]["submit"]["blocks"] > 0 and r["latency"]["finalized"]["seconds"] >= r["latency"]["submit"]["seconds"]
        assert (r["disputes"] > 0) == s["disputed"]
        if s["output"] is not None:  # the classifier's logits as finalized
            assert r["output"]["values"] == s["output"]
    gen = next(r for r in doc["requests"] if r["model"] == "gen")
    assert gen["output"]["kind"] == "image" and gen["output"]["values"] == story["nft"]["pixels"]

    mlp = next(m for m in doc["models"] if m["name"] == "mlp")
    assert [s["mode"] for s in mlp["segments"]] == [s["mode"] for s in story["plan"]["segments"]] == ["zk", "op"]
    assert mlp["boundary_sizes"] == story["plan"]["boundary_sizes"]
    honest = doc["requests"][0]
    assert [s["mode"] for s in honest["segments"]] == ["zk", "op"] and honest["segments"][0]["proof_bytes"] > 0

    challenger = world["summary"]["accounts"]["challenger"]  # the story's watcher: a fresh key, not a node account
    by_request = {d["request"]: d for d in doc["disputes"]}
    for fraud in story["fraud"]:
        d = by_request[fraud["request"]]
        assert d["outcome"] == "slashed" and d["winner"] == "challenger" and d["challenger"] == challenger
        assert d["segment"] == fraud["segment"] and d["reward_wei"] == fraud["to_challenger_wei"] and d["to_token_wei"] == fraud["to_token_wei"]
        assert d["submitter"] != challenger
    assert by_request[story["fraud"][0]["request"]]["kind"].startswith("invalid zk proof")
    assert by_request[story["fraud"][1]["request"]]["kind"].startswith("fraud proof")
    assert by_request[story["fraud"][2]["request"]]["kind"].startswith("bisection game")
    assert by_request[story["fraud"][2]["request"]]["response_deadline"] is None  # a game has clocks, not a window

    snaps = doc["revenue"]["snapshots"]
    assert [(s["id"], s["revenue_wei"], s["claimable_wei"]) for s in snaps] == [(s["id"], s["revenue_wei"], s["claimable_wei"]) for s in story["snapshots"]]
    assert all(sum(s["sources"].values()) == s["revenue_wei"] for s in snaps)  # every payment to the token lands in its snapshot
    assert snaps[1]["sources"]["NFT mint fees"] == story["nft"]["mint_fee_wei"]
    claimed = {h["holder"]: h["claimed_wei"] for h in doc["revenue"]["holders"] if h["claimed_wei"]}
    assert claimed == story["claimed_per_holder_wei"]

    (token,) = doc["nft"]["tokens"]
    assert token["token_id"] == story["nft"]["token_id"] and token["owner"] == story["nft"]["owner"] and token["request"] == story["nft"]["request"]
    assert token["image"].startswith("data:image/svg+xml;base64,")


def test_api_is_read_only_and_cached_briefly(world):
    dashboard = world["dashboard"]
    first = dashboard.summary()
    assert dashboard.summary() is first  # within cache_s
    dashboard._cached = (0.0, first)  # expired: read again
    again = dashboard.summary()
    assert again is not first and again["requests"] == first["requests"] and again["chain"]["block"] == first["chain"]["block"]


def test_server_serves_the_page_its_assets_and_chart_js_and_nothing_else(world):
    url = world["url"]
    status, content_type, body = _get(url)
    assert status == 200 and content_type.startswith("text/html") and b'id="revenue-chart"' in body
    for path, kind in (("static/app.js", "text/javascript"), ("static/style.css", "text/css"), ("vendor/chart.js", "text/javascript")):
        status, content_type, body = _get(url + path)
        assert status == 200 and content_type.startswith(kind) and body, path
    assert b"Chart.js" in _get(url + "vendor/chart.js")[2][:200]
    for path in ("static/..%2f..%2fdashboard.py", "static/.hidden", "static/nope.js", "etc/passwd", "api/nothing"):
        status, content_type, body = _get(url + path)
        assert status == 404 and content_type == "application/json" and "error" in json.loads(body), path
    request = urllib.request.Request(url + "api/summary", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 501


def test_dispute_outcomes_answered_void_and_open_without_a_chain():
    """Outcomes the demo does not reach: an answered dispute (the submitter wins), a dispute voided when another
    segment's dispute slashes the claim, and one still open past its response deadline."""
    alice, bob, carol, dave = ("0x" + c * 40 for c in "abcd")
    at = lambda block: {"block": block, "time": 100 * block, "tx": f"0x{block:064x}"}  # noqa: E731
    requests = {rid: request_record(rid, 1, "mlp", status="submitted") for rid in (1, 2, 3)}
    events = [
        ("AICallbackRequest", {"requestId": 1}, at(1)), ("AICallbackRequest", {"requestId": 2}, at(1)), ("AICallbackRequest", {"requestId": 3}, at(1)),
        ("AIResultSubmitted", {"requestId": 1, "submitter": alice}, at(2)),
        ("AIResultChallenged", {"requestId": 1, "segment": 2, "challenger": bob, "deadline": 500}, at(3)),
        ("AIDisputeAnswered", {"requestId": 1, "segment": 2, "challenger": bob}, at(4)),
        ("AIRequestFinalized", {"requestId": 1, "modelRevenue": 8, "operatorPayout": 2, "finalizerPayout": 1}, at(9)),
        ("AIResultSubmitted", {"requestId": 2, "submitter": carol}, at(2)),
        ("AIResultChallenged", {"requestId": 2, "segment": 2, "challenger": bob, "deadline": 500}, at(3)),
        ("AIResultChallenged", {"requestId": 2, "segment": 3, "challenger": dave, "deadline": 500}, at(3)),
        ("AIResultSlashed", {"requestId": 2, "segment": 3, "challenger": dave, "reward": 5, "toToken": 5}, at(6)),
        ("AIResultSubmitted", {"requestId": 2, "submitter": alice}, at(7)),
        ("AIResultSubmitted", {"requestId": 3, "submitter": carol}, at(2)),
        ("AIResultChallenged", {"requestId": 3, "segment": 2, "challenger": bob, "deadline": 300}, at(3)),
    ]
    disputes = fold_events(requests, sorted(events, key=lambda e: e[2]["block"]), lambda req, a, where: {"submitter": a["submitter"], **where,
                                                                                                      "output": None, "segments": []}, now=1000)
    answered, voided, slashed, unanswered = disputes
    assert (answered["request"], answered["outcome"], answered["winner"], answered["submitter"]) == (1, "answered", "submitter", alice)
    assert (slashed["segment"], slashed["outcome"], slashed["winner"], slashed["challenger"], slashed["submitter"]) == (3, "slashed", "challenger", dave, carol)
    assert slashed["reward_wei"] == slashed["to_token_wei"] == 5 and slashed["kind"].startswith("fraud proof")
    assert (voided["segment"], voided["winner"]) == (2, None) and voided["outcome"].startswith("void")
    assert (unanswered["request"], unanswered["outcome"]) == (3, "open (unanswered, resolvable)")
    assert requests[1]["submitter"] == alice and requests[1]["latency"]["finalized"] == {"blocks": 8, "seconds": 800}
    assert requests[2]["submitter"] == alice and [s["outcome"] for s in requests[2]["submissions"]] == ["slashed", "standing"]
    assert requests[2]["latency"]["first_submit"]["blocks"] == 1 and requests[2]["latency"]["submit"]["blocks"] == 6
    assert [r["disputes"] for r in requests.values()] == [1, 2, 1]


# ------------------------------------------------------------------ the CLI


def test_cli_once_json_prints_the_summary(world, capsys):
    assert main(["dashboard", "--deployment", str(world["deployment_file"]), "--once-json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["requests"]) == len(world["summary"]["requests"]) and doc["totals"]["slashed"] == len(world["summary"]["fraud"]) == 3


def test_cli_errors_are_one_line_and_exit_1(world, tmp_path, capsys):
    bad = tmp_path / "deployment.json"
    bad.write_text("{not json")
    wrong_chain = Deployment.read(world["deployment_file"])
    wrong_chain.oracle = wrong_chain.token = Web3.to_checksum_address("0x" + "42" * 20)
    cases = [
        (["--deployment", str(tmp_path / "missing.json"), "--once-json"], "not found"),
        (["--deployment", str(bad), "--once-json"], "deployment"),
        (["--deployment", str(world["deployment_file"]), "--rpc-url", "http://127.0.0.1:9"], "no JSON-RPC node answers at http://127.0.0.1:9"),
        (["--deployment", str(wrong_chain.write(tmp_path / "elsewhere.json"))], "no AIOracle at 0x4242"),
        (["--deployment", str(world["deployment_file"]), "--once-json", "--port", "8080"], "--port"),
    ]
    for argv, message in cases:
        assert main(["dashboard", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("imo: error: ") and err.count("\n") == 1 and message in err, (argv, err)


def test_cli_serves_until_ctrl_c(world):
    """`imo dashboard --json` prints its URL as JSON, serves the page and the API, and stops cleanly on SIGINT."""
    proc = subprocess.Popen([sys.executable, "-m", "imo.pipeline.cli", "dashboard", "--deployment", str(world["deployment_file"]), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal, whoever started pytest
    try:
        started = json.loads(proc.stdout.readline())
        assert started["url"].startswith("http://127.0.0.1:") and started["rpc_url"] == Deployment.read(world["deployment_file"]).rpc_url
        status, _, body = _get(started["url"] + "api/summary")
        assert status == 200 and len(json.loads(body)["requests"]) == len(world["summary"]["requests"])
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "dashboard stopped" in err, err


def test_demo_refuses_port_without_dashboard(capsys):
    assert main(["demo", "--port", "8080"]) == 1
    assert "--port" in capsys.readouterr().err


# ------------------------------------------------------------------ the page in headless Chromium


def test_page_shows_requests_with_their_statuses(world, rendered):
    html, dom = rendered
    assert dom.find("body", data_ready="1"), "the page's script did not finish a render: " + html[-500:]
    rows = dom.find("tr", data_status="finalized")
    assert sorted(int(r["data-request"]) for r in rows if "data-request" in r and "data-outcome" not in r) == [r["id"] for r in world["summary"]["requests"]]
    assert html.count('class="badge finalized"') >= len(world["summary"]["requests"])
    assert dom.find(class_="chip zk") and dom.find(class_="chip op")  # each answer's segments and their proofs
    assert dom.find("div", class_="seg zk", data_mode="zk") and dom.find("div", class_="seg op", data_mode="op")  # the model pipeline


def test_page_shows_slashed_disputes_and_the_challenger(world, rendered):
    html, dom = rendered
    challenger = world["summary"]["accounts"]["challenger"]  # the story's watcher: a fresh key, not a node account
    slashed = dom.find("tr", data_outcome="slashed")
    assert {int(r["data-request"]) for r in slashed} == {f["request"] for f in world["summary"]["fraud"]}
    assert all(r["data-challenger"] == challenger for r in slashed)
    assert f'title="{challenger}"' in html and "challenger ✓" in html


def test_page_draws_the_charts(rendered):
    _, dom = rendered
    for chart in ("revenue-chart", "claims-chart", "latency-chart"):
        (canvas,) = dom.find("canvas", id=chart)
        assert "box-sizing" in canvas.get("style", ""), f"Chart.js did not draw #{chart}"  # Chart.js sizes the canvases it draws
        assert int(canvas["height"]) > 100


def test_page_shows_the_nft_image_as_rendered_on_chain(world, rendered):
    _, dom = rendered
    (img,) = dom.find("img", class_="nft-image")
    assert img["src"].startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(img["src"].split(",", 1)[1]).decode()
    greys = [int(g) for g in re.findall(r"fill='rgb\((\d+),\1,\1\)'", svg)]
    scale = next(m["scale"] for m in _api(world)["models"] if m["name"] == "gen")
    one = 1 << scale
    assert greys == [0 if v <= 0 else 255 if v >= one else v * 255 // one for v in world["summary"]["nft"]["pixels"]]


def test_screenshots(world, chromium, tmp_path):
    from PIL import Image

    for name, height in (("dashboard.png", 1000), ("dashboard-full.png", 1900)):
        path = _screenshot(chromium, tmp_path, world["url"], name, height)
        with Image.open(path) as image:
            assert image.size == (1400, height)
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 200, f"{name} looks blank"


def test_page_says_when_the_chain_is_unreachable(world, chromium, tmp_path):
    deployment = Deployment.read(world["deployment_file"])
    dead = Web3(Web3.HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 2}))
    with Dashboard(deployment, "http://127.0.0.1:9", w3=dead).serve() as server:
        status, _, body = _get(server.url + "api/summary")
        assert status == 503 and "http://127.0.0.1:9" in json.loads(body)["error"]
        html = _browse(chromium, tmp_path / "profile", server.url, "--dump-dom").stdout
        _screenshot(chromium, tmp_path, server.url, "dashboard-unreachable.png", 600)
    dom = _Dom(html)
    assert dom.find("body", data_error="1") and "Cannot read the chain" in html
    (error,) = dom.find("div", id="error")
    assert "hidden" not in error
