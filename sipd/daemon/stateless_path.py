"""The stateless receive path for UDP requests (the daemon's side of ``sip/stateless.py``).

A request that starts something (not an ACK, a CANCEL or a retransmission of a request we keep a
transaction for) is run through the pipeline *before* any server transaction exists:

* refused or challenged (401/407, 403, 404, 484, a scanner's answer): answered statelessly, with a
  To tag computed from the request; nothing stays behind, so a flood of unauthenticated requests
  costs CPU only, never memory or timers (what Kamailio's ``sl_send_reply`` gives);
* forwarded (it passed authentication, or needs none): the server transaction is created at that
  moment (``TransactionLayer.adopt``) and the call goes on as before;
* REGISTER is answered statelessly whatever the answer (as ``save()`` does), the final answers
  worth replaying (2xx) kept in ``endpoint.replies`` for its retransmissions, so the registrar and
  the nonce counter see each REGISTER once.

A retransmission that arrives while the pipeline waits for the database is ignored (marked
in progress); one that arrives after a refusal is answered from ``endpoint.refusals`` (a small cache:
under a flood it is recomputed rather than kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..sip.errors import RemoteProtocolError
from ..sip.message import Response
from ..sip.parser import parse_message
from ..sip.stateless import ReplyCache

if TYPE_CHECKING:
    from .endpoint import Endpoint

REPLY_TTL = 32.0  # seconds a stateless reply is kept for retransmissions (64*T1, as Timer J)
REPLY_CACHE_SIZE = 65536  # ... and at most this many accepted requests' answers (oldest dropped first)
REFUSAL_CACHE_SIZE = 1024  # ... and refusals (a flood's answers: kept few, recomputed when gone)
STREAM = "stream"  # first item of the key of a request read from a TCP/TLS connection


def caches() -> tuple[ReplyCache, ReplyCache]:
    return ReplyCache(REPLY_TTL, REPLY_CACHE_SIZE), ReplyCache(REPLY_TTL, REFUSAL_CACHE_SIZE)


def receive(endpoint: Endpoint, data: bytes, addr: tuple, now: float) -> None:
    """A UDP datagram that does not start with ``SIP/``: a request, or a response after CRLFs."""
    key = (hash(data), addr[1], addr[2])  # SipHash, randomised per process: no crafted collisions
    sent = endpoint.replies.get(key)
    if sent is None:
        sent = endpoint.refusals.get(key)
    if sent is not None:
        if sent:
            endpoint.send_bytes(sent, addr)
        return
    layer = endpoint.layer
    try:
        req = parse_message(data)
        if isinstance(req, Response):  # after leading CRLFs (RFC 3261 §7.5): a response all the same
            layer.receive_datagram(data, addr, now)
            endpoint.process_events(now)
            return
        if req.method != "REGISTER" and (req.method in ("ACK", "CANCEL") or layer.match(req) is not None):
            layer.receive_message(req, addr, now)  # the transaction layer's: matched or absorbed there
            endpoint.process_events(now)
            return
    except RemoteProtocolError as exc:
        layer.reject(exc, addr)
        endpoint.process_events(now)
        return
    endpoint.c_rcv_requests.inc()
    endpoint.handle_request(req, addr, None, now, sl_key=key)
    if layer.has_output():  # answered statelessly as a rule; a forwarded request has a transaction
        endpoint.transmit()


def receive_stream(endpoint: Endpoint, msg: Any, addr: tuple, now: float) -> bool:
    """A message read from a TCP/TLS connection: a request that starts something takes the same
    stateless path as over UDP, so refusals and challenges keep no transaction there either (an
    unauthenticated INVITE flood over TCP would otherwise hold each for Timer H). True when it was
    handled here; False leaves it to the transaction layer (responses, ACK, CANCEL, requests of a
    transaction we keep). Reliable transports are not retransmitted, so no answer is cached."""
    if isinstance(msg, Response) or msg.method in ("ACK", "CANCEL") or endpoint.layer.match(msg) is not None:
        return False
    endpoint.c_rcv_requests.inc()
    endpoint.handle_request(msg, addr, None, now, sl_key=(STREAM, id(msg)))
    if endpoint.layer.has_output():
        endpoint.transmit()
    return True


def adopt(endpoint: Endpoint, ctx: Any) -> bool:
    """A request handled statelessly so far will be forwarded: give it its server transaction
    (REGISTER stays stateless: a routing hook that forwards one does so statelessly). False when
    a retransmission of it already has one (that transaction answers it)."""
    sl_key = ctx.extra.get("sl_key")
    if sl_key is None or ctx.request.method == "REGISTER":
        return True
    endpoint.replies.discard(sl_key)
    tx_key = endpoint.layer.adopt(ctx.request, ctx.source)
    if tx_key is None:
        return False
    del ctx.extra["sl_key"]
    ctx.tx_key = tx_key
    endpoint.c_uas.inc()
    return True


def pending(endpoint: Endpoint, ctx: Any) -> None:
    """A request handled statelessly waits for the database: its retransmissions are ignored until
    it is answered (an empty entry marks it in progress)."""
    sl_key = ctx.extra.get("sl_key")
    if sl_key is not None and sl_key[0] is not STREAM:
        endpoint.replies.put(sl_key, b"", ctx.now)


def remember(endpoint: Endpoint, sl_key: Any, status: int, data: bytes, now: float) -> None:
    """Keep a final stateless answer for the retransmissions of its request."""
    if sl_key[0] is STREAM:  # over TCP/TLS nothing is retransmitted
        return
    if status < 300:
        endpoint.replies.put(sl_key, data, now)
    else:
        endpoint.replies.discard(sl_key)  # an in-progress mark
        endpoint.refusals.put(sl_key, data, now)
