"""Run SIPp (Debian ``sip-tester``) scenarios with bounded time, returning exit code and statistics.

    res = run_sipp(SCEN / "register.xml", "127.0.0.1:5060", port=free_port(),
                   inf=write_inf(tmp_path, [("alice", "example.test", "alicepw")]),
                   keys={"expires": 600}, cwd=tmp_path)
    assert res.ok, res.explain()

``SippProcess`` runs one in the background (a UAS): ``start()``, ``wait(timeout)``, ``stop()`` --
always by PID. Every run carries ``-timeout`` (SIPp's own global limit) and a subprocess timeout.
Statistics come from SIPp's ``-trace_stat`` CSV (last row: SuccessfulCall(C), FailedCall(C), ...).
"""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

SIPP = "sipp"


def sipp_binary() -> str | None:
    return shutil.which(SIPP)


def write_inf(directory: Path, rows: Iterable[tuple[str, str, str]], name: str = "users.csv") -> Path:
    """SIPp injection file: user;domain;[authentication username=user password=pw]."""
    path = Path(directory) / name
    lines = ["SEQUENTIAL"]
    for user, domain, pw in rows:
        lines.append(f"{user};{domain};[authentication username={user} password={pw}]")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class SippResult:
    rc: int | None
    stats: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    errors: str = ""
    messages: str = ""
    elapsed: float = 0.0

    def stat(self, name: str) -> int:
        v = self.stats.get(name)
        return int(v) if v not in (None, "") else 0

    @property
    def successful(self) -> int:
        return self.stat("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self.stat("FailedCall(C)")

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def explain(self) -> str:
        tail = "\n".join(self.stdout.splitlines()[-15:])
        return (f"sipp rc={self.rc} successful={self.successful} failed={self.failed} "
                f"elapsed={self.elapsed:.1f}s\n--- errors ---\n{self.errors[-3000:]}\n"
                f"--- stdout tail ---\n{tail}\n--- messages (tail) ---\n{self.messages[-4000:]}")


class SippProcess:
    """One SIPp instance. ``remote`` None = server side (UAS) waiting for requests."""

    def __init__(self, scenario: Path | str, remote: str | None, *, port: int, cwd: Path,
                 host: str = "127.0.0.1", transport: str = "u1", inf: Path | None = None,
                 keys: dict[str, object] | None = None, service: str | None = None,
                 calls: int = 1, rate: float | None = None, hold_ms: int | None = None,
                 timeout: float = 20, media_port: int | None = None, extra: Sequence[str] = (),
                 name: str | None = None, abort_unexpected: bool = True) -> None:
        self.cwd = Path(cwd)
        self.name = name or Path(scenario).stem
        self.timeout = timeout
        self.stat_file = self.cwd / f"{self.name}-{port}_stat.csv"
        self.err_file = self.cwd / f"{self.name}-{port}_err.log"
        self.msg_file = self.cwd / f"{self.name}-{port}_msg.log"
        self.out_file = self.cwd / f"{self.name}-{port}.out"
        argv = [sipp_binary() or SIPP]
        if remote:
            argv.append(remote)
        argv += ["-sf", str(scenario), "-i", host, "-p", str(port), "-t", transport,
                 "-m", str(calls), "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error",
                 "-recv_timeout", str(int(min(timeout, 10) * 1000)),
                 "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                 "-trace_err", "-error_file", str(self.err_file),
                 "-trace_msg", "-message_file", str(self.msg_file)]
        if not abort_unexpected:
            # a 180 overtaken by the 200 is legal on UDP through a proxy: log it, keep the call
            argv += ["-default_behaviors", "all,-abortunexp"]
        if media_port:
            argv += ["-mp", str(media_port)]
        if inf:
            argv += ["-inf", str(inf)]
        if service:
            argv += ["-s", service]
        if rate:
            argv += ["-r", str(rate)]
        if hold_ms is not None:
            argv += ["-d", str(hold_ms)]
        for k, v in (keys or {}).items():
            argv += ["-key", k, str(v)]
        argv += list(extra)
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self._out = None
        self._t0 = 0.0

    def start(self) -> "SippProcess":
        self._out = open(self.out_file, "wb")
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to end by itself (bounded); on overrun end it by PID."""
        assert self.proc is not None
        limit = timeout if timeout is not None else self.timeout + 10
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.stop()
        return self.result()

    def stop(self) -> SippResult:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.result()

    def result(self) -> SippResult:
        if self._out is not None:
            self._out.close()
            self._out = None
        rc = self.proc.returncode if self.proc else None

        def read(p: Path) -> str:
            try:
                return p.read_text(errors="replace")
            except FileNotFoundError:
                return ""

        return SippResult(rc=rc, stats=_last_stats(self.stat_file), stdout=read(self.out_file),
                          errors=read(self.err_file), messages=read(self.msg_file),
                          elapsed=time.monotonic() - self._t0)


def _last_stats(path: Path) -> dict[str, str]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except FileNotFoundError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def run_sipp(scenario: Path | str, remote: str | None, **kwargs) -> SippResult:
    """Run one SIPp to completion (bounded by its -timeout plus a margin)."""
    return SippProcess(scenario, remote, **kwargs).start().wait()
