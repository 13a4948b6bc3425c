"""sipctl's one output sink through the real CLI: JSON errors, the global --json, --version, hints on
every refusal from sipd, and tables that keep whole values when piped."""

from __future__ import annotations

import json

from dbfixtures import backend, cli, db_url, empty_db_url, mysql_scratch  # noqa: F401
from mgmtfixtures import daemon, sipctl  # noqa: F401

from sipctl.errors import ExitStatus

LONG = "rooms.building-one.campus-north.osips.vcc.test.tu-dresden.de"  # cut by an 80-column table


def test_json_error_is_one_object_on_stdout(cli):
    for args in (["domain", "rm", "nowhere.example", "--json"], ["--json", "domain", "rm", "nowhere.example"]):
        r = cli(*args)
        assert r.code == ExitStatus.NOT_FOUND
        assert r.err == ""
        assert set(r.json) == {"error", "hint"} and "does not exist" in r.json["error"] and r.json["hint"]
    r = cli("--json", "domain", "lst")  # a usage error found by the parser
    assert r.code == ExitStatus.USAGE and "No such command" in r.json["error"] and r.json["hint"]
    r = cli("domain", "add", "a b", "--json")
    assert r.code == ExitStatus.USAGE and r.json["hint"]


def test_global_json_is_the_same_as_the_command_option(cli):
    cli("domain", "add", "example.org")
    assert cli("--json", "domain", "list").json == cli("domain", "list", "--json").json
    assert cli("--json", "domain", "list").json[0]["domain"] == "example.org"


def test_version(cli):
    from sipd import __version__

    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"sipctl {__version__}"
    assert cli("--json", "--version").json == {"sipctl": __version__}


def test_piped_table_is_plain_with_whole_values(cli):
    assert cli("domain", "add", LONG).code == 0
    cli("domain", "add", "example.org")
    r = cli("domain", "list")
    lines = r.out.splitlines()
    assert lines[0].split("\t") == ["domain", "users", "attrs", "accept_subdomain"]
    assert [line.split("\t")[0] for line in lines[1:]] == ["example.org", LONG]  # one row per line, uncut
    assert "…" not in r.out and "│" not in r.out


def test_refusals_from_sipd_carry_a_hint(daemon, sipctl):
    r = sipctl("stats", "show", "nosuchgroup:")
    assert r.code == ExitStatus.NOT_FOUND
    assert "Statistics Not Found" in r.err and "Hint: sipctl stats show all" in r.err
    r = sipctl("ul", "show", "nobody@example.test")
    assert r.code == ExitStatus.NOT_FOUND and "Hint: sipctl ul show lists" in r.err
    r = sipctl("mi", "ul_show_contact", "location", "nobody@example.test", "--json")
    assert r.code == ExitStatus.NOT_FOUND
    assert json.loads(r.out) == {"error": "AOR not found", "hint": r.json["hint"]} and r.json["hint"]


def test_monitor_json_and_uptime_text(daemon, sipctl):
    r = sipctl("monitor", "--once")
    line = next(x for x in r.out.splitlines() if x.startswith("Up time::"))
    assert line.endswith("[sec]")  # not eaten as markup
    r = sipctl("--json", "monitor", "--count", "2", "--interval", "0.2")
    assert r.code == 0
    snaps = [json.loads(x) for x in r.out.splitlines()]
    assert [s["cycle"] for s in snaps] == [1, 2]
    assert "usrloc:location-users" in snaps[0]["statistics"] and "Up time" in snaps[0]["uptime"]


def test_json_mode_does_not_outlive_the_command(cli):
    from sipctl.output import Output

    cli("domain", "add", "example.org")
    assert cli("--json", "domain", "list").json[0]["domain"] == "example.org"
    assert not Output.json_requested and not Output.json_written
    assert cli("domain", "list").out.startswith("domain\t")
    r = cli("--json", "domain", "rm", "nowhere.example")
    assert r.json["error"] and not Output.json_requested


def test_a_library_warning_is_one_line(cli, monkeypatch):
    import warnings

    from sipctl.lib import provision

    real = provision.list_domains

    def list_domains(db):
        warnings.warn("this driver option is deprecated", DeprecationWarning, stacklevel=1)
        return real(db)

    monkeypatch.setattr(provision, "list_domains", list_domains)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as outside the test suite, where warnings are shown, not raised
        r = cli("domain", "list")
    assert r.code == 0
    assert r.err == "Warning: this driver option is deprecated\n"  # no file:line, no source line
