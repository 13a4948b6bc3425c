"""NAT traversal for endpoints behind NAT (osipsconfig's USE_NAT), without media relay.

Rules (``[nat] enabled``):
- Detection: services/nat_detect.py (nat_uac_test: a private or loopback address in Contact or
  Via that is not the source, Via sent-by other than the source address/port). The registrar
  marks a NATed binding with the contact flag ``NAT``; a public Contact is kept as written.
- Routing: calls to a NATed UDP binding go to its ``received`` address (the pinhole the REGISTER
  opened), not to the private Contact URI (``Server.branch_for_contact``). Other bindings, and all
  with NAT handling off, are reached at the Contact URI as written.
- Contact fixing: a dialog-creating request from a NATed UDP caller (detected as above) gets its
  Contact host:port replaced by the source address (OpenSIPS ``fix_nated_contact``), so in-dialog
  requests reach it; likewise a 1xx/2xx from a callee reached at its received address whose Contact is a private
  address (``fix_response_contact``, called by the proxy).
- Keep-alive: every ``keepalive_interval`` seconds each live NATed UDP contact gets an OPTIONS
  request (or a bare CRLF datagram, ``keepalive_method = "crlf"``) sent from our listen socket to
  its received address, which keeps the NAT binding open. Replies to the OPTIONS are dropped as
  stray responses. TCP/TLS endpoints keep their own connection alive (RFC 5626 CRLF pings).
  In a cluster each NATed binding is pinged by one node: its owner (``Contact.node_id``), the node
  its REGISTER reached, whose address the pinhole lets through.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import TYPE_CHECKING, Any

from ..sip.header_fields import Headers
from ..sip.message import Request
from .nat_detect import is_nated, is_private, request_nated
from .pipeline import DIALOG_METHODS

if TYPE_CHECKING:
    from ..state import ServerState
    from .location import Contact
    from .pipeline import Context, Decision, Stage
    from .ports import Endpoint, Listeners, Scheduler, Transmitter

logger = logging.getLogger("sipd.nat")

_seq = itertools.count(1)


def parse_received(received: str | None) -> tuple[str, str, int] | None:
    """``"udp:192.0.2.1:5060"`` / ``"udp:[::1]:5060"`` -> (proto, host, port); None if unusable."""
    if not received or ":" not in received:
        return None
    proto, rest = received.split(":", 1)
    host, _, port = rest.rpartition(":")
    if not port.isdigit() or not host:
        return None
    return proto, host.strip("[]"), int(port)


def fix_contact_stage(ctx: Context) -> Decision | None:
    """Rewrite the Contact of a NATed caller's dialog-creating request to its source address."""
    req = ctx.request
    if req.method not in DIALOG_METHODS or req.to.tag is not None or ctx.source[0] != "udp":
        return None
    if len(req.vias) != 1:
        return None  # came through another proxy: the source is that proxy, not the caller's NAT

    contacts = req.contacts
    if len(contacts) != 1 or contacts[0].uri.scheme not in ("sip", "sips"):
        return None
    src = ctx.source
    uri = contacts[0].uri
    if ((uri.host or "").strip("[]").lower(), uri.port or 5060) == (src[1].lower(), src[2]):
        return None
    if not request_nated(req, src):
        return None  # a public Contact other than the source is where the caller asked to be reached
    na = contacts[0]
    na.uri = uri.replace(host=src[1], port=src[2])
    req.set("Contact", str(na))
    ctx.extra["nat"] = f"NATed caller, Contact {uri.host_port} -> {na.uri.host_port}"
    return None


def _private(host: str) -> bool:
    import ipaddress

    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return is_private(host) or addr.is_loopback


def fix_response_contact(response: Any, dest: tuple) -> bool:
    """A NATed callee's 1xx/2xx: a private Contact host:port other than where we reached it (``dest``,
    its received address) is replaced by ``dest`` so that in-dialog requests reach it (OpenSIPS
    ``fix_nated_contact`` with ``nat_uac_test`` "Contact is RFC 1918"). Returns True when changed."""
    try:
        contacts = response.contacts
    except Exception:  # noqa: BLE001 - a broken Contact is the UAC's problem, not ours
        return False
    if len(contacts) != 1:
        return False
    na = contacts[0]
    uri = na.uri
    host = (uri.host or "").strip("[]").lower()
    if (host, uri.port or 5060) == (dest[1].lower(), dest[2]) or not _private(host):
        return False
    na.uri = uri.replace(host=dest[1], port=dest[2])
    response.set("Contact", str(na))
    return True


