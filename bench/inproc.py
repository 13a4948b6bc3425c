"""An in-process sipd for measuring the cost of a message: the daemon's own parts (App, Endpoint,
transaction layer, pipeline, proxy) built from a Config as lifecycle.startup builds them, with one
UDP listener whose socket is replaced by a list: bytes go in through
``Endpoint.datagram_received``, the bytes sipd sends come out of ``InProcessServer.take()``.

Nothing leaves the process, so a run is repeatable (instructions counted by callgrind give the
same figure run after run on a shared machine) and the client's work (building requests,
computing digests, parsing what sipd sent) stays outside the measured region: scenarios are
written as phases, each a list of datagrams fed by ``feed`` under the caller's ``measure``.

The clock is the loop's and is moved by hand (``advance``), so the transaction timers of a call
(Timer J/K end its transactions 32 s later) run when the scenario says, and are measured too.
"""

from __future__ import annotations

import asyncio
import gc
import io
import itertools
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sipd import logging as sipd_logging  # noqa: E402
from sipd.config import dump  # noqa: E402
from sipd.daemon.app import App, load_config  # noqa: E402
from sipd.daemon.lifecycle import tune_gc  # noqa: E402
from sipd.sip import auth as digest  # noqa: E402
from sipd.sip.message import Request, Response  # noqa: E402
from sipd.sip.parser import parse_message  # noqa: E402
from sipd.transport.base import Listener  # noqa: E402
from sipd.transport.manager import Transports  # noqa: E402

HOST = "127.0.0.1"
PORT = 5070
DOMAIN = HOST  # SIPp's scenarios register user@remote_ip, as bench/sipd_target.py provisions
CALLEE_PORT = 16000
Datagram = tuple[bytes, tuple]  # (bytes, ("udp", host, port, None))


class ClockedLoop(asyncio.SelectorEventLoop):
    """asyncio's loop with a clock the scenario moves (``manual``); real time until it is set,
    so that startup's awaits (the database thread) run as usual."""

    manual: float | None = None

    def time(self) -> float:
        return self.manual if self.manual is not None else super().time()


class CapturedUdp(Listener):
    """A UDP listener whose ``sendto`` appends to a list instead of calling the kernel."""

    proto = "udp"

    def __init__(self, host: str, port: int, out: list[tuple[bytes, tuple]]):
        super().__init__(host, port)
        self.out = out

    def sendto(self, data: bytes, host: str, port: int) -> None:
        self.out.append((data, ("udp", host, port, None)))

    def close(self) -> None:
        pass


def config_dict(db_path: Path, *, full: bool, auth: bool) -> dict[str, Any]:
    """bench/sipd_target.py's configuration (the one compare.sh measures against Kamailio)."""
    conf: dict[str, Any] = {
        "server": {"listen": [f"udp:{HOST}:{PORT}"], "workers": 1},
        "database": {"url": f"sqlite:///{db_path}"},
        "log": {"level": "warning"},
        "location": {"mode": "memory"},
        "registrar": {"max_expires": 86400},
        "auth": {"register": auth, "invite": False},
        "antiflood": {"enabled": False},
        "spam": {"enabled": False},
    }
    if not full:
        for section in ("acc", "dialog", "presence", "nat"):
            conf[section] = {"enabled": False}
    return conf


def provision(db_path: Path, users: int) -> None:
    from sipctl.lib import provision as prov
    from sipd.db import connect, schema

    db = connect(f"sqlite:///{db_path}")
    try:
        schema.create_all(db)
        with db.transaction():
            prov.add_domain(db, DOMAIN)
            for name, pw in [("callee", "calleepw"), *((user_name(i), password(i)) for i in range(users))]:
                prov.add_user(db, name, DOMAIN, pw)
    finally:
        db.close()


def user_name(i: int) -> str:
    return f"user{i:06d}"


def password(i: int) -> str:
    return f"pw{i:06d}"


