"""Management commands, one module per area. Every module here is imported by
``registry.load_commands()``; each declares its commands with ``@command``."""

from __future__ import annotations

import inspect
from typing import Any

from ..registry import MgmtError


async def maybe_await(value: Any) -> Any:
    """Caches may expose reload() as a plain or an async function."""
    if inspect.isawaitable(value):
        return await value
    return value


def need(state: Any, attr: str, what: str) -> Any:
    """``state.<attr>`` or a 500 "command not activated" (OpenSIPS wording) when absent."""
    obj = getattr(state, attr, None)
    if obj is None:
        raise MgmtError(500, f"command not activated ({what} not enabled in this sipd)")
    return obj
