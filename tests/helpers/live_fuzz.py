"""A mutation fuzzer that drives a LIVE sipd over UDP and TCP (the suite's test and bench/fuzz_live.py).

The parser-level fuzzer (tests/sip/fuzz.py) proves the core turns any bytes into a message or a
``ProtocolError``; this one reaches what lives around the core: the transports, timers, the
pipeline, forwarding, the accounting writer, dialogs and presence. It sends mutated copies of valid
REGISTER / INVITE / OPTIONS / BYE / SUBSCRIBE / PUBLISH / MESSAGE requests and of the RFC 4475 and
RFC 5118 torture messages, and plays a callee ("fuzzee", registered with digest) that answers what
sipd forwards to it with mutated responses, so client transactions, dialogs and CDRs see hostile
bytes too. Requests come "from outside" (a From domain that is not local), which the residential
policy forwards to a local user without a challenge.

Between mutated messages it places clean calls (caller with digest -> 200 -> ACK -> BYE) and
remembers their Call-IDs: afterwards each must have its CDR. Everything is bounded in count and
time, deterministic for one seed (the printed seed reproduces a run), and stays on loopback:
every address in the seeds is rewritten to 127.0.0.1 before mutation.
"""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct
import time
from pathlib import Path

from tests.helpers.fuzz_seeds import DOMAIN, FOREIGN, FUZZEE, FuzzReport, Mutator, torture_seeds, valid_seeds  # noqa: F401
from tests.helpers.procstat import rss_kib


def answers(host: str, port: int, timeout: float = 5.0) -> bool:
    """sipd answers an OPTIONS over UDP within ``timeout`` seconds."""
    from tests.helpers.sipd_proc import options_ping

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if options_ping(host, port, timeout=1.0):
            return True
    return False


