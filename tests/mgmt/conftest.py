from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Harness


@pytest.fixture
def mgmt(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()
