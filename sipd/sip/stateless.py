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
from .header_fields import NAME_KEYS, Item
from .headers import SMALL_UINTS, NameAddr, fast_cseq, fast_name_addr, fast_via, parse_name_addr_list
from .message import CRLF
from .parser import _WIRE_KEYS, MAX_HEADERS, MAX_MESSAGE_SIZE, _uri_match

STATELESS_MARK = ".s"  # between the process prefix and the hash in a stateless To tag


def stateless_tag(prefix: str, request: Any) -> str:
    """The To tag of a stateless answer to ``request``: the same for its retransmissions.

    Hashed from the Call-ID, From and top Via lines as received: a retransmission repeats them
    (and so the From tag and the branch) byte for byte, and reading them as text builds neither
    the From nor the Via parameters, which a stateless answer has no other use for."""
    idx = request.headers._idx()  # what headers.get() reads, by key (a missing line seeds None)
    call_id, from_, via = idx.get("call-id"), idx.get("from"), idx.get("via")
    seed = (request.uri_text, call_id and call_id[0][2], from_ and from_[0][2], via and via[0][2])
    return f"{prefix}{STATELESS_MARK}{hash(seed) & 0xFFFFFFFF:08x}"


def raw_stateless_tag(prefix: str, uri_text: str, values: dict[str, str]) -> str:
    """``stateless_tag`` of a request read by ``read_plain_register`` (the same seed, the same tag)."""
    seed = (uri_text, values["call-id"], values["from"], values["via"])
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
_NOT_PLAIN = frozenset(("authorization", "route", "require", "proxy-require"))
_ANSWERED = frozenset(("via", "from", "to", "call-id", "cseq"))  # copied into the answer
_READ = _ANSWERED | {"max-forwards", "contact", "content-length", "user-agent"}  # one line each at most


def read_plain_register(data: bytes) -> tuple[str, dict[str, str], list[Item], NameAddr] | None:
    """(Request-URI text, values, answered lines, To) of a REGISTER datagram that the parser would
    accept and no stage before authentication would answer or route: one Via, From, To (no tag),
    Call-ID and CSeq each in its common shape, a SIP Request-URI and AOR, valid Max-Forwards,
    Contact and Content-Length, none of ``_NOT_PLAIN``. ``values``: the value of each ``_READ``
    line present, by key; the answered lines are items as ``Headers`` holds them. None for
    anything else: the general path decides then, with the status it always gave.

    The header lines are split as the parser's fast path splits them (``_split_block``), giving
    up where it would, but only the lines read are kept: a REGISTER with credentials (half of
    them) is declined before anything is decoded."""
    if (data[:9] != b"REGISTER " or len(data) > MAX_MESSAGE_SIZE or b"\nAuthorization:" in data
            or b"\nauthorization:" in data):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("utf-8", "surrogateescape").split("\r\n")
    if len(lines) > MAX_HEADERS:
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or _uri_match(parts[1]) is None:
        return None
    fast, wire = NAME_KEYS, _WIRE_KEYS
    values: dict[str, str] = {}
    answered: list[Item] = []
    for i in range(1, len(lines)):
        line = lines[i]
        name, sep, value = line.partition(": ")
        key = fast.get(name) or wire.get(name)
        if key is None or not sep or key in _NOT_PLAIN:
            return None  # a line the fast split would not take (then the parser decides), or not plain
        if key in _READ:
            if key in values:
                return None  # two Vias, Contacts, Content-Lengths ...: the general path
            value = values[key] = value.strip(" \t")
            if key in _ANSWERED:
                answered.append((key, name, value, line))
    if len(answered) != 5:
        return None
    value = values["call-id"]
    if not value or " " in value or "\t" in value:
        return None
    c = fast_cseq(values["cseq"])
    if c is None or c.method != "REGISTER" or fast_via(values["via"]) is None or fast_name_addr(values["from"]) is None:
        return None
    to = fast_name_addr(values["to"])
    if to is None or "tag" in to.params or not to.uri.is_sip:
        return None
    if SMALL_UINTS.get(values.get("max-forwards", "70"), 256) > 255:
        return None
    length = values.get("content-length")
    if length is not None and ((n := SMALL_UINTS.get(length)) is None or end + 4 + n > len(data)):
        return None
    contact = values.get("contact")
    if contact is not None:
        if "*" in contact:
            return None
        try:
            parse_name_addr_list(contact)
        except RemoteProtocolError:
            return None
    return parts[1], values, answered, to


def answer_bytes(status_line: str, answered: list[Item], to_tag: str, extra: list[str]) -> bytes:
    """``make_response(request, ..., to_tag=to_tag, headers=...).to_bytes()`` for a request read by
    ``read_plain_register`` (its To has no tag), ``extra`` the added header lines as written."""
    lines = [f"{it[1]}: {it[2]};tag={to_tag}" if it[0] == "to" else it[3] for it in answered]
    lines += extra
    lines.append("Content-Length: 0")
    return f"{status_line}\r\n{CRLF.join(lines)}\r\n\r\n".encode("utf-8", "surrogateescape")

