"""sipctl works with a file from `sipctl config generate --tls` before the certificate exists: only sipd
needs the certificate to start; config check and doctor report it."""

from __future__ import annotations

import json
from pathlib import Path

from dbfixtures import Cli, backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipctl.errors import ExitStatus


def _generated(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "sipd.toml"
    r = Cli(tmp_path / "none.toml")("config", "generate", "--tls", "--auth", "--address", "127.0.0.1",
                                    "--domain", "example.test", "--db-url", url, "-o", str(path))
    assert r.code == 0, r.err
    assert "certificate" in path.read_text()  # the file names a certificate that does not exist yet
    return path


def test_every_command_but_sipd_works_before_the_certificate(tmp_path, empty_db_url):
    cli = Cli(_generated(tmp_path, empty_db_url))
    assert cli("db", "create").code == 0
    assert cli("domain", "add", "example.test").code == 0
    assert cli("user", "add", "alice@example.test", "pw").code == 0
    assert [u["user"] for u in cli("user", "list", "--json").json] == ["alice"]
    assert [d["domain"] for d in cli("domain", "list", "--json").json] == ["example.test"]
    assert cli("config", "show", "--json").json["config"]["tls"]["certificate"]
    r = cli("tls", "list")  # no sipd running: the management socket answers nothing, the config is fine
    assert r.code == ExitStatus.MGMT and "configuration" not in r.err


def test_config_check_and_doctor_report_the_missing_certificate(tmp_path, empty_db_url):
    cli = Cli(_generated(tmp_path, empty_db_url))
    r = cli("config", "check", "--json")
    assert r.code == 1
    keys = {p["key"] for p in r.json["problems"]}
    assert "tls.certificate" in keys
    r = cli("doctor", "--json", "--no-dns")
    assert r.code == 1
    config_fails = [f for f in r.json["findings"] if f["area"] == "config" and f["verdict"] == "fail"]
    assert any("tls.certificate" in f["subject"] and "sipctl cert" in f["hint"] for f in config_fails), json.dumps(r.json)


def test_sipd_refuses_to_start_without_it(tmp_path, empty_db_url):
    import subprocess
    import sys

    path = _generated(tmp_path, empty_db_url)
    p = subprocess.run([sys.executable, "-m", "sipd", "--check-config", "-c", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "tls.certificate" in p.stdout + p.stderr