class LiveFuzzer:
    """Drives one live sipd at ``host:port`` (UDP and TCP on the same port).

    ``callee_password``: the fuzzee's digest password (registered at start). ``clean_call``:
    a callable(call_id) -> bool placing one real call; its Call-IDs end up in the report.
    """

    def __init__(self, host: str, port: int, seed: int, *, fuzzee_password: str, udp_sockets: int = 8,
                 tcp_share: float = 0.0, window: int = 64):
        self.host, self.port, self.seed = host, port, seed
        self.rng = random.Random(seed)
        self.report = FuzzReport(seed)
        self.udp = []
        for _ in range(udp_sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.setblocking(False)
            self.udp.append(s)
        self.fuzzee_password = fuzzee_password
        self.tcp_share = tcp_share
        self.window = window          # datagrams in flight before the fuzzer reads replies
        lport = self.udp[0].getsockname()[1]
        self.mut = Mutator(self.rng, valid_seeds(host, port, lport) * 3 + torture_seeds())
        # what is sent depends on the seed only; answers and hang-ups, which depend on what comes
        # back and when, draw from a generator of their own
        self.answer_rng = random.Random(seed ^ 0x5EED)
        self.answer_mut = Mutator(self.answer_rng, self.mut.seeds)
        self.tcp: list[socket.socket] = []
        self.probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.probe.bind((host, 0))
        self.probe_n = 0
        self.answered: dict[str, bool] = {}   # Call-IDs of fuzzed calls answered 200, BYE sent
        self.clean_answers: set[bytes] = set()  # Call-IDs the fuzzee answered 200 unmutated

    def close(self) -> None:
        for s in (*self.udp, self.probe, getattr(self, "callee", None), *self.tcp):
            if s is not None:
                s.close()
        self.tcp = []

    # -- the callee that answers with mutated responses -------------------------------------------
    def register_fuzzee(self) -> None:
        from tests.daemon.harness import UA

        ua = UA(self.port, FUZZEE, password=self.fuzzee_password, host=self.host)
        ua.sock.close()
        ua.sock = self.callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.callee.bind((self.host, 0))
        ua.port = self.callee.getsockname()[1]
        self.callee.setblocking(True)
        resp = ua.register(3600)
        assert resp.status == 200, f"fuzzee REGISTER -> {resp.status}"
        self.callee.setblocking(False)

    def _answer(self, data: bytes, src: tuple) -> None:
        """Answer a request sipd forwarded to the fuzzee: valid or mutated responses."""
        if not data[:1].isalpha() or data.startswith(b"SIP/2.0") or data.startswith(b"ACK "):
            return
        self.report.forwarded_to_fuzzee += 1
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [ln for ln in head[1:] if ln[:4].lower() in (b"via:", b"v: ", b"from", b"to: ", b"t: ", b"call", b"i: ",
                                                             b"cseq", b"reco")]
        initial = data.startswith(b"INVITE ") and any(ln[:3].lower() in (b"to:", b"t: ") and b"tag=" not in ln
                                                      for ln in keep)
        keep = [ln + b";tag=fz" if ln[:3].lower() in (b"to:", b"t: ") and b"tag=" not in ln else ln for ln in keep]
        rng = self.answer_rng
        bye = data.startswith(b"BYE ")
        for status in (200,) if bye and rng.random() < 0.9 else rng.choice(((180, 200), (200,), (486,), (183, 603), (100,), ())):
            resp = b"\r\n".join([b"SIP/2.0 %d X" % status, *keep,
                                 b"Contact: <sip:%s@127.0.0.1:%d>" % (FUZZEE.encode(), self.callee.getsockname()[1]),
                                 b"Content-Length: 0", b"", b""])
            mutations = 0 if bye else rng.choice((0, 0, 1, 2))
            for _ in range(mutations):
                resp = self.answer_mut.mutate(resp)
            if status == 200 and not mutations and initial:
                # an INVITE without To tag (a new call, not a re-INVITE of an unknown dialog)
                # answered with its own identifiers: a call the fuzzer may complete
                self.clean_answers.update(ln.split(b":", 1)[1].strip() for ln in keep
                                          if ln[:8].lower() == b"call-id:" or ln[:2].lower() == b"i:")
                if len(self.clean_answers) > 20000:  # bounded for long runs: old calls are long over
                    self.clean_answers.clear()
            try:
                self.callee.sendto(resp, src)
            except OSError:
                pass

    def _hang_up(self, s: socket.socket, data: bytes) -> None:
        """A call the fuzzer placed was answered: ACK the 200 and send BYE, as a caller would; a
        200 to that BYE completes the call, which must then have its CDR."""
        from sipd.sip.errors import ProtocolError
        from sipd.sip.parser import parse_message

        try:
            resp = parse_message(data)
            method = resp.cseq.method
            call_id = resp.call_id
            if method == "BYE":
                if self.answered.pop(call_id, None):
                    self.report.completed_calls.append(call_id)
                return
            if (method != "INVITE" or call_id in self.answered or not resp.contacts
                    or call_id.encode("utf-8", "surrogateescape") not in self.clean_answers):
                return  # not ours to complete: a 200 the fuzzee mutated names no dialog sipd knows
            target = str(resp.contacts[0].uri)
            seq = resp.cseq.seq
            routes = [f"Route: {rr}" for rr in reversed(resp.get_all("Record-Route"))]
            frm, to = resp.get("From"), resp.get("To")
        except (ProtocolError, ValueError, AttributeError, IndexError):
            return
        lport = s.getsockname()[1]
        for m, n in (("ACK", seq), ("BYE", seq + 1)):
            msg = "\r\n".join([f"{m} {target} SIP/2.0",
                                f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{m}{self.answer_rng.getrandbits(40):x};rport",
                                "Max-Forwards: 70", f"From: {frm}", f"To: {to}", f"Call-ID: {call_id}",
                                f"CSeq: {n} {m}", *routes, "Content-Length: 0", "", ""])
            try:
                s.sendto(msg.encode("utf-8", "surrogateescape"), (self.host, self.port))
            except OSError:
                return
        self.answered[call_id] = True

    def _drain(self) -> None:
        for s in self.udp:
            for _ in range(256):
                try:
                    data = s.recv(65535)
                except OSError:  # BlockingIOError: nothing left
                    break
                self.report.replies += 1
                if data.startswith(b"SIP/2.0 200 "):
                    self._hang_up(s, data)
                elif data.startswith(b"NOTIFY "):  # a subscription of the fuzzer's: answered like the fuzzee does
                    self._answer(data, (self.host, self.port))
        for _ in range(256):
            try:
                data, src = self.callee.recvfrom(65535)
            except (BlockingIOError, OSError):
                break
            self._answer(data, src)
        for c in list(self.tcp):
            try:
                while c.recv(65535):
                    pass
            except BlockingIOError:
                pass
            except OSError:
                self._drop_tcp(c)

    # -- TCP: partial writes, abrupt closes and resets --------------------------------------------
    def _open_tcp(self) -> socket.socket | None:
        try:
            c = socket.create_connection((self.host, self.port), timeout=2)
        except OSError:
            return None
        c.setblocking(False)
        self.tcp.append(c)
        self.report.tcp_connections += 1
        return c

    def _drop_tcp(self, c: socket.socket, reset: bool = False) -> None:
        if reset:  # RST instead of FIN
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.report.tcp_resets += 1
        c.close()
        if c in self.tcp:
            self.tcp.remove(c)

    def _send_tcp(self, data: bytes) -> None:
        rng = self.rng
        if not self.tcp or (len(self.tcp) < 8 and rng.random() < 0.05):
            if self._open_tcp() is None:
                return
        c = rng.choice(self.tcp)
        pos = 0
        for _ in range(8):  # partial writes: the message in a few pieces, each flushed on its own
            if pos >= len(data):
                break
            piece = data[pos:pos + rng.choice((1, 7, 64, 500, 65000))]
            try:
                pos += c.send(piece)
            except BlockingIOError:
                break
            except OSError:
                self._drop_tcp(c)
                return
        self.report.tcp_sent += 1
        r = rng.random()
        if r < 0.02:
            self._drop_tcp(c, reset=True)
        elif r < 0.04:
            self._drop_tcp(c)

    # -- the run -------------------------------------------------------------------------------
    def _sync(self, timeout: float = 10.0) -> bool:
        """Pace by sipd's own speed: an OPTIONS sent after a window of messages is answered once
        sipd has read them all (one socket buffer, in order), so none is lost to a full kernel
        buffer -- the point is hostile bytes, not a flood. False if it went unanswered."""
        s = self.probe
        self.probe_n += 1
        tag = b"sync%d" % self.probe_n
        lport = s.getsockname()[1]
        msg = (b"OPTIONS sip:%s:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport\r\n"
               b"Max-Forwards: 70\r\nFrom: <sip:probe@%s>;tag=%s\r\nTo: <sip:%s:%d>\r\n"
               b"Call-ID: %s@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n") % (
            self.host.encode(), self.port, self.host.encode(), lport, tag, FOREIGN.encode(), tag,
            self.host.encode(), self.port, tag)
        s.sendto(msg, (self.host, self.port))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([s, self.callee], [], [], min(left, 0.05))
            if self.callee in r:
                self._drain()
            if s in r:
                try:
                    data = s.recv(65535)
                except OSError:
                    continue
                if tag + b"@probe" in data:
                    return True

    def alive(self, timeout: float = 5.0) -> bool:
        return answers(self.host, self.port, timeout)

    def run(self, messages: int, *, time_limit: float, clean_call=None, clean_every: int = 2000,
            check_every: int = 5000, log=print, close: bool = True) -> FuzzReport:
        """Send ``messages`` (bounded by ``time_limit`` seconds); ``close=False`` keeps the sockets
        (and the fuzzee's one registration) for another run; the report adds up."""
        rep = self.report
        t0 = time.monotonic()
        log(f"live fuzz: seed {self.seed}, {messages} messages, tcp share {self.tcp_share}")
        for i in range(messages):
            if time.monotonic() - t0 > time_limit:
                log(f"live fuzz: time limit {time_limit}s reached after {i} messages")
                break
            data = self.mut.message()
            if self.rng.random() < self.tcp_share:
                self._send_tcp(data)
            else:
                s = self.udp[i % len(self.udp)]
                try:
                    s.sendto(data, (self.host, self.port))
                    rep.udp_sent += 1
                except OSError as exc:
                    if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS, errno.EAGAIN):
                        raise
            if i % self.window == self.window - 1:
                self._drain()
                self._sync()
            if clean_call is not None and i % clean_every == clean_every // 2:
                call_id = f"clean-{self.seed}-{i}"
                (rep.clean_calls if clean_call(call_id) else rep.failed_clean_calls).append(call_id)
            if i % check_every == check_every - 1:
                if not self.alive():
                    rep.stalls += 1
                    log(f"live fuzz: sipd did not answer OPTIONS after {i + 1} messages")
                elif os.environ.get("LIVE_FUZZ_VERBOSE"):
                    log(f"live fuzz: {i + 1} sent, sipd answers")
        for _ in range(3):  # the last BYEs through the fuzzee and back
            self._drain()
            self._sync()
        self._drain()
        rep.seconds += time.monotonic() - t0
        if close:
            for c in list(self.tcp):
                self._drop_tcp(c)
            self.close()
        log("live fuzz: " + rep.line())
        return rep


SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


class CleanCalls:
    """Real calls ``caller`` -> ``callee`` (both local users with digest) placed between mutated
    messages: INVITE, 407, INVITE with credentials, 180, 200, ACK, BYE, 200. ``__call__(call_id)``
    returns True when the call completed (then its CDR must exist)."""

    def __init__(self, host: str, port: int, caller: tuple[str, str], callee: tuple[str, str],
                 transport: str = "udp"):
        from tests.daemon.harness import UA

        self.caller = UA(port, caller[0], password=caller[1], host=host, transport=transport)
        self.callee = UA(port, callee[0], password=callee[1], host=host)
        resp = self.callee.register(3600)
        assert resp.status == 200, f"{callee[0]} REGISTER -> {resp.status}"

    def close(self) -> None:
        self.caller.close()
        self.callee.close()

    def __call__(self, call_id: str) -> bool:
        a, b = self.caller, self.callee
        uri = f"sip:{b.user}@{DOMAIN}"
        ct = ["Content-Type: application/sdp"]
        try:
            a.send(a.request("INVITE", uri, to=f"<{uri}>", headers=ct, body=SDP, call_id=call_id, cseq=1))
            resp = a.expect(407, timeout=5)
            a.send(a.request("ACK", uri, to=resp.get("To"), call_id=call_id, cseq=1, via=resp.get("Via")))
            auth = a.authorization(resp, "INVITE", uri, proxy=True)
            a.send(a.request("INVITE", uri, to=f"<{uri}>", headers=[*ct, auth], body=SDP, call_id=call_id, cseq=2))
            inv = _request(b, "INVITE", call_id)
            b.respond(inv, 180, "Ringing")
            b.respond(inv, 200, "OK", body=SDP, headers=ct)
            ok = _response(a, 200, call_id)
            route = [f"Route: {rr}" for rr in reversed(ok.get_all("Record-Route"))]
            target = str(ok.contacts[0].uri)
            a.send(a.request("ACK", target, to=ok.get("To"), headers=route, call_id=call_id, cseq=2))
            _request(b, "ACK", call_id)
            a.send(a.request("BYE", target, to=ok.get("To"), headers=route, call_id=call_id, cseq=3))
            bye = _request(b, "BYE", call_id)
            b.respond(bye, 200)
            _response(a, 200, call_id, method="BYE")
            return True
        except (AssertionError, TimeoutError, OSError, ValueError):
            return False


