"""Drive real linphone-daemon user agents (liblinphone 5.1, Debian ``linphone-cli``) headless.

    ua = LinphoneUA(tmp_path, "alice", "alicepw", proxy="127.0.0.1:5060").start()
    assert ua.wait_registered(10) == "OK"
    ua.call("sip:bob@example.test"); ua.wait_call_state(RUNNING, 10)
    ua.play(tone_wav(tmp_path))        # no sound card: RTP only flows while a file plays
    ua.terminate(); ua.stop(); ua.rtp_packets()   # (sent, received) from oRTP's end-of-call stats

The account is written into the linphonerc (``[proxy_0]`` whose ``reg_route`` is the proxy, so
calls go through it too, and ``[auth_info_0]``), so linphone registers by itself at start-up.
Each UA gets its own ``HOME`` and ``XDG_RUNTIME_DIR`` and is driven over ``--pipe NAME`` (the daemon
creates the unix socket ``/tmp/NAME``). Pitfalls of 5.1.65 (see the client recipes):

* ``MS_AUDIO_PRIO=NORMAL``: as root, mediastreamer2 runs its audio ticker SCHED_RR at top priority.
* Never make ALSA's ``null`` PCM the default device: it is unpaced, the ticker spins and starves
  a small machine. Without a sound card liblinphone streams from/to files; RTP flows only while
  ``incall-player-start`` plays a WAV.
* The daemon's ``call-stats`` command crashes it: RTP counts are read from the log after the call.

Every wait is bounded; the process is ended by its PID (``quit``, then SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import socket
import struct
import subprocess
import time
import wave
import weakref
from pathlib import Path

from .sipd_proc import _end_pid, _free_port

RUNNING = frozenset({"LinphoneCallStreamsRunning", "LinphoneCallConnected"})
ENDED = frozenset({"LinphoneCallError", "LinphoneCallEnd", "LinphoneCallReleased"})

RC = """[sip]
sip_port={udp}
sip_tcp_port={tcp}
sip_tls_port={tls}
guess_hostname=1
register_only_when_network_is_up=0
auto_net_state_mon=0
ipv6_migration_done=1
use_ipv6=0
inc_timeout=30
verify_server_certs={verify}
verify_server_cn={verify}
{root_ca}default_proxy=0
[net]
mtu=1300
[rtp]
audio_rtp_port=40000-44999
video_rtp_port=45000-49999
[video]
enabled=0
capture=0
display=0
automatically_initiate=0
automatically_accept=0
[sound]
echocancellation=0
[misc]
enable_basic_to_client_group_chat_room_migration=0
[storage]
uri=null
[proxy_0]
reg_proxy=<sip:{proxy};transport={transport}>
reg_route=<sip:{proxy};transport={transport};lr>
reg_identity=<sip:{user}@{domain}>
reg_expires={expires}
reg_sendregister=1
publish=0
dial_escape_plus=0
[auth_info_0]
username={user}
userid={user}
passwd={password}
domain={domain}
{auth_extra}"""


def linphone_binary() -> str | None:
    return shutil.which("linphone-daemon")


def tone_wav(directory: Path, seconds: int = 20, rate: int = 8000, freq: int = 440) -> Path:
    """A mono 16-bit tone to feed into a call with ``incall-player-start``."""
    path = Path(directory) / f"tone-{freq}.wav"
    if not path.exists():
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate)))
                                   for i in range(seconds * rate)))
    return path


class LinphoneError(RuntimeError):
    pass


class LinphoneUA:
    """One linphone-daemon process with its own HOME under tmp_path, one account."""

    def __init__(self, tmp_path: Path, user: str, password: str, *, proxy: str, domain: str = "example.test",
                 transport: str = "udp", expires: int = 600, auto_answer: bool = False,
                 algorithm: str | None = None, cafile: Path | str | None = None) -> None:
        """``cafile``: with transport="tls", the CA linphone verifies the server certificate against
        (mbedTLS matches DNS-type SANs only, hence DNS:127.0.0.1 in test certificates)."""
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError("transport must be udp, tcp or tls")
        self.user, self.domain, self.transport = user, domain, transport
        self.auto_answer = auto_answer
        self.dir = Path(tmp_path) / f"linphone-{user}-{random.randint(0, 1 << 30):x}"
        (self.dir / "home").mkdir(parents=True)
        (self.dir / "xdg").mkdir(mode=0o700)
        self.sip_port = _free_port("127.0.0.1", None)
        # ``algorithm`` pins the auth_info to one digest algorithm (liblinphone then answers only it)
        auth_extra = f"algorithm={algorithm}\n" if algorithm else ""
        self.rc = self.dir / "linphonerc"
        self.rc.write_text(RC.format(
            udp=self.sip_port if transport == "udp" else -1, tcp=self.sip_port if transport == "tcp" else -1,
            tls=self.sip_port if transport == "tls" else -1, verify=1 if cafile else 0,
            root_ca=f"root_ca={cafile}\n" if cafile else "",
            proxy=proxy, transport=transport, user=user,
            domain=domain, password=password, expires=expires, auth_extra=auth_extra))
        self.pipe = f"sipd-lp-{os.getpid()}-{random.randint(0, 1 << 30):x}"
        self.sock_path = "/tmp/" + self.pipe
        self.log_path = self.dir / "linphone.log"
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self._out = None
        self._finalizer = weakref.finalize(self, LinphoneUA._cleanup, [None], self.sock_path)

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @staticmethod
    def _cleanup(holder: list, sock_path: str) -> None:
        proc = holder[0]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        try:
            os.unlink(sock_path)
        except OSError:
            pass

    def start(self, timeout: float = 10.0) -> "LinphoneUA":
        cmd = [linphone_binary() or "linphone-daemon", "--config", str(self.rc), "--log", str(self.log_path),
               "--pipe", self.pipe, "--disable-stats-events"]
        if self.auto_answer:
            cmd.append("--auto-answer")
        env = dict(os.environ, HOME=str(self.dir / "home"), XDG_RUNTIME_DIR=str(self.dir / "xdg"),
                   MS_AUDIO_PRIO="NORMAL", MS_VIDEO_PRIO="NORMAL")
        self._out = open(self.dir / "stdout.txt", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, LinphoneUA._cleanup, [self.proc], self.sock_path)
        deadline = time.monotonic() + timeout
        while self.sock is None and time.monotonic() < deadline and self.proc.poll() is None:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(self.sock_path)
                self.sock = s
            except OSError:
                s.close()
                time.sleep(0.1)
        if self.sock is None:
            self.stop()
            raise LinphoneError(f"linphone-daemon command socket {self.sock_path} did not appear:\n"
                                f"{self.log_tail()}")
        return self

    def cmd(self, line: str, timeout: float = 3.0, idle: float = 0.2) -> str:
        """Send one command; replies have no terminator, so read until ``idle`` seconds of silence."""
        assert self.sock is not None
        self.sock.sendall(line.encode() + b"\n")
        data = b""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        try:
            while time.monotonic() < deadline:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                self.sock.settimeout(idle)
        except (TimeoutError, socket.timeout):
            pass
        return data.decode("utf-8", "replace")

    def wait_registered(self, timeout: float = 10.0) -> str:
        """"OK", "ERR", "EXITED" or "TIMEOUT" (the last status is kept in ``last_status``)."""
        deadline = time.monotonic() + timeout
        self.last_status = ""
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return "EXITED"
            self.last_status = self.cmd("register-status ALL")
            if "LinphoneRegistrationOk" in self.last_status:
                return "OK"
            if "LinphoneRegistrationFailed" in self.last_status:
                return "ERR"
            time.sleep(0.2)
        return "TIMEOUT"

    def call(self, uri: str) -> str:
        out = self.cmd(f"call {uri}")
        if "Status: Ok" not in out:
            raise LinphoneError(f"call {uri} refused by linphone-daemon: {out!r}")
        return out

    def call_state(self) -> str:
        out = self.cmd("call-status")
        for line in out.splitlines():
            if line.startswith("State:"):
                return line.split(":", 1)[1].strip()
        return "" if "No current call" in out or "No active call" in out else out.strip()

    def wait_call_state(self, states: set[str] | frozenset[str], timeout: float = 10.0) -> str:
        """Poll until the call is in one of ``states`` ("" = no call); returns the last state seen."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.call_state()
            if state in states:
                return state
            time.sleep(0.2)
        return state

    def play(self, wav: Path) -> bool:
        return "Status: Ok" in self.cmd(f"incall-player-start {wav}")

    def terminate(self) -> bool:
        return "Status: Ok" in self.cmd("terminate")

    def stop(self) -> int | None:
        """``quit``, then SIGTERM, then SIGKILL -- this PID only."""
        if self.proc is not None and self.proc.poll() is None:
            if self.sock is not None:
                try:
                    self.cmd("quit", timeout=1)
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _end_pid(self.proc, 3)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._out is not None:
            self._out.close()
            self._out = None
        try:
            os.unlink(self.sock_path)
        except OSError:
            pass
        self._finalizer.detach()
        return self.proc.returncode if self.proc else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def rtp_packets(self) -> tuple[int, int] | None:
        """(sent, received) RTP packets of the last audio session, from oRTP's end-of-call
        statistics in the log (after ``terminate``)."""
        lines = self.log_text().splitlines()
        idx = [i for i, ln in enumerate(lines) if "AUDIO SESSION'S RTP STATISTICS" in ln]
        if not idx:
            return None
        sent = recv = None
        for ln in lines[idx[-1]:idx[-1] + 12]:
            parts = ln.split("-message-", 1)[-1].split()
            if len(parts) >= 3 and parts[2] == "packets":
                if parts[0] == "sent":
                    sent = int(parts[1])
                elif parts[0] == "received":
                    recv = int(parts[1])
        if sent is None or recv is None:
            return None
        return sent, recv
