"""Shared fixtures: free ports, external-tool and MySQL requirements, a fake clock.

Tests that need MySQL or a third-party program skip with a visible reason on a developer's machine
that lacks them. In CI (``SIPD_REQUIRE_ALL=1``, set by .ci/run) such a skip is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

REQUIRE_ALL = os.environ.get("SIPD_REQUIRE_ALL") == "1"
MYSQL_URL = os.environ.get("SIPD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")
# Which protocol core this run tests: "pure" (the default build) or "compiled" (set by
# tests/ops/test_compiled_core.py for its run in a copy of the tree built with scripts/build-core).
EXPECT_CORE = os.environ.get("SIPD_EXPECT_CORE", "pure")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test another core than the one asked for: extension modules left in the tree by
    scripts/build-core would otherwise be what every test of the pure build runs."""
    from sipd import corebuild

    compiled = [name for name, c in corebuild.loaded_compiled().items() if c]
    if EXPECT_CORE == "compiled" and len(compiled) < len(corebuild.MODULES):
        pytest.exit(f"SIPD_EXPECT_CORE=compiled but only {len(compiled)} of {len(corebuild.MODULES)} core "
                    "modules are compiled (run scripts/build-core)", returncode=4)
    if EXPECT_CORE != "compiled" and compiled:
        pytest.exit(f"compiled core modules in the tree ({', '.join(compiled)}): run scripts/build-core --clean "
                    "to test the pure build, or set SIPD_EXPECT_CORE=compiled to test these", returncode=4)


def missing(reason: str) -> None:
    """Skip (developer machine) or fail (CI) because something the test needs is absent."""
    if REQUIRE_ALL:
        pytest.fail(f"required in CI but missing: {reason}")
    pytest.skip(reason)


def require_tool(*names: str) -> str:
    """Return the path of the first program found, or skip/fail."""
    for name in names:
        path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
        if path:
            return path
    missing(f"program {' or '.join(names)} not installed (see .ci/run)")
    raise AssertionError("unreachable")


def mysql_available() -> bool:
    from urllib.parse import urlparse

    u = urlparse(MYSQL_URL)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 3306), timeout=1):
            return True
    except OSError:
        return False


def free_port(proto: str = "udp", host: str = "127.0.0.1", *, below: int | None = None) -> int:
    """A port free for both UDP and TCP on host (SIP listens on both). ``below`` for sipsak (< 10000).

    Chosen below the kernel's ephemeral range (ip_local_port_range starts at 32768): a port from
    that range, free when it is chosen, can be taken by any outgoing connection on the machine
    before the server under test binds it; one below it is only ever taken by a deliberate bind."""
    import random

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        port = random.randint(7000, below - 1) if below else random.randint(10000, 19999)
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as u, socket.socket(family, socket.SOCK_STREAM) as t:
                u.bind((host, port))
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind((host, port))
                if proto == "tls":
                    with socket.socket(family, socket.SOCK_STREAM) as t2:
                        t2.bind((host, port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port found")


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# Property tests draw the same examples on every run: CI must give the same answer each time, and a
# new counterexample is found by running with HYPOTHESIS_PROFILE=explore (random draws).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
