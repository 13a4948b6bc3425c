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
"""

from __future__ import annotations

from collections import deque
from typing import Any

STATELESS_MARK = ".s"  # between the process prefix and the hash in a stateless To tag


def stateless_tag(prefix: str, request: Any) -> str:
    """The To tag of a stateless answer to ``request``: the same for its retransmissions.

    Hashed from the Call-ID, From and top Via lines as received: a retransmission repeats them
    (and so the From tag and the branch) byte for byte, and reading them as text builds neither
    the From nor the Via parameters, which a stateless answer has no other use for."""
    headers = request.headers
    seed = (request.uri_text, headers.get("Call-ID"), headers.get("From"), headers.get("Via"))
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
