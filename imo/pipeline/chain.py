"""A local chain to deploy to: anvil from the npm package on a free 127.0.0.1 port, or any JSON-RPC node given by URL."""

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from imo import toolchain
from imo.errors import ChainError
from imo.pipeline.keys import PRIVATE_KEY_ENV, dev_account

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Chain:
    """A connection. `signer` signs what the command itself sends: anvil's first dev key on an embedded anvil, the
    user's key (`$IMO_PRIVATE_KEY` or a keystore) on any other node."""

    w3: Web3
    rpc_url: str
    signer: LocalAccount | None = None

    def require_signer(self) -> LocalAccount:
        if self.signer is None:
            raise ChainError(f"nothing signs on {self.rpc_url}: set $IMO_PRIVATE_KEY (or leave out --rpc-url to use an embedded anvil)")
        return self.signer


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
        [str(toolchain.anvil()), "--host", "127.0.0.1", "--port", str(port), "--silent"],  # mainnet limits (EIP-170 code size)
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    try:
        local = _await_rpc(proc, f"http://127.0.0.1:{port}", startup_timeout, lambda: proc.stderr.read().decode().strip()[-300:])
        yield Chain(local.w3, local.rpc_url, dev_account(0))  # funded by anvil; signs here like every other key
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def chain(rpc_url: str | None = None) -> Iterator[Chain]:
    """The node at rpc_url if given (signing with the user's key, if one is set), else an embedded anvil for the
    duration of the block."""
    if rpc_url:
        remote = connect(rpc_url)
        key = os.environ.get(PRIVATE_KEY_ENV)
        try:
            signer = Account.from_key(key.strip()) if key else None
        except (ValueError, TypeError):
            raise ChainError(f"${PRIVATE_KEY_ENV} is not a 32-byte hex private key") from None
        yield Chain(remote.w3, remote.rpc_url, signer)
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
