"""A local chain to deploy to: anvil from the npm package on a free 127.0.0.1 port, or any JSON-RPC node given by URL."""

import ctypes
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from web3 import Web3

from imo import toolchain
from imo.errors import ChainError

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Chain:
    w3: Web3
    rpc_url: str

    @property
    def accounts(self) -> list[str]:
        return self.w3.eth.accounts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(rpc_url: str, timeout: float = 5.0) -> Chain:
    """Connect to a running node, or fail with one line naming the URL.

    The provider skips per-call overhead (measured 2.5x faster transactions on anvil): no proxy lookup per
    request, eth_chainId cached, and no validation/ENS middleware, which query the chain id before every call."""
    session = requests.Session()
    session.trust_env = False
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}, session=session, cache_allowed_requests=True))
    for name in ("validation", "ens_name_to_address"):
        w3.middleware_onion.remove(name)
    try:
        w3.eth.chain_id
    except Exception:
        raise ChainError(f"no JSON-RPC node answers at {rpc_url}; start one or leave out --rpc-url to use an embedded anvil") from None
    return Chain(w3, rpc_url)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the Python parent dies (even by kill -9), so no anvil is ever orphaned."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def anvil(startup_timeout: float = 20.0) -> Iterator[Chain]:
    """Start anvil on a free 127.0.0.1 port, wait until it answers, and stop it on exit (also on Ctrl-C or an exception)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(toolchain.anvil()), "--host", "127.0.0.1", "--port", str(port), "--silent", "--code-size-limit", "100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    try:
        yield _await_rpc(proc, f"http://127.0.0.1:{port}", startup_timeout, lambda: proc.stderr.read().decode().strip()[-300:])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def chain(rpc_url: str | None = None) -> Iterator[Chain]:
    """The node at rpc_url if given, else an embedded anvil for the duration of the block."""
    if rpc_url:
        yield connect(rpc_url)
    else:
        with anvil() as local:
            yield local


def start_background_anvil(state_file: Path, startup_timeout: float = 20.0) -> tuple[str, int]:
    """Start anvil detached on a free 127.0.0.1 port, keeping its state in `state_file` (loaded when it exists,
    dumped on exit), so that later commands can use the chain; returns (rpc_url, pid). Stop it with `kill PID`."""
    port = free_port()
    state_file = Path(state_file)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    log = open(state_file.with_suffix(".log"), "ab")
    proc = subprocess.Popen(
        [str(toolchain.anvil()), "--host", "127.0.0.1", "--port", str(port), "--silent", "--state", str(state_file)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        return _await_rpc(proc, f"http://127.0.0.1:{port}", startup_timeout, lambda: f"see {state_file.with_suffix('.log')}").rpc_url, proc.pid
    except ChainError:
        proc.terminate()
        raise


def _await_rpc(proc: subprocess.Popen, url: str, timeout: float, why) -> Chain:
    """Wait until the anvil in `proc` answers at `url`; `why()` explains an early exit."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ChainError(f"anvil exited at start-up: {why()}")
        try:
            return connect(url, timeout=1.0)
        except ChainError:
            if time.monotonic() > deadline:
                raise ChainError(f"anvil did not answer on {url} within {timeout:.0f} s") from None
            time.sleep(0.1)
