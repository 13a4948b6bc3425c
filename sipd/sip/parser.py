"""The datagram parser: bytes -> Request or Response (RFC 3261 §7), or RemoteProtocolError with
the status to answer (``status_hint``; None: drop it silently).

Theory of operation
-------------------
``parse_message`` decodes the header block once (UTF-8 with ``surrogateescape``: never a strict
codec on untrusted bytes, and the round trip is byte-exact), splits it into lines, unfolds
continuation lines and stores each header as ``(key, name, value, raw)`` in a ``Headers`` list
(``header_fields.py``), then checks the headers every transaction needs (``message.validate``).
Stream framing (TCP/TLS) is ``framing.py``; it hands each framed message to ``parse_message``.

Speed (bench/bench_parser.py): every datagram pays for the above, so the common shapes take fast
paths -- header lines split with one partition per line (known and already-seen names only), one
regex per name-addr/Via/CSeq/URI value. A fast path validates the whole value but may build the
parts later: a NameAddr's URI and params and the Request-URI object are built when first read.
Whatever a fast path does not recognise goes through the general code, which accepts a superset
and gives the same result (tests/sip/test_fastpath.py).

Policy decisions (RFC 4475 / RFC 5118 torture tests; table in tests/sip/data/README.md)
-----------------------------------------------------------------------------------------
* RFC 2543 compatibility is ON: a request without Max-Forwards, without a branch or From tag, or
  (on UDP) without Content-Length is accepted; the body is then the rest of the datagram
  (RFC 3261 §18.3). Transactions fall back to RFC 2543 matching (``transaction.py``).
* A datagram holding a message followed by junk: the junk after Content-Length bytes is ignored.
* The Request-Line must be exactly ``Method SP Request-URI SP SIP-Version``: extra or trailing
  spaces, LWS inside the URI and ``<uri>`` are a 400 (we never "repair" a Request-URI). So are
  escaped headers in the Request-URI (``sip:u@h?Route=...``), which must never become headers.
* ``SIP/x.y`` other than 2.0 -> 505. Anything else unparsable in a request -> 400, with a
  ``partial`` request attached when Via/From/To/Call-ID/CSeq could be read.
* Any error in a response -> ``status_hint=None`` (drop: we never answer a response).
* CSeq number > 2**32-1, Max-Forwards > 255, duplicate Call-ID/From/To/CSeq/Max-Forwards,
  conflicting Content-Length values, negative/non-numeric Content-Length, or a body shorter than
  Content-Length -> 400. CSeq method != request method -> 400 (501 for a method we do not know,
  as RFC 4475 §3.1.2.18 prefers).
* Expires larger than 2**32-1 reads as "absent" (the registrar then applies its default).
* Unknown URI schemes parse (opaque URIs); unknown Require/Proxy-Require tags, Max-Forwards 0,
  unknown methods are application decisions: helpers in ``sanity.py``.
* IPv6 with three colons is rejected (see ``uri.py``).
"""

from __future__ import annotations

import re

from .errors import RemoteProtocolError
from .header_fields import NAME_KEYS, Headers, Item
from .headers import SMALL_UINTS, TOKEN_RE, header_key, parse_uint
from .message import Request, Response, validate
from .methods import KNOWN_METHODS
from .uri import URI, match_fast_uri, parse_uri

# -- limits ------------------------------------------------------------------------------------
# The largest message we accept: the maximum UDP payload (65,535 bytes, IPv4 total length) is
# also Kamailio's and OpenSIPS's default BUF_SIZE. RFC 3261 §18.1.1 makes senders switch to TCP
# above ~1,300 bytes, so real messages are far smaller; RFC 4475's longest (longreq) is 3.5 KB.
MAX_MESSAGE_SIZE = 65535
# Header lines per message. Real requests carry 10-30; a limit stops a flood of one-byte headers
# from making us build 30,000 list entries for one datagram.
MAX_HEADERS = 256
# Bytes buffered per stream connection before a message completes: one maximal message plus
# room for the start of the next one (pipelining). Beyond this the peer is misbehaving.
MAX_STREAM_BUFFER = 2 * MAX_MESSAGE_SIZE

_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.I)
_WS = " \t"
# Header names read off the wire that are not in NAME_KEYS (validated tokens): cached too, only
# short ones and only so many. Messages whose names are all known take the fast split.
_WIRE_KEYS: dict[str, str] = {}
_WIRE_KEYS_MAX = 512


