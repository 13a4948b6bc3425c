"""systemd readiness notification (sd_notify protocol) without libsystemd.

``Notifier.from_env()`` reads ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace)
and ``$WATCHDOG_USEC``. Every method is a no-op when sipd was not started by systemd, so callers
never need to check. Reference: sd_notify(3).
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int = 0):
        self.address = address
        self.watchdog_interval = watchdog_usec / 1e6 / 2 if watchdog_usec > 0 else 0.0
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls) -> Notifier:
        addr = os.environ.get("NOTIFY_SOCKET") or None
        try:
            wd = int(os.environ.get("WATCHDOG_USEC", "0"))
            if os.environ.get("WATCHDOG_PID") and int(os.environ["WATCHDOG_PID"]) != os.getpid():
                wd = 0
        except ValueError:
            wd = 0
        return cls(addr, wd)

    def _send(self, text: str) -> bool:
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode(), addr)
            return True
        except OSError as exc:
            logger.warning("cannot notify systemd at %s: %s", self.address, exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self._send("READY=1\n" + (f"STATUS={status}\n" if status else "") + f"MAINPID={os.getpid()}\n")

    def reloading(self) -> bool:
        return self._send("RELOADING=1\n")

    def stopping(self) -> bool:
        return self._send("STOPPING=1\n")

    def status(self, text: str) -> bool:
        return self._send(f"STATUS={text}\n")

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1\n")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
