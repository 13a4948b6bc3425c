"""Fixtures for sipctl commands that talk to a running sipd: a real mgmt server (tests/mgmt)."""

from __future__ import annotations

import json as _json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mgmt.harness import Harness, run_cli, write_config


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return _json.loads(self.out)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    h.config_path = write_config(h)  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def sipctl(daemon: Harness, capsys: Any):
    def run(*args: str) -> Result:
        return Result(*run_cli(daemon.config_path, *args, capsys=capsys))  # type: ignore[attr-defined]
    return run
