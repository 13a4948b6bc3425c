"""Running as a service: privilege drop, PID file, SIGHUP reload, READY/STOPPING over $NOTIFY_SOCKET,
syslog destination, and the systemd unit passing systemd-analyze verify."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import missing
from helpers.sipd_proc import SipdProcess, options_ping

ROOT = Path(__file__).resolve().parents[2]


def _wait(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _privileged_port() -> int:
    for port in range(600, 1000):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free privileged port")


@pytest.mark.e2e
def test_binds_privileged_port_as_root_then_runs_as_nobody(tmp_path, request):
    if os.geteuid() != 0:
        missing("privilege drop needs root")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        missing("no user nobody")
    port = _privileged_port()
    # pytest's tmp dirs are private to root: give the daemon a directory "nobody" can traverse
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sipd-priv-", dir="/tmp"))
    base.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    pid_file = tmp_path / "run" / "sipd.pid"
    proc = SipdProcess(base, {"server": {"user": "nobody", "pid_file": str(pid_file)}}, port=port,
                       domains=["example.test"], users=[("alice@example.test", "alicepw")])
    proc.start()
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        nobody = pwd.getpwnam("nobody").pw_uid
        assert uids == [str(nobody)] * 4, status
        assert pid_file.read_text().strip() == str(proc.pid)
        assert options_ping("127.0.0.1", port, timeout=2) is not None      # still served after the drop
        assert options_ping("127.0.0.1", port, timeout=2, proto="tcp") is not None
        r = proc.sipctl("ul", "show")                                     # management still works
        assert r.returncode == 0
        assert "running as user nobody" in proc.log_text()
    finally:
        proc.close()
    # (the PID file stays when its directory is not writable by the dropped user: it is then
    # rewritten at the next start; under systemd use RuntimeDirectory=sipd owned by the user)


@pytest.mark.e2e
def test_sighup_reloads_domains(tmp_path):
    proc = SipdProcess(tmp_path, domains=["example.test"])
    proc.start()
    try:
        import sqlite3

        with sqlite3.connect(proc.db_url[len("sqlite:///"):]) as con:  # not through sipctl, which reloads
            con.execute("INSERT INTO domain (domain, accept_subdomain, last_modified) "
                        "VALUES ('late.example.test', 0, '2026-01-01 00:00:00')")
        before = proc.sipctl("mi", "domain_dump").stdout
        assert "late.example.test" not in before
        os.kill(proc.pid, signal.SIGHUP)
        assert _wait(lambda: "reloaded domains, subscribers, aliases, dialplan" in proc.log_text()), proc.log_tail()
        assert "late.example.test" in proc.sipctl("mi", "domain_dump").stdout
        assert proc.running()
    finally:
        proc.close()


@pytest.mark.e2e
def test_notify_ready_and_stopping(tmp_path):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(20)
    proc = SipdProcess(tmp_path)
    env = proc.env()
    proc.env = lambda: {**env, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}  # type: ignore[method-assign]
    try:
        proc.start()
        msgs = [listener.recv(4096).decode()]
        assert "READY=1" in msgs[0] and f"MAINPID={proc.pid}" in msgs[0]
        msgs.append(listener.recv(4096).decode())  # watchdog every WATCHDOG_USEC/2
        assert msgs[-1] == "WATCHDOG=1\n"
        proc.stop()
        rest = []
        while True:
            try:
                listener.settimeout(2)
                rest.append(listener.recv(4096).decode())
            except TimeoutError:
                break
        assert "STOPPING=1\n" in rest
    finally:
        proc.close()
        listener.close()


def test_syslog_destination_uses_facility_and_ident(tmp_path):
    import logging

    from sipd import config as cfg
    from sipd import logging as sipd_logging

    path = str(tmp_path / "log.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(5)
    conf = cfg.Config()
    conf.log.destination = "syslog"
    conf.log.facility = "local1"
    conf.log.ident = "sipd-test"
    old = sipd_logging._SYSLOG_SOCKETS
    sipd_logging._SYSLOG_SOCKETS = (path,)
    try:
        sipd_logging.configure(conf)
        logging.getLogger("sipd.test").warning("hello %s", "syslog")
        data = sink.recv(4096).decode()
    finally:
        sipd_logging._SYSLOG_SOCKETS = old
        for h in list(logging.getLogger("sipd").handlers):
            logging.getLogger("sipd").removeHandler(h)
            h.close()
        sink.close()
    # <PRI> = facility local1 (17) * 8 + warning (4) = 140
    assert data.startswith("<140>sipd-test[") and "WARNING hello syslog" in data, data


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        missing("systemd-analyze not installed")
    unit = (ROOT / "contrib/systemd/sipd.service").read_text()
    fake = tmp_path / "sipd"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    unit = unit.replace("/usr/bin/sipd", str(fake))
    unit = "\n".join(line for line in unit.splitlines() if not line.startswith("Documentation="))
    (tmp_path / "sipd.service").write_text(unit + "\n")
    r = subprocess.run([analyze, "verify", str(tmp_path / "sipd.service")], capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "sipd.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
