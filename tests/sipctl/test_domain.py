"""sipctl domain add|rm|list through the real CLI, on SQLite and MariaDB."""

from __future__ import annotations

from dbfixtures import backend, cli, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipctl.errors import ExitStatus


def test_add_list_rm(cli):
    assert cli("domain", "add", "osips.vcc.test.tu-dresden.de").code == 0
    r = cli("domain", "add", "141.76.1.2", "--json")
    assert r.code == 0 and r.json["domain"] == "141.76.1.2"
    assert cli("domain", "add", "[2001:DB8::1]").code == 0
    r = cli("domain", "list", "--json")
    assert r.code == 0
    assert [d["domain"] for d in r.json] == ["141.76.1.2", "[2001:db8::1]", "osips.vcc.test.tu-dresden.de"]
    r = cli("domain", "list")
    assert "osips.vcc.test.tu-dresden.de" in r.out
    r = cli("domain", "rm", "osips.vcc.test.tu-dresden.de")
    assert r.code == 0 and "removed" in r.out
    assert len(cli("domain", "list", "--json").json) == 2


def test_names_are_case_insensitive(cli):
    assert cli("domain", "add", "Example.ORG").code == 0
    r = cli("domain", "add", "example.org")
    assert r.code == ExitStatus.EXISTS
    assert r.err.startswith("Error: domain example.org already exists")
    assert "Hint:" in r.err


def test_invalid_domain(cli):
    for bad in ("-bad-.org", "a b", "x" * 70 + ".org", "999.1.2.3", ""):
        r = cli("domain", "add", bad)
        assert r.code == ExitStatus.USAGE, bad
        assert r.err.count("\n") == 2 and "Hint:" in r.err
    assert cli("domain", "list", "--json").json == []


def test_rm_unknown(cli):
    r = cli("domain", "rm", "nowhere.example")
    assert r.code == ExitStatus.NOT_FOUND
    assert "does not exist" in r.err


def test_rm_refused_while_users_remain(cli):
    cli("domain", "add", "example.org")
    assert cli("user", "add", "alice@example.org", "pw").code == 0
    r = cli("domain", "rm", "example.org")
    assert r.code == ExitStatus.USAGE and "1 user" in r.err and "--force" in r.err
    assert cli("domain", "rm", "example.org", "--force").code == 0


def test_domain_that_moves_the_single_realm_is_flagged(cli):
    """Single-domain mode with no [server] domains: the realm is the first domain name of the table,
    so adding one that sorts first, or removing the realm, moves every user's realm: said, with the fix."""
    r = cli("domain", "add", "m.example.org", "--json")
    assert "m.example.org is the realm" in r.json["notes"][1] and not r.json["warnings"]
    r = cli("domain", "add", "a.example.org")
    assert r.code == 0 and "moves from m.example.org to a.example.org" in r.err
    assert 'set [auth] realm = "m.example.org"' in r.err
    r = cli("domain", "add", "192.0.2.7", "--json")
    assert not r.json["warnings"] and any("dropped as spam" in n for n in r.json["notes"])
    r = cli("domain", "rm", "a.example.org")
    assert "moves from a.example.org to m.example.org" in r.err
