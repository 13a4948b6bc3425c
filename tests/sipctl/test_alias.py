"""sipctl alias add|rm|list through the real CLI, on SQLite and MariaDB."""

from __future__ import annotations

from dbfixtures import backend, cli, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipctl.errors import ExitStatus

D = "osips.vcc.test.tu-dresden.de"


def _setup(cli):
    cli("domain", "add", D)
    assert cli("user", "add", f"vcc-ex90@{D}", "pw").code == 0


def test_report_alias(cli):
    _setup(cli)
    r = cli("alias", "add", f"1247@{D}", f"vcc-ex90@{D}")
    assert r.code == 0 and "1247@" in r.out
    assert cli("alias", "list", "--json").json == [{"alias": f"1247@{D}", "target": f"vcc-ex90@{D}"}]
    assert cli("alias", "list", "--user", f"vcc-ex90@{D}", "--json").json[0]["alias"] == f"1247@{D}"
    assert cli("alias", "list", "--user", f"x@{D}", "--json").json == []
    assert "1247" in cli("alias", "list").out
    assert cli("alias", "rm", f"1247@{D}").code == 0
    assert cli("alias", "list", "--json").json == []


def test_errors(cli):
    _setup(cli)
    cli("alias", "add", f"1247@{D}", f"vcc-ex90@{D}")
    r = cli("alias", "add", f"1247@{D}", f"vcc-ex90@{D}")
    assert r.code == ExitStatus.EXISTS and "already exists" in r.err
    r = cli("alias", "add", f"1300@{D}", f"ghost@{D}")
    assert r.code == ExitStatus.NOT_FOUND and "ghost" in r.err
    r = cli("alias", "add", "1300@foreign.org", f"vcc-ex90@{D}")
    assert r.code == ExitStatus.NOT_FOUND and "not a local domain" in r.err
    r = cli("alias", "add", f"vcc-ex90@{D}", f"vcc-ex90@{D}")
    assert r.code == ExitStatus.EXISTS and "is a user" in r.err
    r = cli("alias", "add", "1300", f"vcc-ex90@{D}")
    assert r.code == ExitStatus.USAGE and "ALIAS@DOMAIN" in r.err
    assert cli("alias", "rm", f"9999@{D}").code == ExitStatus.NOT_FOUND
    assert len(cli("alias", "list", "--json").json) == 1
    assert cli("alias", "add", "1300@foreign.org", f"ghost@{D}", "--force").code == 0
