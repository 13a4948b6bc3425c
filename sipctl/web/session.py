"""Panel sessions: who is logged in, their CSRF token, and messages for the next page.

Sessions live in the panel's memory, keyed by a random id sent in an HttpOnly, SameSite=Strict
cookie; a restart of the panel logs everyone out, which is the safe direction. A login gets a fresh
id (no session fixation). The number of sessions is capped so that a flood of login-page requests
cannot grow memory without bound: the oldest are evicted first.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

COOKIE = "sipd_panel"
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str
    csrf: str
    expires: float
    username: str = ""
    role: str = ""
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text): ok | error | info
    trace: list[Any] = field(default_factory=list)  # the last SIP Trace capture, for its pcap

    @property
    def logged_in(self) -> bool:
        return bool(self.username)

    @property
    def can_write(self) -> bool:
        from ..lib.webadmin import READ_WRITE

        return self.role == READ_WRITE

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))
        del self.flashes[:-10]

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out

    def csrf_ok(self, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, timeout: float, clock: callable = time.monotonic) -> None:  # type: ignore[valid-type]
        self.timeout = timeout
        self.clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def new(self, *, username: str = "", role: str = "") -> Session:
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.popitem(last=False)
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock() + self.timeout,
                    username, role)
        self._by_id[s.id] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._by_id.get(sid)
        if s is None:
            return None
        now = self.clock()
        if s.expires < now:
            del self._by_id[sid]
            return None
        s.expires = now + self.timeout
        self._by_id.move_to_end(sid)
        return s

    def drop(self, sid: str) -> None:
        self._by_id.pop(sid, None)

    def drop_user(self, username: str) -> None:
        for sid in [k for k, s in self._by_id.items() if s.username == username]:
            del self._by_id[sid]
