"""The endpoints of ``bench/tls_endpoints.py``: many SIP user agents on persistent TLS connections.

One client process holds a share of the endpoints. Each endpoint is one asyncio protocol on its own
TLS connection from its own source address and behaves as an RFC 5626 phone would:

* it REGISTERs with digest (REGISTER -> 401 -> REGISTER with credentials -> 200), with
  ``+sip.instance``/``reg-id`` and ``;ob``, then refreshes every R seconds (R drawn once per endpoint
  in ``refresh``), reusing the server's nonce with the next nonce-count as phones do (a stale nonce
  costs one more 401); it asks for ``Expires: R + 32`` so a refresh always comes before expiry;
* it sends a double-CRLF keep-alive ping every 80-100 % of ``keepalive`` seconds (RFC 5626 §4.4.1)
  and counts the CRLF pongs (a ping still unanswered when the next is due counts as missed);
* the first refresh and the first ping come at a random point of their interval, so a run sees the
  steady rate of a population that registered at random times, not a burst one interval after the
  ramp;
* as a callee it answers INVITE with 200 (SDP), BYE and anything else with 200; as a caller it sends
  INVITE (answering the 407 challenge), ACKs the 200 along the Record-Route set and sends BYE after
  ``hold`` seconds. Call setup is measured from the first INVITE to the 200 (the challenge round
  trip included).

A connection that closes is not reopened: the report counts endpoints that are still connected and
registered at the end. Commands come from the parent over a ``multiprocessing`` pipe (``serve``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import ssl
import sys
import time
from collections import Counter
from typing import Any

from sipd import eventloop

SDP = ("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n")
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
            "c": "content-type"}
_CL = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I)
_PARAM = re.compile(r'([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')
_EXPIRES = re.compile(r";\s*expires\s*=\s*(\d+)", re.I)
_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")
CALL_TIMEOUT = 8.0  # seconds from the first INVITE until a call without 200 counts as timed out
REGISTER_TIMEOUT = 20.0


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest(header: str, user: str, password: str, method: str, uri: str, challenge: dict[str, str], nc: int) -> str:
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"', "algorithm=MD5"]
    if "auth" in challenge.get("qop", ""):
        cnonce = f"{random.getrandbits(48):x}"
        response = md5(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
        parts += [f'response="{response}"', "qop=auth", f"nc={nc:08x}", f'cnonce="{cnonce}"']
    else:
        parts.append(f'response="{md5(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return f"{header}: Digest {', '.join(parts)}"


def parse_challenge(value: str) -> dict[str, str]:
    return {k.lower(): v.strip('"') for k, v in _PARAM.findall(value.split(" ", 1)[1] if " " in value else value)}


class Message:
    """One received message: start line, headers in order (lower-case long names), body."""

    __slots__ = ("first", "headers", "body")

    def __init__(self, head: str, body: bytes) -> None:
        lines = head.split("\r\n")
        self.first = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            self.headers.append((_COMPACT.get(name, name), value.strip()))
        self.body = body

    def get(self, name: str) -> str:
        return next((v for n, v in self.headers if n == name), "")

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    @property
    def status(self) -> int:
        return int(self.first[8:11]) if self.first.startswith("SIP/2.0 ") else 0

    @property
    def cseq_method(self) -> str:
        return self.get("cseq").rsplit(" ", 1)[-1].upper()


class Call:
    __slots__ = ("callee", "call_id", "tag", "cseq", "t0", "auth", "answered", "timer", "route", "target", "to")

    def __init__(self, callee: str, call_id: str, t0: float) -> None:
        self.callee, self.call_id, self.t0 = callee, call_id, t0
        self.tag = f"{random.getrandbits(40):x}"
        self.cseq = 1
        self.auth = False
        self.answered = False
        self.timer: asyncio.TimerHandle | None = None
        self.route = ""
        self.target = ""
        self.to = ""


class Endpoint(asyncio.Protocol):
    __slots__ = ("agent", "index", "user", "src", "lport", "transport", "buf", "tag", "reg_call_id", "cseq",
                 "challenge", "nc", "refresh", "registered_until", "ready", "ping_out", "timer_reg", "timer_ping",
                 "calls", "challenges_in_row", "closed")

    def __init__(self, agent: Agent, index: int, src: str) -> None:
        self.agent, self.index, self.src = agent, index, src
        self.user = f"user{index:06d}"
        self.lport = 0
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.tag = f"{random.getrandbits(40):x}"
        self.reg_call_id = f"reg-{index}-{random.getrandbits(32):x}"
        self.cseq = 0
        self.challenge: dict[str, str] | None = None
        self.nc = 0
        self.challenges_in_row = 0
        lo, hi = agent.refresh
        self.refresh = random.uniform(lo, hi)
        self.registered_until = 0.0
        self.ready: asyncio.Future[bool] = agent.loop.create_future()
        self.ping_out = False
        self.timer_reg: asyncio.TimerHandle | None = None
        self.timer_ping: asyncio.TimerHandle | None = None
        self.calls: dict[str, Call] = {}
        self.closed = False

    # -- connection -------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.lport = transport.get_extra_info("sockname")[1]
        self.register()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        for t in (self.timer_reg, self.timer_ping):
            if t is not None:
                t.cancel()
        self.agent.stats["connections_lost"] += 1
        if not self.ready.done():
            self.ready.set_result(False)

    def send(self, text: str) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(text.encode())

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while buf:
            if buf[:2] == b"\r\n":
                if buf[:4] == b"\r\n\r\n":  # the server's own ping: answer it
                    del buf[:4]
                    if self.transport is not None:
                        self.transport.write(b"\r\n")
                    continue
                del buf[:2]
                if self.ping_out:
                    self.ping_out = False
                    self.agent.stats["pongs"] += 1
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = _CL.search(buf, 0, end + 2)
            total = end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) < total:
                return
            msg = Message(buf[:end].decode("latin-1"), bytes(buf[end + 4:total]))
            del buf[:total]
            try:
                if msg.status:
                    self.on_response(msg)
                else:
                    self.on_request(msg)
            except Exception as exc:  # noqa: BLE001 - a bench client: count it, keep the connection
                self.agent.stats["client_errors"] += 1
                if self.agent.stats["client_errors"] <= 3:
                    print(f"tls_ua: {type(exc).__name__}: {exc} on {msg.first!r}", file=sys.stderr)

    # -- registration and keep-alive ----------------------------------------------------------------
    def via(self) -> str:
        return f"Via: SIP/2.0/TLS {self.src}:{self.lport};branch=z9hG4bK{random.getrandbits(56):x};rport"

    def register(self) -> None:
        if self.closed:
            return
        agent = self.agent
        self.cseq += 1
        uri = f"sip:{agent.domain}"
        expires = int(self.refresh * agent.scale) + 32
        lines = [f"REGISTER {uri} SIP/2.0", self.via(), "Max-Forwards: 70",
                 f"From: <sip:{self.user}@{agent.domain}>;tag={self.tag}", f"To: <sip:{self.user}@{agent.domain}>",
                 f"Call-ID: {self.reg_call_id}", f"CSeq: {self.cseq} REGISTER",
                 f'Contact: <sip:{self.user}@{self.src}:{self.lport};transport=tls;ob>;+sip.instance='
                 f'"<urn:uuid:00000000-0000-4000-8000-{self.index:012d}>";reg-id=1',
                 f"Expires: {expires}", "Supported: outbound, path", "User-Agent: sipd-bench-endpoint"]
        if self.challenge is not None:
            self.nc += 1
            lines.append(digest("Authorization", self.user, agent.password(self.index), "REGISTER", uri,
                                self.challenge, self.nc))
        self.send("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n")
        agent.stats["register_sent"] += 1
        self.timer_reg = agent.loop.call_later(REGISTER_TIMEOUT, self.register_timed_out)

    def register_timed_out(self) -> None:
        self.agent.stats["register_timeouts"] += 1
        self.registered_until = 0.0
        if not self.ready.done():
            self.ready.set_result(False)
        self.schedule_refresh(self.refresh)

    def schedule_refresh(self, delay: float) -> None:
        if self.timer_reg is not None:
            self.timer_reg.cancel()
        if not self.closed:
            self.timer_reg = self.agent.loop.call_later(delay, self.register)

    def on_register_response(self, msg: Message) -> None:
        agent, code = self.agent, msg.status
        if code < 200:
            return
        if self.timer_reg is not None:
            self.timer_reg.cancel()
            self.timer_reg = None
        if code in (401, 407) and self.challenges_in_row < 2:
            self.challenges_in_row += 1
            value = msg.get("www-authenticate" if code == 401 else "proxy-authenticate")
            self.challenge, self.nc = parse_challenge(value), 0
            agent.stats["register_challenged"] += 1
            self.register()
            return
        self.challenges_in_row = 0
        now = agent.loop.time()
        if code // 100 == 2:
            granted = [int(e) for c in msg.all("contact") if f":{self.lport};" in c for e in _EXPIRES.findall(c)]
            expires = min(granted) if granted else int(msg.get("expires") or 0)
            self.registered_until = now + expires  # the server's seconds: unscaled
            agent.stats["register_ok"] += 1
            first = not self.ready.done()
            if first:
                self.ready.set_result(True)
                self.schedule_ping(random.uniform(0, agent.keepalive))
            # the first refresh at a random point of the interval: the steady rate at once
            self.schedule_refresh(random.uniform(0.0, 1.0) * self.refresh if first else self.refresh)
        else:
            agent.stats[f"register_{code}"] += 1
            self.registered_until = 0.0
            if not self.ready.done():
                self.ready.set_result(False)
            self.schedule_refresh(self.refresh)

    def schedule_ping(self, delay: float) -> None:
        if not self.closed:
            self.timer_ping = self.agent.loop.call_later(delay, self.ping)

    def ping(self) -> None:
        if self.closed or self.transport is None:
            return
        if self.ping_out:
            self.agent.stats["pongs_missed"] += 1
        self.ping_out = True
        self.transport.write(b"\r\n\r\n")
        self.agent.stats["pings"] += 1
        self.schedule_ping(random.uniform(0.8, 1.0) * self.agent.keepalive)

    # -- calls ----------------------------------------------------------------------------------------
    def invite(self, callee: str) -> None:
        agent = self.agent
        call = Call(callee, f"call-{self.index}-{random.getrandbits(48):x}", agent.loop.time())
        self.calls[call.call_id] = call
        agent.calls[call.call_id] = self
        call.timer = agent.loop.call_later(CALL_TIMEOUT, self.call_timed_out, call)
        self.send_invite(call)

    def send_invite(self, call: Call, challenge: dict[str, str] | None = None) -> None:
        agent = self.agent
        uri = f"sip:{call.callee}@{agent.domain}"
        sdp = SDP.format(ip=self.src, port=20000 + 2 * (self.index % 10000))
        lines = [f"INVITE {uri} SIP/2.0", self.via(), "Max-Forwards: 70",
                 f"From: <sip:{self.user}@{agent.domain}>;tag={call.tag}", f"To: <{uri}>",
                 f"Call-ID: {call.call_id}", f"CSeq: {call.cseq} INVITE",
                 f"Contact: <sip:{self.user}@{self.src}:{self.lport};transport=tls;ob>",
                 "Content-Type: application/sdp"]
        if challenge is not None:
            lines.append(digest("Proxy-Authorization", self.user, agent.password(self.index), "INVITE", uri, challenge, 1))
        self.send("\r\n".join(lines) + f"\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")

    def ack(self, call: Call, msg: Message, *, answered: bool) -> None:
        """ACK a final answer: a 2xx end to end along the route set, another hop by hop (same Via)."""
        agent = self.agent
        if answered:
            via, uri = self.via(), call.target
            route = [f"Route: {call.route}"] if call.route else []
        else:
            via, uri, route = f"Via: {msg.get('via')}", f"sip:{call.callee}@{agent.domain}", []
        self.send("\r\n".join([f"ACK {uri} SIP/2.0", via, *route, "Max-Forwards: 70",
                               f"From: <sip:{self.user}@{agent.domain}>;tag={call.tag}", f"To: {msg.get('to')}",
                               f"Call-ID: {call.call_id}", f"CSeq: {call.cseq} ACK"]) + "\r\nContent-Length: 0\r\n\r\n")

    def bye(self, call: Call) -> None:
        if call.call_id not in self.calls:
            return
        call.cseq += 1
        route = [f"Route: {call.route}"] if call.route else []
        self.send("\r\n".join([f"BYE {call.target} SIP/2.0", self.via(), *route, "Max-Forwards: 70",
                               f"From: <sip:{self.user}@{self.agent.domain}>;tag={call.tag}", f"To: {call.to}",
                               f"Call-ID: {call.call_id}", f"CSeq: {call.cseq} BYE"]) + "\r\nContent-Length: 0\r\n\r\n")
        call.timer = self.agent.loop.call_later(CALL_TIMEOUT, self.call_timed_out, call)

    def end_call(self, call: Call, outcome: str) -> None:
        if call.timer is not None:
            call.timer.cancel()
        self.calls.pop(call.call_id, None)
        self.agent.calls.pop(call.call_id, None)
        self.agent.stats[outcome] += 1

    def call_timed_out(self, call: Call) -> None:
        self.end_call(call, "bye_timeouts" if call.answered else "call_timeouts")

    def on_call_response(self, msg: Message, call: Call) -> None:
        code, method, agent = msg.status, msg.cseq_method, self.agent
        if method == "BYE":
            if code >= 200:
                self.end_call(call, "calls_completed" if code < 300 else f"bye_{code}")
            return
        if method != "INVITE" or code < 200:
            return
        if code < 300:
            if not call.answered:
                call.answered = True
                agent.latencies.append(agent.loop.time() - call.t0)
                rr = [u for v in msg.all("record-route") for u in re.findall(r"<[^>]*>[^,]*", v)]
                call.route = ", ".join(reversed(rr))
                contact = _URI_IN_BRACKETS.search(msg.get("contact"))
                call.target = contact.group(1) if contact else f"sip:{call.callee}@{agent.domain}"
                call.to = msg.get("to")
                if call.timer is not None:
                    call.timer.cancel()
                call.timer = agent.loop.call_later(agent.hold, self.bye, call)
            self.ack(call, msg, answered=True)
            return
        self.ack(call, msg, answered=False)
        if code in (401, 407) and not call.auth:
            call.auth = True
            call.cseq += 1
            self.send_invite(call, parse_challenge(msg.get("proxy-authenticate" if code == 407 else "www-authenticate")))
            return
        self.end_call(call, f"call_{code}")

    def on_response(self, msg: Message) -> None:
        call_id = msg.get("call-id")
        if call_id == self.reg_call_id:
            self.on_register_response(msg)
            return
        call = self.calls.get(call_id)
        if call is not None:
            self.on_call_response(msg, call)

    def on_request(self, msg: Message) -> None:
        method = msg.first.split(" ", 1)[0]
        if method == "ACK":
            return
        body, extra = "", []
        to = msg.get("to")
        if method == "INVITE":
            self.agent.stats["invites_answered"] += 1
            body = SDP.format(ip=self.src, port=30000 + 2 * (self.index % 10000))
            to = f"{to};tag={random.getrandbits(40):x}" if ";tag=" not in to else to
            extra = [f"Record-Route: {v}" for v in msg.all("record-route")]
            extra += [f"Contact: <sip:{self.user}@{self.src}:{self.lport};transport=tls>", "Content-Type: application/sdp"]
        self.send("\r\n".join(["SIP/2.0 200 OK", *(f"Via: {v}" for v in msg.all("via")), f"From: {msg.get('from')}",
                               f"To: {to}", f"Call-ID: {msg.get('call-id')}", f"CSeq: {msg.get('cseq')}", *extra])
                  + f"\r\nContent-Length: {len(body)}\r\n\r\n{body}")


class Agent:
    """The endpoints of one client process and its counters."""

    def __init__(self, port: int, domain: str, total: int, refresh: tuple[float, float], keepalive: float,
                 scale: float, hold: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.port, self.domain, self.total = port, domain, total
        self.scale = scale
        self.refresh = (refresh[0] / scale, refresh[1] / scale)
        self.keepalive = keepalive / scale
        self.hold = hold
        self.endpoints: list[Endpoint] = []
        self.calls: dict[str, Endpoint] = {}
        self.latencies: list[float] = []
        self.stats: Counter[str] = Counter()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    @staticmethod
    def password(index: int) -> str:
        return f"pw{index:06d}"

    async def open(self, specs: list[tuple[int, str]], rate: float, concurrency: int) -> dict[str, Any]:
        """Open and register ``specs`` ((index, source address) pairs), at most ``rate`` new
        connections per second and ``concurrency`` handshakes/registrations in progress."""
        gate = asyncio.Semaphore(concurrency)
        t0 = self.loop.time()

        async def one(ep: Endpoint) -> None:
            async with gate:
                try:
                    await asyncio.wait_for(self.loop.create_connection(
                        lambda: ep, "127.0.0.1", self.port, ssl=self.ctx, local_addr=(ep.src, 0)), 20)
                    await asyncio.wait_for(asyncio.shield(ep.ready), REGISTER_TIMEOUT + 5)
                except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
                    self.stats[f"open_{type(exc).__name__}"] += 1

        tasks = []
        for i, (index, src) in enumerate(specs):
            delay = t0 + i / rate - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ep = Endpoint(self, index, src)
            self.endpoints.append(ep)
            tasks.append(asyncio.ensure_future(one(ep)))
        await asyncio.gather(*tasks)
        return {"seconds": round(self.loop.time() - t0, 2), **self.status()}

    def status(self) -> dict[str, Any]:
        now = self.loop.time()
        up = [ep for ep in self.endpoints if not ep.closed and ep.transport is not None]
        return {"endpoints": len(self.endpoints), "connected": len(up),
                "registered": sum(1 for ep in up if ep.registered_until > now), "stats": dict(self.stats),
                "cpu_s": sum(os.times()[:2])}

    async def run_calls(self, rate: float, seconds: float) -> dict[str, Any]:
        """Start calls at ``rate``/s for ``seconds`` from random registered endpoints of this process
        to random endpoints of the whole population; wait (bounded) for the last ones to end."""
        self.latencies = []
        before = Counter(self.stats)
        t0, n, started = self.loop.time(), int(rate * seconds), 0
        for k in range(n):
            delay = t0 + k / rate - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = self.loop.time()
            callers = [ep for ep in random.sample(self.endpoints, min(8, len(self.endpoints)))
                       if not ep.closed and ep.registered_until > now]
            if not callers:
                self.stats["calls_no_caller"] += 1
                continue
            caller = callers[0]
            callee = random.randrange(self.total - 1)
            callee += callee >= caller.index  # anyone but the caller
            caller.invite(f"user{callee:06d}")
            started += 1
        deadline = self.loop.time() + CALL_TIMEOUT + self.hold + 2
        while self.calls and self.loop.time() < deadline:
            await asyncio.sleep(0.1)
        after = Counter(self.stats)
        after.subtract(before)
        return {"started": started, "latencies": self.latencies, "outcomes": {k: v for k, v in after.items() if v},
                "unfinished": len(self.calls)}

    def close(self) -> None:
        for ep in self.endpoints:
            if ep.transport is not None:
                ep.transport.abort()


def serve(pipe: Any, config: dict[str, Any]) -> None:
    """A client process: commands from the parent's pipe (``open``, ``status``, ``calls``, ``stop``),
    one reply each."""
    random.seed(config.get("seed", 0) * 1000 + config["client"])

    async def main() -> None:
        agent = Agent(config["port"], config["domain"], config["total"], tuple(config["refresh"]),  # type: ignore[arg-type]
                      config["keepalive"], config["scale"], config["hold"])
        loop = agent.loop
        commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def readable() -> None:
            # the loop made the pipe non-blocking; a command larger than the pipe's buffer (the
            # specs of 5,000 endpoints) must be read whole once its first bytes are there
            os.set_blocking(pipe.fileno(), True)
            try:
                commands.put_nowait(pipe.recv())
            except (EOFError, OSError):  # the parent is gone: stop rather than spin on a closed pipe
                loop.remove_reader(pipe.fileno())
                commands.put_nowait({"cmd": "stop"})

        loop.add_reader(pipe.fileno(), readable)
        while True:
            cmd = await commands.get()
            if cmd["cmd"] == "open":
                pipe.send(await agent.open([tuple(s) for s in cmd["specs"]], cmd["rate"], cmd["concurrency"]))
            elif cmd["cmd"] == "status":
                pipe.send(agent.status())
            elif cmd["cmd"] == "calls":
                pipe.send(await agent.run_calls(cmd["rate"], cmd["seconds"]))
            else:
                agent.close()
                await asyncio.sleep(0.2)
                try:
                    pipe.send({"stopped": True, "cpu_s": sum(os.times()[:2])})
                except OSError:
                    pass
                return

    eventloop.run(main())
    time.sleep(0.05)
