"""Request checks the parser leaves to the proxy and the registrar.

The parser accepts these requests (they are well-formed); whether to refuse them depends on the
role, so the request pipeline calls them from its stages (``sipd/services/pipeline.py``). Each
returns a ``Refusal`` or None. RFC 4475 §3.3: an unknown Request-URI scheme -> 416, unknown
Proxy-Require tags -> 420 with Unsupported, Max-Forwards 0 on a request to forward -> 483, a
non-SIP address of record at a registrar -> 400, a method the target does not take -> 405 when we
know the method, else 501 (both with Allow), a Require tag the server does not support when it
answers the request itself -> 420 with Unsupported.

What every message must satisfy whatever the role (one Via, From, To, Call-ID, CSeq matching the
method ...) is checked when it is parsed (``message.validate``), not here.
"""

from __future__ import annotations

from typing import NamedTuple

from .headers import parse_token_list
from .message import Request
from .methods import KNOWN_METHODS

SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})


class Refusal(NamedTuple):
    """The answer to a request refused by a check, and why in a few words (for the log line)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    why: str


def check_uri_scheme(req: Request, schemes: frozenset[str] = SUPPORTED_SCHEMES) -> Refusal | None:
    """416 for a Request-URI scheme we cannot route (RFC 3261 §16.3 step 2)."""
    scheme = req.uri_scheme
    if scheme not in schemes:
        return Refusal(416, "Unsupported URI Scheme", [], f"R-URI scheme {scheme}")
    return None


def check_proxy_require(req: Request) -> Refusal | None:
    """420 listing the Proxy-Require tags in Unsupported (RFC 3261 §16.3 step 5): as a proxy we
    support no extension that a Proxy-Require could ask for."""
    if "proxy-require" not in req.headers._idx():
        return None
    tags = [tag for value in req.get_all("Proxy-Require") for tag in parse_token_list(value)]
    if not tags:
        return None
    text = ", ".join(tags)
    return Refusal(420, "Bad Extension", [("Unsupported", text)], f"Proxy-Require {text}")


def check_require(req: Request, supported: frozenset[str]) -> Refusal | None:
    """420 listing the Require tags we do not support, when we answer the request ourselves as
    the UAS (RFC 3261 §8.2.2.3; a proxy leaves Require to the UAS). An ACK or CANCEL is never
    refused for its Require: the transaction it belongs to was accepted or cannot be undone."""
    if req.method in ("ACK", "CANCEL") or "require" not in req.headers._idx():
        return None
    tags = [tag for value in req.get_all("Require") for tag in parse_token_list(value)
            if tag.lower() not in supported]
    if not tags:
        return None
    text = ", ".join(tags)
    return Refusal(420, "Bad Extension", [("Unsupported", text)], f"Require {text}")


def check_max_forwards(req: Request) -> Refusal | None:
    """483 when a request we would forward has no hops left (RFC 3261 §16.3 step 3)."""
    mf = req.max_forwards
    if mf is not None and mf <= 0:
        return Refusal(483, "Too Many Hops", [], "Max-Forwards reached 0")
    return None


def check_aor(req: Request) -> Refusal | None:
    """400 for a REGISTER whose address of record (To) is not a SIP or SIPS URI (RFC 3261 §10.3)."""
    if not req.to.uri.is_sip:
        return Refusal(400, "Bad Request", [], "AOR is not a SIP URI")
    return None


def check_method(req: Request, allowed: frozenset[str]) -> Refusal | None:
    """A target that takes only ``allowed``: 405 for a method we know, 501 for one we do not
    (RFC 3261 §21.4.6, §21.5.2); both list ``allowed`` in Allow."""
    method = req.method
    if method in allowed:
        return None
    allow = [("Allow", ", ".join(sorted(allowed)))]
    if method not in KNOWN_METHODS:
        return Refusal(501, "Not Implemented", allow, f"{method} not implemented")
    return Refusal(405, "Method Not Allowed", allow, f"{method} not allowed")
