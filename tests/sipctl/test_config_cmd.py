"""sipctl config check|show (named _cmd: tests/test_config.py covers sipd/config.py itself)."""

from __future__ import annotations

from pathlib import Path

from dbfixtures import Cli

from sipctl.errors import ExitStatus


def test_check_ok_and_problems(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text('[server]\nlisten = ["udp:127.0.0.1:5070"]\n[database]\nurl = "sqlite:///tmp/x.db"\n')
    r = Cli(good)("config", "check")
    assert r.code == 0 and "configuration OK" in r.out
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = ["udp:127.0.0.1"]\nlisen = 1\n[database]\nurl = 5\n')
    r = Cli(bad)("config", "check")
    assert r.code == ExitStatus.ERROR
    assert "server.listen[0]" in r.err and "server.lisen: unknown key" in r.err
    assert "database.url: expected a string" in r.err and "3 problem(s)" in r.err
    r = Cli(bad)("config", "check", "--json")
    assert r.code == 1 and {p["key"] for p in r.json["problems"]} == {"server.listen[0]", "server.lisen", "database.url"}


def test_check_missing_file(tmp_path: Path):
    r = Cli(tmp_path / "nope.toml")("config", "check")
    assert r.code == ExitStatus.ERROR and "does not exist" in r.err


def test_show_masks_secrets(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "mysql://sipd:TopSecret@db.example:3306/sipd"\n'
                   '[mgmt]\nhttp_listen = "127.0.0.1:8888"\nhttp_token = "tok123"\n')
    r = Cli(cfg)("config", "show")
    assert r.code == 0, r.err
    assert "TopSecret" not in r.out and "tok123" not in r.out
    assert 'url = "mysql://sipd:***@db.example:3306/sipd"' in r.out and "[server]" in r.out
    r = Cli(cfg)("config", "show", "--json")
    assert r.json["config"]["mgmt"]["http_token"] == "***" and r.json["source"] == str(cfg)


def test_show_broken_config_is_one_line(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[registrar]\nmax_contacts = 'two'\n")
    r = Cli(cfg)("config", "show")
    assert r.code == ExitStatus.USAGE and "registrar.max_contacts" in r.err and "sipctl config check" in r.err
