"""Run the real ``sipd`` daemon for end-to-end tests.

``SipdProcess(tmp_path, config_overrides, db_url=None)`` writes a TOML configuration (free loopback
ports, SQLite database in its own directory under ``tmp_path`` unless ``db_url`` is given,
management socket beside it), provisions domains and users with the real ``sipctl`` (or not:
``provision=False``), starts ``python -m sipd --config FILE`` and waits (bounded) until sipd logs
"sipd ready" -- every listener answers -- or, when the configured log level hides that line, until
it answers an OPTIONS over UDP.

    proc = SipdProcess(tmp_path, {"log": {"level": "debug"}},
                       domains=["example.test"], users=[("alice@example.test", "alicepw")])
    proc.start()                          # or: with SipdProcess(...) as proc:
    ... proc.udp_port, proc.tcp_port, proc.log_text(), proc.mi("ul_dump")
    proc.kill9(); proc.restart()          # same ports, same database
    proc.close()                          # stop() and assert no Traceback in the log

The process is always ended by its PID: ``stop()``/``close()``, a ``weakref.finalize`` safety net,
and the ``sipd`` fixture in tests/e2e/conftest.py, which also checks the log for tracebacks. A start
that fails raises with the end of the log. ``ServerProcess`` is the shared base (the Kamailio
stand-in in tests/e2e uses it too). tests/daemon/harness.py holds the raw-socket user agents and
``live_daemon``, this class with the defaults the daemon tests share.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20.0      # seconds until the daemon must answer OPTIONS
STOP_TIMEOUT = 10.0       # seconds after SIGTERM before SIGKILL
SIPCTL_TIMEOUT = 60.0


def _free_port(host: str, below: int | None) -> int:
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from conftest import free_port  # tests/conftest.py
    finally:
        sys.path.pop(0)
    return free_port("udp", host, below=below)


def _end_pid(proc: subprocess.Popen, term_timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, bounded wait, then SIGKILL -- only this PID (safety net for finalizers)."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=term_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def options_ping(host: str, port: int, timeout: float = 0.3, proto: str = "udp", *,
                 source: str | None = None) -> str | None:
    """Send one OPTIONS to host:port (from ``source``, default ``host``: on loopback any
    127.x address can be the sender); return the status line of the reply, or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    tag = random.randint(1, 1 << 30)
    with socket.socket(family, kind) as s:
        s.settimeout(timeout)
        try:
            if proto == "udp":
                s.bind((source or host, 0))
            else:
                if source:
                    s.bind((source, 0))
                s.connect((host, port))
            lport = s.getsockname()[1]
            bracket = f"[{host}]" if ":" in host else host
            msg = (
                f"OPTIONS sip:{bracket}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/{proto.upper()} {bracket}:{lport};branch=z9hG4bK-ping{tag};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:ping@{bracket}>;tag={tag}\r\n"
                f"To: <sip:{bracket}:{port}>\r\n"
                f"Call-ID: ping-{tag}@{bracket}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            if proto == "udp":
                s.sendto(msg, (host, port))
            else:
                s.sendall(msg)
            data = s.recv(65535)
        except OSError:
            return None
    if not data.startswith(b"SIP/2.0 "):
        return None
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


class ServerProcess:
    """A SIP server child process on loopback: start, readiness by OPTIONS, stop/kill9/restart."""

    name = "server"

    def __init__(self, tmp_path: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 below: int | None = None) -> None:
        self.dir = Path(tmp_path) / f"{self.name}-{random.randint(0, 1 << 30):x}"
        self.dir.mkdir(parents=True)
        self.host = host
        self.port = port or _free_port(host, below)
        self.log_path = self.dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self._logf = None
        self.starts = 0
        self._finalizer = weakref.finalize(self, ServerProcess._cleanup, [None])

    # ports: UDP and TCP share one number (free for both)
    @property
    def udp_port(self) -> int:
        return self.port

    @property
    def tcp_port(self) -> int:
        return self.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @staticmethod
    def _cleanup(holder: list) -> None:
        proc = holder[0]
        if proc is not None:
            _end_pid(proc, 3)

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = READY_TIMEOUT) -> "ServerProcess":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._logf = open(self.log_path, "ab")
        self._logf.write(f"---- start #{self.starts + 1}: {' '.join(self.argv())}\n".encode())
        self._logf.flush()
        self.proc = subprocess.Popen(self.argv(), cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, ServerProcess._cleanup, [self.proc])
        self.starts += 1
        self.wait_ready(timeout)
        return self

    def ready_sign(self) -> str | None:
        """One look for the sign that the server serves (the status line of an answered OPTIONS), or None."""
        return options_ping(self.host, self.udp_port)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                rc = self.proc.returncode if self.proc else None
                self._close_log()
                raise RuntimeError(f"{self.name} exited (rc={rc}) before it was ready:\n{self.log_tail()}")
            sign = self.ready_sign()
            if sign:
                return sign
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} on {self.address} not ready within {timeout}s:\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait (bounded), then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        _end_pid(self.proc, timeout)
        self._close_log()
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_log()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart(self, timeout: float = READY_TIMEOUT) -> "ServerProcess":
        if self.running():
            self.stop()
        return self.start(timeout)

    def _close_log(self) -> None:
        if self._logf is not None:
            self._logf.close()
            self._logf = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def close(self, *, check_log: bool = True) -> None:
        self.stop()
        self._finalizer.detach()
        if check_log:
            text = self.log_text()
            assert "Traceback" not in text, f"{self.name} logged a traceback:\n{self.log_tail(80)}"


