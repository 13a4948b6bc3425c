"""Header names and the structured headers: name-addr (From/To/Contact/Route), Via, CSeq.

Header *names* are case-insensitive and have compact forms (RFC 3261 §7.3.3, §20); every header
is stored under a canonical key: the lowercased long name (``"v"`` -> ``"via"``). Values are kept
as received (folding collapsed to one SP); structured parsing happens only when asked for.

Liberal where real peers need it, strict where the torture tests ask for it:
* no LWS needed between an unquoted display name and ``<`` (RFC 4475 §3.1.1.6);
* an unquoted display name must be tokens separated by LWS (``Bell, Alexander`` is a 400);
* no LWS inside ``<...>`` (RFC 4475 §3.1.2.14), no ``?``/``,`` in a URI without ``<>``
  (RFC 3261 §20.10; RFC 4475 §3.1.2.13): 400;
* empty parameters (``;;``) are a 400 (RFC 4475 §3.1.2.1);
* parameter values keep their quotes (``+sip.instance="<urn:...>"``) so they re-serialise unchanged.
"""

from __future__ import annotations

import ipaddress
import re

from .errors import RemoteProtocolError
from .methods import KNOWN_METHODS
from .uri import FAST_SIP_URI, URI, format_host, is_canonical_match, parse_uri, split_hostport, uri_from_match

# Compact forms (RFC 3261 §7.3.3 and the IANA SIP parameters registry).
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact", "b": "referred-by", "c": "content-type", "d": "request-disposition",
    "e": "content-encoding", "f": "from", "i": "call-id", "j": "reject-contact",
    "k": "supported", "l": "content-length", "m": "contact", "n": "identity-info",
    "o": "event", "r": "refer-to", "s": "subject", "t": "to", "u": "allow-events", "v": "via",
    "x": "session-expires", "y": "identity",
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1). get_all() splits only these:
# for others (Date, WWW-Authenticate, unknown extension headers) a comma is part of the value.
LIST_HEADERS = frozenset(
    "via contact route record-route path service-route allow supported require proxy-require "
    "unsupported accept accept-encoding accept-language allow-events content-encoding "
    "content-language in-reply-to warning alert-info call-info error-info reply-to "
    "accept-contact reject-contact request-disposition security-client security-server "
    "security-verify p-associated-uri p-asserted-identity p-preferred-identity".split()
)

# How we spell a header when we render a *new* one (only the key is stored for parsed ones).
CANONICAL_NAMES: dict[str, str] = {
    k: v
    for v in (
        "Via From To Call-ID CSeq Contact Max-Forwards Content-Length Content-Type Route "
        "Record-Route Expires Min-Expires Allow Supported Require Proxy-Require Unsupported "
        "Authorization Proxy-Authorization WWW-Authenticate Proxy-Authenticate User-Agent Server "
        "Accept Date Retry-After Warning Path Event Subject Timestamp Organization "
        "Authentication-Info Content-Encoding Session-Expires Min-SE Refer-To Referred-By RSeq RAck "
        "Allow-Events Subscription-State Reason Privacy P-Asserted-Identity Service-Route"
    ).split()
    for k in (v.lower(),)
}
CANONICAL_NAMES["www-authenticate"] = "WWW-Authenticate"
CANONICAL_NAMES["cseq"] = "CSeq"
CANONICAL_NAMES["call-id"] = "Call-ID"


def header_key(name: str) -> str:
    """Canonical lookup key of a header name: lowercased long form."""
    low = name.strip().lower()
    return COMPACT_FORMS.get(low, low)


def display_name(key: str) -> str:
    return CANONICAL_NAMES.get(key) or "-".join(p.capitalize() for p in key.split("-"))


# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
# display-name = *(token LWS) / quoted-string   (unquoted form: tokens separated by LWS)
_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*\Z")
# via-parm = sent-protocol LWS sent-by; sent-protocol = protocol-name SLASH protocol-version
#            SLASH transport   (SLASH = SWS "/" SWS, so LWS around the slashes is legal)
_VIA_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+([^;]+?)[ \t]*(?:;(.*))?\Z",
    re.S,
)
# gen-value = token / host / quoted-string (host covers "[IPv6]")
_PVALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]*\Z")


def _err(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(msg, 400)


# quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE; the closing quote is optional in
# the pattern so that an unterminated string can be reported.
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*("?)', re.S)
# A list separator outside quotes and <...>: group 1 (",") or 2 (";") is set for a separator.
_COMMA_SCAN = re.compile(r'"(?:[^"\\]|\\.)*("?)|<[^>]*(>?)|(,)', re.S)
_SEMI_SCAN = re.compile(r'"(?:[^"\\]|\\.)*("?)|(;)', re.S)


def quoted_end(text: str, start: int) -> int:
    """Index just after the quoted-string starting at ``text[start] == '"'``; -1 if unterminated."""
    m = _QUOTED_RE.match(text, start)
    if m is None or not m.group(1):
        return -1
    return m.end()


def split_commas(value: str) -> list[str]:
    """Split a header list on commas that are not inside quotes or ``<>``. Items are stripped."""
    if '"' not in value and "<" not in value:
        return [v.strip() for v in value.split(",")]
    out: list[str] = []
    start = 0
    for m in _COMMA_SCAN.finditer(value):
        if m.group(3):
            out.append(value[start : m.start()].strip())
            start = m.end()
        elif m.group(1) == "" and m.group(0)[:1] == '"':
            raise _err("unterminated quoted string")
        elif m.group(2) == "" and m.group(0)[:1] == "<":
            raise _err("unterminated <")
    out.append(value[start:].strip())
    return out


def _split_semis(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    out: list[str] = []
    start = 0
    for m in _SEMI_SCAN.finditer(text):
        if m.group(2):
            out.append(text[start : m.start()])
            start = m.end()
        elif not m.group(1):
            raise _err("unterminated quoted string in parameter")
    out.append(text[start:])
    return out


def parse_params(text: str) -> dict[str, str | None]:
    """Header parameters after the first ``;``: ``a=b ; c ; d="x;y"``. Names lowercased."""
    params: dict[str, str | None] = {}
    for item in _split_semis(text):
        name, sep, value = item.partition("=")
        name = name.strip(" \t")
        if not TOKEN_RE.match(name):
            raise _err(f"invalid parameter {item.strip()[:40]!r}")
        if sep:
            value = value.strip(" \t")
            if value.startswith('"'):
                if quoted_end(value, 0) != len(value):
                    raise _err("bad quoted parameter value")
            elif not _PVALUE_RE.match(value):
                raise _err(f"invalid parameter value {value[:40]!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


class NameAddr:
    """``[display] <uri> *(;param)`` (From, To, Contact, Route, Record-Route ...).

    ``display`` is the text between the quotes (escapes kept) or the unquoted tokens; None if absent.
    A NameAddr from the fast path below was fully validated by its regex; its ``uri`` and
    ``params`` objects are built from the match on first access (most are never looked at).
    """

    __slots__ = ("display", "_uri", "_params", "_m")

    def __init__(self, uri: URI, display: str | None = None, params: dict[str, str | None] | None = None):
        self._uri = uri
        self.display = display
        self._params = params if params is not None else {}
        self._m = None

    @property
    def uri(self) -> URI:
        u = self._uri
        if u is None:
            u = self._uri = uri_from_match(self._m, 2)  # type: ignore[arg-type]
        return u  # type: ignore[return-value]

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri = value

    def uri_text(self) -> str:
        """``str(self.uri)``. From the fast path, when the URI as written is already in that form,
        it is the text between ``<>`` and the URI object is not built (a registrar stores the
        Contact URI as text)."""
        m = self._m
        if self._uri is None and is_canonical_match(m, 2):  # type: ignore[arg-type]
            return m.string[m.start(3) : m.end(7)]  # type: ignore[union-attr]
        return str(self.uri)

    @property
    def params(self) -> dict[str, str | None]:
        p = self._params
        if p is None:
            ptext = self._m.group(8)  # type: ignore[union-attr]
            p = self._params = _fast_params(ptext) if ptext else {}
        return p

    @params.setter
    def params(self, value: dict[str, str | None]) -> None:
        self._params = value

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            self.params.pop("tag", None)
        else:
            self.params["tag"] = value

    def __str__(self) -> str:
        d = "" if self.display is None else f'"{self.display}" '
        return f"{d}<{self.uri}>{format_params(self.params)}"

    def __reduce__(self) -> tuple[type[NameAddr], tuple[URI, str | None, dict[str, str | None]]]:
        return NameAddr, (self.uri, self.display, self.params)  # copy/pickle: no match object

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"


# Fast paths. Each one is one regex over the whole value for the shape nearly every message
# has; a value it does not match goes through the general parser, which accepts a superset and
# builds the same object for what both accept (tests/sip/test_fastpath.py checks that).
_T = r"[A-Za-z0-9\-.!%*_+`'~]"
_Q = r'"[^"\\]*(?:\\.[^"\\]*)*"'  # quoted-string, the loop unrolled (much faster in re)
# header parameters: ;name[=token-or-host|quoted-string], no LWS
_HPARAMS = rf'((?:;{_T}+(?:=(?:{_Q}|[A-Za-z0-9\-.!%*_+`\'~:\[\]]*))?)*)'
_HPARAM_ITEM = re.compile(rf'({_T}+)(?:(=)({_Q}|[A-Za-z0-9\-.!%*_+`\'~:\[\]]*))?;?', re.S)
# [ "display" | tokens ] <sip-uri> params        (groups: 1 quoted, 2 tokens, 3-7 URI, 8 params)
_NAME_ADDR_FAST = re.compile(
    rf'(?:"([^"\\]*(?:\\.[^"\\]*)*)"[ \t]*|({_T}+(?:[ \t]+{_T}+)*)[ \t]*)?'
    rf"<{FAST_SIP_URI}>{_HPARAMS}\Z",
    re.S,
).match
# SIP/2.0/transport host[:port] params        (one via-parm, no LWS inside)
_VIA_FAST = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9_][A-Za-z0-9_\-.]*)(?::([0-9]{{1,5}}))?{_HPARAMS}\Z", re.S
).match
_CSEQ_FAST = re.compile(rf"([0-9]{{1,10}}) ({_T}+)\Z").match
_new = object.__new__


def _fast_params(ptext: str) -> dict[str, str | None]:
    """Parameters matched by ``_HPARAMS`` (non-empty, starting with ';') -> dict."""
    params: dict[str, str | None] = {}
    if '"' not in ptext:
        for item in ptext[1:].split(";"):
            name, sep, value = item.partition("=")
            params[name.lower()] = value if sep else None
    else:
        for name, sep, value in _HPARAM_ITEM.findall(ptext, 1):
            params[name.lower()] = value if sep else None
    return params


def fast_name_addr(text: str) -> NameAddr | None:
    """Validate with one regex; the URI and params are built on first access (see NameAddr)."""
    m = _NAME_ADDR_FAST(text)
    if m is None:
        return None
    d, tokens, port = m.group(1, 2, 6)
    if port is not None and len(port) == 5 and port > "65535":
        return None  # the general code raises the error
    na = _new(NameAddr)
    na.display = tokens if d is None else d
    na._uri = na._params = None
    na._m = m
    return na


def parse_name_addr(text: str) -> NameAddr:
    """Parse one name-addr or addr-spec with header parameters. Raises RemoteProtocolError(400)."""
    return fast_name_addr(text) or parse_name_addr_general(text)


def parse_name_addr_general(text: str) -> NameAddr:
    """The general parser, for what ``fast_name_addr`` does not take."""
    s = text.strip(" \t")
    display: str | None = None
    if s.startswith('"'):
        end = quoted_end(s, 0)
        if end < 0:
            raise _err("unterminated quote in display name")
        display = s[1 : end - 1]
        rest = s[end:].lstrip(" \t")
        if not rest.startswith("<"):
            raise _err("quoted display name without <uri>")
    else:
        lt = s.find("<")
        if lt >= 0:
            d = s[:lt].strip(" \t")
            if d:
                if not _DISPLAY_TOKENS_RE.match(d):
                    raise _err(f"display name must be quoted: {d[:40]!r}")
                display = d
            rest = s[lt:]
        else:
            rest = ""
    if rest:
        gt = rest.find(">")
        if gt < 0:
            raise _err("missing >")
        uri = parse_uri(rest[1:gt])
        after = rest[gt + 1 :].strip(" \t")
        if not after:
            return NameAddr(uri, display)
        if after[0] != ";":
            raise _err(f"junk after >: {after[:40]!r}")
        return NameAddr(uri, display, parse_params(after[1:]))
    # addr-spec: the first ';' ends the URI, what follows are header parameters (RFC 3261 §20.10)
    utext, sep, ptext = s.partition(";")
    utext = utext.rstrip(" \t")
    if "?" in utext or "," in utext:
        raise _err("URI with headers or commas must be enclosed in <>")
    uri = parse_uri(utext)
    return NameAddr(uri, None, parse_params(ptext) if sep else None)


def parse_name_addr_list(value: str) -> list[NameAddr]:
    if "," not in value:
        na = fast_name_addr(value)
        if na is not None:
            return [na]
    items = split_commas(value)
    for item in items:
        if not item:
            raise _err("empty element in list")
    return [parse_name_addr(item) for item in items]


class Via:
    """One Via value. ``params`` holds branch, received, rport (None if bare), maddr, ttl ...

    A Via from the fast path below keeps its parameter text and builds ``params`` on first access
    (a stateless REGISTER never reads them: its reply copies the Via line as received)."""

    __slots__ = ("protocol", "transport", "host", "port", "_params", "_ptext")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.protocol = protocol
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self._params = params if params is not None else {}
        self._ptext = None

    @property
    def params(self) -> dict[str, str | None]:
        p = self._params
        if p is None:
            p = self._params = _fast_params(self._ptext)  # type: ignore[arg-type]
        return p

    @params.setter
    def params(self, value: dict[str, str | None]) -> None:
        self._params = value

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        h = format_host(self.host)
        return h if self.port is None else f"{h}:{self.port}"

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The numeric rport value (RFC 3581), None if absent, bare or not a port (0-65535).

        response-port = "rport" [EQUAL 1*DIGIT]   (RFC 3581 §3); a port is 16 bits."""
        v = self.params.get("rport")
        if v and len(v) <= 5 and v.isdigit() and v.isascii():
            p = int(v)
            return p if p <= 65535 else None
        return None

    def response_address(self) -> tuple[str, int]:
        """Where a response to this Via goes (RFC 3261 §18.2.2, RFC 3581 §4): received (else
        the sent-by host) and rport (else the sent-by port, else 5060).

        via-received = "received" EQUAL (IPv4address / IPv6address)   (RFC 3261 §25.1)
        Only an IP address counts (bracketed IPv6 too, RFC 5118 §4.5); anything else is ignored
        rather than handed to a socket, as is an rport that is not a port."""
        return ip_literal(self.params.get("received")) or self.host, self.rport or self.port or 5060

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


def parse_via(text: str) -> list[Via]:
    """Parse a Via header value (possibly several comma-separated via-parms)."""
    v = fast_via(text)
    return [v] if v is not None else parse_via_general(text)


def fast_via(text: str) -> Via | None:
    """One via-parm in the common shape, validated with one regex; None for anything else."""
    m = _VIA_FAST(text)
    if m is None:
        return None
    transport, host, port, ptext = m.groups()
    p = None
    if port is not None:
        p = int(port)
        if p > 65535:
            return None
    v = _new(Via)
    v.protocol = "SIP/2.0"
    v.transport = transport.upper()
    v.host = host
    v.port = p
    if ptext:
        v._params = None  # built from the text when first read (see Via)
        v._ptext = ptext
    else:
        v._params = {}
        v._ptext = None
    return v


def parse_via_general(text: str) -> list[Via]:
    """The general parser, for what ``fast_via`` does not take (several via-parms, comments ...)."""
    out = []
    for item in split_commas(text):
        m = _VIA_RE.match(item)
        if m is None:
            raise _err(f"invalid Via {item[:60]!r}")
        name, version, transport, sent_by, ptext = m.groups()
        host, port = split_hostport(sent_by.replace(" ", "").replace("\t", ""))
        params = parse_params(ptext) if ptext is not None else {}
        out.append(Via(transport, host, port, params, f"{name.upper()}/{version}"))
    return out


class CSeq:
    __slots__ = ("seq", "method")

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"

    def __repr__(self) -> str:
        return f"CSeq({self.seq}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CSeq) and (self.seq, self.method) == (other.seq, other.method)

    def __hash__(self) -> int:
        return hash((self.seq, self.method))


def parse_cseq(text: str) -> CSeq:
    """CSeq = 1*DIGIT LWS Method; the number must fit in 32 bits (RFC 3261 §8.1.1.5)."""
    return fast_cseq(text) or parse_cseq_general(text)


def fast_cseq(text: str) -> CSeq | None:
    """A CSeq in the common shape (``1 INVITE``); None for anything else."""
    num, _, method = text.partition(" ")
    if method in KNOWN_METHODS and num.isdigit() and num.isascii() and len(num) <= 10:
        pass  # what the regex below accepts, without a regex call (its setup is most of the cost)
    else:
        m = _CSEQ_FAST(text)
        if m is None:
            return None
        num, method = m.group(1, 2)
    n = int(num)
    if n > 0xFFFFFFFF:
        return None
    c = _new(CSeq)
    c.seq = n
    c.method = method
    return c




def parse_cseq_general(text: str) -> CSeq:
    """The general parser, for what ``fast_cseq`` does not take."""
    parts = text.split()
    if len(parts) != 2:
        raise _err(f"invalid CSeq {text[:40]!r}")
    num, method = parts
    if not num.isdigit() or not num.isascii() or len(num) > 10 or int(num) > 0xFFFFFFFF:
        raise _err(f"invalid CSeq number {num[:40]!r}")
    if not TOKEN_RE.match(method):
        raise _err(f"invalid CSeq method {method[:40]!r}")
    return CSeq(int(num), method)


# Decimal strings as they usually appear (no leading zeros) -> int: Max-Forwards, Content-Length.
SMALL_UINTS = {str(i): i for i in range(2048)}


def parse_uint(text: str, limit: int, what: str) -> int:
    """A bounded decimal (leading zeros allowed) -> int; RemoteProtocolError(400) if not."""
    t = text.strip()
    if not t or not t.isdigit() or not t.isascii() or len(t.lstrip("0")) > len(str(limit)):
        raise _err(f"invalid {what} {t[:40]!r}")
    value = int(t)
    if value > limit:
        raise _err(f"{what} {t[:40]} out of range")
    return value


def parse_token_list(value: str) -> list[str]:
    """Require / Proxy-Require / Supported / Allow values: comma-separated tokens."""
    return [v for v in (x.strip() for x in value.split(",")) if v]


def ip_literal(text: str | None) -> str | None:
    """``text`` without brackets when it is an IPv4 or IPv6 address, else None."""
    if not text:
        return None
    t = text[1:-1] if text[:1] == "[" and text[-1:] == "]" else text
    try:
        ipaddress.ip_address(t)
    except ValueError:
        return None
    return t
