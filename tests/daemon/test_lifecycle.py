"""Startup errors as one line + exit 1; graceful SIGTERM; trace logging."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from tests.daemon.harness import ROOT, UA, live_daemon


def test_address_in_use_is_one_line_exit_1(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        d = live_daemon(tmp_path, port=port)
        proc = subprocess.run([sys.executable, "-m", "sipd", "--config", str(d.config_path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert f"address already in use: udp:127.0.0.1:{port}" in proc.stderr
    assert "see server.listen" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_graceful_and_trace(tmp_path):
    d = live_daemon(tmp_path, {"log": {"sip_trace": True}}).start()
    with UA(d.port, "probe") as ua:
        ua.send(ua.request("OPTIONS", f"sip:127.0.0.1:{d.port}", to=f"<sip:127.0.0.1:{d.port}>"))
        ua.expect(200)
    assert d.stop() == 0
    log = d.log_text()
    assert "sipd ready, listening on udp:127.0.0.1" in log
    assert "TRACE" in log and "OPTIONS sip:127.0.0.1" in log
    assert "sipd stopped" in log


def test_second_sipd_on_taken_port_fails_at_once(tmp_path):
    """Same configuration twice (same database, same accounting spool, same ports): the second one
    must not wait on the first one's accounting lock nor open the database; it fails on the port."""
    first = live_daemon(tmp_path, {"acc": {"enabled": True}}).start()
    try:
        second = tmp_path / "second.toml"
        second.write_text(first.config_path.read_text().replace("mgmt.sock", "second.sock"))
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "sipd", "--config", str(second)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - t0
        assert first.running()
    finally:
        first.stop()
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"address already in use: udp:127.0.0.1:{first.port}" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "presence" not in proc.stderr
    assert elapsed < 20, f"took {elapsed:.1f} s (the accounting lock waits 30 s)"
