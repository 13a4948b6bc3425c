"""sipctl user add|passwd|rm|list|show through the real CLI, on SQLite and MariaDB."""

from __future__ import annotations

import hashlib

from dbfixtures import backend, cli, db_url, empty_db_url, mysql_scratch, write_config, Cli  # noqa: F401

from sipctl.errors import ExitStatus

D = "osips.vcc.test.tu-dresden.de"


def _row(db_url, user, domain=D):
    from sipd.db import connect

    with connect(db_url) as db:
        return db.query_one("SELECT * FROM subscriber WHERE username = ? AND domain = ?", (user, domain))


def test_add_stores_ha1_only(cli, db_url):
    cli("domain", "add", D)
    r = cli("user", "add", f"vcc-ex90@{D}", "s3cret", "--json")
    assert r.code == 0
    assert {k: r.json[k] for k in ("user", "domain", "plaintext_stored")} == {
        "user": "vcc-ex90", "domain": D, "plaintext_stored": False}
    assert r.json["sipd"]["status"] == "not running" and "applies when it starts" in r.json["message"]
    row = _row(db_url, "vcc-ex90")
    assert row["password"] == ""
    assert row["ha1"] == hashlib.md5(f"vcc-ex90:{D}:s3cret".encode()).hexdigest()
    assert row["ha1_sha256"] == hashlib.sha256(f"vcc-ex90:{D}:s3cret".encode()).hexdigest()
    assert "s3cret" not in r.out + r.err


def test_store_plaintext_on_request(cli, db_url):
    cli("domain", "add", D)
    assert cli("user", "add", f"bob@{D}", "pw1", "--store-plaintext").code == 0
    assert _row(db_url, "bob")["password"] == "pw1"


def _sipctl_process(config, *args: str, tty: bool, answers: list[bytes]) -> tuple[int, str]:
    """The real sipctl in a process of its own, its stdin/stdout/stderr a pseudo-terminal when ``tty``
    (and no controlling terminal, so getpass falls back to stdin), else a pipe. Each answer is typed
    after the next prompt appears (getpass flushes what was typed before it asked). Returns
    (exit status, everything shown)."""
    import os
    import select
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "sipctl", "--config", str(config), *args]
    env = {k: v for k, v in os.environ.items() if k not in ("SIPCTL_DB_URL", "SIPD_CONFIG")}
    if not tty:
        p = subprocess.run(cmd, input=b"".join(answers), capture_output=True, timeout=60, env=env)
        return p.returncode, (p.stdout + p.stderr).decode()
    leader, follower = os.openpty()
    proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, start_new_session=True, env=env)
    os.close(follower)
    seen, pending, deadline, answered = b"", list(answers), time.monotonic() + 60, 0
    try:
        while time.monotonic() < deadline:
            if not select.select([leader], [], [], 0.5)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if pending and seen.endswith(b": ") and len(seen) > answered:  # a prompt waits for its answer
                os.write(leader, pending.pop(0))
                answered = len(seen)
    finally:
        os.close(leader)
    return proc.wait(timeout=60), seen.decode(errors="replace")


def test_password_from_prompt_and_stdin(cli, db_url):
    cli("domain", "add", D)
    code, shown = _sipctl_process(cli.config, "user", "add", f"p@{D}", tty=True, answers=[b"hidden\n", b"hidden\n"])
    assert code == 0, shown
    assert "Password" in shown and "hidden" not in shown  # asked, and not echoed
    assert _row(db_url, "p")["ha1"] == hashlib.md5(f"p:{D}:hidden".encode()).hexdigest()
    r = cli("user", "add", f"s@{D}", "--password-stdin", input="fromstdin\n")
    assert r.code == 0, r.err
    assert _row(db_url, "s")["ha1"] == hashlib.md5(f"s:{D}:fromstdin".encode()).hexdigest()
    r = cli("user", "add", f"e@{D}", "--password-stdin", input="\n")
    assert r.code == ExitStatus.USAGE and "empty" in r.err
    assert _row(db_url, "e") is None


def test_no_terminal_and_no_password_says_use_password_stdin(cli, db_url):
    cli("domain", "add", D)
    code, shown = _sipctl_process(cli.config, "user", "add", f"n@{D}", tty=False, answers=[b"secret\n"])
    assert code == ExitStatus.USAGE
    assert shown.splitlines() == ["Error: no password given and no terminal to ask for one",
                                  "Hint: pipe it in with --password-stdin (echo 'secret' | sipctl user add ... "
                                  "--password-stdin)"]
    assert _row(db_url, "n") is None


