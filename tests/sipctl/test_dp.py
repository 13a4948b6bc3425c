"""sipctl dp add|rm|list|test through the real CLI, on SQLite and MariaDB."""

from __future__ import annotations

from dbfixtures import backend, cli, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipctl.errors import ExitStatus

REPORT = ["--pr", "5", "--match-op", "regex",
          "--match-exp", "sip:979[0-9]+(@osips.vcc.test.tu-dresden.de){0,1}",
          "--subst-exp", "sip:979([0-9]+)(@osips.vcc.test.tu-dresden.de){0,1}",
          "--repl-exp", "sip:979\\1@vc.dfn.de"]
IN = "sip:97924988@osips.vcc.test.tu-dresden.de"


def test_report_rule(cli):
    r = cli("dp", "add", "0", *REPORT, "--json")
    assert r.code == 0, r.err
    assert r.json["id"] >= 1 and r.json["match_op"] == "regex"
    r = cli("dp", "test", "0", IN, "--json")
    assert r.code == 0
    assert r.json["output"] == "sip:97924988@vc.dfn.de" and r.json["rule"]["pr"] == 5
    human = cli("dp", "test", "0", IN)
    assert human.code == 0 and f"{IN} -> sip:97924988@vc.dfn.de" in human.out


def test_lower_pr_wins_and_list_order(cli):
    cli("dp", "add", "0", "--pr", "10", "--match-op", "regex", "--match-exp", "^sip:1", "--repl-exp", "ten")
    cli("dp", "add", "0", "--pr", "2", "--match-op", "equal", "--match-exp", "sip:100", "--repl-exp", "two")
    cli("dp", "add", "1", "--pr", "0", "--match-op", "regex", "--match-exp", ".", "--repl-exp", "other", "--disabled")
    rows = cli("dp", "list", "--json").json
    assert [(r["dpid"], r["pr"]) for r in rows] == [(0, 2), (0, 10), (1, 0)]
    assert [r["pr"] for r in cli("dp", "list", "0", "--json").json] == [2, 10]
    assert cli("dp", "test", "0", "sip:100", "--json").json["output"] == "two"
    assert cli("dp", "test", "0", "sip:1000", "--json").json["output"] == "ten"
    r = cli("dp", "test", "1", "anything", "--json")  # the only dpid 1 rule is disabled
    assert r.code == 1 and r.json["matched"] is False
    assert "disabled" in cli("dp", "list").out


def test_no_match_and_subst_failure_exit_1(cli):
    cli("dp", "add", "0", "--match-exp", "^sip:9", "--subst-exp", "^sip:(8)", "--repl-exp", "\\1")
    r = cli("dp", "test", "0", "sip:123")
    assert r.code == 1 and "no translation" in r.err and "Hint:" in r.err
    r = cli("dp", "test", "0", "sip:9")
    assert r.code == 1 and "not subst_exp" in r.err
    r = cli("dp", "test", "0", "sip:9", "--json")
    assert r.code == 1 and r.json["rule"] is not None and r.json["matched"] is False


def test_icase_equal(cli):
    cli("dp", "add", "3", "--match-op", "equal", "--match-exp", "SIP:Alice", "--match-flags", "icase",
        "--repl-exp", "sip:bob")
    assert cli("dp", "test", "3", "sip:alice", "--json").json["output"] == "sip:bob"


def test_invalid_rules_rejected_nothing_stored(cli):
    cases = [
        (["--match-exp", "sip:([0-9"], "match_exp"),
        (["--match-exp", "x", "--subst-exp", "(a"], "subst_exp"),
        (["--match-exp", "x", "--subst-exp", "(a)", "--repl-exp", "\\2"], "repl_exp"),
        (["--match-exp", "x", "--repl-exp", "$fU"], "repl_exp"),
        (["--match-exp", "x", "--match-op", "fnmatch"], "match operator"),
        (["--match-exp", "x", "--match-flags", "loud"], "match flag"),
        ([], "--match-exp is required"),
    ]
    for args, text in cases:
        r = cli("dp", "add", "0", *args)
        assert r.code == ExitStatus.USAGE, (args, r.err)
        assert text in r.err and "Hint:" in r.err, r.err
    assert cli("dp", "list", "--json").json == []


def test_rm(cli):
    rid = cli("dp", "add", "0", "--match-exp", "x", "--json").json["id"]
    assert cli("dp", "rm", str(rid)).code == 0
    assert cli("dp", "list", "--json").json == []
    r = cli("dp", "rm", str(rid))
    assert r.code == ExitStatus.NOT_FOUND and "sipctl dp list" in r.err


def test_rule_without_repl_leaves_input(cli):
    cli("dp", "add", "0", "--match-exp", "^sip:", "--attrs", "detect")
    r = cli("dp", "test", "0", "sip:x", "--json")
    assert r.code == 0 and r.json["output"] == "" and r.json["result"] == "sip:x"
    assert "unchanged" in cli("dp", "test", "0", "sip:x").out


def test_numeric_match_op_as_in_the_dialplan_table(cli):
    """OpenSIPS's table and control panel write the operator as 0 (equal) and 1 (regex)."""
    r = cli("dp", "add", "0", "--pr", "1", "--match-op", "0", "--match-exp", "sip:100", "--repl-exp", "a", "--json")
    assert r.code == 0, r.err
    assert r.json["match_op"] == "equal"
    r = cli("dp", "add", "0", "--pr", "2", "--match-op", "1", "--match-exp", "^sip:1", "--repl-exp", "b", "--json")
    assert r.code == 0 and r.json["match_op"] == "regex"
    assert cli("dp", "test", "0", "sip:100", "--json").json["output"] == "a"
    assert cli("dp", "test", "0", "sip:123", "--json").json["output"] == "b"
    r = cli("dp", "add", "0", "--match-op", "2", "--match-exp", "x")
    assert r.code == ExitStatus.USAGE and "equal (or 0)" in r.err