class InProcessServer:
    """One sipd process's receive and send path, without sockets (see the module docstring)."""

    def __init__(self, workdir: Path, *, users: int = 1000, auth: bool = True, full: bool = False,
                 fixed: bool = False):
        db_path = workdir / "sipd-bench.db"
        if not db_path.exists():
            provision(db_path, users)
        cfg = workdir / f"sipd-{'auth' if auth else 'noauth'}.toml"
        cfg.write_text(dump(config_dict(db_path, full=full, auth=auth)))
        self.config = load_config(str(cfg))
        self.log = io.StringIO()
        sipd_logging.configure(self.config, stream=self.log)
        self.loop = ClockedLoop()
        asyncio.set_event_loop(self.loop)
        self.app = App(self.config)
        self.endpoint = self.app.endpoint
        if fixed:
            self.endpoint.mark = self.endpoint.hop.mark = "5eed0001"  # in branches and To tags
        self.out: list[tuple[bytes, tuple]] = []
        self.loop.run_until_complete(self._start(full))
        self.loop.manual = self.loop.time()
        if fixed:
            make_fixed(self)
        tune_gc()  # as the daemon does at the end of its startup

    async def _start(self, full: bool) -> None:
        app = self.app
        await app.start_core(self.loop)
        if full:
            await app.start_calls()
        app.build_pipeline()
        transports = Transports(self.endpoint, self.config.limits)
        listener = CapturedUdp(HOST, PORT, self.out)
        transports.listeners.append(listener)
        transports.udp4 = listener  # type: ignore[assignment]
        self.endpoint.attach(transports)
        self.endpoint.note_self_address(listener)

    def close(self) -> None:
        self.loop.manual = None
        self.loop.run_until_complete(self.app.close())
        self.loop.close()

    # -- driving it -------------------------------------------------------------------------------

    def feed(self, datagrams: Iterable[Datagram]) -> None:
        """Each datagram through the daemon's receive path, as the UDP listener hands it over."""
        receive = self.endpoint.datagram_received
        for data, source in datagrams:
            receive(data, source)

    def advance(self, seconds: float) -> None:
        """Move the clock and run the transaction timers that are due (the loop's timer callback)."""
        assert self.loop.manual is not None
        self.loop.manual += seconds
        endpoint = self.endpoint
        endpoint.layer.handle_timer(self.loop.manual)
        endpoint.process_events(self.loop.manual)

    def take(self) -> list[tuple[bytes, tuple]]:
        out, self.out[:] = list(self.out), []
        return out

    def errors(self) -> str:
        """What sipd logged at warning or above (a benchmark that logs a traceback is broken)."""
        return self.log.getvalue()


def make_fixed(server: InProcessServer) -> None:
    """Every random or clock-derived value sipd writes made fixed (the nonce key and random part,
    the wall clock of nonces and expiries, the loop clock), so that two versions of the code can
    be compared byte for byte (with PYTHONHASHSEED set: stateless To tags are a hash)."""
    from sipd.daemon import endpoint as endpoint_module
    from sipd.services import challenge as challenge_module

    auth = server.endpoint.authenticator
    auth.secret = b"k" * 32
    counter = itertools.count(1)
    auth.rand = lambda n: next(counter).to_bytes(n, "big")  # a nonce is used once per REGISTER pair
    server.loop.manual = 1000.0

    class FixedWall:
        @staticmethod
        def time() -> float:
            return 1_800_000_000.0

    endpoint_module.time = challenge_module.time = FixedWall  # type: ignore[assignment]


# -- the clients' side: SIPp's scenarios (bench/scenarios/*.xml) as bytes ----------------------------

def src(port: int) -> tuple:
    return ("udp", HOST, port, None)


