"""The event loop sipd runs on: uvloop when it is installed (the faster loop), else asyncio's own.

The one place that makes this choice, for the daemon's processes and for the tools that measure
them on the same loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

try:
    import uvloop  # type: ignore[import-not-found]
except ImportError:  # optional: asyncio's own loop serves, a little slower
    uvloop = None

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop and return its result."""
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)
