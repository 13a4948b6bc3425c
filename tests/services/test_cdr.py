"""CDR rows and the sipctl views over them (cdr list/export, missed list) on a real SQLite file."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from sipctl.app import app
from sipctl.errors import UsageError
from sipctl.lib import cdr as cdrlib
from sipd.db import connect, schema
from sipd.services.accounting import write_records
from sipd.services.cdr import Record, acc_row, call_status, cdr_row


@pytest.mark.parametrize("code,cancelled,expected", [
    (200, False, "answered"), (486, False, "missed"), (487, False, "cancelled"), (480, True, "cancelled"),
    (503, False, "failed"), (403, False, "failed"), (603, False, "missed"),
])
def test_call_status(code, cancelled, expected):
    assert call_status(code, cancelled) == expected


def test_cdr_row_same_columns_whatever_the_outcome():
    ok = cdr_row(call_id="a", from_tag="f", to_tag="t", caller="sip:a@x", callee="sip:b@x", created=1000.0,
                 answered=1002.5, ended=1062.9, code=200, reason="OK", cancelled=False, end_reason="Upstream BYE")
    bad = cdr_row(call_id="b", from_tag="f", to_tag="", caller="sip:a@x", callee="sip:b@x", created=1000.0,
                  answered=None, ended=1007.0, code=486, reason="Busy Here", cancelled=False, end_reason="Rejected")
    assert set(ok) == set(bad)
    assert (ok["setup_time"], ok["duration"], ok["ms_duration"]) == (2, 60, 60400)
    assert (bad["setup_time"], bad["duration"], bad["answer_time"]) == (7, 0, None)


@pytest.fixture
def env_url(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/cdr.db"
    with connect(url) as db:
        schema.create_all(db)
        recs = []
        for i, (who, status, code) in enumerate([("alice", "answered", 200), ("bob", "missed", 486),
                                                 ("alice", "cancelled", 487)]):
            row = cdr_row(call_id=f"c{i}", from_tag="f", to_tag="t", caller=f"sip:{who}@x", callee="sip:carol@x",
                          created=1_700_000_000.0 + i * 3600, answered=None if code != 200 else 1_700_000_001.0,
                          ended=1_700_000_030.0 + i * 3600, code=code, reason="r", cancelled=False, end_reason="e")
            recs.append(Record("insert", "cdrs", row))
            if code != 200:
                recs.append(Record("insert", "missed_calls", acc_row(
                    method="INVITE", from_tag="f", to_tag="t", call_id=f"c{i}", code=code, reason="r",
                    wall=1_700_000_030.0 + i * 3600, caller=f"sip:{who}@x", callee="sip:carol@x", missed=True)))
        write_records(db, recs)
    monkeypatch.setenv("SIPCTL_DB_URL", url)
    monkeypatch.delenv("SIPD_CONFIG", raising=False)
    return url


def run(*args):
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def test_cdr_list_filters(env_url):
    rows = json.loads(run("cdr", "list", "--json"))
    assert [r["callid"] for r in rows] == ["c0", "c1", "c2"]
    assert [r["callid"] for r in json.loads(run("cdr", "list", "--user", "alice", "--json"))] == ["c0", "c2"]
    assert [r["callid"] for r in json.loads(run("cdr", "list", "--status", "missed", "--json"))] == ["c1"]
    since = cdrlib.parse_when("2023-11-14 23:00")  # between c0 and c1 (local time)
    got = [r["callid"] for r in cdrlib.list_cdrs(type("E", (), {"config": _conf(env_url)})(), since=since)]
    assert got == [r["callid"] for r in rows if r["start_time"] >= since]
    assert "c1" in run("missed", "list")
    # --limit N: the latest N calls, printed oldest first (as tail -n)
    assert [r["callid"] for r in json.loads(run("cdr", "list", "--limit", "2", "--json"))] == ["c1", "c2"]
    assert [r["callid"] for r in json.loads(run("cdr", "list", "-n", "1", "--json"))] == ["c2"]


def test_cdr_export_csv_and_file(env_url, tmp_path):
    text = run("cdr", "export", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["callid"] for r in table] == ["c0", "c1", "c2"]
    assert table[1]["answer_time"] == "" and table[0]["duration"] == "29"
    out = tmp_path / "x.json"
    run("cdr", "export", "--format", "json", "--out", str(out))
    assert len(json.loads(out.read_text())) == 3


def test_bad_inputs():
    with pytest.raises(UsageError):
        cdrlib.parse_when("yesterday-ish")
    with pytest.raises(UsageError):
        cdrlib.export([], "xml")
    assert cdrlib.parse_when("2024-05-01") == "2024-05-01 00:00:00"
    from sipd.services.cdr import fmt_time

    assert cdrlib.parse_when("2h", now=1_700_007_200.0) == fmt_time(1_700_000_000.0)


def test_cli_errors_are_one_line(env_url):
    from sipctl.app import main

    assert main(["cdr", "list", "--status", "bogus"]) == 2
    assert main(["cdr", "list", "--since", "someday"]) == 2


def _conf(url):
    from sipd.config import Config

    c = Config()
    c.database.url = url
    return c
