"""SIP messages (RFC 3261 §7): Request and Response over their header fields, the parsed values
every transaction needs, validation, building and serialisation. The datagram parser is in
``parser.py``, stream framing in ``framing.py``, the header field list in ``header_fields.py``.

Structured values are parsed on first access and cached in the ``Headers`` object. The headers
every transaction needs (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length, Contact) are
checked by ``validate`` when a message is parsed or built, so a message object that exists is
well-formed in those. Serialisation writes untouched lines as received and renders edited ones.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

from .errors import LocalProtocolError, RemoteProtocolError
from .header_fields import Headers, Item, field_key
from .headers import (
    SMALL_UINTS,
    TOKEN_RE,
    CSeq,
    NameAddr,
    Via,
    display_name,
    fast_cseq,
    fast_name_addr,
    fast_via,
    parse_cseq_general,
    parse_name_addr_general,
    parse_via_general,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_uint,
    parse_via,
)
from .methods import KNOWN_METHODS
from .status import reason_phrase
from .uri import URI, is_canonical_match, match_fast_uri, parse_uri, uri_from_match

SINGLETONS = ("call-id", "from", "to", "cseq")  # exactly one line each in every message
CRLF = "\r\n"
_item_key = operator.itemgetter(0)


class Message:
    """Common part of Request and Response."""

    __slots__ = ("headers", "body")

    headers: Headers
    body: bytes

    # -- header API ---------------------------------------------------------------------------------
    def get(self, name: str) -> str | None:
        return self.headers.get(name)

    def get_all(self, name: str) -> list[str]:
        return self.headers.get_all(name)

    def set(self, name: str, value: str) -> None:
        self.headers.set(name, value)

    def remove(self, name: str) -> None:
        self.headers.remove(name)

    def prepend(self, name: str, value: str) -> None:
        self.headers.prepend(name, value)

    def append(self, name: str, value: str) -> None:
        self.headers.append(name, value)

    def replace_first(self, name: str, value: str) -> None:
        self.headers.replace_first(name, value)

    def remove_first(self, name: str) -> None:
        self.headers.remove_first(name)

    # -- parsed accessors (lazy, cached in the Headers object) -------------------------------------
    def _one(self, key: str) -> str:
        lst = self.headers._idx().get(key)
        if not lst:
            raise RemoteProtocolError(f"missing {display_name(key)} header", 400)
        if len(lst) > 1:
            raise RemoteProtocolError(f"more than one {display_name(key)} header", 400)
        return lst[0][2]

    @property
    def vias(self) -> list[Via]:
        c = self.headers._cache
        v = c.get("via")
        if v is None:
            lst = self.headers._idx().get("via")
            if not lst:
                raise RemoteProtocolError("missing Via header", 400)
            v = []
            for it in lst:
                v.extend(parse_via(it[2]))
            c["via"] = v
        return v

    @property
    def via(self) -> Via:
        return self.vias[0]

    @property
    def from_(self) -> NameAddr:
        c = self.headers._cache
        v = c.get("from")
        if v is None:
            v = c["from"] = parse_name_addr(self._one("from"))
        return v

    @property
    def to(self) -> NameAddr:
        c = self.headers._cache
        v = c.get("to")
        if v is None:
            v = c["to"] = parse_name_addr(self._one("to"))
        return v

    @property
    def call_id(self) -> str:
        c = self.headers._cache
        v = c.get("call-id")
        if v is None:
            v = self._one("call-id")
            if not v or " " in v or "\t" in v:
                raise RemoteProtocolError("invalid Call-ID", 400)
            c["call-id"] = v
        return v

    @property
    def cseq(self) -> CSeq:
        c = self.headers._cache
        v = c.get("cseq")
        if v is None:
            v = c["cseq"] = parse_cseq(self._one("cseq"))
        return v

    @property
    def max_forwards(self) -> int | None:
        c = self.headers._cache
        if "max-forwards" in c:
            return c["max-forwards"]  # type: ignore[no-any-return]
        lst = self.headers._idx().get("max-forwards")
        if not lst:
            v = None
        elif len(lst) > 1:
            raise RemoteProtocolError("more than one Max-Forwards header", 400)
        else:
            v = parse_uint(lst[0][2], 255, "Max-Forwards")
        c["max-forwards"] = v
        return v

    def _name_addrs(self, key: str) -> list[NameAddr]:
        c = self.headers._cache
        v = c.get(key)
        if v is None:
            v = []
            for it in self.headers._idx().get(key, ()):
                v.extend(parse_name_addr_list(it[2]))
            c[key] = v
        return v  # type: ignore[no-any-return]

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values; empty for ``Contact: *`` (see ``contact_star``)."""
        if self.contact_star:
            return []
        return self._name_addrs("contact")

    @property
    def contact_star(self) -> bool:
        c = self.headers._cache
        v = c.get("contact*")
        if v is None:
            lst = self.headers._idx().get("contact", ())
            v = any("*" in it[2] and it[2].strip() == "*" for it in lst)
            if v and (len(lst) > 1 or lst[0][2].strip() != "*"):
                raise RemoteProtocolError("Contact: * must be the only Contact", 400)
            c["contact*"] = v
        return v  # type: ignore[no-any-return]

    @property
    def routes(self) -> list[NameAddr]:
        return self._name_addrs("route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._name_addrs("record-route")

    @property
    def expires(self) -> int | None:
        """Expires header; None if absent or larger than 2**32-1 (treated as absent)."""
        v = self.get("expires")
        if v is None:
            return None
        t = v.strip()
        if t.isdigit() and t.isascii() and len(t.lstrip("0")) > 10:
            return None
        value = parse_uint(t, 2**63, "Expires")
        return value if value <= 0xFFFFFFFF else None

    @property
    def content_type(self) -> str | None:
        return self.get("content-type")

    # -- serialisation ----------------------------------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise; Content-Length is set to the body length, untouched headers stay byte-exact."""
        h = self.headers
        n = len(self.body)
        if h._index is None and "content-length" not in map(_item_key, h._items):
            # a message we built (make_response): append as Headers.append would, without building
            # the name index only for that
            h._items.append(("content-length", "Content-Length", str(n), None))
            h._changed("content-length")
        else:
            cl = h._idx().get("content-length")
            if cl is None or len(cl) != 1 or cl[0][2] != str(n):
                h.set("Content-Length", str(n)) if cl else h.append("Content-Length", str(n))
        # untouched lines are written as received (raw), edited ones rendered
        lines = [it[3] or f"{it[1]}: {it[2]}" for it in h._items]  # never empty (Content-Length)
        head = f"{self._start_line()}\r\n{CRLF.join(lines)}\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class Request(Message):
    __slots__ = ("method", "version", "_uri", "_uri_text", "_uri_m")

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        self.method = method
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._uri: URI | None
        self._uri_m = None
        if isinstance(uri, URI):
            self._uri, self._uri_text = uri, str(uri)
        else:
            self._uri, self._uri_text = None, uri

    @property
    def uri(self) -> URI:
        """The Request-URI. Assign a URI or a string to change it (do not edit it in place)."""
        u = self._uri
        if u is None:
            m = self._uri_m
            if m is not None:  # validated by the parser's fast path: parse_uri() would build the same
                u = uri_from_match(m, 0)
                self._uri_m = None
            else:
                u = parse_uri(self._uri_text)
            self._uri = u
        return u  # type: ignore[return-value]

    @uri.setter
    def uri(self, value: URI | str) -> None:
        self._uri_m = None
        if isinstance(value, str):
            m = match_fast_uri(value)
            if m is not None and is_canonical_match(m, 0):
                self._uri = None  # valid and already in the form str(URI) gives: parse when read
                self._uri_text = value
                return
            value = parse_uri(value)
        self._uri = value
        self._uri_text = str(value)

    @property
    def uri_text(self) -> str:
        return self._uri_text

    @property
    def uri_scheme(self) -> str:
        """``uri.scheme``, without building the URI object when the parser's fast path took it."""
        m = self._uri_m
        return self.uri.scheme if m is None else m.group(1).lower()

    def _start_line(self) -> str:
        return f"{self.method} {self._uri_text} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri_text}>"


class Response(Message):
    __slots__ = ("status", "reason", "version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# -- validation ------------------------------------------------------------------------------------


def validate(msg: Message, err: type[RemoteProtocolError] | type[LocalProtocolError]) -> None:
    """Check (and cache) the headers every transaction needs. Raises ``err`` with a status hint.

    The same checks, in the same order, as reading ``vias``, ``call_id``, ``cseq``, ``from_``,
    ``to``, ``max_forwards`` and ``contacts``; inlined because every message pays for it.
    """
    try:
        h = msg.headers
        idx = h._idx()
        c = h._cache
        call_id, from_, to, cseq_lines = idx.get("call-id"), idx.get("from"), idx.get("to"), idx.get("cseq")
        if not (call_id and from_ and to and cseq_lines) or len(call_id) + len(from_) + len(to) + len(cseq_lines) != 4:
            for key in SINGLETONS:  # which one is missing or repeated, in this order
                lst = idx.get(key)
                if not lst:
                    raise RemoteProtocolError(f"missing {display_name(key)} header", 400)
                if len(lst) > 1:
                    raise RemoteProtocolError(f"more than one {display_name(key)} header", 400)
        if "via" not in c:
            lst = idx.get("via")
            if not lst:
                raise RemoteProtocolError("missing Via header", 400)
            if len(lst) == 1:
                text = lst[0][2]
                v = fast_via(text)  # parse_via(), one call less
                c["via"] = [v] if v is not None else parse_via_general(text)
            else:
                vias: list[Via] = []
                for it in lst:
                    vias.extend(parse_via(it[2]))
                c["via"] = vias
        if "call-id" not in c:
            v = call_id[0][2]  # type: ignore[index]
            if not v or " " in v or "\t" in v:
                raise RemoteProtocolError("invalid Call-ID", 400)
            c["call-id"] = v
        cseq = c.get("cseq")
        if cseq is None:
            text = cseq_lines[0][2]  # type: ignore[index]
            cseq = c["cseq"] = fast_cseq(text) or parse_cseq_general(text)  # parse_cseq()
        if "from" not in c:
            text = from_[0][2]  # type: ignore[index]
            c["from"] = fast_name_addr(text) or parse_name_addr_general(text)  # parse_name_addr()
        if "to" not in c:
            text = to[0][2]  # type: ignore[index]
            c["to"] = fast_name_addr(text) or parse_name_addr_general(text)
        if "max-forwards" not in c:
            lst = idx.get("max-forwards")
            if lst and len(lst) == 1:
                mf = SMALL_UINTS.get(lst[0][2])
                if mf is None or mf > 255:
                    mf = parse_uint(lst[0][2], 255, "Max-Forwards")
                c["max-forwards"] = mf
            else:
                msg.max_forwards  # noqa: B018 - None, or the error
        lst = idx.get("contact")
        if lst:
            if len(lst) == 1 and "*" not in lst[0][2] and "contact" not in c:
                c["contact*"] = False  # what contact_star would say; then what contacts reads
                c["contact"] = parse_name_addr_list(lst[0][2])
            else:
                msg.contacts  # noqa: B018
        if isinstance(msg, Request) and cseq.method != msg.method:
            status = 400 if msg.method in KNOWN_METHODS else 501
            raise RemoteProtocolError("CSeq method does not match the request method", status)
    except RemoteProtocolError as e:
        if err is RemoteProtocolError:
            raise
        raise LocalProtocolError(str(e), e.status_hint) from None


# -- building ---------------------------------------------------------------------------------------


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """Build a response per RFC 3261 §8.2.6: Via (all, in order), From, To (+tag), Call-ID, CSeq."""
    if not 100 <= status <= 699:
        raise LocalProtocolError(f"invalid status {status}", None)
    items: list[Item] = []
    to_added = False
    for it in request.headers._items:
        key = it[0]
        if key not in _RESPONSE_KEYS:
            continue
        if key != "to":
            items.append(it)
        elif not to_added:
            to_added = True
            if to_tag is not None and status != 100 and "tag" not in _to_params(request):
                items.append(("to", it[1], f"{it[2]};tag={to_tag}", None))
            else:
                items.append(it)
    for name, value in headers:  # as Headers.append would, without keeping the index up to date
        items.append((field_key(name), name, value, None))
    h = _new_headers(Headers)  # Headers._from_items(items)
    h._items = items
    h._index = None
    h._cache = {}
    resp = _new_response(Response)  # Response(status, reason, h)
    resp.status = status
    resp.reason = reason_phrase(status) if reason is None else reason
    resp.version = "SIP/2.0"
    resp.headers = h
    resp.body = b""
    return resp


_new_response = _new_headers = object.__new__


_RESPONSE_KEYS = frozenset(("via", "from", "to", "call-id", "cseq"))  # copied into a response


def _to_params(request: Request) -> dict[str, str | None]:
    try:
        return request.to.params
    except RemoteProtocolError:
        return {}


def make_request(
    method: str,
    uri: URI | str,
    *,
    headers: Iterable[tuple[str, str]],
    body: bytes = b"",
) -> Request:
    """Build a request; From, To, Call-ID and CSeq are required, Max-Forwards defaults to 70."""
    if not TOKEN_RE.match(method):
        raise LocalProtocolError(f"invalid method {method!r}", None)
    try:
        u = uri if isinstance(uri, URI) else parse_uri(uri)
    except RemoteProtocolError as e:
        raise LocalProtocolError(str(e), None) from None
    h = Headers(headers)
    if "max-forwards" not in h._idx():
        h.append("Max-Forwards", "70")
    req = Request(method, u, h, body)
    for key in ("via",):
        if key in h._idx():
            break
    else:  # Via is added by whoever sends it; validate the rest
        idx = h._idx()
        for key in SINGLETONS:
            if key not in idx:
                raise LocalProtocolError(f"missing {display_name(key)} header", None)
        try:
            req.call_id, req.cseq, req.from_, req.to  # noqa: B018
        except RemoteProtocolError as e:
            raise LocalProtocolError(str(e), None) from None
        if req.cseq.method != method:
            raise LocalProtocolError("CSeq method does not match the request method", None)
        return req
    validate(req, LocalProtocolError)
    return req

