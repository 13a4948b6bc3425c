"""Drive real baresip user agents headless (Debian ``baresip-core`` 1.0) over ``ctrl_tcp``.

    ua = BaresipUA(tmp_path, "alice", "alicepw", domain="example.test", transport="tcp",
                   proxy="127.0.0.1:5060").start()
    assert ua.wait_registered(10) == "OK"
    ua.dial("sip:bob@example.test"); ua.wait_event({"CALL_ESTABLISHED"}, 10)
    ua.hangup(); ua.wait_event({"CALL_CLOSED"}, 10)
    ua.stop(); ua.rtp_packets()   # (tx, rx) from the "packets: TX RX" line rtp_stats prints

Headless audio: ``ausine`` tone as the microphone, ALSA's built-in ``null`` PCM as the speaker;
``net_interface 127.0.0.1`` keeps SDP and RTP on loopback. Control: ctrl_tcp on a free loopback
port, netstring-framed JSON commands/responses/events. Every wait is bounded; the process is ended
by its PID (quit, then SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import time
import weakref
from pathlib import Path

from .sipd_proc import _end_pid, _free_port

MODULE_PATH = "/usr/lib/baresip/modules"


def baresip_binary() -> str | None:
    return shutil.which("baresip")


class CtrlError(RuntimeError):
    pass


class Ctrl:
    """ctrl_tcp client: netstring JSON ``{"command", "params", "token"}``; collects events."""

    def __init__(self, port: int, timeout: float = 5.0, alive=lambda: True) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        self.sock: socket.socket | None = None
        while time.monotonic() < deadline and alive():
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError as exc:
                last = exc
                time.sleep(0.1)
        if self.sock is None:
            raise CtrlError(f"ctrl_tcp 127.0.0.1:{port} not reachable: {last}")
        self.buf = b""
        self.events: list[dict] = []
        self.tok = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _read(self, timeout: float) -> list[dict]:
        assert self.sock is not None
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return []
        if not data:
            raise CtrlError("ctrl_tcp connection closed")
        self.buf += data
        out = []
        while b":" in self.buf:
            n, rest = self.buf.split(b":", 1)
            size = int(n)
            if len(rest) < size + 1:
                break
            out.append(json.loads(rest[:size]))
            self.buf = rest[size + 1:]
        return out

    def pump(self, timeout: float = 0.1) -> list[dict]:
        msgs = self._read(timeout)
        self.events.extend(m for m in msgs if m.get("event"))
        return msgs

    def cmd(self, command: str, params: str | None = None, timeout: float = 5.0) -> dict:
        assert self.sock is not None
        self.tok += 1
        tok = str(self.tok)
        msg = {"command": command, "token": tok}
        if params:
            msg["params"] = params
        raw = json.dumps(msg).encode()
        self.sock.sendall(str(len(raw)).encode() + b":" + raw + b",")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in self.pump(end - time.monotonic()):
                if m.get("response") and m.get("token") == tok:
                    return m
        raise CtrlError(f"no response to {command} within {timeout}s")

    def wait_event(self, types: set[str], timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("type") in types:
                    return self.events.pop(i)
            if time.monotonic() >= end:
                return None
            self.pump(min(0.2, max(end - time.monotonic(), 0.01)))


def strip_ansi(text: str) -> str:
    for code in ("\x1b[32m", "\x1b[31m", "\x1b[;m", "\x1b[33m"):
        text = text.replace(code, "")
    return text.strip()


class BaresipUA:
    """One baresip process with its own home directory under tmp_path."""

    def __init__(self, tmp_path: Path, user: str, password: str, *, domain: str = "example.test",
                 transport: str = "udp", proxy: str | None = None, dns: str | None = None,
                 answer: str = "auto", regint: int = 600, cafile: str | None = None,
                 auth_user: str | None = None) -> None:
        self.user, self.domain, self.transport = user, domain, transport
        self.home = Path(tmp_path) / f"baresip-{user}-{random.randint(0, 1 << 30):x}"
        self.home.mkdir(parents=True)
        self.log_path = self.home / "baresip.log"
        self._settings = dict(cafile=cafile, dns=dns)
        self._pick_ports()
        params = (f"<sip:{user}@{domain};transport={transport}>;auth_pass={password};answermode={answer};"
                  f"regint={regint};medianat=;mwi=no;ptime=20")
        if auth_user:
            params += f";auth_user={auth_user}"
        if proxy:
            params += f';outbound="sip:{proxy};transport={transport}"'
        (self.home / "accounts").write_text(params + "\n")
        (self.home / "contacts").write_text("")
        self.proc: subprocess.Popen | None = None
        self.ctrl: Ctrl | None = None
        self._logf = None
        self._finalizer = weakref.finalize(self, BaresipUA._cleanup, [None])

    def _pick_ports(self) -> None:
        """Choose the SIP and ctrl_tcp ports and write the config that names them.

        A port found free may be taken by someone else's outgoing connection before baresip binds
        it (both come from the ephemeral range), so ``start`` picks again when baresip cannot
        listen."""
        self.sip_port = _free_port("127.0.0.1", None)
        self.ctrl_port = _free_port("127.0.0.1", None)
        cafile, dns = self._settings["cafile"], self._settings["dns"]
        cfg = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t127.0.0.1:{self.sip_port}",
            "net_interface\t\t127.0.0.1",
            "call_local_timeout\t30",
            "call_max_calls\t\t4",
            "audio_source\t\tausine,440",
            "ausrc_srate\t\t48000",
            "ausrc_channels\t\t2",
            "audio_player\t\talsa,null",
            "audio_alert\t\talsa,null",
            "audio_level\t\tno",
            "audio_buffer\t\t20-160",
            "rtp_ports\t\t20000-29999",
            "rtcp_mux\t\tno",
            "jitter_buffer_delay\t5-10",
            "rtp_stats\t\tyes",
            f"module_path\t\t{MODULE_PATH}",
            "module\t\t\tg711.so",
            "module\t\t\tausine.so",
            "module\t\t\talsa.so",
            "module_tmp\t\tuuid.so",
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
            "statmode_default\toff",
            "module_app\t\tctrl_tcp.so",
            f"ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}",
        ]
        if cafile:
            cfg.append(f"sip_cafile\t\t{cafile}")
        if dns:
            cfg.append(f"dns_server\t\t{dns}")
        (self.home / "config").write_text("\n".join(cfg) + "\n")

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @staticmethod
    def _cleanup(holder: list) -> None:
        proc = holder[0]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    def start(self, attempts: int = 3) -> "BaresipUA":
        for attempt in range(attempts):
            if attempt:
                self._pick_ports()
            self._logf = open(self.log_path, "wb")
            self.proc = subprocess.Popen([baresip_binary() or "baresip", "-f", str(self.home)],
                                         stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, BaresipUA._cleanup, [self.proc])
            try:
                self.ctrl = Ctrl(self.ctrl_port, 10.0, alive=lambda: self.proc.poll() is None)
                return self
            except CtrlError as exc:
                failure = exc
                _end_pid(self.proc, 3)
                self._logf.close()
                self._logf = None
        raise CtrlError(f"{failure}; baresip log:\n{self.log_text()[-2000:]}")

    def wait_registered(self, timeout: float = 10.0) -> str:
        """Poll ``reginfo`` until OK or ERR: returns "OK", "ERR", "EXITED" or "TIMEOUT"."""
        assert self.ctrl and self.proc
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return "EXITED"
            text = self.ctrl.cmd("reginfo").get("data", "")
            self.last_reginfo = strip_ansi(text)
            if " OK " in text or "\x1b[32mOK" in text:
                return "OK"
            if "ERR" in text:
                return "ERR"
            time.sleep(0.2)
        return "TIMEOUT"

    def dial(self, uri: str) -> dict:
        assert self.ctrl
        return self.ctrl.cmd("dial", uri)

    def hangup(self) -> dict:
        assert self.ctrl
        return self.ctrl.cmd("hangup")

    def wait_event(self, types: set[str], timeout: float = 10.0) -> dict | None:
        assert self.ctrl
        return self.ctrl.wait_event(types, timeout)

    def pump(self, timeout: float = 0.05) -> None:
        assert self.ctrl
        self.ctrl.pump(timeout)

    def stop(self) -> int | None:
        """quit over ctrl_tcp, then SIGTERM, then SIGKILL -- this PID only."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                if self.ctrl:
                    self.ctrl.cmd("quit", timeout=2)
            except (CtrlError, OSError):
                pass
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                _end_pid(self.proc, 3)
        if self.ctrl:
            self.ctrl.close()
            self.ctrl = None
        if self._logf:
            self._logf.close()
            self._logf = None
        self._finalizer.detach()
        return self.proc.returncode if self.proc else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def rtp_packets(self) -> tuple[int, int] | None:
        """(tx, rx) RTP packets of the last call (rtp_stats prints "packets: TX RX" at hangup)."""
        for line in reversed(self.log_text().splitlines()):
            if line.startswith("packets:"):
                parts = line.split()
                return int(parts[1]), int(parts[2])
        return None
