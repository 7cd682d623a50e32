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
        except Exception as exc:
            raise ProofError(f"ezkl {step} failed: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__}") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if result is False:
        raise ProofError(f"ezkl {step} failed")
    return result


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Some ezkl calls (create_evm_verifier) need a running event loop and return an awaitable."""
    result = fn(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result
