"""sipd/config.py and ``sipd --check-config``: every problem with its key and a hint, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sipd import config as cfg
from sipd.validation import VALIDATORS


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sipd.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_work_without_file(monkeypatch, tmp_path):
    monkeypatch.delenv("SIPD_CONFIG", raising=False)
    monkeypatch.setattr(cfg, "DEFAULT_PATH", tmp_path / "absent.toml")
    conf, problems = cfg.check(None, validators=VALIDATORS)
    assert problems == [] and conf.source is None
    assert conf.database.url.startswith("sqlite:///")
    assert [str(cfg.parse_listen(x)) for x in conf.server.listen] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]


def test_the_stable_keys(tmp_path):
    p = _write(tmp_path, '[server]\nlisten = ["udp:127.0.0.1:5060", "tcp:[::1]:5061"]\n'
                         '[database]\nurl = "mysql://u:pw@127.0.0.1:3306/sipd"\n[mgmt]\nsocket = "/run/sipd/sipd.sock"\n')
    conf = cfg.load(p, validators=VALIDATORS)
    assert cfg.parse_listen(conf.server.listen[1]) == cfg.ListenAddress("tcp", "::1", 5061)
    assert conf.mgmt.socket == "/run/sipd/sipd.sock" and conf.source == p


def test_sipd_config_env(monkeypatch, tmp_path):
    p = _write(tmp_path, '[log]\nlevel = "debug"\n')
    monkeypatch.setenv("SIPD_CONFIG", str(p))
    assert cfg.load(None, validators=VALIDATORS).log.level == "debug"


@pytest.mark.parametrize("text, key, words", [
    ("[server]\nlisten_on = []\n", "server.listen_on", "unknown key"),
    ("[servre]\n", "servre", "unknown section"),
    ("[registrar]\nmax_contacts = \"2\"\n", "registrar.max_contacts", "expected an integer"),
    ("[server]\nlisten = \"udp:1.2.3.4:5060\"\n", "server.listen", "expected a list of a string"),
    ("[server]\nlisten = [\"udp:127.0.0.1\"]\n", "server.listen[0]", "cannot parse listen address"),
    ("[server]\nlisten = [\"sctp:127.0.0.1:5060\"]\n", "server.listen[0]", "cannot parse"),
    ("[server]\nlisten = [\"udp:127.0.0.1:70000\"]\n", "server.listen[0]", "out of range"),
    ("[database]\nurl = \"postgres://x\"\n", "database.url", "unsupported URL"),
    ("[server]\nworkers = -1\n", "server.workers", "out of range"),
    ("[server]\nworkers = 65\n", "server.workers", "out of range"),
    ("[log]\nlevel = \"loud\"\n", "log.level", "unknown level"),
])
def test_problems_name_the_key(tmp_path, text, key, words):
    conf, problems = cfg.check(_write(tmp_path, text), validators=VALIDATORS)
    assert [p.key for p in problems] == [key]
    assert words in problems[0].message


def test_all_problems_reported_at_once(tmp_path):
    _, problems = cfg.check(_write(tmp_path, '[server]\nadvertised-address = ""\n[registrar]\nmax_contacts = "x"\n'
                                                 '[log]\nlevel = "no"\n'), validators=VALIDATORS)
    assert {p.key for p in problems} == {"registrar.max_contacts", "server.advertised-address", "log.level"}
    assert any(p.hint == "did you mean advertised_address?" for p in problems)


def test_unreadable_and_broken_files(tmp_path, monkeypatch):
    _, problems = cfg.check(tmp_path / "missing.toml", validators=VALIDATORS)
    assert "does not exist" in problems[0].message
    _, problems = cfg.check(tmp_path, validators=VALIDATORS)
    assert "is a directory" in problems[0].message
    _, problems = cfg.check(_write(tmp_path, "[server\n"), validators=VALIDATORS)
    assert "invalid TOML" in problems[0].message
    p = _write(tmp_path, "")

    def deny(self, *a, **kw):  # root can read any file: simulate the permission error
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", deny)
    _, problems = cfg.check(p, validators=VALIDATORS)
    assert "not readable" in problems[0].message and problems[0].hint


#: One problem in each section that has a check, and the order sipd reports them in: the sections
#: sipd.config checks itself, then each validator of sipd.validation in its turn.
EVERY_CHECK = """
[server]
listen = ["udp:nohost"]
[log]
level = "loud"
[trace]
hep_capture_id = -1
[antiflood]
limit = 0
[acc]
writer = "fork"
[spam]
action = "reject"
[tls]
handshake_timeout = 0.0
[presence]
policy = "nobody"
[nat]
keepalive_method = "stun"
[diversion]
header = "x"
[pstn]
trusted_addresses = ["gw.example"]
[routing]
error_log_interval = -1.0
"""


def test_problems_come_in_one_order(tmp_path):
    _, problems = cfg.check(_write(tmp_path, EVERY_CHECK), validators=VALIDATORS)
    assert [p.key for p in problems] == [
        "server.listen[0]", "log.level", "trace.hep_capture_id", "antiflood.limit", "acc.writer", "spam.action",
        "tls.handshake_timeout", "presence.policy", "nat.keepalive_method", "diversion.header",
        "pstn.trusted_addresses[0]", "routing.error_log_interval",
    ]
    assert all(isinstance(p, cfg.Problem) for p in problems)


def test_config_alone_checks_only_its_own_sections(tmp_path):
    """What the feature modules check runs only when their validators are handed in."""
    _, problems = cfg.check(_write(tmp_path, EVERY_CHECK), validators=())
    assert [p.key for p in problems] == ["server.listen[0]", "log.level"]


def test_every_validator_has_one_shape():
    """validate(config) -> list[Problem]: nothing to say about the defaults."""
    assert len(VALIDATORS) == len(set(VALIDATORS)) >= 6
    for validator in VALIDATORS:
        assert validator(cfg.Config()) == [], validator


def test_mask_url_and_to_dict():
    assert cfg.mask_url("mysql://sipd:s3cr%40t@h:3306/sipd") == "mysql://sipd:***@h:3306/sipd"
    assert cfg.mask_url("sqlite:///var/lib/sipd/sipd.db") == "sqlite:///var/lib/sipd/sipd.db"
    conf = cfg.Config()
    conf.database.url = "mysql://a:b@h/d"
    conf.mgmt.http_token = "tok"
    d = cfg.to_dict(conf)
    assert d["database"]["url"] == "mysql://a:***@h/d" and d["mgmt"]["http_token"] == "***"
    assert all(doc for _, _, _, doc in cfg.describe())  # every key documented


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipd", "--check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_command(tmp_path):
    good = _write(tmp_path, '[server]\nlisten = ["udp:127.0.0.1:5070"]\n')
    p = _check_config(good)
    assert p.returncode == 0 and "configuration OK" in p.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = ["udp:nohost"]\nfoo = 1\n')
    p = _check_config(bad)
    assert p.returncode == 1
    assert "server.listen[0]" in p.stderr and "server.foo: unknown key" in p.stderr
    assert "2 problem(s)" in p.stderr and "Traceback" not in p.stderr
    p = _check_config(tmp_path / "nope.toml")
    assert p.returncode == 1 and "does not exist" in p.stderr
