"""Stateless answers, as Kamailio's ``sl_send_reply`` and ``www_challenge`` give them.

A request that is refused (a challenge, 403, 404, 484, an answer to a scanner) is answered without
a server transaction: nothing is kept, no timer runs, and a retransmission of the request is simply
answered again. What makes that work:

* the To tag of a stateless answer is computed from the request (Call-ID, From tag, top Via
  branch) and a per-process prefix, so the answer to a retransmission carries the same tag and
  the ACK of a stateless non-2xx final can be recognised by its tag alone and absorbed
  (``is_stateless_tag``), without a transaction to match it (RFC 3261 §17.2.1 leaves absorbing
  that ACK to the transaction we did not create);
* ``ReplyCache`` keeps the bytes of the final answers worth replaying (a REGISTER that changed the
  location, a 200 to OPTIONS) for a retransmission, by a hash of the request's bytes and source,
  with a bound on age and count. Refusals are not kept: recomputing one costs less than keeping
  one for every packet of a flood.

Only a request that will be forwarded (it passed authentication, or needs none) gets a server
transaction, through ``TransactionLayer.adopt``.

The commonest stateless answer, the challenge of a REGISTER without credentials, needs none of the
parsed message: ``read_plain_register`` checks the datagram exactly as far as the parser and the
stages before authentication would (and declines anything they might refuse or route), and
``answer_bytes`` writes the answer from the request's raw lines as ``make_response`` copies them
(RFC 3261 §8.2.6.2: Via, From, To, Call-ID, CSeq). ``sipd/services/challenge.py`` decides when.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .errors import RemoteProtocolError
from .header_fields import Headers
from .headers import SMALL_UINTS, NameAddr, fast_cseq, fast_name_addr, fast_via, parse_name_addr_list
from .message import CRLF
from .parser import MAX_MESSAGE_SIZE, _frame_body, _head_items, _uri_match

STATELESS_MARK = ".s"  # between the process prefix and the hash in a stateless To tag


def stateless_tag(prefix: str, request: Any) -> str:
    """The To tag of a stateless answer to ``request``: the same for its retransmissions.

    Hashed from the Call-ID, From and top Via lines as received: a retransmission repeats them
    (and so the From tag and the branch) byte for byte, and reading them as text builds neither
    the From nor the Via parameters, which a stateless answer has no other use for."""
    headers = request.headers
    seed = (request.uri_text, headers.get("Call-ID"), headers.get("From"), headers.get("Via"))
    return f"{prefix}{STATELESS_MARK}{hash(seed) & 0xFFFFFFFF:08x}"


def raw_stateless_tag(prefix: str, uri_text: str, headers: Headers) -> str:
    """``stateless_tag`` of a request read by ``read_plain_register`` (the same seed, the same tag)."""
    idx = headers._index
    seed = (uri_text, idx["call-id"][0][2], idx["from"][0][2], idx["via"][0][2])  # type: ignore[index]
    return f"{prefix}{STATELESS_MARK}{hash(seed) & 0xFFFFFFFF:08x}"


def is_stateless_tag(prefix: str, tag: str | None) -> bool:
    return tag is not None and tag.startswith(prefix + STATELESS_MARK)


class ReplyCache:
    """Final replies sent statelessly, by (hash of the request bytes, source host, port), for ``ttl``
    seconds and at most ``size`` entries; b"" marks a request still being processed (a database
    look-up or write is under way): its retransmissions are ignored until it is answered."""

    def __init__(self, ttl: float, size: int):
        self.ttl = ttl
        self.size = size
        self._data: dict[Any, bytes] = {}
        self._order: deque[tuple[float, Any]] = deque()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Any) -> bytes | None:
        return self._data.get(key)

    def put(self, key: Any, data: bytes, now: float) -> None:
        d = self._data
        if key not in d:
            order = self._order
            order.append((now + self.ttl, key))
            while order and (order[0][0] <= now or len(order) > self.size):
                d.pop(order.popleft()[1], None)
        d[key] = data

    def discard(self, key: Any) -> None:
        """Forget ``key`` (its order entry goes when it comes due)."""
        self._data.pop(key, None)

    def expire(self, now: float) -> None:
        """Drop what is due, also when nothing new arrives (housekeeping)."""
        order, d = self._order, self._data
        while order and order[0][0] <= now:
            d.pop(order.popleft()[1], None)


# Header lines that make a REGISTER more than plain: its credentials are to be checked, its Route
# entries consumed, its extensions judged (420). Each sends the request down the general path.
_NOT_PLAIN = ("authorization", "route", "require", "proxy-require")


def read_plain_register(data: bytes) -> tuple[str, Headers, NameAddr] | None:
    """(Request-URI text, headers, To) of a REGISTER datagram that the parser would accept and no
    stage before authentication would answer or route: one Via, From, To (no tag), Call-ID and
    CSeq each in its common shape, a SIP Request-URI and AOR, valid Max-Forwards, Contact and
    Content-Length, none of ``_NOT_PLAIN``. None for anything else: the general path decides
    then, with the status it always gave. Reads the header lines as ``parse_message`` does."""
    if data[:9] != b"REGISTER " or len(data) > MAX_MESSAGE_SIZE or data.find(b"\r\n\r\n") < 0:
        return None
    try:
        start, h, body_at = _head_items(data)
        idx = h._index
        if idx is None:  # lines the fast split does not take (folding, names not seen before ...)
            return None
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or _uri_match(parts[1]) is None:
            return None
        via, from_, to, call_id, cseq = idx.get("via"), idx.get("from"), idx.get("to"), idx.get("call-id"), idx.get("cseq")
        if not (via and from_ and to and call_id and cseq) or len(via) + len(from_) + len(to) + len(call_id) + len(cseq) != 5:
            return None
        for key in _NOT_PLAIN:
            if key in idx:
                return None
        value = call_id[0][2]
        if not value or " " in value or "\t" in value:
            return None
        c = fast_cseq(cseq[0][2])
        if c is None or c.method != "REGISTER" or fast_via(via[0][2]) is None or fast_name_addr(from_[0][2]) is None:
            return None
        to_na = fast_name_addr(to[0][2])
        if to_na is None or "tag" in to_na.params or not to_na.uri.is_sip:
            return None
        mf = idx.get("max-forwards")
        if mf is not None and (len(mf) != 1 or SMALL_UINTS.get(mf[0][2], 256) > 255):
            return None
        contact = idx.get("contact")
        if contact is not None:
            if len(contact) != 1 or "*" in contact[0][2]:
                return None
            parse_name_addr_list(contact[0][2])
        _frame_body(h, data, body_at)
    except RemoteProtocolError:
        return None
    return parts[1], h, to_na


_ANSWERED = frozenset(("via", "from", "to", "call-id", "cseq"))


def answer_bytes(status_line: str, headers: Headers, to_tag: str, extra: list[str]) -> bytes:
    """``make_response(request, ..., to_tag=to_tag, headers=...).to_bytes()`` for a request read by
    ``read_plain_register`` (its To has no tag), ``extra`` the added header lines as written."""
    lines: list[str] = []
    for it in headers._items:
        key = it[0]
        if key in _ANSWERED:
            lines.append(f"{it[1]}: {it[2]};tag={to_tag}" if key == "to" else it[3])
    lines += extra
    lines.append("Content-Length: 0")
    return f"{status_line}\r\n{CRLF.join(lines)}\r\n\r\n".encode("utf-8", "surrogateescape")

