"""The 10,000-TLS-endpoints benchmark's client, small: its figures come from endpoints that really
registered with digest, pinged, refreshed and called through a live sipd.

``bench/tls_endpoints.py`` with 30 endpoints and every interval divided by 30 (refreshes every 2-20
s, pings every 3.2-4 s), so that within a few seconds each phase has something to count. A client
that measured nothing (no registration, no pong, no answered call) fails here instead of printing
a fine-looking table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench" / "tls_endpoints.py"


def test_endpoints_register_ping_refresh_and_call(tmp_path: Path) -> None:
    out = tmp_path / "tls10k.json"
    res = subprocess.run([sys.executable, str(BENCH), "--endpoints", "30", "--per-source", "10", "--scale", "30",
                          "--settle", "1", "--idle", "8", "--call-rate", "10", "--call-seconds", "2", "--hold", "0.2",
                          "--json", str(out)], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    r = json.loads(out.read_text())
    assert r["ramp"]["connected"] == 30 and r["ramp"]["registered"] == 30, r["ramp"]
    idle = r["idle"]
    assert idle["established_at_sipd"] == 30, idle
    # 30 endpoints pinging every 3.2-4 s for 8 s: every ping answered with a CRLF pong
    assert idle["pings_per_s"] > 3 and idle["pongs_per_s"] > 3, idle
    assert idle["registers_per_s"] > 0, idle  # refreshes (2-20 s) happened, with digest
    calls = r["calls"]
    assert calls["started"] == 20 and calls["answered"] == 20, calls
    assert calls["outcomes"].get("calls_completed") == 20, calls  # ACK and BYE went through too
    end = r["end"]
    assert end["registered_fraction"] == 1.0 and end["connected"] == 30, end
    stats = end["client_stats"]
    assert stats["register_ok"] > 30 and stats["register_challenged"] >= 30, stats
    assert stats.get("pongs_missed", 0) == 0 and stats.get("client_errors", 0) == 0, stats
    assert r["sipd_log"]["tracebacks"] == 0, r["sipd_log"]
    assert "targets:" in res.stdout
