"""A live sipd says which protocol core it runs (pure Python, or compiled by scripts/build-core) and
serves with it. The suite runs this file on the pure build; tests/ops/test_compiled_core.py runs it
again in a copy of the tree built with Cython, where the same checks must find the compiled core."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import EXPECT_CORE
from sipd import corebuild
from tests.daemon.harness import UA, live_daemon, message_reaches, serving

EXPECTED = "pure Python" if EXPECT_CORE == "pure" else \
    f"compiled with Cython ({len(corebuild.MODULES)} of {len(corebuild.MODULES)} core modules)"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("core")
    # two worker processes: they import the core again and answer the REGISTERs of their AORs
    yield from serving(live_daemon(tmp, {"server": {"workers": 2}}), {"alice": "secret", "bob": "hunter2"})


def test_sipd_version_names_the_core():
    out = subprocess.run([sys.executable, "-m", "sipd", "--version"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert out.strip().endswith(f"protocol core: {EXPECTED}"), out


def test_running_daemon_reports_its_core(daemon):
    version = json.loads(daemon.sipctl("version", "--json").stdout)
    assert version["Core"] == EXPECTED
    logged = f"protocol core: {EXPECTED}" in daemon.log_text()
    assert logged == (EXPECT_CORE == "compiled")  # the pure default logs nothing about it


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register_with_digest_and_a_message_through_the_proxy(daemon, transport):
    with UA(daemon.port, "alice", transport=transport, password="secret") as alice, \
            UA(daemon.port, "bob", password="hunter2") as bob:
        assert alice.register(300).status == 200
        assert bob.register(300).status == 200
        assert message_reaches(alice, bob)
