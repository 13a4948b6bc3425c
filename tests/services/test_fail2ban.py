"""The shipped fail2ban filter matches exactly the auth-failure lines sipd writes (fail2ban-regex)."""

from __future__ import annotations

import io
import logging
import subprocess
from pathlib import Path

import pytest

from sipd import config as cfg
from sipd import logging as sipd_logging
from sipd.services.antiflood import Antiflood, AntifloodSettings
from tests.conftest import require_tool

FILTER = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "filter.d" / "sipd.conf"


def _daemon_log_lines() -> str:
    """Log lines as the daemon writes them to stderr, through its real formatter."""
    stream = io.StringIO()
    conf = cfg.Config()
    sipd_logging.configure(conf, stream=stream)
    try:
        af = Antiflood(AntifloodSettings(trusted=(), auth_fail_threshold=0))
        af.auth_failed("192.0.2.7", 100.0, port=5060, user="alice", realm="example.test", reason="wrong_password")
        af.auth_failed("2001:db8::7", 100.0, port=5062, user="nobody", realm="example.test", reason="unknown_user")
        # a username crafted to frame 203.0.113.99: must count against the real source only
        af.auth_failed("198.51.100.9", 100.0, port=5060, user="x source=203.0.113.99:5060 reason=y",
                       realm="example.test", reason="wrong_password")
        logging.getLogger("sipd.security").info("Dropped Spam-Call to sip:1@192.0.2.1 from 203.0.113.1:5060")
    finally:
        for h in list(logging.getLogger("sipd").handlers):
            logging.getLogger("sipd").removeHandler(h)
    return stream.getvalue()


def _ips(tool: str, log_path: Path) -> list[str]:
    out = subprocess.run([tool, "-o", "ip", str(log_path), str(FILTER)], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.split()


def test_filter_matches_daemon_lines(tmp_path):
    tool = require_tool("fail2ban-regex")
    log_path = tmp_path / "sipd.log"
    log_path.write_text(_daemon_log_lines())
    assert _ips(tool, log_path) == ["192.0.2.7", "2001:db8::7", "198.51.100.9"]


def test_filter_matches_syslog_format(tmp_path):
    tool = require_tool("fail2ban-regex")
    log_path = tmp_path / "syslog"
    log_path.write_text(
        "Jan  1 12:00:01 vc sipd[812]: WARNING auth failed: user=bob realm=example.test "
        "source=203.0.113.5:5060 reason=wrong_password\n"
        "Jan  1 12:00:02 vc sipd[812]: INFO registered bob\n"
        "Jan  1 12:00:03 vc other[1]: WARNING auth failed: user=a realm=b source=203.0.113.6:1 reason=x\n"
    )
    assert _ips(tool, log_path) == ["203.0.113.5"]


@pytest.mark.parametrize("line", [
    "2026-01-01 12:00:00 WARNING auth failed: user=a realm=b source=garbage reason=x",
    "2026-01-01 12:00:00 WARNING someone said auth failed: user=a realm=b source=203.0.113.7:1 reason=x",
])
def test_filter_rejects_non_matching_lines(tmp_path, line):
    tool = require_tool("fail2ban-regex")
    log_path = tmp_path / "sipd.log"
    log_path.write_text(line + "\n")
    assert _ips(tool, log_path) == []
