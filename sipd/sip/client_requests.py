"""The requests a client transaction builds itself (RFC 3261 §17.1.1.3 ACK for a non-2xx final,
§9.1 CANCEL) and the slim copy of an INVITE it keeps for them until the final response."""

from __future__ import annotations

from typing import Any

from .header_fields import Headers
from .message import Request, Response

_SLIM_KEYS = frozenset({"route", "from", "to", "call-id", "cseq", "max-forwards"})


def slim_invite(invite: Request) -> Request:
    """What an INVITE client transaction keeps of its request until the final response: the
    Request-URI and the headers ``make_cancel``/``make_ack`` copy (top Via, Route, From, To,
    Call-ID, CSeq, Max-Forwards) -- no body, no other headers, no parsed caches."""
    items = invite.headers._items
    top = next((it for it in items if it[0] == "via"), None)
    slim = [it for it in items if it[0] in _SLIM_KEYS]
    if top is not None:
        slim.insert(0, top)
    return Request("INVITE", invite.uri_text, Headers._from_items(slim))


def _copy(req: Request, names: tuple[str, ...]) -> list[Any]:
    return [it for it in req.headers._items if it[0] in names]


def make_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (RFC 3261 §17.1.1.3)."""
    items: list[Any] = [("via", "Via", str(invite.via), None)]
    items += _copy(invite, ("route", "from", "call-id", "max-forwards"))
    to = [it for it in response.headers._items if it[0] == "to"][:1]
    items += to
    items.append(("cseq", "CSeq", f"{invite.cseq.seq} ACK", None))
    ack = Request("ACK", invite.uri_text, Headers._from_items(items))
    return ack


def make_cancel(invite: Request) -> Request:
    """A CANCEL for a request we sent (RFC 3261 §9.1): same R-URI, top Via, From, To, Call-ID, CSeq number."""
    items: list[Any] = [("via", "Via", str(invite.via), None)]
    items += _copy(invite, ("route", "from", "to", "call-id"))
    items.append(("max-forwards", "Max-Forwards", "70", None))
    items.append(("cseq", "CSeq", f"{invite.cseq.seq} CANCEL", None))
    return Request("CANCEL", invite.uri_text, Headers._from_items(items))
