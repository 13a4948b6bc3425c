"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760), as pure functions.

Nothing here reads the clock or a random source: the caller passes ``now`` and random bytes.

Nonces are stateless: ``<timestamp hex>.<random hex>.<HMAC-SHA256(secret, timestamp.random)>``.
The server needs no table to know that it issued a nonce and when: ``check_nonce`` recomputes
the HMAC (constant-time compare) and reports "stale" for an authentic but expired nonce, so the
client retries with ``stale=true`` without asking the user again (RFC 2617 §3.2.1).

Replays inside a nonce's lifetime are caught by :class:`NonceCounter`: a bounded LRU of the last
nonce-count seen per nonce (qop=auth requires nc to increase). A nonce that fell out of the LRU
is accepted again once; its lifetime still bounds the window.

The HA1 is an input (the subscriber table stores it): we never need plain-text passwords.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass

from .errors import RemoteProtocolError
from .headers import quoted_end, split_commas

ALGORITHMS = {
    "MD5": hashlib.md5,
    "MD5-SESS": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-256-SESS": hashlib.sha256,
}
try:  # CPython's own MD5: the same digest, without OpenSSL's per-object setup (a third of the cost)
    from _md5 import md5 as _md5
except ImportError:  # pragma: no cover - a Python built without it
    _md5 = hashlib.md5
# A nonce issued in the future by more than this is forged or from another clock: invalid.
_CLOCK_SKEW = 5.0


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm.upper()](text.encode("utf-8", "surrogateescape")).hexdigest()


