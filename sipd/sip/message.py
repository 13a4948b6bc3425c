"""SIP messages: parsing (datagram and stream framing), lazy header access, serialisation.

Theory of operation
-------------------
``parse_message`` decodes the header block once (UTF-8 with ``surrogateescape``: never a strict
codec on untrusted bytes, and the round trip is byte-exact), splits it into lines, unfolds
continuation lines and stores each header as ``(key, name, value, raw)``: the canonical key
(lowercased long name), the name as written, the unfolded value and the original text of the
line(s). Serialising writes ``raw`` for every untouched header, so a proxy forwards unknown
headers byte for byte; only headers it changed (Via, Record-Route, Max-Forwards ...) are rendered.

Structured values are parsed on first access and cached in the ``Headers`` object. The headers
every transaction needs (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length, Contact) are
validated when the message is parsed, so a message object that exists is well-formed in those.

Speed (bench/bench_parser.py): every datagram pays for the above, so the common shapes take fast
paths -- header lines split with one partition per line (known and already-seen names only), one
regex per name-addr/Via/CSeq/URI value. A fast path validates the whole value but may build the
parts later: a NameAddr's URI and params and the Request-URI object are built when first read.
Whatever a fast path does not recognise goes through the general code, which accepts a superset
and gives the same result (tests/sip/test_fastpath.py). Edits keep the name index in place, and
serialisation writes untouched lines as received.

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

import operator
import re
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import LocalProtocolError, RemoteProtocolError
from .headers import (
    COMPACT_FORMS,
    LIST_HEADERS,
    TOKEN_RE,
    CSeq,
    NameAddr,
    Via,
    display_name,
    header_key,
    _fast_cseq,
    _fast_name_addr,
    _fast_via,
    _parse_cseq,
    _parse_name_addr,
    _parse_via,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_uint,
    parse_via,
    split_commas,
)
from .status import reason_phrase
from . import uri as uri_module
from .uri import URI, parse_uri

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

KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER MESSAGE UPDATE".split()
)
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.I)
_SINGLETONS = ("call-id", "from", "to", "cseq")
_WS = " \t"
CRLF = "\r\n"

# Exact spellings seen on the wire -> key, to skip lower()/compact lookups on the hot path.
_FAST_KEYS: dict[str, str] = {}
for _k in (
    "Via From To Call-ID CSeq Contact Max-Forwards Content-Length Content-Type Route Record-Route "
    "Expires Allow Supported Require Proxy-Require User-Agent Server Authorization "
    "Proxy-Authorization WWW-Authenticate Proxy-Authenticate Accept Date Subject Event Path "
    "Call-Id Cseq Min-Expires Allow-Events Organization Timestamp Unsupported Warning Session-Expires "
    "Min-SE P-Asserted-Identity P-Preferred-Identity Privacy Reason Refer-To Referred-By RSeq RAck "
    "Subscription-State Content-Disposition Content-Encoding Content-Language Accept-Encoding "
    "Accept-Language Alert-Info Call-Info Error-Info Authentication-Info Retry-After Service-Route "
    "Diversion Remote-Party-ID History-Info Reply-To In-Reply-To Priority MIME-Version Replaces "
    "P-Access-Network-Info P-Charging-Vector X-Serialnumber"
).split():
    _FAST_KEYS[_k] = _k.lower()
    _FAST_KEYS[_k.lower()] = _k.lower()
for _c, _full in COMPACT_FORMS.items():
    _FAST_KEYS[_c] = _full
    _FAST_KEYS[_c.upper()] = _full
del _k, _c, _full

_KEY_CACHE: dict[str, str] = {}
_item_key = operator.itemgetter(0)
# One header line: (key, name as written, value, raw line(s) or None if rendered by us).
Item = tuple[str, str, str, Any]
# Decimal strings as they usually appear (no leading zeros) -> int: Max-Forwards, Content-Length.
_SMALL_UINTS = {str(i): i for i in range(2048)}
_SMALL_UINTS_B = {str(i).encode(): i for i in range(2048)}
# Header names read off the wire that are not in _FAST_KEYS (validated tokens): cached too, only
# short ones and only so many. Messages whose names are all known take the fast split.
_WIRE_KEYS: dict[str, str] = {}
_WIRE_KEYS_MAX = 512


def _key(name: str) -> str:
    k = _FAST_KEYS.get(name) or _KEY_CACHE.get(name)
    if k is None:
        k = header_key(name)
        if len(_KEY_CACHE) < 1024:  # names from our own code only; bounded anyway
            _KEY_CACHE[name] = k
    return k


def _rest_of_list(key: str, value: str) -> list[str]:
    """The values after the first one of a list header line (nothing for other headers)."""
    if key not in LIST_HEADERS or ("," not in value):
        return []
    return split_commas(value)[1:]


class Headers:
    """Ordered, case-insensitive header list; compact names accepted; raw text kept per line.

    Each entry is an immutable ``(key, name, value, raw)``; ``raw`` is None for an entry we made
    or changed. Entries are replaced, never edited, so copies can share them.
    """

    __slots__ = ("_items", "_index", "_cache")

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        self._items: list[Item] = []
        self._index: dict[str, tuple[Item, ...]] | None = None
        self._cache: dict[str, Any] = {}
        if items:
            for name, value in items:
                self._items.append((_key(name), name, value, None))

    @classmethod
    def _from_items(cls, items: list[Item]) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        h._index = None
        h._cache = {}
        return h

    def _idx(self) -> dict[str, tuple[Item, ...]]:
        """key -> the entries with that key, in order (tuples: no GC tracking once they settle)."""
        idx = self._index
        if idx is None:
            idx = {}
            for it in self._items:
                lst = idx.get(it[0])
                idx[it[0]] = (it,) if lst is None else lst + (it,)
            self._index = idx
        return idx

    def _changed(self, key: str) -> None:
        c = self._cache
        if c:
            c.pop(key, None)
            if key == "contact":
                c.pop("contact*", None)

    def _pos(self, it: Item) -> int:
        """Index of the entry ``it`` (by identity) in the item list."""
        for i, x in enumerate(self._items):
            if x is it:
                return i
        raise ValueError("header index out of sync")  # pragma: no cover - cannot happen

    # -- reading ----------------------------------------------------------------------------------
    def get(self, name: str) -> str | None:
        """Value of the first header line of that name (whole line, lists not split)."""
        lst = self._idx().get(_key(name))
        return lst[0][2] if lst else None

    def get_all(self, name: str) -> list[str]:
        """All values; list headers (Via, Contact, Route, Require ...) split on their commas."""
        key = _key(name)
        lst = self._idx().get(key)
        if not lst:
            return []
        if key not in LIST_HEADERS:
            return [it[2] for it in lst]
        out: list[str] = []
        for it in lst:
            out.extend(v for v in split_commas(it[2]) if v)
        return out

    def count(self, name: str) -> int:
        """Number of header *lines* with that name."""
        return len(self._idx().get(_key(name), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._idx()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for it in self._items:
            yield it[1], it[2]

    def __len__(self) -> int:
        return len(self._items)

    def raw_lines(self) -> list[str]:
        return [it[3] if it[3] is not None else f"{it[1]}: {it[2]}" for it in self._items]

    # -- editing (the item list and its index are updated in place) ------------------------------
    def set(self, name: str, value: str) -> None:
        """Replace all occurrences by one (at the position of the first, else appended)."""
        key = _key(name)
        idx = self._idx()
        new = (key, name, value, None)
        old = idx.get(key)
        if not old:
            self._items.append(new)
        else:
            items = self._items
            items[self._pos(old[0])] = new
            if len(old) > 1:
                drop = {id(it) for it in old[1:]}
                self._items = [it for it in items if id(it) not in drop]
        idx[key] = (new,)
        self._changed(key)

    def remove(self, name: str) -> None:
        key = _key(name)
        if self._idx().pop(key, None):
            self._items = [it for it in self._items if it[0] != key]
        self._changed(key)

    def append(self, name: str, value: str) -> None:
        key = _key(name)
        idx = self._idx()
        new = (key, name, value, None)
        self._items.append(new)
        lst = idx.get(key)
        idx[key] = (new,) if lst is None else lst + (new,)
        self._changed(key)

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first header of that name (or at the top if there is none)."""
        key = _key(name)
        idx = self._idx()
        new = (key, name, value, None)
        lst = idx.get(key)
        if lst:
            self._items.insert(self._pos(lst[0]), new)
            idx[key] = (new,) + lst
        else:
            self._items.insert(0, new)
            idx[key] = (new,)
        self._changed(key)

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first *value* of a list header (e.g. the top Via), keeping the others."""
        key = _key(name)
        idx = self._idx()
        lst = idx.get(key)
        if not lst:
            self.append(name, value)
            return
        it = lst[0]
        rest = _rest_of_list(key, it[2])
        new: list[Item] = [(key, it[1], value, None)]
        if rest:
            new.append((key, it[1], ", ".join(rest), None))
        i = self._pos(it)
        self._items[i : i + 1] = new
        idx[key] = tuple(new) + lst[1:]
        self._changed(key)

    def remove_first(self, name: str) -> None:
        """Remove the first *value* of a list header (pop the top Via of a response)."""
        key = _key(name)
        idx = self._idx()
        lst = idx.get(key)
        if not lst:
            return
        it = lst[0]
        rest = _rest_of_list(key, it[2])
        i = self._pos(it)
        if rest:
            self._items[i] = new = (key, it[1], ", ".join(rest), None)
            idx[key] = (new,) + lst[1:]
        else:
            del self._items[i]
            if len(lst) > 1:
                idx[key] = lst[1:]
            else:
                del idx[key]
        self._changed(key)

    def copy(self) -> Headers:
        return Headers._from_items(list(self._items))


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
                u = _fast_uri(m, 0)
                self._uri_m = None
            else:
                u = parse_uri(self._uri_text)
            self._uri = u
        return u  # type: ignore[return-value]

    @uri.setter
    def uri(self, value: URI | str) -> None:
        self._uri_m = None
        if isinstance(value, str):
            m = _FAST_URI(value)
            if m is not None and _is_canonical(m, 0):
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


# -- parsing ---------------------------------------------------------------------------------------


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
    fast = _FAST_KEYS
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
    fast = _FAST_KEYS
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
    n = _SMALL_UINTS.get(cls[0][2])
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
    _validate(resp, RemoteProtocolError)
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
        _validate(req, RemoteProtocolError)
    except RemoteProtocolError as e:
        e.partial = _partial(req) if e.status_hint is not None else None
        raise
    return req


_new_request = _new_headers = object.__new__
_FAST_URI = uri_module._FAST_URI
_fast_uri = uri_module._fast_uri
_is_canonical = uri_module._is_canonical


def _uri_match(text: str) -> re.Match[str] | None:
    """The FAST_SIP_URI match if the fast path of ``parse_uri`` takes ``text`` (then it cannot
    fail, and ``_fast_uri(match, 0)`` is what ``parse_uri(text)`` returns), else None."""
    m = _FAST_URI(text)
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


def _validate(msg: Message, err: type[RemoteProtocolError] | type[LocalProtocolError]) -> None:
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
            for key in _SINGLETONS:  # which one is missing or repeated, in this order
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
                v = _fast_via(text)  # parse_via(), one call less
                c["via"] = [v] if v is not None else _parse_via(text)
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
            cseq = c["cseq"] = _fast_cseq(text) or _parse_cseq(text)  # parse_cseq()
        if "from" not in c:
            text = from_[0][2]  # type: ignore[index]
            c["from"] = _fast_name_addr(text) or _parse_name_addr(text)  # parse_name_addr()
        if "to" not in c:
            text = to[0][2]  # type: ignore[index]
            c["to"] = _fast_name_addr(text) or _parse_name_addr(text)
        if "max-forwards" not in c:
            lst = idx.get("max-forwards")
            if lst and len(lst) == 1:
                mf = _SMALL_UINTS.get(lst[0][2])
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
        items.append((_key(name), name, value, None))
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


_new_response = object.__new__


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
        for key in _SINGLETONS:
            if key not in idx:
                raise LocalProtocolError(f"missing {display_name(key)} header", None)
        try:
            req.call_id, req.cseq, req.from_, req.to  # noqa: B018
        except RemoteProtocolError as e:
            raise LocalProtocolError(str(e), None) from None
        if req.cseq.method != method:
            raise LocalProtocolError("CSeq method does not match the request method", None)
        return req
    _validate(req, LocalProtocolError)
    return req


# StreamParser lives in framing.py (stream framing is its own concern); re-exported here, as the
# contract (docs/contracts.md §1) names it part of this module.
from .framing import StreamParser  # noqa: E402, F401
