"""What the live fuzzer sends: seed messages (valid requests and the RFC 4475/5118 torture
messages, every address rewritten to loopback), the mutations applied to them, and the report of a
run. Kept apart from the driver (live_fuzz.py) so each stays readable on its own.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

DOMAIN = "example.test"
FOREIGN = "outside.test"
FUZZEE = "fuzzee"                          # the callee the fuzzer plays (mutated responses)
TORTURE = Path(__file__).resolve().parents[1] / "sip" / "data"

# Values that broke or could break the daemon around the core: ports past 65535, numbers longer
# than Python converts by default (4300 digits), bytes that are not UTF-8 (lone surrogates after
# surrogateescape decoding), NULs, IPv6 edge cases, escapes.
HOSTILE = [
    b"\xff\xfe", b"\xed\xa0\x80", b"\xc3\x28", b"\x80", b"\xf4\x90\x80\x80", b"\x00", b"%00", b"%ff",
    b"65536", b"99999", b"4294967296", b"18446744073709551617", b"-1", b"0", b"9" * 5000, b"1" * 4301,
    b"0" * 400 + b"5060", b":65536", b":99999", b":0", b":-1", b";rport=99999", b";received=127.0.0.1",
    b";received=::1", b";maddr=127.0.0.1", b";maddr=[::1]", b";ttl=999", b";lr", b";transport=tcp",
    b";transport=tls", b";transport=sctp", b";expires=" + b"9" * 30, b";tag=", b"[::1]", b"[::1", b"[",
    b"<", b">", b'"', b"\\", b";", b",", b"\r\n", b"\r\n\r\n", b"\n", b" ", b"\t", b"sip:", b"sips:",
    b"tel:+1", b"%", b"A" * 300, b"\xe2\x80\xae", "é".encode(), b"\x1b[2J",
]
EXTRA_HEADERS = [
    b"Via: SIP/2.0/UDP 127.0.0.1:99999;branch=z9hG4bKfz1",
    b"Via: SIP/2.0/UDP 127.0.0.1:65536",
    b"Via: SIP/2.0/TCP 127.0.0.1:" + b"9" * 5000 + b";branch=z9hG4bKfz2",
    b"Via: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKfz3",
    b"Via: SIP/2.0/UDP 127.0.0.1;received=127.0.0.1;rport=70000;branch=z9hG4bKfz4",
    b"Contact: <sip:fz@127.0.0.1:70000>", b"Contact: <sip:fz@127.0.0.1:65536;transport=tcp>;expires=60",
    b"Contact: <sip:fz\xff\xfe@127.0.0.1:5099>;expires=60", b"Contact: *",
    b"Contact: <sip:fz@127.0.0.1>;expires=" + b"9" * 4400, b"Contact: <sip:fz@[::1]:99999>",
    b"Record-Route: <sip:127.0.0.1:99999;lr>", b"Route: <sip:127.0.0.1:65536;lr>",
    b"Route: <sip:127.0.0.1;lr;maddr=127.0.0.1>", b"Route: <sip:[::1]:0;lr>",
    b"Expires: " + b"9" * 5000, b"Max-Forwards: " + b"7" * 4400, b"CSeq: " + b"1" * 4400 + b" INVITE",
    b"Content-Length: " + b"9" * 4400, b"Retry-After: " + b"9" * 4400, b"Session-Expires: 99999999999999999999",
    b"Min-SE: " + b"9" * 5000, b"RSeq: " + b"9" * 4400, b"RAck: 1 " + b"9" * 4400 + b" INVITE",
    b"From: \"\xff\xfe\xed\xa0\x80\" <sip:fz\xff@" + FOREIGN.encode() + b">;tag=\xfe",
    b"User-Agent: \xff\xfe\xed\xa0\x80", b"Subject: \xed\xa0\x80\xed\xb0\x80", b"Call-ID: \xff\xfe@x",
    b"Event: presence;id=\xff", b"Subscription-State: active;expires=" + b"9" * 4400,
    b"Authorization: Digest username=\"alice\xff\", realm=\"example.test\", nonce=\"x\", uri=\"sip:x\","
    b" response=\"0\", nc=" + b"f" * 500,
    b"Proxy-Authorization: Digest username=\"a\", nc=99999999999999999999, qop=auth",
    b"Require: " + b"x," * 400, b"Supported: 100rel,timer", b"Allow-Events: presence",
]
_DIGITS = re.compile(rb"\d+")
_ADDR = re.compile(rb"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])|\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\]")
_FOREIGN_HOSTS = re.compile(rb"(?<![\w-])(?:[\w-]+\.)*(?:example\.(?:com|net|org)|[\w-]+\.(?:com|net|org|ch|fr))(?![\w.])")


def _loopback(data: bytes) -> bytes:
    """Seeds stay on this host: IPv4/IPv6 literals -> 127.0.0.1 (a bracketed one -> [::1]), foreign
    names -> the local test domain or an outside one that resolves nowhere."""
    data = _ADDR.sub(lambda m: b"[::1]" if m.group(0).startswith(b"[") else b"127.0.0.1", data)
    return _FOREIGN_HOSTS.sub(DOMAIN.encode(), data)


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def valid_seeds(host: str, port: int, lport: int) -> list[bytes]:
    """Valid requests to the live server, each from outside to local users (no challenge)."""
    srv = f"{host}:{port}"
    common = (f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{{b}};rport\nMax-Forwards: 70\n"
              f"From: \"Fuzz\" <sip:fz@{FOREIGN}>;tag=f{{b}}\nCall-ID: {{b}}@fuzz\n")
    sdp = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"
    pidf = ('<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:fz@x">'
            '<tuple id="a"><status><basic>open</basic></status></tuple></presence>')
    seeds = [
        f"INVITE sip:{FUZZEE}@{DOMAIN} SIP/2.0\n{common}To: <sip:{FUZZEE}@{DOMAIN}>\nCSeq: 1 INVITE\n"
        f"Contact: <sip:fz@127.0.0.1:{lport}>\nContent-Type: application/sdp\nContent-Length: {len(_crlf(sdp))}\n\n{sdp}",
        f"REGISTER sip:{DOMAIN} SIP/2.0\n{common}To: <sip:{FUZZEE}@{DOMAIN}>\nCSeq: 1 REGISTER\n"
        f"Contact: <sip:fz@127.0.0.1:{lport}>;expires=60\nExpires: 60\nContent-Length: 0\n\n",
        f"OPTIONS sip:{srv} SIP/2.0\n{common}To: <sip:{srv}>\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
        f"OPTIONS sip:{FUZZEE}@{DOMAIN} SIP/2.0\n{common}To: <sip:{FUZZEE}@{DOMAIN}>\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
        f"BYE sip:{FUZZEE}@127.0.0.1:{lport} SIP/2.0\n{common}To: <sip:{FUZZEE}@{DOMAIN}>;tag=t1\nCSeq: 2 BYE\n"
        f"Route: <sip:{srv};lr>\nContent-Length: 0\n\n",
        f"SUBSCRIBE sip:{FUZZEE}@{DOMAIN} SIP/2.0\n{common}To: <sip:{FUZZEE}@{DOMAIN}>\nCSeq: 1 SUBSCRIBE\n"
        f"Contact: <sip:fz@127.0.0.1:{lport}>\nEvent: presence\nExpires: 60\nAccept: application/pidf+xml\n"
        "Content-Length: 0\n\n",
        f"PUBLISH sip:{FUZZEE}@{DOMAIN} SIP/2.0\n{common}To: <sip:{FUZZEE}@{DOMAIN}>\nCSeq: 1 PUBLISH\n"
        f"Event: presence\nExpires: 60\nContent-Type: application/pidf+xml\nContent-Length: {len(pidf)}\n\n{pidf}",
        f"MESSAGE sip:{FUZZEE}@{DOMAIN} SIP/2.0\n{common}To: <sip:{FUZZEE}@{DOMAIN}>\nCSeq: 1 MESSAGE\n"
        "Content-Type: text/plain\nContent-Length: 2\n\nhi",
        f"CANCEL sip:{FUZZEE}@{DOMAIN} SIP/2.0\n{common}To: <sip:{FUZZEE}@{DOMAIN}>\nCSeq: 1 CANCEL\nContent-Length: 0\n\n",
        f"ACK sip:{FUZZEE}@{DOMAIN} SIP/2.0\n{common}To: <sip:{FUZZEE}@{DOMAIN}>;tag=t1\nCSeq: 1 ACK\nContent-Length: 0\n\n",
        f"SIP/2.0 200 OK\nVia: SIP/2.0/UDP {srv};branch=z9hG4bK{{b}}\n"
        f"From: <sip:fz@{FOREIGN}>;tag=f{{b}}\nTo: <sip:{FUZZEE}@{DOMAIN}>;tag=t1\nCall-ID: {{b}}@fuzz\n"
        "CSeq: 1 INVITE\nContent-Length: 0\n\n",
    ]
    return [_crlf(s) for s in seeds]


def torture_seeds() -> list[bytes]:
    out = []
    for sub in ("rfc4475", "rfc5118"):
        for path in sorted((TORTURE / sub).glob("*.dat")):
            out.append(_loopback(path.read_bytes()))
    return out


class Mutator:
    """Deterministic mutations of seed messages (one ``random.Random`` per run)."""

    def __init__(self, rng: random.Random, seeds: list[bytes]):
        self.rng = rng
        self.seeds = seeds
        self.n = 0

    def fresh(self, data: bytes) -> bytes:
        """Unique branch/tag/Call-ID per message, so each one is a new transaction."""
        self.n += 1
        return data.replace(b"{b}", b"%x%x" % (self.n, self.rng.getrandbits(32)))

    def message(self) -> bytes:
        data = self.fresh(self.rng.choice(self.seeds))
        for _ in range(self.rng.choice((0, 1, 1, 1, 2, 2, 3, 5))):
            data = self.mutate(data)
        return data[:65000]

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        how = rng.randrange(10)
        n = len(data)
        if how == 0 and n:                                    # flip bytes
            b = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(n)] = rng.randrange(256)
            return bytes(b)
        if how == 1 and n:                                    # delete a span
            i = rng.randrange(n)
            return data[:i] + data[i + rng.randint(1, 40):]
        if how == 2 and n:                                    # duplicate a span
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 200))
            return data[:j] + data[i:j] * rng.randint(1, 4) + data[j:]
        if how == 3:                                          # insert a hostile token
            i = rng.randrange(n + 1)
            return data[:i] + rng.choice(HOSTILE) + data[i:]
        if how in (4, 5):                                     # a number becomes a hostile one
            spans = [m.span() for m in _DIGITS.finditer(data)]
            if spans:
                a, b = rng.choice(spans)
                return data[:a] + rng.choice(HOSTILE[8:24]) + data[b:]
        if how == 6:                                          # a header value replaced
            lines = data.split(b"\r\n")
            k = rng.randrange(len(lines))
            name, sep, _ = lines[k].partition(b":")
            if sep:
                lines[k] = name + b": " + rng.choice(HOSTILE) * rng.randint(1, 3)
                return b"\r\n".join(lines)
        if how in (7, 8):                                     # a hostile header added
            head, sep, body = data.partition(b"\r\n")
            if sep:
                return head + b"\r\n" + rng.choice(EXTRA_HEADERS) + b"\r\n" + body
        if how == 9:                                          # spliced with another seed
            other = self.fresh(rng.choice(self.seeds))
            i, j = rng.randrange(n + 1), rng.randrange(len(other) + 1)
            return data[:i] + other[j:]
        return data


@dataclass
class FuzzReport:
    seed: int
    udp_sent: int = 0
    tcp_sent: int = 0
    tcp_connections: int = 0
    tcp_resets: int = 0
    replies: int = 0
    forwarded_to_fuzzee: int = 0
    clean_calls: list[str] = field(default_factory=list)
    completed_calls: list[str] = field(default_factory=list)  # fuzzed calls: 200, ACK, BYE, 200
    failed_clean_calls: list[str] = field(default_factory=list)
    stalls: int = 0           # OPTIONS checks that went unanswered (must stay 0)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return self.udp_sent + self.tcp_sent

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        return (f"seed={self.seed} sent={self.sent} (udp {self.udp_sent}, tcp {self.tcp_sent} on "
                f"{self.tcp_connections} connections, {self.tcp_resets} reset) replies={self.replies} "
                f"forwarded_to_fuzzee={self.forwarded_to_fuzzee} completed_fuzzed_calls={len(self.completed_calls)} "
                f"clean_calls={len(self.clean_calls)} "
                f"failed={len(self.failed_clean_calls)} stalls={self.stalls} {self.seconds:.1f}s {rate:.0f} msg/s")
