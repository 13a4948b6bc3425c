"""A database sipd can never write stops the start (one line); one that is down for a while is
served from memory and written again when it is back ("never lose a registration")."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import missing
from tests.daemon.harness import ROOT, UA, add_subscriber, live_daemon
from tests.dbfixtures import mysql_scratch  # noqa: F401 - fixture


@contextmanager
def read_only(path: Path):
    """Make ``path`` unwritable for this user: mode 0444, or for root (who writes any mode) the
    immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        missing("running as root and chattr +i is refused here: cannot make a file read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def sipd_once(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipd", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_read_only_database_refuses_to_start(tmp_path):
    d = live_daemon(tmp_path)
    add_subscriber(d.db_url, "alice", "pw")  # the file exists, with tables
    db_file = Path(d.db_url[len("sqlite:///"):])
    with read_only(db_file):
        proc = sipd_once(d.config_path)
        doctor = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(d.config_path), "doctor", "--json"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "read-only" in lines[0] and str(db_file) in lines[0], proc.stderr
    assert "ready" not in proc.stderr and "Traceback" not in proc.stderr
    assert "Traceback" not in doctor.stderr, doctor.stderr
    import json

    checks = [f for f in json.loads(doctor.stdout)["findings"] if f["area"] == "database"]
    assert any(f["verdict"] == "fail" and "read-only" in f["detail"] for f in checks), checks


@contextmanager
def locked(db_file: Path):
    """Another process's write lock on the SQLite file: the database is there, but every write
    waits for its busy timeout and fails ("database is locked") until the lock is released."""
    conn = sqlite3.connect(str(db_file), isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def location_rows(db_file: Path) -> list[tuple]:
    with sqlite3.connect(str(db_file)) as conn:
        return conn.execute("SELECT username, contact FROM location").fetchall()


def test_database_down_for_a_while_keeps_and_retries_the_registration(tmp_path):
    d = live_daemon(tmp_path, {"location": {"mode": "write-through", "flush_interval": 1.0},
                          "database": {"connect_timeout": 0.5}})
    add_subscriber(d.db_url, "alice", "pw")
    add_subscriber(d.db_url, "bob", "pw")
    db_file = Path(d.db_url[len("sqlite:///"):])
    with d, UA(d.port, "bob", password="pw") as bob:
        with locked(db_file):
            reply = bob.register(600)
            assert reply.status == 200  # served from memory: the UA is registered ...
            assert location_rows(db_file) == []
            shown = d.mi("ul_dump")  # the operator sees it is not stored yet
            states = [c["State"] for dom in shown["Domains"] for a in dom["AORs"] for c in a["Contacts"]]
            assert states == ["CS_NEW"], shown
            with UA(d.port, "alice", password="pw") as alice:  # ... and reachable
                from tests.daemon.harness import message_reaches

                assert message_reaches(alice, bob)
        deadline = time.monotonic() + 20  # the next flush writes it (flush_interval 1 s, housekeeping ticks)
        while time.monotonic() < deadline and not location_rows(db_file):
            time.sleep(0.2)
        assert [r[0] for r in location_rows(db_file)] == ["bob"]
        shown = d.mi("ul_dump")
        assert [c["State"] for dom in shown["Domains"] for a in dom["AORs"] for c in a["Contacts"]] == ["CS_SYNC"]
    log = d.log_text()
    assert "kept in memory: not stored yet" in log
    assert "Traceback" not in log, log


def stored_binding(db_file: Path) -> tuple:
    with sqlite3.connect(str(db_file)) as conn:
        return conn.execute("SELECT contact_id, cseq, expires FROM location WHERE username = 'bob'").fetchone()


def test_a_refresh_while_the_database_is_down_is_stored_when_it_is_back(tmp_path):
    """A refresh is an UPDATE of the binding's row (its contact_id stays); one that could not be
    stored is kept in memory and written at the next flush."""
    d = live_daemon(tmp_path, {"location": {"mode": "write-through", "flush_interval": 1.0},
                          "database": {"connect_timeout": 0.5}})
    add_subscriber(d.db_url, "bob", "pw")
    db_file = Path(d.db_url[len("sqlite:///"):])
    with d, UA(d.port, "bob", password="pw") as bob:
        assert bob.register(600).status == 200
        first = stored_binding(db_file)
        assert bob.register(900).status == 200
        refreshed = stored_binding(db_file)
        assert refreshed[0] == first[0] and refreshed[1] > first[1] and refreshed[2] > first[2]
        with locked(db_file):
            assert bob.register(1200).status == 200  # served from memory
            assert stored_binding(db_file) == refreshed
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and stored_binding(db_file) == refreshed:
            time.sleep(0.2)
        last = stored_binding(db_file)
        assert last[1] > refreshed[1] and last[2] > refreshed[2]
        assert bob.register(600).status == 200  # stored again: a refresh once more
        assert stored_binding(db_file)[0] == last[0] and stored_binding(db_file)[1] > last[1]
    log = d.log_text()
    assert "kept in memory: not stored yet" in log
    assert "Traceback" not in log, log


def test_mysql_user_without_write_rights_refuses_to_start(tmp_path, mysql_scratch):
    """The read-only user ``sipctl db create --ro-user`` makes (SELECT only), given to sipd."""
    s = mysql_scratch
    rw, ro = f"{s.name}_rw", f"{s.name}_ro"
    d = live_daemon(tmp_path, db_url=s.url(rw, "rwpass"))
    created = subprocess.run([sys.executable, "-m", "sipctl", "--config", str(d.config_path), "db", "create",
                              "--admin-url", s.admin_url, "--ro-user", ro, "--ro-password", "ropass"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    d.start().stop()  # the read-write user: starts
    d.config_path.write_text(d.config_path.read_text().replace(f"{rw}:rwpass", f"{ro}:ropass"))
    proc = sipd_once(d.config_path)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "ready" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "denied" in lines[0].lower(), lines[0]
