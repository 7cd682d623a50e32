"""Shared fixtures: real parts (anvil, an exported and proven zoo model) started once per session and cleaned up; and
the guard that no test sends from an account the node unlocked: every transaction is signed locally by an eth_account
LocalAccount (tests/helpers.py `funded_accounts`) and goes out as eth_sendRawTransaction."""

import functools
import threading
from pathlib import Path

import pytest
from web3.providers.rpc import HTTPProvider

from imo.pipeline.chain import anvil

# JSON-RPC methods that only work for accounts the node holds the keys of (or impersonates)
UNLOCKED_ACCOUNT_METHODS = ("eth_sendTransaction", "eth_sign", "personal_", "anvil_impersonateAccount",
                            "anvil_autoImpersonateAccount", "hardhat_impersonateAccount")

class UnlockedAccountGuard:
    """Armed, any HTTP JSON-RPC request for one of UNLOCKED_ACCOUNT_METHODS from this process fails the test at once
    (pytest.fail: a BaseException, so no `except Exception` on the way can turn it into an expected error) and is
    recorded, so one raised in a thread or swallowed still fails the test at teardown. It never reaches the node."""

    def __init__(self):
        self.armed = True  # from the start: set per test by pytest_runtest_setup
        self.violations: list[str] = []
        self._lock = threading.Lock()

    def check(self, method: str) -> None:
        if self.armed and method.startswith(UNLOCKED_ACCOUNT_METHODS):
            with self._lock:
                self.violations.append(method)
            pytest.fail(f"{method}: tests must sign with a LocalAccount (eth_sendRawTransaction), not use an account the node "
                        f"unlocked; see tests/helpers.py funded_accounts")


GUARD = UnlockedAccountGuard()


def pytest_configure(config):
    """Wrap every HTTPProvider's make_request before any provider exists (web3 caches the bound method per provider)."""
    real = HTTPProvider.make_request

    @functools.wraps(real)
    def make_request(self, method, params):
        GUARD.check(method)
        return real(self, method, params)

    HTTPProvider.make_request = make_request


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Arm the guard for the test, before any of its fixtures (module-scoped ones too) are set up."""
    GUARD.armed = True
    GUARD.violations = []


@pytest.fixture(autouse=True)
def no_unlocked_accounts():
    """The guard; a violation during the test or its fixtures' setup, even one raised in a thread or caught, fails it."""
    yield GUARD
    violations, GUARD.violations = GUARD.violations, []
    if violations:
        pytest.fail(f"sent {', '.join(violations)} from an unlocked account (tests must sign locally)", pytrace=False)


@pytest.fixture(scope="session")
def chain():
    """A real anvil on a free 127.0.0.1 port, stopped after the session."""
    with anvil() as local:
        yield local


@pytest.fixture(scope="session")
def exported_mlp(tmp_path_factory) -> Path:
    from imo.models import export_model

    return export_model("mlp", tmp_path_factory.mktemp("zoo") / "mlp").onnx_path.parent


@pytest.fixture(scope="session")
def proved_mlp(exported_mlp, tmp_path_factory) -> Path:
    """The mlp proven monolithically with the CLI's code path; returns the proof directory."""
    from imo.pipeline.slice import prove_model

    out = tmp_path_factory.mktemp("proofs") / "mlp"
    prove_model(exported_mlp / "model.onnx", exported_mlp / "input.json", out, calibration_path=exported_mlp / "calibration.json", quiet=True)
    return out
