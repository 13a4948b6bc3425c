"""Polling with a bound, for conditions a test waits on (never a bare sleep as synchronisation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> tuple[T, float]:
    """The first true value of ``predicate()`` (or its last value when ``timeout`` seconds pass
    first) and the seconds it took."""
    start = time.monotonic()
    while True:
        value = predicate()
        elapsed = time.monotonic() - start
        if value or elapsed > timeout:
            return value, elapsed
        time.sleep(interval)
