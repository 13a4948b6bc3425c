"""sipctl changes against a running sipd (real daemon, real sipctl, real sockets): what an operator
adds or removes takes effect at once, and sipctl says what sipd did with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.sipd_proc import SipdProcess

DOMAIN = "example.test"
REPORT_RULE = ["--pr", "5", "--match-op", "1",
               "--match-exp", "sip:979[0-9]+(@example.test){0,1}",
               "--subst-exp", "sip:979([0-9]+)(@example.test){0,1}",
               "--repl-exp", "sip:979\\1@vc.dfn.de"]


@pytest.fixture
def live(tmp_path: Path):
    proc = SipdProcess(tmp_path, {"antiflood": {"enabled": False}}, domains=[DOMAIN],
                       users=[(f"alice@{DOMAIN}", "alicepw")])
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


def test_mi_dp_translate_of_the_report_rule(live: SipdProcess) -> None:
    """The report's rule, written with the numeric operator its table uses, translates in the daemon."""
    live.sipctl("dp", "add", "0", *REPORT_RULE)
    live.sipctl("reload")
    out = json.loads(live.sipctl("mi", "dp_translate", "0", "sip:97924988@example.test").stdout)
    assert out["Output"] == "sip:97924988@vc.dfn.de"
    res = live.sipctl("mi", "dp_translate", "7", "sip:97924988@example.test", check=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr + res.stdout
    assert "No information available for dpid" in res.stderr + res.stdout
