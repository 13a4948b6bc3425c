"""A tiny blocking SIP user agent over UDP for the security tests and bench/bench_flood.py.

Just enough to REGISTER with digest auth (MD5, qop=auth), send an INVITE, and see what reaches a
registered contact -- with exact timings, from a chosen loopback source address. Every wait is
bounded by a timeout.
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
import time
from dataclasses import dataclass, field

_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    raw: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def parse(data: bytes) -> tuple[str, dict[str, list[str]]]:
    """First line and headers (lowercased names, compact forms not expanded)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    lines = head.split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], headers


def digest(method: str, uri: str, user: str, password: str, challenge: str, nc: int = 1) -> str:
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM.finditer(challenge)}
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    out = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5'
    if "auth" in (params.get("qop") or "").split(","):
        cnonce = f"{random.getrandbits(48):x}"
        ncs = f"{nc:08x}"
        resp = hashlib.md5(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        out += f', response="{resp}", qop=auth, nc={ncs}, cnonce="{cnonce}"'
    else:
        resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        out += f', response="{resp}"'
    if params.get("opaque"):
        out += f', opaque="{params["opaque"]}"'
    return out


class UA:
    """One UDP socket on ``host`` (a loopback address), talking to the server at ``server``."""

    def __init__(self, server: tuple[str, int], host: str = "127.0.0.1", user_agent: str = "sectest/1.0"):
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()
        self.user_agent = user_agent
        self.cseq = 0
        self.call_id = f"{random.getrandbits(64):x}@{host}"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UA:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def recv(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65535)
            return data
        except (TimeoutError, socket.timeout):
            return None

    def _request(self, method: str, ruri: str, from_uri: str, to_uri: str, *, extra: list[str] = (),
                 call_id: str | None = None, body: bytes = b"") -> tuple[bytes, str]:
        self.cseq += 1
        branch = f"z9hG4bK{random.getrandbits(64):x}"
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <{from_uri}>;tag={random.getrandbits(32):x}",
            f"To: <{to_uri}>",
            f"Call-ID: {call_id or self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{from_uri.split(':', 1)[1].split('@')[0]}@{self.host}:{self.port}>",
            f"User-Agent: {self.user_agent}",
            *extra,
            f"Content-Length: {len(body)}",
            "", "",
        ]
        return "\r\n".join(lines).encode() + body, branch

    def transaction(self, data: bytes, branch: str, timeout: float) -> Reply | None:
        """Send and wait for the final response of this branch (retransmitting as RFC 3261 T1)."""
        deadline = time.monotonic() + timeout
        t1, next_tx = 0.5, time.monotonic() + 0.5
        self.send(data)
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if now >= next_tx:
                self.send(data)
                t1 = min(t1 * 2, 4.0)
                next_tx = now + t1
            raw = self.recv(max(0.001, min(deadline, next_tx) - now))
            if raw is None or not raw.startswith(b"SIP/2.0 "):
                continue
            first, headers = parse(raw)
            via = (headers.get("via") or headers.get("v") or [""])[0]
            if branch not in via:
                continue
            status = int(first.split()[1])
            if status >= 200:
                return Reply(status, first.split(" ", 2)[2] if first.count(" ") >= 2 else "", headers, raw)

    def register(self, user: str, password: str, domain: str, *, expires: int = 300,
                 timeout: float = 5.0) -> Reply | None:
        aor = f"sip:{user}@{domain}"
        ruri = f"sip:{domain}"
        extra = [f"Expires: {expires}"]
        data, branch = self._request("REGISTER", ruri, aor, aor, extra=extra)
        reply = self.transaction(data, branch, timeout)
        if reply is None or reply.status not in (401, 407):
            return reply
        challenge = reply.header("www-authenticate") or reply.header("proxy-authenticate") or ""
        name = "Authorization" if reply.status == 401 else "Proxy-Authorization"
        data, branch = self._request("REGISTER", ruri, aor, aor,
                                     extra=extra + [f"{name}: {digest('REGISTER', ruri, user, password, challenge)}"])
        return self.transaction(data, branch, timeout)

    def invite(self, ruri: str, from_uri: str = "sip:caller@outside.example", timeout: float = 2.0) -> Reply | None:
        body = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                b"m=audio 9 RTP/AVP 0\r\n")
        data, branch = self._request("INVITE", ruri, from_uri, ruri, body=body,
                                     call_id=f"{random.getrandbits(64):x}@{self.host}",
                                     extra=["Content-Type: application/sdp"])
        return self.transaction(data, branch, timeout)

    def answer_incoming(self, timeout: float, status: int = 486) -> str | None:
        """Wait for a request (an INVITE reaching this registered contact); answer it; return its R-URI."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = self.recv(max(0.001, deadline - time.monotonic()))
            if raw is None or raw.startswith(b"SIP/2.0 "):
                continue
            first, headers = parse(raw)
            method, ruri = first.split()[:2]
            if method == "ACK":
                continue
            reply = [f"SIP/2.0 {status} {'Busy Here' if status == 486 else 'OK'}"]
            for name in ("via", "from", "call-id", "cseq"):
                reply += [f"{name.title()}: {v}" for v in headers.get(name, [])]
            reply += [f"To: {headers.get('to', [''])[0]};tag=uas{random.getrandbits(20)}", "Content-Length: 0", "", ""]
            via = headers.get("via", [""])[0]
            m = re.search(r"received=([^;\s]+)", via)
            host_port = via.split()[1].split(";")[0] if " " in via else ""
            host, _, port = host_port.rpartition(":")
            dest = (m.group(1) if m else host, int(m2.group(1)) if (m2 := re.search(r"rport=(\d+)", via)) else int(port or 5060))
            self.sock.sendto("\r\n".join(reply).encode(), dest)
            return ruri
        return None


def ping(server: tuple[str, int], host: str, timeout: float = 1.0) -> int | None:
    """OPTIONS to the server itself from source address ``host``; the status, or None."""
    with UA(server, host=host) as ua:
        data, branch = ua._request("OPTIONS", f"sip:{server[0]}:{server[1]}", "sip:ping@outside.example",
                                   f"sip:{server[0]}:{server[1]}")
        reply = ua.transaction(data, branch, timeout)
    return None if reply is None else reply.status