def register(i: int, seq: int, port: int, cseq: int = 1, authorization: str = "") -> bytes:
    user = user_name(i)
    auth = f"{authorization}\r\n" if authorization else ""
    return (f"REGISTER sip:{HOST}:{PORT} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-{seq}-{cseq}-0;rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{HOST}:{PORT}>;tag={seq}SIPpTag00{i}\r\n"
            f"To: <sip:{user}@{HOST}:{PORT}>\r\n"
            f"Call-ID: {seq}-bench@{HOST}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{HOST}:{port};transport=UDP>\r\n"
            f"{auth}"
            "Expires: 3600\r\n"
            "User-Agent: sipp-bench\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def authorization(challenge: Response, user: str, pw: str, uri: str, method: str = "REGISTER") -> str:
    """The Authorization SIPp computes for a 401 (qop=auth, as the challenge offers)."""
    params = digest.parse_auth_params(challenge.get("WWW-Authenticate").split(" ", 1)[1])
    realm, nonce = params["realm"], params["nonce"]
    creds = digest.Credentials(username=user, realm=realm, nonce=nonce, uri=uri, response="", algorithm="MD5",
                               cnonce="6b8b4567", nc="00000001", qop="auth")
    response = digest.expected_response(creds, method, digest.ha1_md5(user, realm, pw))
    return (f'Authorization: Digest username="{user}",realm="{realm}",cnonce="6b8b4567",nc=00000001,qop=auth,'
            f'uri="{uri}",nonce="{nonce}",response="{response}",algorithm=MD5')


SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def invite(n: int, port: int) -> bytes:
    return (f"INVITE sip:callee@{HOST}:{PORT} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-{n}-1-0;rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller{n}@{HOST}:{port}>;tag={n}SIPpTag001\r\n"
            f"To: <sip:callee@{HOST}:{PORT}>\r\n"
            f"Call-ID: call-{n}-bench@{HOST}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@{HOST}:{port};transport=UDP>\r\n"
            "User-Agent: sipp-bench\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(SDP)}\r\n\r\n{SDP}").encode()


def uas_response(req: Request, status: int, reason: str, to_tag: str | None, sdp: bool = False) -> bytes:
    """call_uas.xml's answer: the request's Via, From, To (+ tag), Call-ID, CSeq, Record-Route."""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in req.get_all("Via")]
    lines.append(f"From: {req.get('From')}")
    lines.append(f"To: {req.get('To')}" + (f";tag={to_tag}" if to_tag else ""))
    lines += [f"Call-ID: {req.get('Call-ID')}", f"CSeq: {req.get('CSeq')}"]
    if status < 300 and req.method == "INVITE":
        lines += [f"Record-Route: {r}" for r in req.get_all("Record-Route")]
    lines.append(f"Contact: <sip:callee@{HOST}:{CALLEE_PORT};transport=UDP>")
    body = SDP if sdp else ""
    if sdp:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def in_dialog(method: str, n: int, port: int, ok: Response, cseq: int) -> bytes:
    """call_uac.xml's ACK and BYE: to the 200's Contact, through its Record-Route set."""
    routes = "".join(f"Route: {r}\r\n" for r in ok.get_all("Record-Route"))
    target = ok.contacts[0].uri
    return (f"{method} {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-{n}-{cseq}-{method};rport\r\n"
            f"{routes}"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller{n}@{HOST}:{port}>;tag={n}SIPpTag001\r\n"
            f"To: {ok.get('To')}\r\n"
            f"Call-ID: call-{n}-bench@{HOST}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:caller@{HOST}:{port};transport=UDP>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


# -- scenarios: a generator of phases; each yields the datagrams to feed, gets what sipd sent ------

Phase = Iterator[list[Datagram]]


def expect(sent: list[tuple[bytes, tuple]], count: int, status: int | None = None, method: str | None = None) -> list[Any]:
    msgs = [parse_message(data) for data, _ in sent]
    got = [m for m in msgs if (status is not None and isinstance(m, Response) and m.status == status)
           or (method is not None and isinstance(m, Request) and m.method == method)]
    if len(got) != count:
        seen = [getattr(m, "status", None) or getattr(m, "method", None) for m in msgs]
        raise AssertionError(f"expected {count} x {status or method}, sipd sent {seen}")
    return got


def reg_scenario(batch: int, start: int, users: int) -> Iterator[list[Datagram]]:
    """REGISTER without credentials -> 200 (bench/scenarios/reg.xml)."""
    sent = yield [(register((start + k) % users, start + k, 20000 + k % 5000), src(20000 + k % 5000)) for k in range(batch)]
    expect(sent, batch, status=200)


def reg_auth_scenario(batch: int, start: int, users: int) -> Iterator[list[Datagram]]:
    """REGISTER -> 401 -> REGISTER with Authorization -> 200 (bench/scenarios/reg_auth.xml)."""
    ports = [20000 + k % 5000 for k in range(batch)]
    sent = yield [(register((start + k) % users, start + k, p), src(p)) for k, p in enumerate(ports)]
    challenges = expect(sent, batch, status=401)
    second = []
    for k, (p, ch) in enumerate(zip(ports, challenges)):
        i = (start + k) % users
        hdr = authorization(ch, user_name(i), password(i), f"sip:{HOST}:{PORT}")
        second.append((register(i, start + k, p, 2, hdr), src(p)))
    sent = yield second
    expect(sent, batch, status=200)


def call_scenario(batch: int, start: int, users: int) -> Iterator[list[Datagram]]:
    """INVITE -> 100, 180, 200 -> ACK -> BYE -> 200 through the proxy (call_uac.xml, call_uas.xml),
    then the clock moves 40 s so that the transactions end (their Timer J/K): 7 messages in, 8 out."""
    ports = [30000 + k % 5000 for k in range(batch)]
    sent = yield [(invite(start + k, p), src(p)) for k, p in enumerate(ports)]
    expect(sent, batch, status=100)
    invites = expect(sent, batch, method="INVITE")
    tags = [f"{start + k}SIPpTag01" for k in range(batch)]
    sent = yield [(uas_response(r, 180, "Ringing", t), src(CALLEE_PORT)) for r, t in zip(invites, tags)]
    expect(sent, batch, status=180)
    sent = yield [(uas_response(r, 200, "OK", t, sdp=True), src(CALLEE_PORT)) for r, t in zip(invites, tags)]
    oks = expect(sent, batch, status=200)
    by_call = {ok.call_id: ok for ok in oks}
    oks = [by_call[f"call-{start + k}-bench@{HOST}"] for k in range(batch)]
    sent = yield [(in_dialog("ACK", start + k, p, ok, 1), src(p)) for k, (p, ok) in enumerate(zip(ports, oks))]
    expect(sent, batch, method="ACK")
    sent = yield [(in_dialog("BYE", start + k, p, ok, 2), src(p)) for k, (p, ok) in enumerate(zip(ports, oks))]
    byes = expect(sent, batch, method="BYE")
    sent = yield [(uas_response(r, 200, "OK", None), src(CALLEE_PORT)) for r in byes]
    expect(sent, batch, status=200)
    yield []  # the timers' phase: nothing fed, the clock moves (see run_scenario)


SCENARIOS: dict[str, tuple[Callable[..., Iterator[list[Datagram]]], bool]] = {
    "reg": (reg_scenario, False),  # (phases, REGISTER challenged)
    "reg_auth": (reg_auth_scenario, True),
    "call": (call_scenario, True),
}


def register_callee(server: InProcessServer) -> None:
    """The callee registers (with its digest, as the UAS side of the benchmark does)."""
    ref = (f"REGISTER sip:{HOST}:{PORT} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{CALLEE_PORT};branch=z9hG4bK-callee-{{c}};rport\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:callee@{HOST}:{PORT}>;tag=callee\r\nTo: <sip:callee@{HOST}:{PORT}>\r\n"
           f"Call-ID: callee@{HOST}\r\nCSeq: {{c}} REGISTER\r\nContact: <sip:callee@{HOST}:{CALLEE_PORT};transport=UDP>\r\n"
           "{auth}Expires: 86400\r\nContent-Length: 0\r\n\r\n")
    server.feed([(ref.format(c=1, auth="").encode(), src(CALLEE_PORT))])
    sent = server.take()
    first = parse_message(sent[0][0])
    if isinstance(first, Response) and first.status == 401:
        hdr = authorization(first, "callee", "calleepw", f"sip:{HOST}:{PORT}")
        server.feed([(ref.format(c=2, auth=hdr + "\r\n").encode(), src(CALLEE_PORT))])
        sent = server.take()
    expect(sent, 1, status=200)


@contextmanager
def server_for(scenario: str, *, users: int, full: bool, fixed: bool = False) -> Iterator[InProcessServer]:
    with tempfile.TemporaryDirectory(prefix="sipd-inproc-") as tmp:
        server = InProcessServer(Path(tmp), users=users, auth=SCENARIOS[scenario][1], full=full, fixed=fixed)
        try:
            register_callee(server)
            yield server
        finally:
            server.close()


def run_scenario(server: InProcessServer, scenario: str, *, batch: int, start: int, users: int,
                 measure: Callable[[Callable[[], None]], None], seen: Any = None) -> int:
    """One batch of ``batch`` operations; every phase's feeding (and a call's timers) runs inside
    ``measure``; ``seen.update(bytes)`` gets everything sipd sent. Returns the number of operations."""
    phases = SCENARIOS[scenario][0](batch, start, users)
    datagrams = next(phases)
    while True:
        if datagrams:
            measure(lambda: server.feed(datagrams))
        else:
            measure(lambda: server.advance(40.0))
        sent = server.take()
        if seen is not None:
            for data, dest in sent:
                seen.update(repr(dest).encode() + data)
        try:
            datagrams = phases.send(sent)
        except StopIteration:
            break
    server.loop.manual += 0.5  # type: ignore[operator]  # the next batch starts a little later
    return batch


def collect_garbage_now() -> None:
    """Outside the measured region: start each run from the same collector state."""
    gc.collect()
