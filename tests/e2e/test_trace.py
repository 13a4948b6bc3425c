"""sipctl trace against a live sipd: baresip's REGISTER/401/REGISTER/200, filtered by user, and a
pcap file tshark reads with the right number of SIP packets."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import require_tool

pytestmark = pytest.mark.e2e


def _wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_trace_register_exchange_filtered_by_user(tmp_path, server, baresip_factory):
    tshark = require_tool("tshark")
    pcap = tmp_path / "alice.pcap"
    cmd = [sys.executable, "-m", "sipctl", "--config", str(server.config_path), "trace", "--user", "alice",
           "--count", "4", "--duration", "20", "--pcap", str(pcap)]
    tracer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server.env())
    try:
        assert _wait_for(lambda: "trace watcher connected" in server.log_text(), 10), server.log_tail()
        bob = baresip_factory("bob", server=server)       # traffic that the filter must keep out
        alice = baresip_factory("alice", server=server)
        assert alice.wait_registered(10) == "OK" and bob.wait_registered(10) == "OK"
        out, err = tracer.communicate(timeout=25)
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait(5)
    assert tracer.returncode == 0, err
    lines = [ln for ln in out.splitlines() if "<-" in ln or "->" in ln]
    firsts = [ln.split("  ", 1)[1].strip() for ln in lines]
    assert [f.split()[0] if not f.startswith("SIP/") else f.split()[1] for f in firsts] == \
        ["REGISTER", "401", "REGISTER", "200"], out
    assert "bob" not in out.lower()
    assert "<-" in lines[0] and "->" in lines[1]
    r = subprocess.run([tshark, "-r", str(pcap), "-Y", "sip", "-d", f"udp.port=={server.port},sip", "-T", "fields",
                        "-e", "sip.CSeq.method", "-e", "sip.Status-Code"], capture_output=True, text=True, timeout=60)
    rows = [ln.split("\t") for ln in r.stdout.strip().splitlines()]
    assert len(rows) == 4, (r.stdout, r.stderr)
    assert [row[1] for row in rows] == ["", "401", "", "200"]


def test_trace_costs_nothing_unwatched_and_reports_missing_daemon(tmp_path, server):
    # nobody watching: the daemon's flag is off (the emit path is skipped entirely)
    assert "trace watcher" not in server.log_text()
    server.stop()
    r = server.sipctl("trace", "--count", "1", check=False)
    assert r.returncode == 4 and "Traceback" not in r.stderr
    assert "is sipd running" in r.stderr
