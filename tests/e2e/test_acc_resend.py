"""The accounting writer process dies holding facts: the new one gets them, no CDR is lost.

The writer child is stopped (SIGSTOP) so the facts of a whole call wait unread in its pipe, then
killed; the daemon starts a new child and sends it every fact the old one had not confirmed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.e2e.test_acc import Call, make_daemon, phones, query, running, wait_gone, wait_rows, writer_pid


def test_facts_the_dead_writer_had_not_confirmed_go_to_the_new_one(tmp_path):
    d = make_daemon(tmp_path)
    with running(d), phones(d) as (alice, bob):
        Call(alice, bob, "before").ring().answer().hangup()
        wait_rows(d.db_url, "SELECT * FROM cdrs WHERE callid = ?", ("before",), 1)
        first = writer_pid(d)
        os.kill(first, signal.SIGSTOP)  # reads nothing more: the next call's facts wait in its pipe
        try:
            Call(alice, bob, "held").ring().answer().hangup()
            time.sleep(0.3)
        finally:
            os.kill(first, signal.SIGKILL)
        wait_gone(first)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{d.proc.pid}/task/{d.proc.pid}/children").read_text() \
                .split() in ([], [str(first)]):
            time.sleep(0.05)
        assert writer_pid(d) != first
        wait_rows(d.db_url, "SELECT * FROM cdrs WHERE callid = ?", ("held",), 1)
        Call(alice, bob, "after").ring().answer().hangup()
        wait_rows(d.db_url, "SELECT * FROM cdrs WHERE callid = ?", ("after",), 1)
    assert [r["callid"] for r in query(d.db_url, "SELECT callid FROM cdrs ORDER BY id")] == ["before", "held", "after"]
    acc = [(r["callid"], r["method"]) for r in query(d.db_url, "SELECT callid, method FROM acc WHERE callid = 'held'")]
    assert acc == [("held", "INVITE"), ("held", "BYE")]
    assert "facts it had not confirmed go to the new one" in d.log_text()
