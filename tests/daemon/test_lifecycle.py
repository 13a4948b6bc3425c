"""Startup errors as one line + exit 1; graceful SIGTERM; trace logging."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.daemon.harness import ROOT, UA, Daemon


def test_address_in_use_is_one_line_exit_1(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        d = Daemon(tmp_path, port=port)
        proc = subprocess.run([sys.executable, "-m", "sipd", "--config", str(d.config)], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert f"address already in use: udp:127.0.0.1:{port}" in proc.stderr
    assert "see server.listen" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_graceful_and_trace(tmp_path):
    d = Daemon(tmp_path, {"log": {"sip_trace": True}}).start()
    with UA(d.port, "probe") as ua:
        ua.send(ua.request("OPTIONS", f"sip:127.0.0.1:{d.port}", to=f"<sip:127.0.0.1:{d.port}>"))
        ua.expect(200)
    assert d.stop() == 0
    log = d.log()
    assert "sipd ready, listening on udp:127.0.0.1" in log
    assert "TRACE" in log and "OPTIONS sip:127.0.0.1" in log
    assert "sipd stopped" in log
