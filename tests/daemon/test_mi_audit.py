"""A live sipd audits the state-changing management commands its own FIFO and HTTP clients send
(sipctl and the panel record theirs): who, from where, the command and its parameters; reads and
failed commands leave no row, and `sipctl audit list` shows the rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from sipd.config import load
from sipd.db import connect
from sipd.mgmt import client
from tests.conftest import free_port
from tests.daemon.harness import ROOT, live_daemon


def _rows(db_url: str, want: int, timeout: float = 15.0) -> list[dict]:
    end = time.monotonic() + timeout
    while True:
        with connect(db_url) as db:
            rows = db.query("SELECT origin, actor, source, action, object, value_after FROM audit ORDER BY id")
        if len(rows) >= want or time.monotonic() > end:
            return rows
        time.sleep(0.1)


def test_fifo_and_http_changes_are_audited_reads_and_failures_are_not(tmp_path):
    replies = tmp_path / "replies"
    replies.mkdir()
    d = live_daemon(tmp_path, {"antiflood": {"enabled": True},
                          "mgmt": {"fifo": str(tmp_path / "sipd_fifo"), "fifo_reply_dir": str(replies),
                                   "http_listen": f"127.0.0.1:{free_port('tcp')}",
                                   "http_token": "a-long-enough-test-token-0123456789"}})
    try:
        d.start()
        config = load(d.config_path, validators=())
        client.call(config, "ban_add", ["192.0.2.9", 600], transport="http")
        client.call(config, "ul_dump", transport="http")                  # a read
        with pytest.raises(Exception):
            client.call(config, "ban_add", ["not-an-address"], transport="http")  # refused
        client.call(config, "log_level", ["debug"], transport="fifo")
        client.call(config, "uptime", transport="fifo")                   # a read
        client.call(config, "ban_rm", ["192.0.2.9"])  # over the socket: sipctl's to record, not sipd's
        rows = _rows(d.db_url, 2)
        time.sleep(0.5)
        rows = _rows(d.db_url, 3, timeout=0.5)  # nothing else arrives late
        listed = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(d.config_path), "audit", "list", "--json"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        d.stop()
    assert "Traceback" not in d.log_text(), d.log_text()
    assert [(r["origin"], r["action"], r["object"]) for r in rows] == \
        [("http", "mi ban_add", "192.0.2.9 600"), ("fifo", "mi log_level", "debug")], rows
    http, fifo = rows
    assert http["actor"] == "http token" and http["source"].startswith("127.0.0.1:")
    assert json.loads(http["value_after"]) == {"params": ["192.0.2.9", 600]}
    import pwd

    assert fifo["actor"] == pwd.getpwuid(os.getuid()).pw_name and fifo["source"].startswith(str(replies))
    assert listed.returncode == 0, listed.stderr
    assert {"mi ban_add", "mi log_level"} <= {r["action"] for r in json.loads(listed.stdout)}