def _split_head(data: bytes) -> tuple[list[str], int]:
    """-> (header block lines, offset of the body). Raises RemoteProtocolError."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end].decode("utf-8", "surrogateescape").split("\r\n"), end + 4
    lf = data.find(b"\n\n")
    if lf >= 0:  # bare-LF peers (RFC 3261 §7: we are liberal in what we accept)
        lines = data[:lf].decode("utf-8", "surrogateescape").split("\n")
        return [ln[:-1] if ln.endswith("\r") else ln for ln in lines], lf + 2
    if data.endswith(b"\r\n"):  # header block not terminated by an empty line: no body
        return data[:-2].decode("utf-8", "surrogateescape").split("\r\n"), len(data)
    raise RemoteProtocolError("no end of header block", 400)


def _wire_key(name: str) -> str:
    k = _WIRE_KEYS.get(name)
    if k is None:
        k = header_key(name)
        if len(name) <= 64:
            if len(_WIRE_KEYS) >= _WIRE_KEYS_MAX:
                _WIRE_KEYS.clear()  # a scanner's random names: start over, the real ones come back
            _WIRE_KEYS[name] = k
    return k


def _split_block(lines: list[str]) -> tuple[list[Item], dict[str, tuple[Item, ...]]] | None:
    """Fast path of ``_split_headers`` (header lines only), also building the index.

    Gives up (None) on anything unusual -- a name not seen before, folding, a line without ": ",
    too many lines -- and ``_split_headers`` then does the work and raises the errors.
    """
    if len(lines) > MAX_HEADERS:
        return None
    fast = NAME_KEYS
    wire = _WIRE_KEYS
    items: list[Item] = []
    idx: dict[str, tuple[Item, ...]] = {}
    for line in lines:
        # "Name: value" (one space: nearly every line) leaves no leading space to strip, and strip()
        # returns the value itself; other spellings give an unknown name and the general code
        name, sep, value = line.partition(": ")
        key = fast.get(name) or wire.get(name)
        if key is None or not sep:
            return None
        it = (key, name, value.strip(" \t"), line)
        items.append(it)
        lst = idx.get(key)
        idx[key] = (it,) if lst is None else lst + (it,)
    return items, idx


def _split_headers(lines: list[str]) -> list[Item]:
    if len(lines) > MAX_HEADERS + 1:
        raise RemoteProtocolError("too many header lines", 513)
    items: list[Item] = []
    fast = NAME_KEYS
    for i in range(1, len(lines)):
        line = lines[i]
        c = line[:1]
        if c == " " or c == "\t":  # continuation line (folding, RFC 3261 §7.3.1)
            if not items:
                raise RemoteProtocolError("continuation line before first header", 400)
            prev = items[-1]
            value = (prev[2] + " " + line.strip(_WS)).strip(_WS)
            items[-1] = (prev[0], prev[1], value, f"{prev[3]}\r\n{line}")
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise RemoteProtocolError(f"header line without colon: {line[:40]!r}", 400)
        key = fast.get(name)
        if key is None:
            n = name.rstrip(" \t")
            if not TOKEN_RE.match(n):
                raise RemoteProtocolError(f"invalid header name {name[:40]!r}", 400)
            key = _wire_key(n)
        items.append((key, name, value.strip(" \t"), line))
    return items


def _head_items(data: bytes) -> tuple[str, Headers, int]:
    """-> (start line, headers, offset of the body). Raises RemoteProtocolError."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        lines = data[:end].decode("utf-8", "surrogateescape").split("\r\n")
        r = _split_block(lines[1:])
        body_at = end + 4
    else:
        lines, body_at = _split_head(data)
        r = None
    h = _new_headers(Headers)
    h._cache = {}
    if r is None:
        h._items = _split_headers(lines)
        h._index = None
    else:
        h._items, h._index = r
    return lines[0], h, body_at


