"""The endpoint of one process: what comes in from the transports, what goes out to them.

The receive path, top to bottom: a transport calls ``datagram_received`` (UDP) or
``stream_received`` (TCP/TLS, a framed message's bytes) -> the cheap checks before parsing (bans, size, the overload gate,
the routing strategy's hand-over to another process) -> every message goes to the transaction
layer (``sipd/sip/layer.py``), which matches it to a transaction or, for a request that starts
something, passes it up without one (its stateless requests: answered statelessly unless it is
forwarded) -> ``process_events`` drains the layer's events and dispatches each by its type
-> ``handle_request`` runs the pipeline -> ``_apply`` carries out its decision (reply, forward, defer,
drop) -> ``transmit`` drains ``messages_to_send`` to the transports and re-arms the one layer timer
(aioquic style).

The methods under "ports" are what the services call to act on the network (reply, relay a
response, add our Via, pick a listener ...). Where a process with workers differs from one without,
the endpoint asks ``routing`` (sipd/daemon/workers/): the endpoint itself is the same in main and
in a worker process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from .. import logging as sipd_logging
from ..boundary import Boundaries, describe
from ..livetrace import Tracer
from ..services import pipeline, security
from ..services.pipeline import Branch, Context, Defer, Drop, Elsewhere, Forward, Reply
from ..sip.errors import RemoteProtocolError
from ..sip.layer import (STREAM, CancelReceived, MessageRejected, RequestReceived, ResponseReceived,
                         TransactionTerminated, TransactionTimedOut)
from ..sip.message import make_response
from ..sip.parser import parse_message
from ..sip.stateless import stateless_tag
from ..sl_stats import StatelessReplyStats
from ..state import CallEvent, ServerState
from .gate import shed
from .hop import OurHop
from .workers.routing import NoWorkers

if TYPE_CHECKING:
    from ..config import Config
    from ..transport.manager import Transports

logger = logging.getLogger("sipd")
trace = logging.getLogger("sipd.trace")

TIMER_GRID = 0.02  # seconds: transaction timers fire on this grid (see transmit)

#: Events of a client transaction: those of a request the server sent itself go to its callback.
CLIENT_EVENTS = (ResponseReceived, TransactionTimedOut, TransactionTerminated)


class Endpoint:
    def __init__(self, config: Config, state: ServerState, routing: Any = None):
        self.config = config
        self.state = state
        self.routing = routing if routing is not None else NoWorkers()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by app.start_core
        self.layer: Any = None
        self.transports: Transports = None  # type: ignore[assignment]
        self.proxy: Any = None
        self.resolver: Any = None
        self.authenticator: Any = None
        self.gate: Any = None  # sipd/overload.py OverloadGate
        self.stages: list = []
        self.self_addresses = state.myself.addresses  # (host, port); with the transport in self_sockets
        self.self_sockets = state.myself.sockets
        self.should_exit = False  # set by the lifecycle: long-running services stop rescheduling
        self.tasks: set[asyncio.Task] = set()  # waited for (briefly) and cancelled at shutdown
        self.local_uac: dict[Any, Any] = {}  # tx_key -> callback(event): requests the server sends itself (NOTIFY)
        self.mark = os.urandom(4).hex()  # in our branches and tags: which process a response belongs to
        self._tags = itertools.count(1)
        self._branch_seq = itertools.count(1)
        self.hop = OurHop(config, state.myself, self.mark, self._branch_seq, self.routing, state.cluster)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.trace_on = config.log.sip_trace
        self.tracer = Tracer(self._local_address)  # sipctl trace; .active is False unless someone watches
        self._handlers = {
            RequestReceived: self._on_request_received,
            ResponseReceived: self._on_response_received,
            CancelReceived: self._on_cancel,
            TransactionTimedOut: self._on_timed_out,
            TransactionTerminated: self._on_terminated,
            MessageRejected: self._on_rejected,
        }

    def stats_init(self) -> None:
        """The counters the receive path ticks (they exist, at 0, from the start), and the edges
        that catch what escapes a callback (sipd/boundary.py). Needs the running loop."""
        s = self.state.stats
        self.c_rcv_requests = s.counter("core:rcv_requests")
        self.c_rcv_replies = s.counter("core:rcv_replies")
        self.c_fwd_replies = s.counter("core:fwd_replies")
        self.c_drop_requests = s.counter("core:drop_requests")
        self.c_drop_replies = s.counter("core:drop_replies")
        self.c_err_requests = s.counter("core:err_requests")
        self.c_bad_msg = s.counter("core:bad_msg_hdr")
        self.c_uas = s.counter("tm:UAS_transactions")
        self.c_tm = {k: s.counter(f"tm:{k}xx_transactions") for k in range(2, 7)}
        self.sl = StatelessReplyStats(s)
        self.boundary = self.state.events.boundary = Boundaries(s, self.loop)

    def spawn(self, coro: Any) -> asyncio.Task:
        """Run ``coro`` as a task the shutdown waits for and then cancels."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def attach(self, transports: Transports) -> None:
        """The transports this endpoint receives from and sends to (created once the loop runs)."""
        self.transports = self.hop.transports = transports

    def set_routing(self, routing: Any) -> None:
        """Main's routing once its workers run (the pool starts after the listeners are bound)."""
        self.routing = self.hop.routing = routing

    def note_self_address(self, listener: Any) -> None:
        """The listener's address, and the advertised name on its port, are this server (is_self);
        so is the host all nodes of a cluster write in their Record-Route."""
        self.state.myself.note_listener(listener, self.config.server.advertised_address, self.hop.shared)

    def owns(self, aor: str) -> bool:
        """False for an AOR another process owns (it persists it; this one holds a copy)."""
        return self.routing.owns(aor)

    def calls_pending(self) -> bool:
        return self.proxy is not None and any(not c.final_sent for c in self.proxy.contexts.values())

    def close(self) -> None:
        """Stop the timer and close every socket (the last step of a shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
        if self.transports is not None:
            self.transports.close()

    # -- receive path -----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple, owned: bool = False) -> None:
        """A UDP datagram (``owned``: it reached the process it belongs to; not routed again), or
        a message another process read on a TCP/TLS connection and handed over as bytes (``addr``
        names that connection, whose owner sends what answers it)."""
        now = self.loop.time()
        if self.trace_on:
            trace.log(sipd_logging.TRACE, "recv %d bytes from %s:\n%s", len(data), describe(addr),
                      data.decode("utf-8", "replace"))
        if self.tracer.active:
            self.tracer.emit("in", addr, data)
        if addr[0] != "udp":
            self._handed_message(data, addr, owned, now)
            return
        if len(data) <= 4 and not data.strip():
            return  # CRLF keep-alive over UDP (RFC 5626 §4.4.1 uses STUN; many UAs send CRLF)
        if not security.packet_allowed(self.state, addr[1], now):
            return  # banned or flooding source: dropped before parsing (antiflood)
        if len(data) > self.config.limits.max_message_size:  # hard limit: dropped unread
            self.c_drop_requests.inc()
            return
        if data[:4] != b"SIP/" and not self.gate.admit(data, addr[1], now):
            shed(self, data, addr)  # strangers first when overloaded (sipd/overload.py)
            return
        if not owned and self.routing.route_datagram(data, addr):
            return  # another process handles it (its AOR, its call)
        self.layer.receive_datagram(data, addr, now)
        self.process_events(now)

    def _handed_message(self, data: bytes, addr: tuple, owned: bool, now: float) -> None:
        """A message another process read on a TCP/TLS connection it owns (checked there as any
        stream message: bans when it connected, framing), as bytes; what answers it goes back to
        that process, named in ``addr``."""
        if not owned and self.routing.route_datagram(data, addr):
            return  # main: another worker's AOR or call
        self._receive_framed(data, addr, now)

    def stream_received(self, data: bytes, addr: tuple) -> None:
        """A whole message framed on a TCP/TLS connection this process owns, as bytes: routed by
        its bytes (as a datagram is) before anything parses it, so that only the process that
        serves it does."""
        now = self.loop.time()
        if self.trace_on:
            trace.log(sipd_logging.TRACE, "recv from %s:\n%s", describe(addr), data.decode("utf-8", "replace"))
        if self.tracer.active:
            self.tracer.emit("in", addr, data)
        if self.routing.route_stream(data, addr):
            return  # another process handles it (its AOR, its call)
        self._receive_framed(data, addr, now)

    def _receive_framed(self, data: bytes, addr: tuple, now: float) -> None:
        """Serve a framed stream message as the layer does a datagram (a challenge from the raw
        bytes when they allow it; 400 or a drop for one that does not parse, and the connection,
        whose framing found where it ends, stays open), but no answer is kept: nothing is
        retransmitted on a stream."""
        layer = self.layer
        answer_raw = layer.config.answer_raw
        if answer_raw is not None and layer.config.stateless_requests and (answer := answer_raw(data, addr)):
            layer.send_stateless_reply((STREAM, None), answer[0], answer[1], addr, now)
        else:
            try:
                msg = parse_message(data)
            except RemoteProtocolError as exc:
                layer.reject(exc, addr)
            else:
                layer.receive_message(msg, addr, now)
        self.process_events(now)

    def connection_allowed(self, host: str) -> bool:
        return security.connection_allowed(self.state, host, self.loop.time())

    def stream_rejected(self, addr: tuple, exc: Exception) -> None:
        self.c_bad_msg.inc()
        logger.info("closing %s: unparsable stream (%s)", describe(addr), exc)

    def process_events(self, now: float) -> None:
        """Hand every event the transaction layer has produced to its handler, then transmit."""
        layer = self.layer
        while True:
            ev = layer.next_event()
            if ev is None:
                break
            try:
                self._dispatch(ev, now)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the server
                self.boundary.caught("event", exc, getattr(ev, "source", None), f"handling {type(ev).__name__}")
        self.transmit()

    def _dispatch(self, ev: Any, now: float) -> None:
        if self.local_uac and isinstance(ev, CLIENT_EVENTS):
            handler = self.local_uac.get(ev.tx_key)
            if handler is not None:  # a client transaction of the server's own (presence NOTIFY)
                if isinstance(ev, ResponseReceived):
                    self.c_rcv_replies.inc()
                handler(ev)
                return
        self._handlers[type(ev)](ev, now)

    def _on_request_received(self, ev: RequestReceived, now: float) -> None:
        self.c_rcv_requests.inc()
        if ev.tx_key is not None:
            self.c_uas.inc()
        self.handle_request(ev.request, ev.source, ev.tx_key, now, ev.sl_key)

    def _on_response_received(self, ev: ResponseReceived, now: float) -> None:
        self.c_rcv_replies.inc()
        self.proxy.on_response(ev.response, ev.tx_key, now)

    def _on_timed_out(self, ev: TransactionTimedOut, now: float) -> None:
        self.proxy.on_timeout(ev.tx_key, now)

    def _on_terminated(self, ev: TransactionTerminated, now: float) -> None:
        self.proxy.on_terminated(ev.tx_key)

    def _on_rejected(self, ev: MessageRejected, now: float) -> None:
        self.c_bad_msg.inc()
        self.c_err_requests.inc()
        logger.debug("rejected message from %s: %s %s", describe(ev.source), ev.status, ev.reason)

    def _on_cancel(self, ev: CancelReceived, now: float) -> None:
        self.c_rcv_requests.inc()
        found = ev.tx_key is not None and self.proxy.on_cancel(ev.tx_key, now)
        if found:
            logger.info("CANCEL %s from %s -> 200, branches cancelled", ev.request.uri_text, describe(ev.source))
        # the layer gave the CANCEL a server transaction of its own: answer through it
        self.reply(ev.request, True, 200 if found else 481, None if found else "Call/Transaction Does Not Exist",
                   quiet=found, why="no such transaction", source=ev.source)

    def handle_request(self, request: Any, source: tuple, tx_key: Any, now: float, sl_key: Any = None) -> None:
        """Run one request through the pipeline and carry out its decision. ``tx_key``: its server
        transaction, or None on the stateless path, where ``sl_key`` names it for retransmissions."""
        ctx = Context(request, source, self.state, now, time.time(), tx_key)
        if sl_key is not None:
            ctx.extra["sl_key"] = sl_key
        self.routing.request_context(ctx)
        try:
            decision = pipeline.run(self.stages, ctx)
        except Exception as exc:  # RemoteProtocolError from a lazily parsed header, or a bug
            if isinstance(exc, RemoteProtocolError):
                status = getattr(exc, "status_hint", 400) or 400
                self.reply(request, tx_key, status, None, why=str(exc), source=source, sl_key=sl_key)
                return
            raise
        self._apply(ctx, decision)

    def _apply(self, ctx: Context, decision: Any) -> None:
        req = ctx.request
        if ctx.auth_user:  # an address that authenticated is served first under overload
            self.gate.note_known(ctx.source[1], ctx.now)
        if isinstance(decision, Reply):
            self.reply(req, ctx.tx_key, decision.status, decision.reason, decision.headers, why=decision.why, source=ctx.source,
                       to_tag=decision.to_tag, sl_key=ctx.extra.get("sl_key"))
        elif isinstance(decision, Forward):
            if not self.routing.forward_here(ctx, decision):
                return  # handed to the process that can send it
            if not decision.stateless and not self._adopt(ctx):
                return  # a retransmission of it got its transaction first
            self._log_forward(ctx, decision)
            self.proxy.forward(req, ctx.source, ctx.tx_key, decision, self.loop.time(), decision.why)
        elif isinstance(decision, Defer):
            sl_key = ctx.extra.get("sl_key")
            if sl_key is not None:
                self.layer.mark_pending(sl_key, ctx.now)  # its retransmissions wait for the answer
            self.spawn(self._deferred(ctx, decision))
        elif isinstance(decision, Elsewhere):
            self.hand_back(ctx, decision.why)
        elif isinstance(decision, Drop):
            self.c_drop_requests.inc()
            logger.debug("%s %s from %s dropped: %s", req.method, req.uri_text, describe(ctx.source), decision.why)

    def _adopt(self, ctx: Context) -> bool:
        """A request handled statelessly so far will be forwarded: give it its server transaction
        (a REGISTER stays stateless: a routing hook that forwards one does so statelessly). False
        when a retransmission of it already has one (that transaction answers it)."""
        sl_key = ctx.extra.get("sl_key")
        if sl_key is None or ctx.request.method == "REGISTER":
            return True
        tx_key = self.layer.adopt(ctx.request, ctx.source, sl_key)
        if tx_key is None:
            return False
        del ctx.extra["sl_key"]
        ctx.tx_key = tx_key
        self.c_uas.inc()
        return True

    def hand_back(self, ctx: Context, why: str) -> None:
        """A request this process cannot serve: the routing hands it to the process that can (a
        worker to main); where there is none, it is answered 500."""
        if self.routing.hand_back(ctx, why):
            return
        self.reply(ctx.request, ctx.tx_key, 500, "Server Internal Error", why=why, source=ctx.source,
                   sl_key=ctx.extra.get("sl_key"))

    async def _deferred(self, ctx: Context, defer: Defer) -> None:
        try:
            decision: Any = defer
            for _ in range(8):  # a stage may defer again (e.g. load AOR, then commit)
                result = await decision.coro
                decision = result if result is not None else pipeline.run(self.stages, ctx, decision.resume)
                if not isinstance(decision, Defer):
                    break
            else:
                decision = Reply(500, "Server Internal Error", why="too many deferred steps")
            self._apply(ctx, decision)
        except Exception as exc:  # noqa: BLE001 - DB trouble: answer 500, keep serving
            logger.error("%s %s from %s -> 500: %s", ctx.request.method, ctx.request.uri_text, describe(ctx.source), exc)
            self.reply(ctx.request, ctx.tx_key, 500, "Server Internal Error", [("Retry-After", "5")], quiet=True,
                       source=ctx.source, sl_key=ctx.extra.get("sl_key"))
        self.transmit()

    # -- sending ----------------------------------------------------------------------------------

    def transmit(self) -> None:
        layer = self.layer
        now = self.loop.time()
        for out in layer.messages_to_send(now):
            self.send_bytes(out.data, out.dest)
        when = layer.get_timer()
        if when is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = None
            return
        # Coalesce: every transaction has a deadline of its own (Timer J/K end each REGISTER 32 s
        # later); firing the loop timer on a TIMER_GRID grid handles all that are due at once
        # instead of one loop callback per transaction. Retransmission timers are >= 500 ms.
        when = -(-when // TIMER_GRID) * TIMER_GRID
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self.loop.call_at(when, self._on_timer)

    def send_bytes(self, data: bytes, dest: tuple) -> None:
        """Send bytes the endpoint built itself (not through a transaction): traced like the rest."""
        if self.routing.copy_sent:
            self.routing.sent(data, dest)  # a traced worker: main shows what it sends
        if self.trace_on or self.tracer.active:
            self.trace_out(data, dest)
        self.transports.send(data, dest)

    def trace_out(self, data: bytes, dest: tuple) -> None:
        """A message sent (by this process, or by a worker while traced) for the SIP trace."""
        if self.trace_on:
            trace.log(sipd_logging.TRACE, "send %d bytes to %s:\n%s", len(data), describe(dest),
                      data.decode("utf-8", "replace"))
        if self.tracer.active:
            self.tracer.emit("out", dest, data)

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        if at is not None and now < at:  # the loop may fire a timer up to its clock resolution early
            now = at
        try:
            self.layer.handle_timer(now)
            self.process_events(now)
        except Exception as exc:  # noqa: BLE001 - the timer must be armed again whatever happened
            self.boundary.caught("timer", exc, None, "transaction timer")
            self.transmit()

    def _local_address(self, proto: str) -> tuple[str, int] | None:
        for lst in self.transports.listeners if self.transports else ():
            if lst.proto == proto:
                return (lst.host, lst.port)
        return None

    # -- ports: Scheduler, Transmitter, OwnRequests, CallControl, AorCopies (sipd/services/ports.py)

    def time(self) -> float:
        return self.loop.time()

    def call_soon(self, callback: Any, *args: Any) -> asyncio.Handle:
        return self.loop.call_soon(callback, *args)

    def call_later(self, delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback, *args)

    def call_at(self, when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        return self.loop.call_at(when, callback, *args)

    @property
    def stopping(self) -> bool:
        return self.should_exit

    def send_datagram(self, data: bytes, dest: tuple) -> None:
        self.transports.send(data, dest)

    def watch(self, tx_key: Any, handler: Any) -> None:
        self.local_uac[tx_key] = handler

    def unwatch(self, tx_key: Any) -> None:
        self.local_uac.pop(tx_key, None)

    def cancel_invite(self, call_id: str, invite_tx: Any) -> bool:
        if self.proxy is not None and self.proxy.on_cancel(invite_tx, self.loop.time()):
            self.transmit()
            return True
        return self.routing.cancel_elsewhere(call_id, invite_tx)  # a worker's call

    async def fetch_aor(self, aor: str) -> Any:
        return await self.routing.fetch_aor(aor)

    # -- ports: answering and relaying --------------------------------------------------------------

    def to_tag(self) -> str:
        return f"{self.mark}.{next(self._tags)}"

    def branch(self) -> str:
        """A branch for a request the transaction layer sends itself (ACK, CANCEL)."""
        return f"z9hG4bK{self.mark}x{next(self._branch_seq)}"

    def local_response(self, request: Any, status: int, reason: str | None = None, headers: Any = (),
                       to_tag: str | None = None) -> Any:
        server_header = self.config.server.server_header
        if server_header:
            headers = [*headers, ("Server", server_header)]
        return make_response(request, status, reason, to_tag=(to_tag or self.to_tag()) if status > 100 else None, headers=headers)

    def reply(self, request: Any, tx_key: Any, status: int, reason: str | None, headers: Any = (), *,
              why: str = "", quiet: bool = False, source: tuple | None = None, to_tag: str | None = None,
              sl_key: Any = None) -> None:
        if request.method == "ACK":
            return
        if sl_key is not None and to_tag is None and status > 100:
            to_tag = stateless_tag(self.mark, request)
        resp = self.local_response(request, status, reason, headers, to_tag)
        now = self.loop.time()
        if not quiet:  # before the answer leaves: whoever got it finds the line
            self._log_reply(request, source, status, why)
        if sl_key is not None and source is not None:  # stateless: back where it came from (RFC 3581)
            self.layer.send_stateless_reply(sl_key, status, resp.to_bytes(), source, now)
        elif tx_key is not None:  # True: "the layer has one" (CANCEL), matched by Via/CSeq
            self.layer.send_response(resp, now, tx_key if isinstance(tx_key, tuple) else None)
        else:
            dest = self.via_destination(resp, source)
            if dest is None:
                return
            self.layer.send_stateless(resp, dest, now)
        if status >= 200 and self.state.events.listeners and request.method != "REGISTER":  # a call's answer: accounting
            self.state.events.emit(CallEvent(kind="response", request=request, response=resp, tx_key=tx_key, now=now))
        self.sl.replied(status)

    def _log_reply(self, request: Any, source: tuple | None, status: int, why: str) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        src = describe(source) if source else "?"
        logger.info("%s %s from %s -> %d%s", request.method, _who(request), src, status, f" ({why})" if why else "")

    def _log_forward(self, ctx: Context, decision: Forward) -> None:
        if not logger.isEnabledFor(logging.INFO) or decision.stateless or ctx.request.method in ("ACK",):
            return
        req = ctx.request
        notes = [n for n in (ctx.extra.get("dialplan"), ctx.extra.get("alias")) if n]
        targets = ", ".join(b.label or (describe(b.dest) if b.dest else str(b.ruri)) for g in decision.groups for b in g)
        logger.info("%s %s from %s -> forwarded to %s (%s)", req.method, _who(req), describe(ctx.source), targets,
                    "; ".join(notes + [decision.why]))

    def log_final(self, ctx: Any, response: Any) -> None:
        logger.debug("%s %s: final %d %s", ctx.request.method, ctx.request.uri_text, response.status, response.reason)
        k = response.status // 100
        if k in self.c_tm:
            self.c_tm[k].inc()

    def emit_request(self, request: Any, tx_key: Any, now: float) -> None:
        events = self.state.events
        if events.listeners:
            events.emit(CallEvent(kind="request", request=request, response=None, tx_key=tx_key, now=now))

    def emit_response(self, ctx: Any, response: Any, now: float) -> None:
        events = self.state.events
        if events.listeners:
            events.emit(CallEvent(kind="response", request=ctx.request, response=response, tx_key=ctx.server_tx, now=now))

    def relay_response(self, ctx: Any, response: Any, now: float) -> None:
        if id(response) not in ctx.local_ids:
            response.remove_first("Via")
        self.c_fwd_replies.inc()
        if ctx.server_tx is None:
            dest = self.via_destination(response, ctx.source)
            if dest is not None:
                self.layer.send_stateless(response, dest, now)
            return
        try:
            self.layer.send_response(response, now, ctx.server_tx)
        except Exception:  # noqa: BLE001 - server transaction gone (late 2xx): send it statelessly
            dest = self.via_destination(response, ctx.source)
            if dest is not None:
                self.layer.send_stateless(response, dest, now)

    def forward_response_stateless(self, response: Any, now: float) -> None:
        """A response without a client transaction (2xx retransmission): RFC 3261 §16.11."""
        vias = response.vias
        if len(vias) < 2 or (vias[0].host.lower(), vias[0].port or 5060) not in self.self_addresses:
            self.c_drop_replies.inc()
            return
        response.remove_first("Via")
        dest = self.via_destination(response, None)
        if dest is None:
            self.c_drop_replies.inc()
            return
        self.c_fwd_replies.inc()
        self.layer.send_stateless(response, dest, now)

    # -- ports: Listeners, Hop, Destinations (our hop: hop.py) --------------------------------------

    def via_destination(self, response: Any, source: tuple | None) -> tuple | None:
        return self.hop.via_destination(response, source)

    def reuse_connection(self, dest: tuple) -> tuple:
        return self.hop.reuse_connection(dest)

    def transports_available(self) -> tuple[str, ...]:
        return self.hop.transports_available()

    def listener_for(self, addr: tuple) -> Any:
        return self.hop.listener_for(addr)

    def local_socket_name(self, source: tuple) -> str:
        return self.hop.local_socket_name(source)

    def advertised_host(self, listener: Any) -> str:
        return self.hop.advertised_host(listener)

    def record_route_value(self, listener: Any, *, here: bool = False) -> str:
        return self.hop.record_route_value(listener, here=here)

    def add_via(self, req: Any, listener: Any, loop_hash: str) -> None:
        self.hop.add_via(req, listener, loop_hash)

    def has_own_via(self, req: Any, loop_hash: str) -> bool:
        return self.hop.has_own_via(req, loop_hash)

    def dest_from_uri(self, uri: Any) -> tuple | None:
        return self.hop.dest_from_uri(uri)

    def branch_for_contact(self, contact: Any) -> Branch:
        return self.hop.branch_for_contact(contact)

    def connection_alive(self, conn_id: Any) -> bool:
        return self.hop.connection_alive(conn_id)

    async def resolve(self, uri: Any) -> list[Any]:
        return await self.hop.resolve(uri)


def _who(request: Any) -> str:
    try:
        if request.method == "REGISTER":
            return request.to.uri.aor().split(":", 1)[1]
        return request.uri_text
    except Exception:  # noqa: BLE001
        return request.uri_text
