"""Calling ezkl (a Rust extension) from Python: its native stderr chatter is captured, its failures become ImoErrors."""

import asyncio
import inspect
import os
import tempfile
from collections.abc import Callable
from typing import Any

from imo.errors import ProofError


def call_ezkl(step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one ezkl call with fd 2 captured (calibration prints large tables there); raise ProofError naming the step."""
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            result = asyncio.run(_call(fn, *args, **kwargs))
        except BaseException as exc:
            # a Rust panic arrives as pyo3's PanicException, a BaseException: catch it, but no other BaseException
            if not isinstance(exc, Exception) and not _is_panic(exc):
                raise
            raise ProofError(f"ezkl {step} failed: {'ezkl panicked: ' if _is_panic(exc) else ''}{_last_line(exc)}") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if result is False:
        raise ProofError(f"ezkl {step} failed")
    return result


def _is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Some ezkl calls (create_evm_verifier) need a running event loop and return an awaitable."""
    result = fn(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result
