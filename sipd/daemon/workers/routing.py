"""Which process handles what: the routing strategy the endpoint consults at its decision points.

One endpoint serves main and every worker process; what differs is this object. The endpoint
calls it where a message could belong to another process:

- ``route_datagram(data, addr)``: a UDP datagram main read (after the ban, size and overload
  checks); True when another process got it.
- ``route_stream(data, addr)``: a message framed (not parsed) on a TCP/TLS connection this process
  owns; True when another process got it (as bytes, with the connection in its address: the
  answer comes back to this process to be sent).
- ``owns(aor)``: whether this process writes the AOR (expiry, write-back).
- ``request_context(ctx)``: a request's context was built (a worker keeps the raw datagram, to hand
  it back as received).
- ``forward_here(ctx, decision)``: False when the request was given to another process instead of
  being forwarded from here.
- ``hand_back(ctx, why)``: give a request this process cannot serve to main; False when there is
  no one to give it to (the endpoint answers 500).
- ``reachable(contact)``: whether this process can send to a registered contact.
- ``copy_sent`` / ``sent(data, dest)``: while True, every datagram sent is reported (a traced
  worker copies it to main).
- ``cancel_elsewhere(call_id, invite_tx)``: ``sipctl dialog end`` of a ringing call this process
  does not hold; True when the process holding it was asked to cancel it.
- ``fetch_aor(aor)``: the location stage needs an AOR this process holds no copy of (a worker
  asks main; the returned decision, if any, replaces the lookup).
- ``tick()`` each housekeeping second, ``stop()`` at shutdown, ``loads_locations`` at start.

:class:`NoWorkers` is one process; :class:`MainRouting` is main with its pool of workers; the
worker's own is ``WorkerRouting`` (process.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import WorkerPool


class NoWorkers:
    """One process: everything is handled here."""

    loads_locations = True  # the location table comes from the database at start
    copy_sent = False

    def route_datagram(self, data: bytes, addr: tuple) -> bool:
        return False

    def route_stream(self, data: bytes, addr: tuple) -> bool:
        return False

    def owns(self, aor: str) -> bool:
        return True

    def request_context(self, ctx: Any) -> None:
        pass

    def forward_here(self, ctx: Any, decision: Any) -> bool:
        return True

    def hand_back(self, ctx: Any, why: str) -> bool:
        return False

    def reachable(self, contact: Any) -> bool:
        return True

    def sent(self, data: bytes, dest: tuple) -> None:
        pass

    def cancel_elsewhere(self, call_id: str, invite_tx: Any) -> bool:
        return False

    async def fetch_aor(self, aor: str) -> Any:
        return None  # every AOR is here

    def tick(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class MainRouting(NoWorkers):
    """Main with registrar workers: REGISTERs go to the owner of their AOR, calls to the owner of
    their Call-ID (see the pool), whichever transport they came on; main holds the whole location
    table and hands accepted TCP/TLS sockets to the workers."""

    def __init__(self, pool: WorkerPool):
        self.pool = pool

    def route_datagram(self, data: bytes, addr: tuple) -> bool:
        if data[:9] == b"REGISTER ":
            return self.pool.route_register(data, addr)
        peers = self.pool.endpoint.state.cluster
        if peers.hosts and data[:8] != b"SIP/2.0 " and addr[1] in peers:
            return False  # a request another cluster node relays: main alone knows (and trusts) the peers
        return self.pool.route_call(data, addr)

    def route_stream(self, data: bytes, addr: tuple) -> bool:
        return self.route_datagram(data, addr)

    def owns(self, aor: str) -> bool:
        return self.pool.owns(aor)

    def cancel_elsewhere(self, call_id: str, invite_tx: Any) -> bool:
        return self.pool.cancel(call_id, invite_tx)

    def tick(self) -> None:
        self.pool.tick()

    async def stop(self) -> None:
        await self.pool.stop()
