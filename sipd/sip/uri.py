"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed and compared per RFC 3261 §19.1.4.

Policy notes (see also ``parser.py``):

* Escapes are validated (``%`` must be followed by two hex digits) but never decoded in the stored
  fields: ``user``, ``password``, parameter and header values are kept exactly as received, so a URI
  is never unescaped twice (RFC 4475 §3.1.1.3). Comparison unescapes on the fly.
* IPv6 references must be in brackets (RFC 5118 §4.2); the host is stored without them. An IPv6
  literal with three consecutive colons (``[2001:db8:::192.0.2.1]``, RFC 5118 §4.10) is rejected:
  RFC 3261's ABNF lets it through by accident, RFC 4291 forbids it, and accepting it would mean
  re-serialising a different address than we received.
* Other schemes (``isbn:``, ``http:``, ``soap.beep:`` ...) parse as an *opaque* URI: ``scheme`` and
  ``opaque`` are set, the rest is empty. Whether such a URI is acceptable (416 for a Request-URI,
  400 for an address of record) is an application decision: see ``sanity.py``.
* Parameter names are case-insensitive and stored lowercased; values keep their case.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote_to_bytes

from .errors import RemoteProtocolError

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )          (RFC 3986 §3.1)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")

# Characters a SIP URI may contain at all (RFC 3261 §25.1): unreserved, reserved, escaped, plus the
# brackets of an IPv6reference. Everything else (SP, CTL, <>"{}|\^`, non-ASCII) is a syntax error.
_SIP_URI_BAD = re.compile(r"[^A-Za-z0-9\-_.!~*'()&=+$,;?/:@%\[\]]")
# An absoluteURI of another scheme: anything visible and ASCII except the delimiters of name-addr.
_OPAQUE_BAD = re.compile(r"[^\x21-\x7e]|[<>\"]")
# escaped = "%" HEXDIG HEXDIG
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# hostname = *( domainlabel "." ) toplabel [ "." ]; IPv4address. We also accept "_" (seen in the
# wild in SRV-style names) and do not insist on the toplabel starting with a letter.
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*)\Z")
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")
# token (RFC 3261 §25.1) used for parameter names.
_PNAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\[\]/:&$]+\Z")
# telephone-subscriber (RFC 3966): liberal, visual separators allowed.
_TEL_RE = re.compile(r"[0-9A-Za-z+\-.()*#%!~'_]+\Z")

