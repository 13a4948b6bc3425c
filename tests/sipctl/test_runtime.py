"""sipctl ps|uptime|version|log-level|reload and mi, and the error cases of reaching sipd."""

from __future__ import annotations

import os
import socket
import stat

import pytest
from mgmtfixtures import daemon, sipctl  # noqa: F401

from sipctl.errors import ExitStatus


def test_runtime_verbs(daemon, sipctl):
    r = sipctl("version")
    assert r.code == 0 and "Server: sipd" in r.out
    assert "Up time:" in sipctl("uptime").out
    assert sipctl("uptime", "--json").json["Up time"].endswith("[sec]")
    assert str(os.getpid()) in sipctl("ps").out
    assert sipctl("log-level", "debug").out.strip() == "log level set to debug"
    assert "debug" in sipctl("log-level").out
    r = sipctl("log-level", "shouting")
    assert r.code == ExitStatus.USAGE and "unknown log level" in r.err
    r = sipctl("reload", "--json")
    assert r.code == 0 and "Reloaded" in r.json


def test_mi_raw(daemon, sipctl):
    daemon.state.stats.counter("core:rcv_requests").inc(4)
    daemon.state.stats.counter("tm:UAS_transactions").inc(2)
    assert "ul_dump" in sipctl("mi", "which").json
    assert sipctl("mi", "which", "ul_show_contact").json == [["table_name", "aor"]]
    assert sipctl("mi", "get_statistics", "core:", "tm:").json == {"core:rcv_requests": 4, "tm:UAS_transactions": 2}
    assert sipctl("mi", "get_statistics", "statistics=[\"core:\"]").json == {"core:rcv_requests": 4}
    r = sipctl("mi", "no_such_command")
    assert r.code == ExitStatus.MGMT_UNKNOWN_COMMAND and r.err.count("\n") == 2
    r = sipctl("mi", "ul_rm", "location")
    assert r.code == ExitStatus.MGMT_BAD_PARAMS and "Too few or too many parameters" in r.err
    r = sipctl("mi", "uptime", "a=1", "positional")
    assert r.code == ExitStatus.USAGE


def test_mi_completion(daemon, monkeypatch):
    from sipctl.commands.mi import _complete_command
    from sipctl.context import Env

    class Ctx:
        def find_root(self):
            return self
        obj = Env(config_path=str(daemon.config_path))

    assert "ul_dump" in _complete_command(Ctx(), "ul_")
    assert all(n.startswith("ul_") for n in _complete_command(Ctx(), "ul_"))


def _cli(capsys, conf, *args):
    from mgmt.harness import run_cli

    return run_cli(conf, *args, capsys=capsys)


def test_daemon_not_running(tmp_path, capsys):
    conf = tmp_path / "sipd.toml"
    conf.write_text(f'[mgmt]\nsocket = "{tmp_path}/nothing.sock"\n')
    code, out, err = _cli(capsys, conf, "uptime")
    assert code == ExitStatus.MGMT and "does not exist" in err and "is sipd running?" in err
    assert "Traceback" not in err and err.count("\n") == 2
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    conf.write_text(f'[mgmt]\nsocket = "{stale}"\n')
    code, _, err = _cli(capsys, conf, "ul", "show")
    assert code == ExitStatus.MGMT and "nobody is listening" in err
    code, _, err = _cli(capsys, conf, "monitor", "--once")
    assert code == ExitStatus.MGMT


def test_timeout(tmp_path, capsys):
    slow = tmp_path / "slow.sock"
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(slow))
        srv.listen()
        conf = tmp_path / "sipd.toml"
        conf.write_text(f'[mgmt]\nsocket = "{slow}"\ntimeout = 0.2\n')
        code, _, err = _cli(capsys, conf, "version")
    assert code == ExitStatus.TIMEOUT and "no reply from sipd within 0.2 s" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_permission_denied_names_group(daemon, capsys):
    sock = daemon.config.mgmt.socket
    os.chmod(sock, 0o600)
    os.chmod(sock, 0o000)
    try:
        code, _, err = _cli(capsys, daemon.config_path, "uptime")
    finally:
        os.chmod(sock, 0o660)
    assert code == ExitStatus.MGMT_PERMISSION
    assert "permission denied" in err and "group" in err and "mode 0000" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_fifo_permission_mentions_protected_fifos(tmp_path, capsys, monkeypatch):
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    fifo = sticky / "sipd_fifo"
    os.mkfifo(fifo, 0o600)
    os.chmod(fifo, 0o000)
    replies = tmp_path / "replies"
    replies.mkdir()
    conf = tmp_path / "sipd.toml"
    conf.write_text(f'[mgmt]\nfifo = "{fifo}"\nfifo_reply_dir = "{replies}"\n')
    monkeypatch.setenv("SIPCTL_MGMT_TRANSPORT", "fifo")
    code, _, err = _cli(capsys, conf, "uptime")
    assert code == ExitStatus.MGMT_PERMISSION and "fs.protected_fifos" in err
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_other_transports(daemon, sipctl, monkeypatch):
    for t in ("fifo", "http"):
        monkeypatch.setenv("SIPCTL_MGMT_TRANSPORT", t)
        assert sipctl("uptime", "--json").json["Up time"].endswith("[sec]"), t
    monkeypatch.setenv("SIPCTL_MGMT_TRANSPORT", "pigeon")
    assert sipctl("uptime").code == ExitStatus.USAGE


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the client as another user")
def test_permission_denied_as_other_user(tmp_path):
    """As root, run sipctl as nobody against a 0660 root:root socket: EACCES, hint names the group."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from mgmt.harness import Harness

    base = Path(tempfile.mkdtemp(prefix="sipd-perm-"))
    try:
        os.chmod(base, 0o755)
        h = Harness(base, fifo="", http_listen="")
        try:
            conf = base / "sipd.toml"
            conf.write_text(f'[mgmt]\nsocket = "{h.config.mgmt.socket}"\n')
            os.chmod(conf, 0o644)
            os.chmod(Path(h.config.mgmt.socket).parent, 0o755)
            repo = Path(__file__).resolve().parents[2]
            try:
                res = subprocess.run([sys.executable, "-m", "sipctl", "-c", str(conf), "uptime"], user=65534,
                                     capture_output=True, text=True, timeout=60, cwd="/",
                                     env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(repo), "HOME": "/"})
            except PermissionError:
                pytest.skip("this Python is not executable by nobody")
        finally:
            h.close()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    if "No module named" in res.stderr:
        pytest.skip("the checkout is not readable by nobody")
    assert res.returncode == ExitStatus.MGMT_PERMISSION, res.stderr
    assert "permission denied" in res.stderr and "group root" in res.stderr and "mode 0660" in res.stderr
