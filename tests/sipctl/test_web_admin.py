"""sipctl web admin add|passwd|rm|list and the panel's login rules (sipctl/lib/webadmin.py), on
SQLite and MariaDB; bad input is one line with a hint and the right exit code."""

from __future__ import annotations

import socket

from dbfixtures import backend, cli, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipctl.errors import ExitStatus
from sipctl.lib import webadmin


def test_admins_are_added_listed_changed_and_removed(cli):
    assert cli("web", "admin", "add", "ops", "--password-stdin", input="first-secret\n").code == 0
    r = cli("web", "admin", "add", "auditor", "another-pw", "--role", "read-only", "--json")
    assert r.code == 0 and r.json == {"username": "auditor", "role": "read-only"}
    listed = cli("web", "admin", "list", "--json").json
    assert [(a["username"], a["role"], a["locked"]) for a in listed] == [
        ("auditor", "read-only", False), ("ops", "read-write", False)]
    assert cli("web", "admin", "passwd", "ops", "second-secret").code == 0
    assert cli("web", "admin", "rm", "auditor").code == 0
    assert [a["username"] for a in cli("web", "admin", "list", "--json").json] == ["ops"]
    actions = [e["action"] for e in cli("audit", "list", "--json").json]
    assert actions == ["web admin rm", "web admin passwd", "web admin add", "web admin add"]


def test_bad_input_is_one_line_with_a_hint(cli):
    for args, code in ((("add", "ops", "short"), ExitStatus.USAGE),
                       (("add", "bad name!", "long-enough"), ExitStatus.USAGE),
                       (("add", "ops", "long-enough", "--role", "god"), ExitStatus.USAGE),
                       (("passwd", "nobody", "long-enough"), ExitStatus.NOT_FOUND),
                       (("rm", "nobody"), ExitStatus.NOT_FOUND)):
        r = cli("web", "admin", *args)
        assert r.code == code, (args, r.err)
        assert r.err.startswith("Error: ") and "Hint:" in r.err and r.err.count("\n") == 2, r.err
    assert cli("web", "admin", "add", "ops", "long-enough").code == 0
    assert cli("web", "admin", "add", "ops", "long-enough").code == ExitStatus.EXISTS
    r = cli("web", "--listen", "127.0.0.1:99999")
    assert r.code == ExitStatus.USAGE and "HOST:PORT" in r.err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = cli("web", "--listen", f"127.0.0.1:{taken.getsockname()[1]}")
    assert r.code == ExitStatus.USAGE and "cannot listen" in r.err


def test_passwords_are_salted_scrypt_and_failures_lock_the_account(db_url):
    from sipd.db import connect

    with connect(db_url) as db:
        webadmin.add(db, "ops", "right-password")
        webadmin.add(db, "dev", "right-password")
        stored = {r["username"]: r["password"] for r in db.query("SELECT username, password FROM web_admin")}
        assert stored["ops"].startswith("scrypt$") and stored["ops"] != stored["dev"]  # salted
        assert "right-password" not in stored["ops"]
        assert webadmin.authenticate(db, "ops", "right-password", now=1000).role == "read-write"
        for i in range(3):
            try:
                webadmin.authenticate(db, "ops", "wrong", limit=3, lockout=60, now=1000 + i)
                raise AssertionError("a wrong password was accepted")
            except webadmin.LoginFailed as exc:
                assert ("locked" in exc.message) == (i == 2)
        for password in ("wrong", "right-password"):
            try:
                webadmin.authenticate(db, "ops", password, limit=3, lockout=60, now=1010)
                raise AssertionError("a locked account logged in")
            except webadmin.LoginFailed as exc:
                assert "locked" in exc.message
        assert webadmin.authenticate(db, "ops", "right-password", limit=3, lockout=60, now=1063).username == "ops"
        try:
            webadmin.authenticate(db, "nobody", "right-password")
            raise AssertionError("an unknown name logged in")
        except webadmin.LoginFailed as exc:
            assert exc.message == "wrong name or password"


def test_a_port_left_in_time_wait_can_be_listened_on_again():
    """A panel restarted on its port while the connections of the one before linger in TIME_WAIT
    (the side that closes first keeps them a minute) starts; a program listening there stops it."""
    from sipctl.errors import UsageError
    from sipctl.lib.webserver import ensure_can_listen

    with socket.socket() as server:  # a listener as asyncio and uvicorn make them (SO_REUSEADDR)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = server.accept()
            conn.close()  # the server closes first: its end of the connection goes to TIME_WAIT
            client.recv(1)
    with socket.socket() as plain:  # what the probe did before: refused for the TIME_WAIT alone
        try:
            plain.bind(("127.0.0.1", port))
            time_wait = False
        except OSError:
            time_wait = True
    assert time_wait, "no TIME_WAIT left behind: the case under test did not arise"
    ensure_can_listen("127.0.0.1", port)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        try:
            ensure_can_listen("127.0.0.1", port)
        except UsageError as exc:
            assert "cannot listen" in str(exc)
        else:
            raise AssertionError("a port another program listens on was accepted")