# Parameters that must match when present in either URI (RFC 3261 §19.1.4).
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def _err(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(msg, 400)


def parse_host(text: str) -> str:
    """Validate a host (hostname, IPv4, or IPv6 *without* brackets) and return it."""
    if ":" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise _err(f"invalid IPv6 address {text!r}") from None
        return text
    if not _HOSTNAME_RE.match(text):
        raise _err(f"invalid host {text!r}")
    return text


def split_hostport(text: str) -> tuple[str, int | None]:
    """``host[:port]`` with IPv6 in brackets -> (host without brackets, port or None)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _err(f"unterminated IPv6 reference in {text!r}")
        host = text[1:end]
        if ":" not in host:
            raise _err(f"invalid IPv6 reference {text!r}")
        parse_host(host)
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise _err(f"junk after IPv6 reference in {text!r}")
        return host, _port(rest[1:])
    host, sep, port = text.partition(":")
    if not host:
        raise _err("empty host")
    parse_host(host)
    return host, (_port(port) if sep else None)


def _port(text: str) -> int:
    if not _PORT_RE.match(text):
        raise _err(f"invalid port {text!r}")
    value = int(text)
    if value > 65535:
        raise _err(f"port {value} out of range")
    return value


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not name or not _PNAME_RE.match(name):
            raise _err(f"invalid URI parameter {item!r}")
        params[name.lower()] = value if sep else None
    return params


def _unq(text: str | None) -> bytes | None:
    return None if text is None else unquote_to_bytes(text)


class URI:
    """A parsed URI. Fields hold the received text (escapes intact); ``str()`` re-serialises.

    Treat instances as values: build a changed copy with :meth:`replace`.
    """

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "opaque")

    def __init__(
        self,
        scheme: str,
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
        opaque: str | None = None,
    ) -> None:
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params if params is not None else {}
        self.headers = headers if headers is not None else {}
        self.opaque = opaque

    # -- derived ----------------------------------------------------------------------------------
    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def host_port(self) -> str:
        h = format_host(self.host or "")
        return h if self.port is None else f"{h}:{self.port}"

    @property
    def transport(self) -> str | None:
        t = self.params.get("transport")
        return t.lower() if t else None

    def aor(self) -> str:
        """Address of record: ``scheme:user@host`` without port, parameters or headers."""
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user}"
        host = format_host((self.host or "").lower())
        return f"{self.scheme}:{self.user}@{host}" if self.user else f"{self.scheme}:{host}"

    def replace(self, **changes: object) -> URI:
        fields = {name: getattr(self, name) for name in URI.__slots__}
        fields["params"] = dict(self.params)
        fields["headers"] = dict(self.headers)
        fields.update(changes)
        return URI(**fields)  # type: ignore[arg-type]

    # -- serialisation ----------------------------------------------------------------------------
    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        scheme = self.scheme
        if scheme == "tel":
            text = f"tel:{self.user or ''}"
        else:
            host = self.host or ""
            if ":" in host:
                host = f"[{host}]"  # format_host
            if self.port is not None:
                host = f"{host}:{self.port}"
            user = self.user
            if user is None:
                text = f"{scheme}:{host}"
            elif self.password is None:
                text = f"{scheme}:{user}@{host}"
            else:
                text = f"{scheme}:{user}:{self.password}@{host}"
        params = self.params
        if params:
            text += "".join([f";{name}" if value is None else f";{name}={value}" for name, value in params.items()])
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return text

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"

    # -- comparison (RFC 3261 §19.1.4) -------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = parse_uri(other)
            except RemoteProtocolError:
                return False
        if not isinstance(other, URI):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if _unq(self.user) != _unq(other.user) or _unq(self.password) != _unq(other.password):
            return False
        if (self.host or "").lower() != (other.host or "").lower() or self.port != other.port:
            return False
        a, b = self.params, other.params
        for name in _STRICT_PARAMS:
            va, vb = a.get(name, False), b.get(name, False)
            if (va is False) != (vb is False):
                return False
            if va is not False and _unq(va.lower() if va else va) != _unq(vb.lower() if vb else vb):  # type: ignore[union-attr]
                return False
        for name in a.keys() & b.keys():
            va, vb = a[name], b[name]
            if _unq(va.lower() if va else va) != _unq(vb.lower() if vb else vb):
                return False
        ha = {k.lower(): _unq(v) for k, v in self.headers.items()}
        hb = {k.lower(): _unq(v) for k, v in other.headers.items()}
        return ha == hb

    def __hash__(self) -> int:
        return hash((self.scheme, (self.host or "").lower(), self.port, self.opaque))


def parse_uri(text: str) -> URI:
    """Parse a sip, sips or tel URI (or any other scheme, kept opaque). Raises RemoteProtocolError(400)."""
    m = match_fast_uri(text)
    if m is not None:
        uri = uri_from_match(m, 0)
        if uri is not None:
            return uri
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME_RE.match(scheme):
        raise _err(f"invalid URI {text[:80]!r}")
    low = scheme.lower()
    if not rest:
        raise _err(f"empty URI {text[:80]!r}")
    if low == "sip" or low == "sips":
        return _parse_sip_slow(low, rest)
    if low == "tel":
        return _parse_tel(rest)
    if _OPAQUE_BAD.search(rest):
        raise _err(f"invalid characters in URI {text[:80]!r}")
    return URI(low, opaque=rest)


# Fast path for the common shape ``sip:user@host[:port][;params]`` (no escapes, IPv6, password or
# headers): one regex match, no validation left to do. Anything else goes through the general
# code below, which accepts a superset and produces the same fields for what both accept
# (tests/sip/test_fastpath.py). No "`" in parameter names: it is not a URI character at all.
# The pieces are reused by the name-addr fast path in ``headers.py`` (groups: scheme, user, host,
# port, params).
FAST_SIP_URI = (
    r"([Ss][Ii][Pp][Ss]?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)@)?([A-Za-z0-9_][A-Za-z0-9_\-.]*)"
    r"(?::([0-9]{1,5}))?((?:;[A-Za-z0-9\-.!*_+'~\[\]/:&$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]*)?)*)"
)
match_fast_uri = re.compile(FAST_SIP_URI + r"\Z").match  # a whole text in the common shape, or None
_new_uri = object.__new__


def uri_from_match(m: re.Match[str], g: int) -> URI | None:
    """Build the URI from a match of FAST_SIP_URI whose groups start after group ``g``."""
    scheme, user, host, port, ptext = m.group(g + 1, g + 2, g + 3, g + 4, g + 5)
    p = None
    if port is not None:
        p = int(port)
        if p > 65535:
            return None  # the general code raises the error
    u = _new_uri(URI)
    u.scheme = scheme.lower()
    u.user = user
    u.password = None
    u.host = host
    u.port = p
    if ptext:
        params: dict[str, str | None] = {}
        for item in ptext[1:].split(";"):
            name, sep, value = item.partition("=")
            params[name.lower()] = value if sep else None
        u.params = params
    else:
        u.params = {}
    u.headers = {}
    u.opaque = None
    return u


def is_canonical_match(m: re.Match[str], g: int) -> bool:
    """A FAST_SIP_URI match (groups after group ``g``) that parses and re-serialises to the same
    text: lowercase scheme and parameter names (str(URI) lowercases them; values are kept), no
    repeated parameter, port in range and without leading 0."""
    scheme, port, ptext = m.group(g + 1, g + 4, g + 5)
    if scheme != "sip" and scheme != "sips":
        return False
    if port is not None and (len(port) == 5 and port > "65535" or (port[0] == "0" and port != "0")):
        return False
    if not ptext:
        return True
    if ptext.count(";") == 1:  # one parameter (transport=UDP): its value is kept as written
        name = ptext[1:].partition("=")[0]
        return name == name.lower()
    names = [p.partition("=")[0] for p in ptext[1:].split(";")]
    return len(set(names)) == len(names) and all(n == n.lower() for n in names)


def _parse_sip_slow(scheme: str, rest: str) -> URI:
    if _SIP_URI_BAD.search(rest):
        raise _err(f"invalid characters in URI {rest[:80]!r}")
    if "%" in rest and _BAD_ESCAPE.search(rest):
        raise _err(f"broken escape in URI {rest[:80]!r}")
    user = password = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, sep, pw = userinfo.partition(":")
        if sep:
            password = pw
        if not user:
            raise _err("empty user part in URI")
    hostport, qsep, hdrs = rest.partition("?")
    hostport, _, ptext = hostport.partition(";")
    host, port = split_hostport(hostport)
    params = _parse_params(ptext)
    headers: dict[str, str] = {}
    if qsep:
        for item in hdrs.split("&"):
            name, sep, value = item.partition("=")
            if not name or not sep:
                raise _err(f"invalid URI header {item!r}")
            headers[name] = value
    return URI(scheme, user, password, host, port, params, headers)


def _parse_tel(rest: str) -> URI:
    number, _, ptext = rest.partition(";")
    if not _TEL_RE.match(number):
        raise _err(f"invalid tel URI number {number!r}")
    if _OPAQUE_BAD.search(ptext):
        raise _err("invalid characters in tel URI")
    return URI("tel", user=number, params=_parse_params(ptext))
