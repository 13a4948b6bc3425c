"""The sl: statistics of a live sipd, with OpenSIPS's names and meaning: sent_err_replies counts the
negative replies sipd generates itself, received_ACKs the ACKs of its stateless negative answers that
it absorbs; sipctl monitor shows them (and the uptime with its "[sec]")."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.daemon.harness import DOMAIN, UA, live_daemon, serving
from tests.helpers.sipd_proc import SipdProcess


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    yield from serving(live_daemon(tmp_path_factory.mktemp("sl")), {"alice": "pw-alice"})


def _sl(d: SipdProcess) -> dict[str, int]:
    return d.mi("get_statistics", [["sl:"]])


def test_challenge_and_its_ack_are_counted(daemon):
    before = _sl(daemon)
    with UA(daemon.port, "alice") as caller:
        uri = f"sip:nobody@{DOMAIN}"
        caller.send(caller.request("INVITE", uri, to=f"<{uri}>", cseq=1))
        resp = caller.expect(407)
        for _ in range(2):  # a retransmitted ACK is absorbed too
            caller.send(caller.request("ACK", uri, to=resp.get("To"), cseq=1, via=resp.get("Via")))
        caller.nothing(0.5)  # the ACK is absorbed, not answered or relayed
        uri_ok = f"sip:{DOMAIN}"
        caller.send(caller.request("OPTIONS", uri_ok, to=f"<{uri_ok}>", cseq=2))
        caller.expect(200)
    after = _sl(daemon)
    grew = {k: after[k] - before.get(k, 0) for k in after}
    assert grew["sl:sent_err_replies"] == 1 and grew["sl:4xx_replies"] == 1
    assert grew["sl:received_ACKs"] == 2
    assert grew["sl:sent_replies"] == 2 and grew["sl:2xx_replies"] == 1  # the 200 is not an error


def test_monitor_shows_them(daemon):
    p = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(daemon.config_path), "monitor", "--once"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in p.stdout.splitlines() if "\t" in line}
    assert int(rows["sl:sent_err_replies"][0]) >= 1
    assert int(rows["sl:received_ACKs"][0]) >= 2
    uptime = next(line for line in p.stdout.splitlines() if line.startswith("Up time::"))
    assert uptime.endswith(" [sec]")