def _request(ua, method: str, call_id: str, timeout: float = 5.0):
    from sipd.sip.message import Request

    deadline = time.monotonic() + timeout
    for _ in range(50):
        msg = ua.recv(max(0.05, deadline - time.monotonic()))
        if isinstance(msg, Request) and msg.method == method and msg.call_id == call_id:
            return msg
    raise AssertionError(f"no {method} for {call_id}")


def _response(ua, status: int, call_id: str, method: str = "INVITE", timeout: float = 5.0):
    from sipd.sip.message import Response

    deadline = time.monotonic() + timeout
    for _ in range(50):
        msg = ua.recv(max(0.05, deadline - time.monotonic()))
        if isinstance(msg, Response) and msg.call_id == call_id and msg.status == status and method in msg.get("CSeq"):
            return msg
    raise AssertionError(f"no {status} to {method} for {call_id}")


# -- around the run: the daemon's configuration, its memory, the CDRs ----------------------------


def rss_mb(pid: int) -> float:
    """Resident set of ``pid`` and its children (the accounting writer), MiB."""
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    return rss_kib(pids) / 1024


def fuzz_config(tmp: Path) -> dict:
    """sipd's defaults except what keeps the run on this host (antiflood as shipped: loopback is a
    trusted network; DNS to a closed loopback port; the spool in the scratch directory) and
    presence open to watchers from any domain, so that the fuzzer's SUBSCRIBEs (from outside, not
    challenged) create subscriptions and NOTIFYs instead of stopping at the policy's 403."""
    from tests.conftest import free_port

    return {"antiflood": {"enabled": True}, "dns": {"nameservers": [f"127.0.0.1:{free_port()}"], "timeout": 0.5},
            "acc": {"spool": str(tmp / "acc.spool"), "retry_interval": 0.5}, "log": {"level": "info"},
            "presence": {"policy": "open"}}


def cdrs_missing(db_url: str, call_ids: list[str], timeout: float = 20.0) -> list[str]:
    """The Call-IDs without a row in cdrs (waiting, bounded, for the writer)."""
    from sipd.db import connect
    from sipd.db.base import storable_text

    deadline = time.monotonic() + timeout
    missing = list(call_ids)
    while missing and time.monotonic() < deadline:
        with connect(db_url) as db:
            have = {r["callid"] for r in db.query("SELECT callid FROM cdrs")}
        missing = [c for c in call_ids if storable_text(c[:255]) not in have]  # as the cdrs row holds it
        if missing:
            time.sleep(0.5)
    return missing
