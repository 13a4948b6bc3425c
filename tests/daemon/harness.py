"""Live-daemon test harness: the real ``sipd`` as the daemon tests start it (``live_daemon``, a
``SipdProcess`` of tests/helpers/sipd_proc.py with their shared defaults), and socket-based user
agents (UDP or TCP) that build requests by hand and answer like a phone would.

Everything is bounded: each wait has a timeout, every loop a count.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from sipd.sip import auth as digest
from sipd.sip.message import Request, Response
from sipd.sip.parser import parse_message
from tests.helpers.sipd_proc import SipdProcess, deep_merge

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "example.test"


def live_daemon(tmp: Path, overrides: dict[str, dict[str, Any]] | None = None, *, db_url: str | None = None,
                port: int | None = None) -> SipdProcess:
    """The real sipd (tests/helpers/sipd_proc.py) as the tests beside this file run it: UDP and TCP
    on one free port, example.test its domain, its rows written by ``add_subscriber`` (no sipctl
    run), and the SQLite database ``tmp/sipd.db`` shared by every daemon a test starts in ``tmp``.
    Antiflood is off: every test client is 127.0.0.1, which the flood counter would ban
    (tests/services cover antiflood)."""
    shared = {"server": {"domains": [DOMAIN]}, "antiflood": {"enabled": False}}
    return SipdProcess(tmp, deep_merge(shared, overrides or {}), db_url or f"sqlite:///{tmp}/sipd.db", port=port,
                       provision=False)


def serving(d: SipdProcess, users: dict[str, str]) -> Iterator[SipdProcess]:
    """A module fixture's body: add ``users`` (name -> password), start ``d``, yield it; afterwards
    it must still run, stop cleanly and have logged no traceback."""
    for user, password in users.items():
        add_subscriber(d.db_url, user, password)
    d.start()
    yield d
    assert d.running(), d.log_text()
    assert d.stop() == 0
    assert "Traceback" not in d.log_text(), d.log_text()


def add_subscriber(db_url: str, user: str, password: str, domain: str = DOMAIN) -> None:
    from sipd.db import connect, schema

    with connect(db_url) as db:
        schema.create_all(db)
        db.execute("DELETE FROM subscriber WHERE username = ? AND domain = ?", (user, domain))
        db.execute("INSERT INTO subscriber (username, domain, password, email_address, ha1, ha1_sha256, ha1_sha512t256)"
                   " VALUES (?, ?, '', '', ?, ?, '')",
                   (user, domain, digest.ha1_md5(user, domain, password), digest.ha1_sha256(user, domain, password)))


_ids = itertools.count(1)


class UA:
    """A minimal SIP user agent on a real socket (UDP, or one TCP connection to the server)."""

    def __init__(self, server_port: int, user: str, *, transport: str = "udp", password: str = "",
                 domain: str = DOMAIN, host: str = "127.0.0.1", server_host: str | None = None):
        self.user, self.password, self.domain, self.transport = user, password, domain, transport
        self.server = (server_host or host, server_port)  # server_host: a sipd node on 127.0.0.2
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((host, 0))
        else:
            self.sock = socket.create_connection(self.server, timeout=5, source_address=(host, 0))
        self.port = self.sock.getsockname()[1]
        self.host = host
        self.buf = b""
        self.cseq = 1
        self.call_id = f"{user}-{next(_ids)}-{os.getpid()}@test"
        # Final responses this UA sent, by the request's top Via and CSeq: a retransmission of an
        # answered request (the server's timer fired before our answer reached it, as happens on a
        # loaded machine) is answered again, as a UAS transaction does, instead of surprising the
        # test that waits for its next response.
        self.answered: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UA:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def contact(self) -> str:
        t = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{self.user}@{self.host}:{self.port}{t}>"

    def via(self, branch: str | None = None) -> str:
        return f"SIP/2.0/{self.transport.upper()} {self.host}:{self.port};branch={branch or 'z9hG4bK' + os.urandom(6).hex()};rport"

    # -- raw I/O ------------------------------------------------------------------------------------
    def send(self, data: bytes | str, dest: tuple[str, int] | None = None) -> None:
        if isinstance(data, str):
            data = data.encode()
        if self.transport == "udp":
            self.sock.sendto(data, dest or self.server)
        else:
            self.sock.sendall(data)

    def recv(self, timeout: float = 3.0) -> Request | Response:
        deadline = time.monotonic() + timeout
        if self.transport == "udp":
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.user}: nothing received in {timeout}s")
                r, _, _ = select.select([self.sock], [], [], left)
                if r:
                    data, _ = self.sock.recvfrom(65535)
                    if data.strip():
                        return parse_message(data)
        pending = getattr(self, "_pending", [])
        self._pending = pending
        if pending:
            return pending.pop(0)
        parser = self._stream_parser()
        for data in self._stream_reads(timeout):
            pending.extend(parser.feed(data))
            if pending:
                return pending.pop(0)
        raise AssertionError("unreachable")

    def recv_raw(self, timeout: float = 3.0) -> bytes:
        """The next message on a stream connection, as received and unparsed (a 400 repeats the
        header that made a request unparsable, which the parser of ``recv`` refuses too)."""
        assert self.transport != "udp" and not getattr(self, "_pending", None)
        parser = self._stream_parser()
        for data in self._stream_reads(timeout):
            got = parser.frames(data)
            if got:
                assert len(got) == 1, f"more than one message: {got!r}"
                return got[0]
        raise AssertionError("unreachable")

    def _stream_parser(self) -> Any:
        from sipd.sip.framing import StreamParser

        self._parser = getattr(self, "_parser", None) or StreamParser()
        return self._parser

    def _stream_reads(self, timeout: float) -> Iterator[bytes]:
        """What the connection brings, read after read, until ``timeout`` (TimeoutError)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.user}: nothing received in {timeout}s")
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                data = self.sock.recv(65535)
                if not data:
                    raise ConnectionError("server closed the connection")
                yield data

    def expect(self, *statuses: int, timeout: float = 3.0, skip: tuple[int, ...] = (100,)) -> Response:
        for _ in range(20):
            msg = self.recv(timeout)
            if isinstance(msg, Response) and msg.status in skip and msg.status not in statuses:
                continue
            if isinstance(msg, Request) and self._answer_again(msg):
                continue
            assert isinstance(msg, Response), f"expected response {statuses}, got {msg!r}"
            assert not statuses or msg.status in statuses, f"expected {statuses}, got {msg.status} {msg.reason}"
            return msg
        raise AssertionError("too many skipped responses")

    def _answer_again(self, req: Request) -> bool:
        sent = self.answered.get((req.get("Via") or "", req.get("CSeq") or ""))
        if sent is not None:
            self.send(sent)
        return sent is not None

    def expect_request(self, method: str, timeout: float = 3.0) -> Request:
        for _ in range(20):
            msg = self.recv(timeout)
            if isinstance(msg, Request) and msg.method == method:
                return msg
            if isinstance(msg, Request) and msg.method != method:
                continue
        raise AssertionError(f"no {method} received")

    def nothing(self, timeout: float = 0.3) -> None:
        try:
            msg = self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {msg!r}")

    # -- building -----------------------------------------------------------------------------------
    def request(self, method: str, uri: str, *, to: str | None = None, headers: list[str] = (), body: str = "",
                call_id: str | None = None, cseq: int | None = None, from_tag: str = "ft1", via: str | None = None) -> str:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        to = to or f"<sip:{self.user}@{self.domain}>"
        lines = [f"{method} {uri} SIP/2.0", f"Via: {via or self.via()}", "Max-Forwards: 70",
                 f"From: <sip:{self.user}@{self.domain}>;tag={from_tag}", f"To: {to}",
                 f"Call-ID: {call_id or self.call_id}", f"CSeq: {cseq} {method}", f"Contact: {self.contact}",
                 *headers, f"Content-Length: {len(body.encode())}", "", body]
        return "\r\n".join(lines)

    def authorization(self, challenge_resp: Response, method: str, uri: str, *, proxy: bool = False,
                      password: str | None = None) -> str:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        value = challenge_resp.get(name)
        assert value, f"no {name} in {challenge_resp!r}"
        params = digest.parse_auth_params(value.split(" ", 1)[1])
        realm, nonce = params["realm"], params["nonce"]
        algorithm = params.get("algorithm", "MD5")
        pw = self.password if password is None else password
        ha1 = digest.ha1_sha256(self.user, realm, pw) if algorithm.upper() == "SHA-256" else digest.ha1_md5(self.user, realm, pw)
        creds = digest.Credentials(username=self.user, realm=realm, nonce=nonce, uri=uri, response="", algorithm=algorithm,
                                   cnonce="abcdef", nc="00000001", qop="auth")
        response = digest.expected_response(creds, method, ha1)
        hdr = "Proxy-Authorization" if proxy else "Authorization"
        return (f'{hdr}: Digest username="{self.user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                f'response="{response}", algorithm={algorithm}, cnonce="abcdef", nc=00000001, qop=auth')

    def register(self, expires: int = 600, *, contact: str | None = None, password: str | None = None,
                 extra: list[str] = ()) -> Response:
        uri = f"sip:{self.domain}"
        headers = [f"Expires: {expires}", *extra]
        req = self.request("REGISTER", uri, headers=headers)
        if contact is not None:
            req = req.replace(f"Contact: {self.contact}", f"Contact: {contact}")
        self.send(req)
        resp = self.expect(200, 401, 403, 423, 400, 503)
        if resp.status != 401:
            return resp
        auth = self.authorization(resp, "REGISTER", uri, password=password)
        req = self.request("REGISTER", uri, headers=[*headers, auth])
        if contact is not None:
            req = req.replace(f"Contact: {self.contact}", f"Contact: {contact}")
        self.send(req)
        return self.expect(200, 401, 403, 423, 400, 503)

    def respond(self, req: Request, status: int, reason: str = "OK", *, to_tag: str = "callee1", body: str = "",
                headers: list[str] = ()) -> None:
        lines = [f"SIP/2.0 {status} {reason}"]
        for v in req.get_all("Via"):
            lines.append(f"Via: {v}")
        for rr in req.get_all("Record-Route"):
            lines.append(f"Record-Route: {rr}")
        to = req.get("To") or ""
        if status > 100 and ";tag=" not in to:
            to += f";tag={to_tag}"
        lines += [f"From: {req.get('From')}", f"To: {to}", f"Call-ID: {req.call_id}", f"CSeq: {req.get('CSeq')}",
                  f"Contact: {self.contact}", *headers, f"Content-Length: {len(body.encode())}", "", body]
        data = "\r\n".join(lines)
        if status >= 200:
            self.answered[(req.get("Via") or "", req.get("CSeq") or "")] = data
        # over UDP to the top Via (RFC 3261 §18.2.2): the proxy that sent the request, which is not
        # always the one this UA registered with (several sipd nodes)
        self.send(data, self._via_address(req) if self.transport == "udp" else None)

    def _via_address(self, req: Request) -> tuple[str, int] | None:
        """The request's top Via as an address to send to, when it is one (an IP literal)."""
        import ipaddress

        host, port = req.vias[0].response_address()
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None  # a name (an advertised address): the server this UA talks to
        return host.strip("[]"), port


def message_reaches(caller: UA, callee: UA) -> bool:
    """A MESSAGE from ``caller`` (answering the 407 challenge) to ``callee``'s AOR reaches
    ``callee``, and its 200 comes back: the proxy found the callee's registration."""
    uri = f"sip:{callee.user}@{callee.domain}"
    headers = ["Content-Type: text/plain"]
    caller.send(caller.request("MESSAGE", uri, to=f"<{uri}>", body="hi", headers=headers))
    resp = caller.expect(407)
    auth = caller.authorization(resp, "MESSAGE", uri, proxy=True)
    caller.send(caller.request("MESSAGE", uri, to=f"<{uri}>", body="hi", headers=[*headers, auth]))
    msg = callee.expect_request("MESSAGE")
    callee.respond(msg, 200)
    return caller.expect(200).status == 200