def ha1_md5(user: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


def ha1_sha256(user: str, realm: str, password: str) -> str:
    return hashlib.sha256(f"{user}:{realm}:{password}".encode()).hexdigest()


_KEYED: dict[bytes, tuple] = {}  # secret -> (inner, outer) SHA-256 states with the padded key absorbed
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
try:  # CPython's own SHA-256 for the nonce MAC: copies and digests of its objects are cheaper
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - a Python built without it
    _sha256 = hashlib.sha256


def _mac(secret: bytes, payload: str) -> str:
    """HMAC-SHA256 (RFC 2104, as ``hmac.new(secret, payload, sha256)``), first 32 hex digits.

    The two hash states keyed with the padded secret are made once; copying them skips hashing
    the key per nonce, and working on the hash objects directly skips the ``hmac.HMAC`` wrapper
    (its copy() and hexdigest() are Python code: a fifth of the cost of a nonce)."""
    pads = _KEYED.get(secret)
    if pads is None:
        if len(_KEYED) >= 16:
            _KEYED.clear()
        key = (_sha256(secret).digest() if len(secret) > 64 else secret).ljust(64, b"\0")
        pads = _KEYED[secret] = (_sha256(key.translate(_IPAD)), _sha256(key.translate(_OPAD)))
    inner = pads[0].copy()
    inner.update(payload.encode("ascii"))
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.hexdigest()[:32]


def make_nonce(secret: bytes, now: float, rand: bytes) -> str:
    """A nonce carrying its creation time and an HMAC over it."""
    payload = f"{int(now):x}.{rand.hex()}"
    return f"{payload}.{_mac(secret, payload)}"


def check_nonce(secret: bytes, nonce: str, now: float, max_age: float) -> str:
    """"ok", "stale" (authentic but older than max_age) or "invalid"."""
    parts = nonce.split(".")
    if len(parts) != 3 or len(parts[0]) > 16:
        return "invalid"
    ts_hex, rand_hex, mac = parts
    if not hmac.compare_digest(_mac(secret, f"{ts_hex}.{rand_hex}"), mac):
        return "invalid"
    try:
        ts = int(ts_hex, 16)
    except ValueError:
        return "invalid"
    if ts > now + _CLOCK_SKEW:
        return "invalid"
    return "stale" if now - ts > max_age else "ok"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(
    realm: str,
    nonce: str,
    algorithm: str = "MD5",
    stale: bool = False,
    qop: str | None = "auth",
    opaque: str | None = None,
) -> str:
    """The value of a WWW-Authenticate / Proxy-Authenticate header."""
    if algorithm.upper() not in ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    parts = [f"Digest realm={_quote(realm)}", f"nonce={_quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    parts.append(f"algorithm={algorithm}")
    if qop:
        parts.append(f"qop={_quote(qop)}")
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)


@dataclass(frozen=True, kw_only=True)
class Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    nc: str | None = None
    qop: str | None = None
    opaque: str | None = None


_new = object.__new__


def make_credentials(username: str, realm: str, nonce: str, uri: str, response: str, algorithm: str,
                     cnonce: str | None, nc: str | None, qop: str | None, opaque: str | None) -> Credentials:
    """``Credentials(...)`` with every field given, without the frozen dataclass ``__init__`` (it sets
    each field through ``object.__setattr__``: two thirds of the cost of the fast parser). The
    object is the same: equal, hashable, printable."""
    c = _new(Credentials)
    c.__dict__.update(username=username, realm=realm, nonce=nonce, uri=uri, response=response, algorithm=algorithm,
                      cnonce=cnonce, nc=nc, qop=qop, opaque=opaque)
    return c


def _unquote(value: str) -> str:
    if value.startswith('"'):
        if quoted_end(value, 0) != len(value):
            raise RemoteProtocolError("bad quoted string in credentials", 400)
        inner = value[1:-1]
        if "\\" not in inner:
            return inner
        out = []
        i = 0
        while i < len(inner):
            c = inner[i]
            if c == "\\" and i + 1 < len(inner):
                i += 1
                c = inner[i]
            out.append(c)
            i += 1
        return "".join(out)
    return value


def parse_auth_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in split_commas(text):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise RemoteProtocolError(f"bad auth parameter {item[:40]!r}", 400)
        params[name.strip().lower()] = _unquote(value.strip())
    return params


def parse_credentials(header_value: str) -> Credentials:
    """Parse an Authorization / Proxy-Authorization value. A non-Digest scheme or missing
    mandatory fields raise RemoteProtocolError(400): callers usually treat that as "no credentials"
    and challenge (RFC 4475 §3.3.7)."""
    scheme, _, rest = header_value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise RemoteProtocolError(f"unsupported authentication scheme {scheme[:30]!r}", 400)
    p = parse_auth_params(rest)
    try:
        creds = Credentials(
            username=p["username"],
            realm=p["realm"],
            nonce=p["nonce"],
            uri=p["uri"],
            response=p["response"],
            algorithm=p.get("algorithm", "MD5").upper(),
            cnonce=p.get("cnonce"),
            nc=p.get("nc"),
            qop=p.get("qop"),
            opaque=p.get("opaque"),
        )
    except KeyError as e:
        raise RemoteProtocolError(f"credentials without {e.args[0]}", 400) from None
    if creds.algorithm not in ALGORITHMS:
        raise RemoteProtocolError(f"unsupported digest algorithm {creds.algorithm[:30]!r}", 400)
    if creds.qop is not None and (creds.cnonce is None or creds.nc is None):
        raise RemoteProtocolError("qop without cnonce/nc", 400)
    return creds


def expected_response(credentials: Credentials, method: str, ha1: str, *, body: bytes = b"") -> str:
    c = credentials
    alg = c.algorithm
    if alg == "MD5" and c.qop == "auth":  # what nearly every UA sends: the general code below, inlined
        md5 = _md5
        ha2 = md5(f"{method}:{c.uri}".encode("utf-8", "surrogateescape")).hexdigest()
        return md5(f"{ha1}:{c.nonce}:{c.nc}:{c.cnonce}:auth:{ha2}".encode("utf-8", "surrogateescape")).hexdigest()
    if alg.endswith("-SESS"):
        ha1 = _h(alg, f"{ha1}:{c.nonce}:{c.cnonce or ''}")
    if c.qop == "auth-int":
        ha2 = _h(alg, f"{method}:{c.uri}:{ALGORITHMS[alg](body).hexdigest()}")
    else:
        ha2 = _h(alg, f"{method}:{c.uri}")
    if c.qop in ("auth", "auth-int"):
        return _h(alg, f"{ha1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop}:{ha2}")
    return _h(alg, f"{ha1}:{c.nonce}:{ha2}")


def verify(credentials: Credentials, method: str, ha1: str, *, body: bytes = b"") -> bool:
    """True if the response matches. Constant-time comparison. ``ha1`` must fit the algorithm."""
    if credentials.qop is not None and credentials.qop not in ("auth", "auth-int"):
        return False
    expected = expected_response(credentials, method, ha1, body=body)
    given = credentials.response.lower().encode("ascii", "replace")
    return hmac.compare_digest(expected.encode("ascii"), given)


class NonceCounter:
    """Bounded replay guard: remembers the highest nonce-count seen per nonce (LRU)."""

    def __init__(self, max_entries: int = 10000) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_update(self, nonce: str, nc: str | int | None) -> bool:
        """False if ``nc`` does not exceed the last one seen for this nonce (a replay)."""
        if nc is None:
            value = 0
        elif isinstance(nc, int):
            value = nc
        else:
            try:
                value = int(nc, 16)
            except ValueError:
                return False
        seen = self._seen
        last = seen.get(nonce)
        if last is not None:
            if value <= last:
                return False
            seen.move_to_end(nonce)
        seen[nonce] = value
        if len(seen) > self.max_entries:
            seen.popitem(last=False)
        return True
