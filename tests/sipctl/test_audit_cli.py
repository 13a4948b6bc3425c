"""The audit log of changes made with sipctl: each carries what the database held before it (on
SQLite and MariaDB), as the panel's changes do, and never a password."""

from __future__ import annotations

import json

from dbfixtures import backend, cli, db_url, empty_db_url, mysql_scratch  # noqa: F401


def _entries(cli) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {e["action"]: e for e in cli("audit", "list", "--json").json}


def test_sipctl_removals_and_edits_record_the_value_before(cli):
    assert cli("domain", "add", "Audit.Test").code == 0
    assert cli("user", "add", "ex90@audit.test", "--password-stdin", input="first-secret\n").code == 0
    assert cli("alias", "add", "1247@audit.test", "ex90@audit.test").code == 0
    added = cli("dp", "add", "0", "--pr", "5", "--match-op", "1", "--match-exp", "^sip:979",
                "--repl-exp", "sip:979@vc.dfn.de", "--json")
    assert added.code == 0, added.err
    rule = added.json["id"]
    assert cli("dp", "edit", str(rule), "--pr", "7").code == 0
    assert cli("user", "passwd", "ex90@audit.test", "--password-stdin", input="second-secret\n").code == 0
    assert cli("alias", "rm", "1247@audit.test").code == 0
    assert cli("dp", "rm", str(rule)).code == 0
    assert cli("user", "rm", "ex90@audit.test").code == 0
    assert cli("domain", "rm", "audit.test").code == 0

    log = _entries(cli)
    before = {action: json.loads(e["value_before"]) if e["value_before"] else None for action, e in log.items()}
    assert before["domain add"] is None and before["user add"] is None
    assert before["domain rm"]["domain"] == "audit.test"
    assert (before["user rm"]["username"], before["user rm"]["domain"]) == ("ex90", "audit.test")
    assert (before["user passwd"]["username"], before["user passwd"]["domain"]) == ("ex90", "audit.test")
    assert before["alias rm"]["alias_username"] == "1247" and before["alias rm"]["username"] == "ex90"
    assert before["dp edit"]["pr"] == 5 and json.loads(log["dp edit"]["value_after"])["pr"] == 7
    assert before["dp rm"]["pr"] == 7 and log["dp rm"]["value_after"] is None
    assert all(e["origin"] == "sipctl" for e in log.values())
    text = json.dumps(list(log.values()))
    assert "first-secret" not in text and "second-secret" not in text