def test_duplicate_unknown_domain_force_malformed(cli, db_url):
    cli("domain", "add", D)
    assert cli("user", "add", f"a@{D}", "x").code == 0
    r = cli("user", "add", f"a@{D}", "y")
    assert r.code == ExitStatus.EXISTS and "already exists" in r.err and "user passwd" in r.err
    r = cli("user", "add", "a@elsewhere.org", "x")
    assert r.code == ExitStatus.NOT_FOUND and "not a local domain" in r.err and "sipctl domain add" in r.err
    assert cli("user", "add", "a@elsewhere.org", "x", "--force").code == 0
    for bad in ("nodomain", "@example.org", "a b@example.org", "user@", "x@bad_domain!"):
        r = cli("user", "add", bad, "pw")
        assert r.code == ExitStatus.USAGE, bad
        assert r.err.startswith("Error: ") and "Hint: " in r.err


def test_domain_from_config_is_local(db_url, tmp_path):
    cfg = write_config(tmp_path / "c.toml", db_url, '[server]\ndomains = ["cfg.example"]\n')
    c = Cli(cfg)
    assert c("user", "add", "a@cfg.example", "pw").code == 0


def test_passwd(cli, db_url):
    cli("domain", "add", D)
    cli("user", "add", f"a@{D}", "old")
    assert cli("user", "passwd", f"a@{D}", "new").code == 0
    assert _row(db_url, "a")["ha1"] == hashlib.md5(f"a:{D}:new".encode()).hexdigest()
    assert cli("user", "passwd", f"a@{D}", "--password-stdin", input="third\n").code == 0
    assert _row(db_url, "a")["ha1"] == hashlib.md5(f"a:{D}:third".encode()).hexdigest()
    r = cli("user", "passwd", f"ghost@{D}", "x")
    assert r.code == ExitStatus.NOT_FOUND


def test_rm_removes_aliases_and_registrations(cli, db_url):
    from sipd.db import connect, queries

    cli("domain", "add", D)
    cli("user", "add", f"a@{D}", "pw")
    cli("user", "add", f"b@{D}", "pw")
    cli("alias", "add", f"1247@{D}", f"a@{D}")
    cli("alias", "add", f"1248@{D}", f"b@{D}")
    with connect(db_url) as db:
        queries.upsert_location(db, {"username": "a", "domain": D, "contact": "sip:a@192.0.2.1", "expires": 0})
        queries.upsert_location(db, {"username": "b", "domain": D, "contact": "sip:b@192.0.2.2", "expires": 0})
    r = cli("user", "rm", f"a@{D}", "--json")
    assert r.code == 0
    assert {k: r.json[k] for k in ("user", "domain", "aliases_removed", "contacts_removed")} == {
        "user": "a", "domain": D, "aliases_removed": 1, "contacts_removed": 1}
    with connect(db_url) as db:
        assert [x["username"] for x in queries.load_locations(db)] == ["b"]
        assert list(queries.load_aliases(db)) == [("1248", D)]
    assert cli("user", "rm", f"a@{D}").code == ExitStatus.NOT_FOUND


def test_list_and_show(cli):
    cli("domain", "add", D)
    cli("domain", "add", "other.org")
    cli("user", "add", f"a@{D}", "pw", "--email", "a@example.org")
    cli("user", "add", "z@other.org", "pw", "--store-plaintext")
    cli("alias", "add", f"1247@{D}", f"a@{D}")
    rows = cli("user", "list", "--json").json
    assert [(r["user"], r["domain"], r["aliases"]) for r in rows] == [("a", D, 1), ("z", "other.org", 0)]
    assert [r["user"] for r in cli("user", "list", "--domain", "other.org", "--json").json] == ["z"]
    assert "other.org" in cli("user", "list").out
    r = cli("user", "show", f"a@{D}", "--json")
    assert r.code == 0
    assert r.json["aliases"] == [f"1247@{D}"] and r.json["email"] == "a@example.org"
    assert r.json["plaintext_stored"] is False and "ha1" not in r.json
    assert cli("user", "show", "z@other.org", "--json").json["plaintext_stored"] is True
    human = cli("user", "show", f"a@{D}")
    assert human.code == 0 and "1247@" in human.out and "pw" not in human.out
    assert cli("user", "show", f"nobody@{D}").code == ExitStatus.NOT_FOUND
