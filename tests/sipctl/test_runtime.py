"""sipctl ps|uptime|version|log-level|reload and mi, and the error cases of reaching sipd."""

from __future__ import annotations

import os
import socket
import stat
import sys

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


_AS_NOBODY = """
import importlib, os, pkgutil, sys
import sipctl
from sipd.privileges import preload
preload()
for info in pkgutil.walk_packages(sipctl.__path__, "sipctl."):
    importlib.import_module(info.name)
from sipctl.app import main
try:
    import typer._adapters  # typer 0.29 imports pydantic (and the stdlib's zoneinfo) on first use
except ImportError:
    pass
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(main(sys.argv[1:]))
"""


def _run_as_nobody(args: list[str]) -> tuple[int, str]:
    """Run ``sipctl ARGS`` as nobody (uid/gid 65534) from a fresh interpreter started as root.

    Root ignores file modes, so as root the only way to see a permission error is to stop being
    root. The child imports everything sipctl needs first and then drops privileges (as sipd does),
    which works wherever Python is installed, even in a directory nobody cannot read.
    """
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "SIPD_CONFIG"}
    env["PYTHONPATH"] = repo
    res = subprocess.run([sys.executable, "-c", _AS_NOBODY, *args], capture_output=True, text=True,
                         timeout=60, cwd="/", env=env)
    return res.returncode, res.stdout + res.stderr


def _as_other_user(capsys, conf, *args: str) -> tuple[int, str]:
    if os.geteuid() == 0:
        return _run_as_nobody(["-c", str(conf), *args])
    code, _, err = _cli(capsys, conf, *args)
    return code, err


def test_permission_denied_names_group(capsys):
    """A socket the user may not use: EACCES, and the hint names the socket's group and mode."""
    import shutil
    import tempfile
    from pathlib import Path

    from mgmt.harness import Harness

    base = Path(tempfile.mkdtemp(prefix="sipd-perm-", dir="/tmp"))  # traversable, unlike pytest's tmp
    try:
        os.chmod(base, 0o755)
        h = Harness(base, fifo="", http_listen="")
        try:
            sock = h.config.mgmt.socket
            os.chmod(Path(sock).parent, 0o755)
            os.chmod(sock, 0o000)
            conf = base / "sipd.toml"
            conf.write_text(f'[mgmt]\nsocket = "{sock}"\n')
            os.chmod(conf, 0o644)
            code, err = _as_other_user(capsys, conf, "uptime")
        finally:
            h.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert code == ExitStatus.MGMT_PERMISSION, err
    assert "permission denied" in err and "group" in err and "mode 0000" in err


def test_fifo_permission_mentions_protected_fifos(tmp_path, capsys, monkeypatch):
    import tempfile

    base = tempfile.mkdtemp(prefix="sipd-fifo-", dir="/tmp")  # traversable by nobody, unlike pytest's tmp
    try:
        os.chmod(base, 0o755)
        sticky = os.path.join(base, "sticky")
        os.mkdir(sticky)
        os.chmod(sticky, 0o1777)
        fifo = os.path.join(sticky, "sipd_fifo")
        os.mkfifo(fifo, 0o600)
        os.chmod(fifo, 0o000)
        replies = os.path.join(base, "replies")
        os.mkdir(replies)
        os.chmod(replies, 0o1777)
        conf = os.path.join(base, "sipd.toml")
        with open(conf, "w") as fh:
            fh.write(f'[mgmt]\nfifo = "{fifo}"\nfifo_reply_dir = "{replies}"\n')
        os.chmod(conf, 0o644)
        monkeypatch.setenv("SIPCTL_MGMT_TRANSPORT", "fifo")
        code, err = _as_other_user(capsys, conf, "uptime")
        assert code == ExitStatus.MGMT_PERMISSION and "fs.protected_fifos" in err, err
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_other_transports(daemon, sipctl, monkeypatch):
    for t in ("fifo", "http"):
        monkeypatch.setenv("SIPCTL_MGMT_TRANSPORT", t)
        assert sipctl("uptime", "--json").json["Up time"].endswith("[sec]"), t
    monkeypatch.setenv("SIPCTL_MGMT_TRANSPORT", "pigeon")
    assert sipctl("uptime").code == ExitStatus.USAGE