def parse_message(data: bytes) -> Request | Response:
    """Parse one datagram (or one stream-framed message). Raises RemoteProtocolError."""
    is_response = data[:4] == b"SIP/"
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError("message too large", None if is_response else 513)
    if data[:2] == b"\r\n":  # RFC 3261 §7.5: ignore CRLFs before the start line
        data = data.lstrip(b"\r\n")
        is_response = data[:4] == b"SIP/"
    if not data:
        raise RemoteProtocolError("empty message", None)
    if is_response:
        try:
            start, h, body_at = _head_items(data)
            return _parse_response(start, h, data, body_at)
        except RemoteProtocolError as e:
            e.status_hint = None
            raise
    try:
        start, h, body_at = _head_items(data)
    except RemoteProtocolError as e:
        e.partial = None
        raise
    return _parse_request(start, h, data, body_at)


def _frame_body(h: Headers, data: bytes, body_at: int) -> bytes:
    cls = h._idx().get("content-length")
    if not cls:
        return data[body_at:]  # UDP without Content-Length: the rest of the datagram
    n = SMALL_UINTS.get(cls[0][2])
    if n is None:
        n = parse_uint(cls[0][2], MAX_MESSAGE_SIZE, "Content-Length")
    for it in cls[1:]:
        if parse_uint(it[2], MAX_MESSAGE_SIZE, "Content-Length") != n:
            raise RemoteProtocolError("conflicting Content-Length headers", 400)
    if body_at + n > len(data):
        raise RemoteProtocolError("body shorter than Content-Length", 400)
    return data[body_at : body_at + n]


def _parse_response(start: str, h: Headers, data: bytes, body_at: int) -> Response:
    parts = start.split(" ", 2)
    if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
        raise RemoteProtocolError(f"bad status line {start[:60]!r}", None)
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not code.isascii() or not "100" <= code <= "699":
        raise RemoteProtocolError(f"bad status code {code[:20]!r}", None)
    body = _frame_body(h, data, body_at)
    resp = Response(int(code), parts[2] if len(parts) == 3 else "", h, body, parts[0])
    validate(resp, RemoteProtocolError)
    return resp


def _parse_request(start: str, h: Headers, data: bytes, body_at: int) -> Request:
    error: RemoteProtocolError | None = None
    parts = start.split(" ")
    method = parts[0]
    uri: URI | None = None
    m = None
    try:
        if len(parts) == 3 and parts[2] == "SIP/2.0" and method in KNOWN_METHODS and (m := _uri_match(parts[1])):
            pass  # the common case: validated, the URI object is built from the match on first access
        else:
            if len(parts) != 3:
                raise RemoteProtocolError("malformed Request-Line (must be: method SP uri SP version)", 400)
            version = parts[2]
            if version.upper() != "SIP/2.0":
                if _VERSION_RE.match(version):
                    raise RemoteProtocolError(f"SIP version {version!r} not supported", 505)
                raise RemoteProtocolError(f"bad SIP version {version[:20]!r}", 400)
            if not TOKEN_RE.match(method):
                raise RemoteProtocolError(f"invalid method {method[:40]!r}", 400)
            uri = parse_uri(parts[1])
            if uri.headers:
                raise RemoteProtocolError("headers in the Request-URI", 400)
    except RemoteProtocolError as e:
        error = e
    req = _new_request(Request)
    req.method = method
    req.version = "SIP/2.0"
    req.headers = h
    req.body = b""
    req._uri = uri
    req._uri_m = m
    req._uri_text = parts[1] if len(parts) > 1 else ""  # the Request-URI text exactly as received
    try:
        if error is not None:
            raise error
        req.body = _frame_body(h, data, body_at)
        validate(req, RemoteProtocolError)
    except RemoteProtocolError as e:
        e.partial = _partial(req) if e.status_hint is not None else None
        raise
    return req


_new_request = _new_headers = object.__new__


def _uri_match(text: str) -> re.Match[str] | None:
    """The FAST_SIP_URI match if the fast path of ``parse_uri`` takes ``text`` (then it cannot
    fail, and ``uri_from_match(match, 0)`` is what ``parse_uri(text)`` returns), else None."""
    m = match_fast_uri(text)
    if m is None:
        return None
    port = m.group(4)
    return m if port is None or len(port) < 5 or port <= "65535" else None


def _partial(req: Request) -> Request | None:
    """The request itself if an error reply can be built: Via and CSeq (From, To, Call-ID copied if there; RFC 4475 insuf)."""
    idx = req.headers._idx()
    for key in ("via", "cseq"):
        if key not in idx:
            return None
    if not TOKEN_RE.match(req.method):
        return None
    req.headers._cache.clear()
    return req