# ----------------------------------------------------------------------------- TOML


def to_toml(conf: dict[str, dict[str, Any]]) -> str:
    from sipd.config import dump

    return dump(conf)


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


# ----------------------------------------------------------------------------- sipd


class SipctlError(RuntimeError):
    pass


class SipdProcess(ServerProcess):
    """The real daemon: ``python -m sipd --config DIR/sipd.toml`` on free loopback ports."""

    name = "sipd"

    def __init__(self, tmp_path: Path, config_overrides: dict | None = None, db_url: str | None = None,
                 *, host: str = "127.0.0.1", port: int | None = None, below: int | None = None,
                 domains: Iterable[str] = (), users: Sequence[tuple[str, str]] = (),
                 transports: Sequence[str] = ("udp", "tcp"), provision: bool = True,
                 config_text: str | None = None) -> None:
        super().__init__(tmp_path, host=host, port=port, below=below)
        self.db_url = db_url or f"sqlite:///{(self.dir / 'sipd.db').resolve()}"
        self.socket_path = str(self.dir / "mgmt.sock")
        bracket = f"[{host}]" if ":" in host else host
        base = {
            "server": {"listen": [f"{t}:{bracket}:{self.port}" for t in transports]},
            "database": {"url": self.db_url},
            "mgmt": {"socket": self.socket_path},
            "log": {"level": "info"},
        }
        # config_text: a whole file (a generated one) written as it is; its listeners, database and
        # socket are then the text's, and ``config`` only reads it
        self._config_text = config_text
        if config_text is None:
            self.config = deep_merge(base, config_overrides or {})
        else:
            import tomllib

            self.config = tomllib.loads(config_text)
            self.socket_path = self.config.get("mgmt", {}).get("socket", "")
        self.config_path = self.dir / "sipd.toml"
        self.write_config()
        # provision=False: the test writes its rows itself (tests/daemon/harness.py add_subscriber)
        # and sipd creates its SQLite schema at first start; no sipctl run
        self._provisioned = not provision
        self._domains = list(domains)
        self._users = list(users)
        self.ready_line = ""

    def write_config(self) -> None:
        self.config_path.write_text(to_toml(self.config) if self._config_text is None else self._config_text)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"  # what sipd prints reaches the log as it happens
        env.pop("SIPD_CONFIG", None)
        return env

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "sipd", "--config", str(self.config_path)]

    def sipctl(self, *args: str, check: bool = True, timeout: float = SIPCTL_TIMEOUT,
               input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``python -m sipctl --config FILE ARGS...``; raise SipctlError on failure if check."""
        cmd = [sys.executable, "-m", "sipctl", "--config", str(self.config_path), *args]
        res = subprocess.run(cmd, cwd=self.dir, env=self.env(), capture_output=True, text=True,
                             timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise SipctlError(f"sipctl {' '.join(args)} -> rc {res.returncode}\n{res.stdout}{res.stderr}")
        return res

    # SQLite databases provisioned by sipctl once per session, copied for each later daemon that
    # asks for the same domains and users (saves ~6 sipctl runs per test)
    _templates: dict[tuple, Path] = {}
    _template_dir: Path | None = None

    def _provision_sqlite_from_template(self, domains: list[str], users: list[tuple[str, str]]) -> bool:
        db_file = Path(self.db_url[len("sqlite:///"):])
        if not self.db_url.startswith("sqlite:///") or db_file.exists():
            return False
        key = (tuple(domains), tuple(users))
        template = SipdProcess._templates.get(key)
        if template is None:
            self.provision_with_sipctl(domains, users)
            if SipdProcess._template_dir is None:
                import atexit
                import tempfile

                SipdProcess._template_dir = Path(tempfile.mkdtemp(prefix="sipd-e2e-templates-"))
                atexit.register(shutil.rmtree, SipdProcess._template_dir, True)
            template = SipdProcess._template_dir / f"t{len(SipdProcess._templates)}.db"
            shutil.copyfile(db_file, template)
            SipdProcess._templates[key] = template
        else:
            shutil.copyfile(template, db_file)
        self._provisioned = True
        return True

    def provision(self, domains: Iterable[str] = (), users: Sequence[tuple[str, str]] = ()) -> None:
        """Create the schema (idempotent), then add domains and users with sipctl."""
        domains, users = list(domains), list(users)
        if self._provisioned or not self._provision_sqlite_from_template(domains, users):
            self.provision_with_sipctl(domains, users)

    def provision_with_sipctl(self, domains: list[str], users: list[tuple[str, str]]) -> None:
        if not self._provisioned:
            if self.db_url.startswith("mysql://"):
                # create the database itself too: --admin-url is the server part of the URL
                scheme, rest = self.db_url.split("://", 1)
                admin = f"{scheme}://{rest.split('/', 1)[0]}"
                self.sipctl("db", "create", "--admin-url", admin)
            else:
                self.sipctl("db", "create")
            self._provisioned = True
        for d in domains:
            self.sipctl("domain", "add", d)
        for aor, pw in users:
            self.sipctl("user", "add", aor, pw)

    def start(self, timeout: float = READY_TIMEOUT) -> "SipdProcess":
        if not self._provisioned:
            self.provision(self._domains, self._users)
        super().start(timeout)
        return self

    def ready_sign(self) -> str | None:
        """This start's "sipd ready" line: sipd logs it once every listener answers, TLS and workers
        included, and looking for it sends nothing that would show in sipd's statistics. When the
        log does not show it (a level above info, or syslog) an answered OPTIONS is the sign."""
        log = self.config.get("log", {})
        if str(log.get("level", "info")).lower() not in ("debug", "info") or log.get("destination", "stderr") != "stderr":
            return super().ready_sign()
        this_start = self.log_text().rsplit("---- start #", 1)[-1]
        line = next((ln for ln in this_start.splitlines() if "sipd ready" in ln), None)
        if line is not None:
            self.ready_line = line
        return line

    def mi(self, method: str, params: list | None = None, timeout: float = 5.0) -> Any:
        """One management command through the daemon's Unix socket."""
        from sipd import config
        from sipd.mgmt.client import call

        return call(config.load(self.config_path, validators=()), method, params or [], timeout)
