"""PROTOS c07-sip style mutation fuzzer: one field of a valid INVITE at a time.

``cases()`` yields (description, datagram). Every datagram must either parse or raise a
``ProtocolError``; any other exception is a bug. Deterministic: the mutation list is fixed and
the optional extra cases use a seeded ``random.Random`` (tests only; the core never does).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

# (field name, text) in order; the INVITE is rebuilt from these with one field replaced.
FIELDS: list[tuple[str, str]] = [
    ("method", "INVITE"), ("sp1", " "), ("ruri-scheme", "sip"), ("ruri-colon", ":"),
    ("ruri-user", "bob"), ("ruri-at", "@"), ("ruri-host", "example.com"), ("ruri-port", ":5060"),
    ("ruri-params", ";transport=udp"), ("sp2", " "), ("version", "SIP/2.0"), ("eol", "\r\n"),
    ("via-name", "Via"), ("via-colon", ": "), ("via-proto", "SIP/2.0/UDP"), ("via-sp", " "),
    ("via-host", "192.0.2.1"), ("via-port", ":5060"), ("via-branch", ";branch=z9hG4bK776asdhds"),
    ("via-rport", ";rport"), ("eol", "\r\n"),
    ("mf", "Max-Forwards: 70\r\n"),
    ("to-display", '"Bob" '), ("to-uri", "<sip:bob@example.com>"), ("to-eol", "\r\n"),
    ("from-display", '"Alice" '), ("from-uri", "<sip:alice@example.com>"),
    ("from-tag", ";tag=1928301774"), ("from-eol", "\r\n"),
    ("callid", "Call-ID: a84b4c76e66710@pc33.example.com\r\n"),
    ("cseq-name", "CSeq: "), ("cseq-num", "314159"), ("cseq-sp", " "), ("cseq-method", "INVITE"),
    ("cseq-eol", "\r\n"),
    ("contact", "Contact: <sip:alice@pc33.example.com;transport=udp>;expires=3600\r\n"),
    ("ctype", "Content-Type: application/sdp\r\n"),
    ("cl-name", "Content-Length: "), ("cl-value", "BODYLEN"), ("cl-eol", "\r\n"),
    ("unknown", "X-Custom: hello\r\n"),
    ("blank", "\r\n"),
    ("body", "v=0\r\no=alice 2890844526 2890844526 IN IP4 pc33.example.com\r\ns=-\r\n"
             "c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\n"),
]
_PREFIX = {"to-display": "To: ", "from-display": "From: "}

MUTATIONS: list[str] = [
    "", " ", "\t", "\x00", "\r\n", "\r", "\n", "\r\n\r\n", ";", ",", ":", "@", "<", ">", '"', "\\",
    "%", "%0", "%zz", "%00", "%ff", "?", "&", "=", "[", "]", "[::1", "::1]", "[2001:db8:::1]",
    "%s%s%s%s%s%s%s%s%s%s", "%n%n%n%n", "%x" * 50, "%999999999s", "{}", "${jndi:ldap://x}",
    "0", "-1", "-2147483649", "2147483648", "4294967295", "4294967296", "18446744073709551616",
    "9" * 100, "9" * 5000, "0" * 300 + "1", "1e9", "0x10", "+1", "1.5",
    "A" * 256, "A" * 1024, "A" * 65536, "\xff" * 10, "\xc3\x28", "é", "\u202e", "\ud800",
    "'", "''", "' OR 1=1 --", "<script>", "\x7f", "\x1b[2J", "\x08" * 20, ";" * 500, "," * 500,
    '"' * 101, "<" * 200, "sip:" * 100, "SIP/2.0 " * 10, "z9hG4bK", "z9hG4bK" + "x" * 5000,
]


def build(fields: list[tuple[str, str]]) -> bytes:
    body = next(v for k, v in fields if k == "body")
    parts = []
    for k, v in fields:
        if k in _PREFIX:
            parts.append(_PREFIX[k])
        parts.append(v)
    text = "".join(parts).replace("BODYLEN", str(len(body.encode("utf-8", "surrogatepass"))))
    return text.encode("utf-8", "surrogatepass")


def valid_invite() -> bytes:
    return build(FIELDS)


def cases(extra: int = 0, seed: int = 7) -> Iterator[tuple[str, bytes]]:
    """Deterministic cases: every field x every mutation x (replace, append, prepend, delete,
    repeat), then ``extra`` random multi-byte corruptions of the valid INVITE."""
    for i, (name, value) in enumerate(FIELDS):
        variants = [("delete", "")] + [("repeat", value * 64)]
        for m in MUTATIONS:
            variants += [("replace", m), ("append", value + m), ("prepend", m + value)]
        for how, new in variants:
            fields = list(FIELDS)
            fields[i] = (name, new)
            yield f"{name}/{how}/{new[:20]!r}", build(fields)
    base = valid_invite()
    rng = random.Random(seed)
    for n in range(extra):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            pos = rng.randrange(len(data) + 1)
            if op < 0.4 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op < 0.7:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            else:
                del data[pos : pos + rng.randint(1, 32)]
        yield f"random/{n}", bytes(data)


def count_cases(extra: int = 0) -> int:
    return len(FIELDS) * (2 + 3 * len(MUTATIONS)) + extra
