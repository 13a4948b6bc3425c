"""Presence server glue: pipeline stages, NOTIFY client transactions, timers, persistence.

The decisions live in ``presence_state.py`` (pure). This module connects them to the daemon:

* ``stages(state)`` returns the two pipeline stages: ``in_dialog`` runs before
  ``loose_route`` and takes SUBSCRIBE refreshes of *our* subscription dialogs (matched by Call-ID
  and our To tag, whatever their Route says); ``requests`` runs after ``auth`` and answers
  PUBLISH and initial SUBSCRIBE for ``presence`` / ``presence.winfo`` of local-domain users.
  SUBSCRIBE for other event packages (MWI, dialog...) is proxied to the user's devices.
* NOTIFYs go out as new client transactions through the transaction layer (the ``OwnRequests``
  port hands their responses back here). One NOTIFY per subscription is in flight at a time; changes meanwhile
  are coalesced into the next one. A failure response or a timeout ends the subscription.
* Expiry: one timer at the earliest expiry; the database is written in batches from the store's
  worker thread shortly after changes (``presence_store.flush``) and loaded at start.
* Calls: with ``busy_from_calls``, the transaction events (``CallEvent``) mark the
  local parties of an answered INVITE "on the phone" until the BYE.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..sip.layer import ResponseReceived, TransactionTerminated
from .pipeline import Context, Decision, Defer, Reply, Stage, is_self
from .presence_state import EVENT_PRESENCE, EVENTS, PresenceState, Subscription, aor_of

if TYPE_CHECKING:
    from ..state import ServerState
    from .ports import (Cancellable, Destinations, Endpoint, Hop, Listeners, OwnRequests, Replier, Scheduler,
                        Transactions, Transmitter)

logger = logging.getLogger("sipd.presence")

FLUSH_DELAY = 0.05  # seconds of changes collected into one database transaction
MAX_TIMER = 60.0  # re-check expiries at least this often (wall clock may jump)
NOTIFY_BATCH = 500  # NOTIFYs queued to the layer before yielding to the event loop


class PresenceService:
    """One per server (``state.presence``)."""

    def __init__(self, state: ServerState, *, scheduler: Scheduler, replier: Replier, transactions: Transactions,
                 own_requests: OwnRequests, listeners: Listeners, hop: Hop, destinations: Destinations,
                 transmitter: Transmitter):
        self.state = state
        self.scheduler = scheduler
        self.transactions = transactions
        self.own_requests = own_requests
        self.listeners = listeners
        self.hop = hop
        self.destinations = destinations
        self.transmitter = transmitter
        self.cfg = state.config.presence
        rand = os.urandom(3).hex()
        seq = iter(range(1, 1 << 62))
        self.engine = PresenceState(
            self.cfg, is_local=lambda d: d in state.domains,
            etag_factory=lambda: f"{rand}.{int(time.time()):x}.{next(seq)}",
            tag_factory=replier.to_tag,
        )
        self.loaded = state.db is None
        self._load_task: asyncio.Task | None = None
        self._flush_handle: Cancellable | None = None
        self._flushing: asyncio.Task | None = None
        self._timer: Cancellable | None = None
        self._timer_at: float | None = None
        self._send_handle: Cancellable | None = None
        stats = state.stats
        self.c_notify = stats.counter("presence:notifies_sent")
        self.c_notify_failed = stats.counter("presence:notifies_failed")
        self.c_publish = stats.counter("presence:publications_received")
        stats.gauge("presence:presentities", lambda: len(self.engine.pubs))
        stats.gauge("presence:publications", lambda: self.engine.n_publications)
        stats.gauge("presence:subscriptions", lambda: len(self.engine.subs))
        if self.cfg.busy_from_calls:
            state.events.subscribe(self.on_call_event)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.loaded and self._load_task is None:
            self._load_task = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        from . import presence_store

        db = self.state.db
        if db is None:  # start-up failed and closed the database before this task ran
            return
        try:
            pubs, subs, gone = await db.call(presence_store.load, db.db, time.time())  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - serve from memory without the stored state
            logger.error("presence: cannot load stored state (%s); starting empty", exc)
            pubs, subs, gone = [], [], 0
        for p in pubs:
            self.engine.add_publication(p)
        for s in subs:
            self.engine.add_subscription(s)
        self.loaded = True
        if pubs or subs or gone:
            logger.info("presence: loaded %d publications, %d subscriptions (%d expired rows removed)",
                        len(pubs), len(subs), gone)
        self.kick()

    async def wait_loaded(self) -> None:
        self.start()
        if self._load_task is not None:
            await asyncio.shield(self._load_task)
        return None

    # -- scheduling -------------------------------------------------------------------------------

    def kick(self) -> None:
        """Something changed: send the queued NOTIFYs after the current reply, persist, re-arm."""
        scheduler = self.scheduler
        if self.engine.outbox and self._send_handle is None:
            self._send_handle = scheduler.call_soon(self._send_queued)
        if (self.engine.dirty_pubs or self.engine.dirty_subs or self.engine.new_watchers) and self.state.db is not None \
                and self._flush_handle is None:
            self._flush_handle = scheduler.call_later(FLUSH_DELAY, self._start_flush)
        self._arm_timer()

    def _arm_timer(self) -> None:
        nxt = self.engine.next_expiry()
        if nxt is None:
            return
        scheduler = self.scheduler
        delay = min(max(nxt - time.time(), 0.0) + 0.01, MAX_TIMER)
        when = scheduler.time() + delay
        if self._timer is not None and self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = scheduler.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self.scheduler.stopping:
            return
        try:
            n = self.engine.expire(time.time())
            if n:
                logger.debug("presence: %d entries expired", n)
        except Exception:  # noqa: BLE001 - a bug here must not stop the server
            logger.exception("presence expiry failed")
        self.kick()

    # -- persistence ------------------------------------------------------------------------------

    def _start_flush(self) -> None:
        self._flush_handle = None
        if self._flushing is not None and not self._flushing.done():
            self._flush_handle = self.scheduler.call_later(FLUSH_DELAY, self._start_flush)
            return
        self._flushing = self.scheduler.spawn(self.flush())  # the daemon waits for it at shutdown

    async def flush(self) -> None:
        """Write the changed rows now (one transaction on the store's worker thread)."""
        from . import presence_store

        eng = self.engine
        db = self.state.db
        if db is None or db.db is None:
            return
        pubs = [(k, eng.pubs.get(k[0], {}).get(k[1])) for k in eng.dirty_pubs]
        subs = [(k, eng.subs.get(k)) for k in eng.dirty_subs]
        watchers = eng.new_watchers
        eng.dirty_pubs, eng.dirty_subs, eng.new_watchers = set(), set(), []
        if not (pubs or subs or watchers):
            return
        try:
            await db.call(presence_store.flush, db.db, pubs, subs, watchers, time.time())
        except Exception as exc:  # noqa: BLE001 - keep serving from memory; retry with the next change
            logger.error("presence: storing %d publications / %d subscriptions failed: %s", len(pubs), len(subs), exc)
            eng.dirty_pubs.update(k for k, _ in pubs)
            eng.dirty_subs.update(k for k, _ in subs)
            eng.new_watchers.extend(watchers)

    # -- NOTIFY -----------------------------------------------------------------------------------

    def _send_queued(self) -> None:
        self._send_handle = None
        transmitter = self.transmitter
        items = self.engine.drain()
        for i, (sub, reason) in enumerate(items):
            try:
                self.send_notify(sub, reason)
            except Exception:  # noqa: BLE001 - one bad watcher must not stop the others
                logger.exception("presence: NOTIFY to %s failed", sub.contact)
            if i % NOTIFY_BATCH == NOTIFY_BATCH - 1:
                transmitter.transmit()
        transmitter.transmit()
        self.kick()

    def destination(self, sub: Subscription) -> tuple | None:
        """Where the NOTIFY goes: the first Route, else where the SUBSCRIBE came from (NAT), else
        the Contact (after a restart)."""
        from ..sip.headers import parse_name_addr
        from ..sip.uri import parse_uri

        destinations = self.destinations
        if sub.route_set:
            return destinations.dest_from_uri(parse_name_addr(sub.route_set[0]).uri)
        src = sub.source
        if src is not None:
            if src[0] == "udp":
                return src
            if src[3] is not None and destinations.connection_alive(src[3]):
                return src
        return destinations.dest_from_uri(parse_uri(sub.contact))

    def send_notify(self, sub: Subscription, reason: str | None) -> None:
        """Build the next NOTIFY of ``sub`` and start its client transaction.
        Call ``Transmitter.transmit()`` afterwards."""
        from ..sip.message import make_request

        if reason is None and sub.inflight is not None:
            sub.again = True
            return
        if reason is None and self.engine.subs.get(sub.key) is not sub:
            return  # ended meanwhile
        now = time.time()
        headers, body = self.engine.notify_parts(sub, reason, now)
        dest = self.destination(sub)
        if dest is None:
            logger.info("presence: no route to watcher %s (%s); subscription ended", sub.watcher, sub.contact)
            self.engine.drop(sub.key)
            return
        req = make_request("NOTIFY", sub.contact, headers=headers, body=body)
        self.hop.add_via(req, self.listeners.listener_for(dest), "pres")
        key = self.transactions.send_request(req, dest, self.scheduler.time())
        sub.inflight = key
        sub.again = False
        self.own_requests.watch(key, lambda ev, sub=sub, final=reason is not None: self._on_notify_event(sub, ev, final))
        self.c_notify.inc()

    def _on_notify_event(self, sub: Subscription, ev: Any, final: bool) -> None:
        answered = isinstance(ev, ResponseReceived)
        if answered and ev.response.status < 200:
            return
        self.own_requests.unwatch(ev.tx_key)
        if isinstance(ev, TransactionTerminated):
            return
        if sub.inflight == ev.tx_key:
            sub.inflight = None
        status = ev.response.status if answered else 408  # else timed out
        if status >= 300:
            self.c_notify_failed.inc()
            if not final and self.engine.subs.get(sub.key) is sub:
                logger.info("presence: NOTIFY to %s for %s -> %d; subscription ended", sub.watcher, sub.presentity, status)
                self.engine.drop(sub.key)
                self.kick()
            return
        if sub.again and self.engine.subs.get(sub.key) is sub:
            self.send_notify(sub, None)
            self.transmitter.transmit()

    # -- calls ------------------------------------------------------------------------------------

    def on_call_event(self, ev: Any) -> None:
        req = ev.request
        method = req.method
        if ev.kind == "ended":
            self.engine.call_ended(req.call_id)
        elif ev.kind == "response" and ev.response is not None:
            status = ev.response.status
            if method == "INVITE" and 200 <= status < 300 and req.to.tag is None:
                domains = self.state.domains
                parties = tuple(a for a in (aor_of(req.from_.uri), aor_of(req.to.uri))
                                if a.rpartition("@")[2] in domains)
                if parties:
                    self.engine.call_started(req.call_id, parties)
            elif method == "BYE" and status >= 200:
                self.engine.call_ended(req.call_id)
            else:
                return
        else:
            return
        self.kick()

    # -- contacts ---------------------------------------------------------------------------------

    def local_contact(self, user: str, source: tuple) -> str:
        listener = self.listeners.listener_for(source)
        host = self.listeners.advertised_host(listener)
        transport = "" if listener.proto == "udp" else f";transport={listener.proto}"
        return f"sip:{user}@{host}:{listener.port}{transport}" if user else f"sip:{host}:{listener.port}{transport}"


# -- pipeline stages ------------------------------------------------------------------------------


def _reply(outcome: Any) -> Reply:
    return Reply(outcome.status, outcome.reason, outcome.headers, why=outcome.why, to_tag=outcome.to_tag)


def in_dialog(ctx: Context) -> Decision | None:
    """SUBSCRIBE inside one of our subscription dialogs: refresh or unsubscribe."""
    req = ctx.request
    if req.method != "SUBSCRIBE" or req.to.tag is None:
        return None
    svc: PresenceService = ctx.state.presence
    if not svc.loaded:
        return Defer(svc.wait_loaded(), resume=ctx.extra["stage_index"])
    sub = svc.engine.find(req.call_id, req.to.tag)
    if sub is None or sub.from_tag != (req.from_.tag or ""):
        routes = req.routes
        if (not routes or is_self(ctx.state, routes[0].uri)) and is_self(ctx.state, req.uri):
            return Reply(481, "Subscription Does Not Exist", why="no such subscription (expired, or before a restart)")
        return None
    sub.source = ctx.source
    outcome = svc.engine.resubscribe(sub, req, ctx.wall)
    svc.kick()
    return _reply(outcome)


def requests(ctx: Context) -> Decision | None:
    """PUBLISH and initial SUBSCRIBE for presence of a local-domain user (after auth)."""
    req = ctx.request
    method = req.method
    if method not in ("PUBLISH", "SUBSCRIBE") or req.to.tag is not None:
        return None
    uri = req.uri
    state = ctx.state
    if not uri.user or not uri.host or uri.host not in state.domains:
        return None
    if method == "SUBSCRIBE":
        event = (req.get("Event") or "").split(";", 1)[0].strip().lower()
        if event not in EVENTS:
            return None  # another package (MWI, dialog...): the user's devices answer it
    svc: PresenceService = state.presence
    if not svc.loaded:
        return Defer(svc.wait_loaded(), resume=ctx.extra["stage_index"])
    engine = svc.engine
    if method == "PUBLISH":
        publisher = aor_of(req.from_.uri)
        if publisher != aor_of(uri):
            return Reply(403, "Forbidden", why=f"{publisher} may not publish for {aor_of(uri)}")
        svc.c_publish.inc()
        contacts = req.get("Contact") or ""
        outcome = engine.publish(req, ctx.wall, sender=contacts[:255] or str(req.from_.uri))
    else:
        outcome = engine.subscribe(req, ctx.wall, local_contact=svc.local_contact(uri.user, ctx.source),
                                   source=ctx.source, socket=svc.listeners.local_socket_name(ctx.source))
    svc.kick()
    return _reply(outcome)


def setup(state: ServerState, endpoint: Endpoint, transactions: Transactions) -> PresenceService | None:
    """Create and start ``state.presence`` when ``[presence] enabled``; ``endpoint`` implements the
    service's ports, ``transactions`` (the transaction layer) sends its NOTIFYs."""
    if not state.config.presence.enabled:
        return None
    if state.presence is None:
        state.presence = PresenceService(state, scheduler=endpoint, replier=endpoint, transactions=transactions,
                                         own_requests=endpoint, listeners=endpoint, hop=endpoint,
                                         destinations=endpoint, transmitter=endpoint)
        state.presence.start()
    return state.presence


def stages(state: ServerState) -> tuple[list[Stage], list[Stage]]:
    """(stages before loose_route, stages after auth); empty unless ``setup`` created the service."""
    if state.presence is None:
        return [], []
    return [in_dialog], [requests]


__all__ = ["EVENT_PRESENCE", "PresenceService", "in_dialog", "requests", "setup", "stages"]
