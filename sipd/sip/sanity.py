"""Application-level checks the parser deliberately leaves to the registrar/proxy.

The parser accepts these messages (they are well-formed); whether to refuse them depends on the
role. Each helper returns ``(status, reason, extra_headers)`` or None.
RFC 4475 §3.3: unknown R-URI scheme -> 416, unknown Proxy-Require/Require -> 420 + Unsupported,
Max-Forwards 0 when forwarding -> 483, non-SIP address of record at a registrar -> 400.
"""

from __future__ import annotations

from .message import Request
from .methods import KNOWN_METHODS
from .headers import parse_token_list

Verdict = tuple[int, str, list[tuple[str, str]]] | None
SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})


def check_uri_scheme(req: Request, schemes: frozenset[str] = SUPPORTED_SCHEMES) -> Verdict:
    if req.uri.scheme not in schemes:
        return 416, "Unsupported URI Scheme", []
    return None


def check_require(req: Request, supported: frozenset[str], *, proxy: bool) -> Verdict:
    """420 with Unsupported listing the tags we do not know (Proxy-Require as proxy, else Require)."""
    tags: list[str] = []
    for value in req.get_all("Proxy-Require" if proxy else "Require"):
        tags += parse_token_list(value)
    bad = [t for t in tags if t.lower() not in supported]
    if bad and req.method not in ("ACK", "CANCEL"):
        return 420, "Bad Extension", [("Unsupported", ", ".join(bad))]
    return None


def check_max_forwards(req: Request) -> Verdict:
    """483 when a request we would forward has no hops left (OPTIONS may be answered instead)."""
    mf = req.max_forwards
    if mf is not None and mf <= 0:
        return 483, "Too Many Hops", []
    return None


def check_aor(req: Request) -> Verdict:
    """A registrar needs sip/sips To and Contact URIs (RFC 3261 §10.3; RFC 4475 §3.3.4)."""
    if not req.to.uri.is_sip:
        return 400, "Bad Request (To must be a SIP or SIPS URI)", []
    for c in req.contacts:
        if c.uri.opaque is not None:
            return 400, "Bad Request (Contact URI scheme)", []
    return None


def check_method(req: Request, allowed: frozenset[str]) -> Verdict:
    """A UAS/registrar answering itself: 501 for unknown methods, 405 for known but not allowed."""
    if req.method in allowed:
        return None
    allow = [("Allow", ", ".join(sorted(allowed)))]
    if req.method not in KNOWN_METHODS:
        return 501, "Not Implemented", allow
    return 405, "Method Not Allowed", allow
