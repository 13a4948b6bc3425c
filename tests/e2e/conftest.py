"""Fixtures for end-to-end tests: a live SIP server on loopback plus real third-party clients.

The server is the real ``sipd`` (tests/helpers/sipd_proc.py). ``SIPD_E2E_TARGET=kamailio`` runs the
same tests against Kamailio instead (tests/e2e/kamailio_ref.py), to check the harness itself; tests
that pass sipd configuration overrides are skipped then.
Every server started here is stopped by PID at teardown, and its log must hold no traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from conftest import missing, require_tool
from helpers.sipd_proc import SipdProcess

SCENARIOS = Path(__file__).parent / "scenarios"
DOMAIN = "example.test"
USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "dave": "davepw"}
TARGET = os.environ.get("SIPD_E2E_TARGET", "sipd")
LOG_TAIL = 6000  # characters of a server's log shown with a failed test


def user_rows(domain: str = DOMAIN) -> list[tuple[str, str]]:
    return [(f"{u}@{domain}", pw) for u, pw in USERS.items()]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test shows the end of each server's log beside its assertion: a failure seen once,
    in a CI run, is then explained by what the server did, not only by what the client saw."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for proc in getattr(item, "servers_started", ()):
        try:
            tail = proc.log_text()[-LOG_TAIL:]
        except Exception as exc:  # noqa: BLE001 - the report must not fail for want of a log
            tail = f"(log unreadable: {exc})"
        report.sections.append((f"server log, last {LOG_TAIL} characters ({proc.address})", tail))


@pytest.fixture
def server_factory(tmp_path: Path, request) -> Callable[..., SipdProcess]:
    """make(config_overrides=None, db_url=None, *, domains=[DOMAIN], users=USERS@DOMAIN, start=True)."""
    started: list = []
    request.node.servers_started = started

    def make(config_overrides: dict | None = None, db_url: str | None = None, *, start: bool = True,
             domains: list[str] | None = None, users: list[tuple[str, str]] | None = None, **kw):
        domains = [DOMAIN] if domains is None else domains
        users = user_rows(domains[0]) if users is None else users
        if TARGET == "kamailio":
            if config_overrides:
                pytest.skip("sipd-specific configuration; not run against the Kamailio reference")
            from .kamailio_ref import KamailioProcess, kamailio_binary

            if not kamailio_binary():
                missing("kamailio not installed")
            proc = KamailioProcess(tmp_path, domains=domains, users=users, **kw)
        else:
            proc = SipdProcess(tmp_path, config_overrides, db_url, domains=domains, users=users, **kw)
        started.append(proc)
        if start:
            proc.start()
        return proc

    yield make
    errors = []
    for proc in started:
        try:
            proc.close(check_log=True)
        except AssertionError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("\n\n".join(errors))


@pytest.fixture
def server(server_factory):
    """A running server for example.test with the standard users."""
    return server_factory()


@pytest.fixture
def sipp_bin() -> str:
    return require_tool("sipp")


@pytest.fixture
def baresip_bin() -> str:
    return require_tool("baresip")


@pytest.fixture
def baresip_factory(tmp_path: Path, baresip_bin):
    """make(user, password=None, *, transport="udp", server=None, **kw) -> started BaresipUA."""
    from helpers.baresip import BaresipUA

    uas: list[BaresipUA] = []

    def make(user: str, password: str | None = None, *, server=None, transport: str = "udp", **kw):
        proxy = kw.pop("proxy", None) or (server.address if server is not None else None)
        ua = BaresipUA(tmp_path, user, password if password is not None else USERS[user],
                       transport=transport, proxy=proxy, **kw)
        uas.append(ua)
        return ua.start()

    yield make
    for ua in uas:
        ua.stop()