def stages(state: Any) -> list[Stage]:
    """Inserted before the registrar (after auth): empty when [nat] is off."""
    return [fix_contact_stage] if state.config.nat.enabled else []


# -- keep-alive pings -----------------------------------------------------------------------------


class KeepAlive:
    """Pings NATed UDP contacts on a timer (``call_later`` chain; nothing to stop at shutdown)."""

    def __init__(self, state: ServerState, *, scheduler: Scheduler, listeners: Listeners, transmitter: Transmitter):
        self.state = state
        self.cfg = state.config.nat
        self.scheduler = scheduler
        self.listeners = listeners
        self.transmitter = transmitter
        self.handle: Any = None
        self.sent = state.stats.counter("nat:keepalives_sent")
        self._rand = os.urandom(4).hex()
        self.read_failing = False  # (a cluster node) its bindings could not be read last round

    def start(self) -> None:
        self.handle = self.scheduler.call_later(self.cfg.keepalive_interval, self.tick)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def tick(self) -> None:
        try:
            if self._from_database():
                self.scheduler.spawn(self.ping_owned())
            else:
                self.ping_all()
        except Exception:  # noqa: BLE001 - a bad contact must not stop the pings
            logger.exception("NAT keep-alive round failed")
        if not self.scheduler.stopping:
            self.start()

    def _from_database(self) -> bool:
        """A cluster node in db-only mode holds only the AORs it looked at lately, some of them
        stale: the database says which NATed bindings are this node's now."""
        state = self.state
        return bool(state.cluster.node_id) and state.db is not None and state.config.location.mode == "db-only"

    def ping_all(self) -> int:
        import time

        return self.ping_each(self.state.location.items(), time.time())

    async def ping_owned(self) -> int:
        """One round over the NATed bindings the database gives this node (a failed read: none,
        the next round reads again)."""
        import time

        wall = time.time()
        try:
            owned = await self.state.db.load_owned(self.state.cluster.node_id, wall)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the database is down for a while
            if not self.read_failing:
                logger.warning("NAT keep-alives paused: this node's bindings not read (tried again each round): %s", exc)
            self.read_failing = True
            return 0
        if self.read_failing:
            logger.info("NAT keep-alives resumed: this node's bindings read again")
        self.read_failing = False
        return self.ping_each(owned, wall)

    def ping_each(self, aors: Any, wall: float) -> int:
        """Ping the live NATed bindings among ``aors`` ((aor, contacts) pairs) that this node keeps
        alive: in a cluster, only those it owns (each binding is pinged by one node, the one whose
        address opened its pinhole); without one, all."""
        own = self.state.cluster.node_id or None
        n = 0
        for aor, contacts in aors:
            for c in contacts:
                if c.alive(wall) and c.node_id == own and is_nated(c):
                    got = parse_received(c.received)
                    if got is not None:
                        self.ping(aor, c, ("udp", got[1], got[2], None))
                        n += 1
        return n

    def ping(self, aor: str, contact: Contact, dest: tuple) -> None:
        if self.cfg.keepalive_method == "crlf":
            data = b"\r\n\r\n"
        else:
            data = self.options(aor, contact, dest)
        self.transmitter.send_datagram(data, dest)
        self.sent.inc()

    def options(self, aor: str, contact: Contact, dest: tuple) -> bytes:
        listener = self.listeners.listener_for(dest)
        host = self.listeners.advertised_host(listener)
        n = next(_seq)
        tag = f"{self._rand}{n}"
        # Built as the proxy copies a request, without make_request's checks: the Contact URI was
        # checked when it was registered, and parsing it again for each ping (~20 µs) would stall
        # the loop for 0.2 s in a round over 10,000 contacts. The core's to_bytes writes it.
        headers = Headers([("Via", f"SIP/2.0/UDP {host}:{listener.port};branch=z9hG4bKka{tag};rport"),
                           ("Max-Forwards", "70"), ("From", f"<sip:keepalive@{host}:{listener.port}>;tag={tag}"),
                           ("To", f"<sip:{aor}>"), ("Call-ID", f"ka{tag}@{host}"), ("CSeq", f"{n} OPTIONS")])
        return Request("OPTIONS", contact.uri, headers).to_bytes()


def start(state: ServerState, endpoint: Endpoint) -> KeepAlive | None:
    """Start the keep-alive timer when NAT handling and pings are on (``endpoint`` implements the
    ports of ``KeepAlive``)."""
    cfg = state.config.nat
    if not cfg.enabled or cfg.keepalive_interval <= 0:
        return None
    ka = KeepAlive(state, scheduler=endpoint, listeners=endpoint, transmitter=endpoint)
    ka.start()
    return ka
