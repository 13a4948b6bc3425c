"""The daemon: startup, main loop, graceful shutdown (the uvicorn lifecycle), and the glue between
transports, the transaction layer, the request pipeline and the proxy.

Reading order: ``run()`` -> ``Server.serve()`` -> ``startup()`` / ``main_loop()`` / ``shutdown()``.
The receive path: transport -> ``datagram_received`` / ``message_received`` -> layer ->
``_process`` (events) -> ``_on_request`` (pipeline) -> ``_apply`` (reply / forward) -> ``transmit``
(drain ``messages_to_send`` and re-arm the single layer timer, aioquic style).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from . import logging as sipd_logging
from .boundary import Boundaries
from .daemon import stateless_path
from .daemon.gate import setup as setup_gate
from .daemon.gate import shed
from .boundary import describe as _fmt_addr  # proto:host:port, IPv6 bracketed
from .daemon.workers.routing import MainRouting, NoWorkers
from .errors import StartupError
from .mgmt.context import MgmtContext
from .sl_stats import StatelessReplyStats
from .services import nat_detect, pipeline, presence, security  # nat_detect: [nat], reach a NATed contact at its pinhole
from .sip.errors import RemoteProtocolError
from .sip.layer import (CancelReceived, MessageRejected, RequestReceived, ResponseReceived, TransactionTerminated,
                        TransactionTimedOut)
from .sip.message import make_response
from .sip.stateless import stateless_tag
from .services.pipeline import Branch, Context, Defer, Drop, Elsewhere, Forward, Reply
from .services.stages import build_pipeline
from .state import CallEvent, ServerState
from .transport.base import BindError
from .transport.preflight import check_listen_free
from .transport.manager import Transports

if TYPE_CHECKING:
    from .config import Config

logger = logging.getLogger("sipd")
trace = logging.getLogger("sipd.trace")

HOUSEKEEPING_INTERVAL = 1.0
SHUTDOWN_GRACE = 3.0  # seconds to let running transactions finish after SIGTERM
TIMER_GRID = 0.02  # seconds: transaction timers fire on this grid (see transmit)
GC_THRESHOLD = 20000  # allocations between young collections (CPython's default: 700)

#: Events of a client transaction: those of a request the server sent itself go to its callback.
CLIENT_EVENTS = (ResponseReceived, TransactionTimedOut, TransactionTerminated)


class Server:
    gate: Any = None  # sipd/overload.py OverloadGate, from _start_core

    def __init__(self, config: Config):
        self.config = config
        self.state = ServerState(config)
        self.mgmt_context = MgmtContext(self.state)  # filled as the parts start
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.layer: Any = None
        self.transports: Transports = None  # type: ignore[assignment]
        self.proxy: Any = None
        self.resolver: Any = None
        self.authenticator: Any = None
        self.mgmt: Any = None
        self.workers: Any = None  # the WorkerPool (sipd/daemon/workers/) when [server] workers > 1
        self.routing: Any = NoWorkers()  # which process handles what (MainRouting with workers)
        self.stages: list = []
        self.self_addresses = self.state.myself.addresses  # (host, port); with the transport in self_sockets
        self.self_sockets = self.state.myself.sockets
        self.should_exit = False
        self.force_exit = False
        self._exit_event: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._socket_names: dict[tuple, str] = {}
        self.replies, self.refusals = stateless_path.caches()  # stateless answers, for retransmissions
        self.local_uac: dict[Any, Any] = {}  # tx_key -> callback(event): requests the server sends itself (NOTIFY)
        self._tags = itertools.count(1)
        self._rand = os.urandom(4).hex()  # in our branches: the process's mark (sipd/daemon/workers/)
        self._branch_seq = itertools.count(1)
        self._last_flush = 0.0
        self._last_sweep = 0.0
        self.trace_on = config.log.sip_trace
        from .notify import Notifier

        self.notifier = Notifier.from_env()  # systemd Type=notify; no-op outside systemd
        self._last_watchdog = 0.0
        from .livetrace import Tracer

        self.tracer = Tracer(self._local_address)  # sipctl trace; .active is False unless someone watches
        self._handlers = {  # the transaction layer's events, by type
            RequestReceived: self._on_request_received,
            ResponseReceived: self._on_response_received,
            CancelReceived: self._on_cancel,
            TransactionTimedOut: self._on_timed_out,
            TransactionTerminated: self._on_terminated,
            MessageRejected: self._on_rejected,
        }

    # -- lifecycle --------------------------------------------------------------------------------

    async def serve(self) -> int:
        self.loop = asyncio.get_running_loop()
        self._exit_event = asyncio.Event()
        self._install_signals()
        try:
            await self.startup()
        except (StartupError, BindError) as exc:
            logger.error("%s", exc)
            await self._close_quietly()
            return 1
        try:
            await self.main_loop()
        finally:
            await self.shutdown()
        return 0

    async def startup(self) -> None:
        from .config import parse_listen

        config = self.config
        state = self.state
        check_listen_free(config.server.listen)  # before the database and the spool lock: a 2nd sipd fails at once
        await self._start_core()
        from .services import accounting

        await accounting.start(state, self, self.layer)  # [acc]/[dialog]: sets state.dialogs
        presence.setup(state, self, self.layer)  # [presence]: sets state.presence
        self.stages = build_pipeline(state, self, self.authenticator)
        self.tls = self.mgmt_context.tls = self._tls_manager()
        self.transports = Transports(self, config.limits, tls=self.tls)
        self.mgmt_context.listeners = self.transports.listeners
        self.transports.udp_readers = self.worker_count()
        names = []
        for item in config.server.listen:
            addr = parse_listen(item)
            listener = await self.transports.bind(addr)  # BindError: one line, exit 1 (serve)
            names.append(listener.name)
            self.note_self_address(listener)
        await self._start_mgmt()
        await self._start_trace()
        from . import readiness, reloading
        from .services import nat
        self.nat_keepalive = nat.start(state, self)  # [nat] keep-alive pings to NATed contacts
        self._drop_privileges()
        self._start_workers()
        reloading.start_polling(state, self, self.workers)  # [database] reload_interval
        _tune_gc()
        await readiness.check_listeners(self)  # "ready" only once every listener answers (TLS: a handshake)
        logger.info("sipd ready, listening on %s (%s, %s, %s registered, location %s)", ", ".join(names),
                    *(sipd_logging.counted(len(x), noun) for x, noun in ((state.domains, "domain"),
                      (state.subscribers, "subscriber"), (state.location, "AOR"))), config.location.mode)
        if not len(state.domains):
            logger.warning("no local domain yet: every REGISTER will be refused (403); add one with "
                           "`sipctl domain add example.org` (sipd reloads it at once) or set [server] domains")
        self.notifier.ready(f"listening on {', '.join(names)}")

    def note_self_address(self, listener: Any) -> None:
        """The listener's address, and the advertised name on its port, are this server (is_self)."""
        self.state.myself.note_listener(listener, self.config.server.advertised_address)

    async def _start_core(self) -> None:
        """What every process needs (main and registrar workers): statistics, the database and its
        caches, digest authentication, the resolver, the transaction layer and the proxy."""
        from .services.auth import Authenticator
        from .services.proxy import Proxy
        from .services.resolve import SipResolver

        self.stats_init()
        await self._open_database()
        self.authenticator = Authenticator(self.config.auth, nonce_table=self.config.limits.nonce_table)
        self.resolver = SipResolver(self.config)
        self.layer = self._make_layer()
        self.proxy = Proxy(self.state, scheduler=self, replier=self, transactions=self.layer, upstream=self,
                           listeners=self, hop=self, destinations=self, transmitter=self)
        self.gate = setup_gate(self)

    def worker_count(self) -> int:
        """Processes reading the UDP listeners: ``[server] workers``, 0 = one per CPU."""
        return self.config.server.workers or os.cpu_count() or 1

    def _start_workers(self) -> None:
        n = self.worker_count()
        if n <= 1:
            return
        if self.transports.udp4 is None and self.transports.udp6 is None:
            logger.warning("[server] workers = %d ignored: the workers read UDP listeners and there is none", n)
            return
        from .daemon.workers.pool import WorkerPool

        self.workers = self.mgmt_context.workers = WorkerPool(self, n)
        self.routing = MainRouting(self.workers)
        self.workers.start()

    def owns(self, aor: str) -> bool:
        """False for an AOR another process owns (it persists it; this one holds a copy)."""
        return self.routing.owns(aor)

    async def main_loop(self) -> None:
        assert self._exit_event is not None
        while not self.should_exit:
            try:
                await asyncio.wait_for(self._exit_event.wait(), HOUSEKEEPING_INTERVAL)
            except asyncio.TimeoutError:
                pass
            if self.should_exit:
                break
            if self.notifier.watchdog_interval and self.loop.time() - self._last_watchdog >= self.notifier.watchdog_interval:
                self._last_watchdog = self.loop.time()
                self.notifier.watchdog()  # only from the loop: a stuck loop stops the pings
            try:
                await self.housekeeping()
            except Exception:  # noqa: BLE001 - housekeeping must never stop the server
                logger.exception("housekeeping failed")

    async def housekeeping(self) -> None:
        wall = time.time()
        now = self.loop.time()
        state = self.state
        removed = state.location.expire(wall)
        if removed:
            self.stats.counter("usrloc:location-expires").inc(len(removed))
            logger.debug("%d contacts expired", len(removed))
            mode = self.config.location.mode
            if mode in ("write-through", "db-only") and state.db is not None:
                for aor in {a for a, _ in removed if self.owns(a)}:
                    fut = state.db.save_aor(aor, state.location.contacts(aor))
                    fut.add_done_callback(_ignore_result)
                state.location.dirty.difference_update(a for a, _ in removed)  # the rest: writes to retry
        if (self.config.location.mode != "memory" and state.location.dirty
                and now - self._last_flush >= self.config.location.flush_interval):
            self._last_flush = now
            await self.flush_location()
        if now - self._last_sweep >= 10.0:
            self._last_sweep = now
            self.transports.sweep(now)
            self.replies.expire(now)  # also when no request comes to push them out
            self.refusals.expire(now)
            if state.bans is not None:
                state.bans.housekeeping(now)  # expired bans, idle flood counters (issue 6)
        self.routing.tick()

    async def flush_location(self) -> None:
        state = self.state
        if state.db is None or not state.location.dirty:
            return
        dirty, state.location.dirty = state.location.dirty, set()
        dirty = {aor for aor in dirty if self.owns(aor)}  # only the owner writes an AOR (others hold copies)
        items = [(aor, state.location.contacts(aor)) for aor in dirty]
        try:
            await state.db.flush_all(items)
            logger.debug("write-back: flushed %d AORs", len(items))
        except Exception as exc:  # noqa: BLE001 - retry on the next flush
            state.location.dirty |= dirty
            logger.error("location flush failed (%d AORs, will retry): %s", len(items), exc)

    async def shutdown(self) -> None:
        logger.info("sipd shutting down%s", " (forced)" if self.force_exit else "")
        self.notifier.stopping()
        await self.routing.stop()
        if self.transports is not None:
            self.transports.stop_accepting()
        deadline = self.loop.time() + SHUTDOWN_GRACE
        while not self.force_exit and (self._tasks or self._calls_pending()) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.config.location.mode == "write-back":
            await self.flush_location()
        for task in list(self._tasks):
            task.cancel()
        if self.state.dialogs is not None:
            await self.state.dialogs.close()  # flush accounting (or spool it)
        await self._close_quietly()
        from .privileges import remove_pid_file

        remove_pid_file(self.config.server.pid_file)
        self.notifier.close()
        logger.info("sipd stopped")

    def _calls_pending(self) -> bool:
        return self.proxy is not None and any(not c.final_sent for c in self.proxy.contexts.values())

    async def _close_quietly(self) -> None:
        await self.tracer.close()
        if self.mgmt is not None:
            try:
                await self.mgmt.close()
            except Exception:  # noqa: BLE001
                logger.exception("closing the management server failed")
            self.mgmt = None
        if self._timer is not None:
            self._timer.cancel()
        if self.transports is not None:
            self.transports.close()
        if getattr(self, "tls", None) is not None:
            self.tls.close()
        if self.state.db is not None:
            try:
                await self.state.db.close()
            except Exception:  # noqa: BLE001
                logger.exception("closing the database failed")
            self.state.db = None
        await asyncio.sleep(0)

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

        try:
            self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    def _on_sighup(self) -> None:
        """SIGHUP = ``sipctl reload``: domains, dialplan, subscribers, TLS, routing hook, log level."""

        async def reload() -> None:
            from .mgmt.commands.core import reload as reload_command
            from .mgmt.registry import MgmtError

            try:
                result = await reload_command(self.mgmt_context)
                logger.debug("SIGHUP: reloaded %s", ", ".join(result["Reloaded"]) or "nothing")  # (logged by it)
            except MgmtError as exc:
                logger.error("SIGHUP: reload failed: %s", exc)

        task = self.loop.create_task(reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)  # (the reload command also signals the workers)

    def _on_signal(self, sig: int) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
        if self._exit_event is not None:
            self._exit_event.set()

    def request_exit(self) -> None:
        self._on_signal(signal.SIGTERM)

    # -- startup helpers --------------------------------------------------------------------------

    async def _open_database(self) -> None:
        from .db import DbError
        from .services.auth import Credentials
        from .services.store import Store

        state = self.state
        config = self.config
        store = Store(config.database.url, config.database.connect_timeout)
        try:
            await store.open()
            if config.database.url.startswith("sqlite:"):
                from .db import schema

                await store.call(schema.create_all, store.db)
            state.db = store
            await self._load_caches()
        except DbError as exc:
            state.db = None
            await store.close()
            hint = f" — {exc.hint}" if getattr(exc, "hint", "") else ""
            raise StartupError(f"{exc.message}{hint}") from None

        async def load_one(user: str, domain: str) -> Credentials | None:
            row = await store.load_subscriber(user, domain)
            return Credentials(row["ha1"] or "", row["ha1_sha256"] or "") if row else None

        state.subscribers.loader = load_one
        state.subscribers.reloader = self._reload_subscribers
        state.domains.reloader = self._reload_domains
        state.aliases.reloader = self._reload_aliases
        state.dialplan.reloader = self._reload_dialplan

    async def _load_caches(self) -> None:
        state = self.state
        await self._reload_domains()
        await self._reload_subscribers()
        await self._reload_aliases()
        await self._reload_dialplan()
        if self.config.location.mode != "memory" and self.routing.loads_locations:  # a worker's come from main
            for aor, contact in await state.db.load_locations(time.time()):  # type: ignore[union-attr]
                state.location.replace(aor, state.location.contacts(aor) + [contact], mark_dirty=False)

    async def _reload_domains(self) -> None:  # the domain table adds local domains in either multidomain mode
        self.state.domains.set(await self.state.db.load_domains())  # type: ignore[union-attr]

    async def _reload_subscribers(self) -> None:
        self.state.subscribers.load(await self.state.db.load_subscribers())  # type: ignore[union-attr]

    async def _reload_aliases(self) -> None:
        self.state.aliases.set(await self.state.db.load_aliases())  # type: ignore[union-attr]

    async def _reload_dialplan(self) -> None:
        self.state.dialplan.set(await self.state.db.load_dialplan())  # type: ignore[union-attr]

    def _make_layer(self) -> Any:
        from .sip.layer import LayerConfig, TransactionLayer

        def branch() -> str:
            return f"z9hG4bK{self._rand}x{next(self._branch_seq)}"

        return TransactionLayer(LayerConfig(branch_factory=branch, tag_factory=self.to_tag, stateless_prefix=self._rand,
                                            on_stateless_ack=self.sl.ack_absorbed))

    def _tls_manager(self) -> Any:
        """TLS domains (sipd/tlsconf.py); None when no tls listener and no [tls] certificate/CA."""
        t = self.config.tls
        if not (any(x.strip().lower().startswith("tls:") for x in self.config.server.listen)
                or t.certificate or t.ca_file or t.client_domains):
            return None
        from .tlsconf import TlsManager

        try:
            manager = TlsManager(t, self.config.server.listen)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise StartupError(f"TLS: cannot load certificate/key/CA: {exc} — see [tls]; check with sipctl cert check") from None
        manager.start(self.loop)
        return manager

    def _drop_privileges(self) -> None:
        """PID file, then [server] user/group once every socket is bound and the database open."""
        from .privileges import PrivilegeError, drop, write_pid_file

        server = self.config.server
        try:
            write_pid_file(server.pid_file)
        except OSError as exc:
            raise StartupError(f"server.pid_file: cannot write {server.pid_file}: {exc.strerror}") from None
        from .db import parse_url

        db_url = parse_url(self.config.database.url)
        writable = [db_url.path] if db_url.scheme == "sqlite" and db_url.path.startswith("/") else []
        if self.state.dialogs is not None:  # [acc] spool file: written whenever the database is down
            from .services.accounting import default_spool_path

            writable.append(self.config.acc.spool or default_spool_path(self.config.database.url))
        try:
            drop(server.user, server.group, writable=writable)
        except (PrivilegeError, OSError) as exc:
            raise StartupError(str(exc)) from None

    async def _start_trace(self) -> None:
        from .livetrace import start_tracing

        await start_tracing(self.tracer, self.config, self.state.stats)  # sipctl trace, [trace] HEP export

    def _local_address(self, proto: str) -> tuple[str, int] | None:
        for lst in self.transports.listeners if self.transports else ():
            if lst.proto == proto:
                return (lst.host, lst.port)
        return None

    async def _start_mgmt(self) -> None:
        try:
            from .mgmt import server as mgmt_server
        except ImportError:
            return
        try:
            self.mgmt = await mgmt_server.start(self.mgmt_context)
        except Exception as exc:  # noqa: BLE001 - the SIP service runs without management
            logger.warning("management interface not started: %s", exc)

    def stats_init(self) -> None:
        self.stats = s = self.state.stats
        self.c_rcv_requests = s.counter("core:rcv_requests")
        self.c_rcv_replies = s.counter("core:rcv_replies")
        self.c_fwd_replies = s.counter("core:fwd_replies")
        self.c_drop_requests = s.counter("core:drop_requests")
        self.c_drop_replies = s.counter("core:drop_replies")
        self.c_err_requests = s.counter("core:err_requests")
        self.c_bad_msg = s.counter("core:bad_msg_hdr")
        self.c_uas = s.counter("tm:UAS_transactions")
        self.sl = StatelessReplyStats(s)
        self.boundary = self.state.events.boundary = Boundaries(s, self.loop)
        self.c_tm = {k: s.counter(f"tm:{k}xx_transactions") for k in range(2, 7)}
        for name in ("core:fwd_requests", "tm:UAC_transactions", "registrar:accepted_regs",
                     "registrar:rejected_regs", "usrloc:location-expires", "core:bad_URIs_rcvd"):
            s.counter(name)
        loc = self.state.location
        s.gauge("usrloc:registered_users", lambda: len(loc))
        s.gauge("usrloc:location-users", lambda: len(loc))
        s.gauge("usrloc:location-contacts", loc.count_contacts)
        s.gauge("registrar:max_expires", lambda: self.config.registrar.max_expires)
        s.gauge("registrar:max_contacts", lambda: self.config.registrar.max_contacts)
        s.gauge("registrar:default_expire", lambda: self.config.registrar.default_expires)
        s.gauge("tm:inuse_transactions", lambda: len(self.proxy.contexts) if self.proxy else 0)

    def count(self, name: str, n: int = 1) -> None:
        self.stats.counter(name).inc(n)

    # -- receive path -----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple, owned: bool = False) -> None:
        """A UDP datagram (``owned``: a REGISTER a worker passed on because main owns its AOR)."""
        now = self.loop.time()
        if self.trace_on:
            trace.log(sipd_logging.TRACE, "recv %d bytes from %s:\n%s", len(data), _fmt_addr(addr),
                      data.decode("utf-8", "replace"))
        if self.tracer.active:
            self.tracer.emit("in", addr, data)
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
            return  # another process owns this AOR, call or transaction
        if data[:4] == b"SIP/":
            self.layer.receive_datagram(data, addr, now)
            self._process(now)
        else:
            stateless_path.receive(self, data, addr, now)

    def message_received(self, msg: Any, addr: tuple) -> None:
        now = self.loop.time()
        if self.trace_on:
            trace.log(sipd_logging.TRACE, "recv from %s:\n%s", _fmt_addr(addr),
                      msg.to_bytes().decode("utf-8", "replace"))
        if self.tracer.active:
            self.tracer.emit("in", addr, msg.to_bytes())
        self.routing.stream_message(msg)  # over TCP/TLS: the call stays in main
        if stateless_path.receive_stream(self, msg, addr, now):
            return
        self.layer.receive_message(msg, addr, now)
        self._process(now)

    def connection_allowed(self, host: str) -> bool:
        return security.connection_allowed(self.state, host, self.loop.time())

    def stream_rejected(self, addr: tuple, exc: Exception) -> None:
        self.c_bad_msg.inc()
        logger.info("closing %s: unparsable stream (%s)", _fmt_addr(addr), exc)

    def _process(self, now: float) -> None:
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
        self._on_request(ev.request, ev.source, ev.tx_key, now)

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
        logger.debug("rejected message from %s: %s %s", _fmt_addr(ev.source), ev.status, ev.reason)

    def _on_cancel(self, ev: CancelReceived, now: float) -> None:
        self.c_rcv_requests.inc()
        found = ev.tx_key is not None and self.proxy.on_cancel(ev.tx_key, now)
        if found:
            logger.info("CANCEL %s from %s -> 200, branches cancelled", ev.request.uri_text, _fmt_addr(ev.source))
        # the layer gave the CANCEL a server transaction of its own: answer through it
        self.reply(ev.request, True, 200 if found else 481, None if found else "Call/Transaction Does Not Exist",
                   quiet=found, why="no such transaction", source=ev.source)

    def _on_request(self, request: Any, source: tuple, tx_key: Any, now: float, sl_key: Any = None) -> None:
        ctx = Context(request, source, self.state, now, time.time(), tx_key)
        if sl_key is not None:
            ctx.extra["sl_key"] = sl_key
        self.routing.request_context(ctx)  # a worker keeps the datagram it may hand back to main
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
                return  # given to another process (a worker has no TCP/TLS, no DNS)
            if not decision.stateless and not stateless_path.adopt(self, ctx):
                return  # a retransmission of it got its transaction first
            self._log_forward(ctx, decision)
            self.proxy.forward(req, ctx.source, ctx.tx_key, decision, self.loop.time(), decision.why)
        elif isinstance(decision, Defer):
            stateless_path.pending(self, ctx)  # its retransmissions wait for the answer
            task = self.loop.create_task(self._deferred(ctx, decision))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(decision, Elsewhere):
            self.hand_back(ctx, decision.why)
        elif isinstance(decision, Drop):
            self.c_drop_requests.inc()
            logger.debug("%s %s from %s dropped: %s", req.method, req.uri_text, _fmt_addr(ctx.source), decision.why)

    def hand_back(self, ctx: Context, why: str) -> None:
        """A request this process cannot serve goes to main (from a worker); main holds everything,
        so there it is answered 500."""
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
            logger.error("%s %s from %s -> 500: %s", ctx.request.method, ctx.request.uri_text, _fmt_addr(ctx.source), exc)
            self.reply(ctx.request, ctx.tx_key, 500, "Server Internal Error", [("Retry-After", "5")], quiet=True,
                       source=ctx.source, sl_key=ctx.extra.get("sl_key"))
        self.transmit()

    # -- sending ----------------------------------------------------------------------------------

    def transmit(self) -> None:
        layer = self.layer
        now = self.loop.time()
        for out in layer.messages_to_send(now):
            self._send(out.data, out.dest)
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

    def _send(self, data: bytes, dest: tuple) -> None:
        if self.routing.copy_sent:
            self.routing.sent(data, dest)  # a traced worker: main shows what it sends
        if self.trace_on or self.tracer.active:
            self.trace_out(data, dest)
        self.transports.send(data, dest)

    def trace_out(self, data: bytes, dest: tuple) -> None:
        """A message sent (by this process, or by a worker while traced) for the SIP trace."""
        if self.trace_on:
            trace.log(sipd_logging.TRACE, "send %d bytes to %s:\n%s", len(data), _fmt_addr(dest),
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
            self._process(now)
        except Exception as exc:  # noqa: BLE001 - the timer must be armed again whatever happened
            self.boundary.caught("timer", exc, None, "transaction timer")
            self.transmit()

    def to_tag(self) -> str:
        return f"{self._rand}.{next(self._tags)}"

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
            to_tag = stateless_tag(self._rand, request)
        resp = self.local_response(request, status, reason, headers, to_tag)
        now = self.loop.time()
        if not quiet:  # before the answer leaves: whoever got it finds the line
            self._log_reply(request, source, status, why)
        if sl_key is not None and source is not None:  # stateless: back where it came from (RFC 3581)
            data = resp.to_bytes()
            if status >= 200:
                stateless_path.remember(self, sl_key, status, data, now)
            self._send(data, source)  # a worker's _send also copies it to main while traced
        elif tx_key is not None:  # True: "the layer has one" (CANCEL), matched by Via/CSeq
            self.layer.send_response(resp, now, tx_key if isinstance(tx_key, tuple) else None)
        else:
            dest = self.via_destination(resp, source)
            if dest is None:
                return
            self.layer.send_stateless(resp, dest, now)
        if status >= 200 and self.state.events.listeners and request.method != "REGISTER":  # calls: accounting (contracts §9)
            self.state.events.emit(CallEvent(kind="response", request=request, response=resp, tx_key=tx_key, now=now))
        self.sl.replied(status)

    def _log_reply(self, request: Any, source: tuple | None, status: int, why: str) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        who = _who(request)
        src = _fmt_addr(source) if source else "?"
        logger.info("%s %s from %s -> %d%s", request.method, who, src, status, f" ({why})" if why else "")

    def _log_forward(self, ctx: Context, decision: Forward) -> None:
        if not logger.isEnabledFor(logging.INFO) or decision.stateless or ctx.request.method in ("ACK",):
            return
        req = ctx.request
        notes = [n for n in (ctx.extra.get("dialplan"), ctx.extra.get("alias")) if n]
        targets = ", ".join(b.label or (_fmt_addr(b.dest) if b.dest else str(b.ruri)) for g in decision.groups for b in g)
        logger.info("%s %s from %s -> forwarded to %s (%s)", req.method, _who(req), _fmt_addr(ctx.source), targets,
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

    def via_destination(self, response: Any, source: tuple | None) -> tuple | None:
        """Where a response goes: the top Via (received/rport, RFC 3581), or the request's source."""
        try:
            via = response.vias[0]
        except Exception:  # noqa: BLE001
            return source
        host, port = via.response_address()
        if host in ("255.255.255.255", "0.0.0.0") or host.startswith("224."):
            return None  # never answer to broadcast/multicast (RFC 4475 §3.3.10)
        proto = via.transport.lower()
        if source is not None and source[0] == proto and source[1] == host:
            return source
        return self.reuse_connection((proto, host, port, None))

    def reuse_connection(self, dest: tuple) -> tuple:
        if dest[0] == "udp":
            return dest
        conn = self.transports.by_peer.get((dest[0], dest[1], dest[2]))
        return (dest[0], dest[1], dest[2], conn.conn_id) if conn is not None and not conn.closed else dest

    # -- helpers used by the pipeline and the proxy ------------------------------------------------

    def transports_available(self) -> tuple[str, ...]:
        return tuple(sorted({lst.proto for lst in self.transports.listeners}))

    def listener_for(self, addr: tuple) -> Any:
        proto = addr[0]
        v6 = ":" in addr[1]
        best = None
        for lst in self.transports.listeners:
            if lst.proto == proto and lst.family6 == v6:
                return lst
            if lst.proto == proto and best is None:
                best = lst
        return best or (self.transports.listeners[0] if self.transports.listeners else None)

    def local_socket_name(self, source: tuple) -> str:
        key = (source[0], ":" in source[1], len(self.transports.listeners))
        name = self._socket_names.get(key)
        if name is None:  # one shared string per listener (stored in every contact)
            lst = self.listener_for(source)
            name = self._socket_names[key] = lst.name if lst is not None else ""
        return name

    def advertised_host(self, listener: Any) -> str:
        host = self.config.server.advertised_address or listener.host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def record_route_value(self, listener: Any) -> str:
        transport = "" if listener.proto == "udp" else f";transport={listener.proto}"
        return f"<sip:{self.advertised_host(listener)}:{listener.port}{transport};lr>"

    def add_via(self, req: Any, listener: Any, loop_hash: str) -> None:
        branch = f"z9hG4bK{loop_hash}.{self._rand}{next(self._branch_seq)}"
        rport = ";rport" if listener.proto == "udp" else ""
        req.prepend("Via", f"SIP/2.0/{listener.proto.upper()} {self.advertised_host(listener)}:{listener.port};branch={branch}{rport}")

    def has_own_via(self, req: Any, loop_hash: str) -> bool:
        prefix = f"z9hG4bK{loop_hash}."
        for via in req.vias:
            if (via.host.lower(), via.port or 5060) in self.self_addresses:
                branch = via.branch or ""
                if branch.startswith(prefix):
                    return True
        return False

    def dest_from_uri(self, uri: Any) -> tuple | None:
        dest = pipeline.dest_of(uri)
        return self.reuse_connection(dest) if dest is not None else None

    # -- the rest of the ports the services use (sipd/services/ports.py) ----------------------------

    def time(self) -> float:
        return self.loop.time()

    def call_soon(self, callback: Any, *args: Any) -> asyncio.Handle:
        return self.loop.call_soon(callback, *args)

    def call_later(self, delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback, *args)

    def call_at(self, when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        return self.loop.call_at(when, callback, *args)

    def spawn(self, coro: Any) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)  # shutdown waits for these (bounded), then cancels them
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def stopping(self) -> bool:
        return self.should_exit

    def send_datagram(self, data: bytes, dest: tuple) -> None:
        self.transports.send(data, dest)

    async def resolve(self, uri: Any) -> list[Any]:
        return await self.resolver.resolve(uri, transports=self.transports_available())

    def connection_alive(self, conn_id: Any) -> bool:
        return self.transports.connection(conn_id) is not None

    async def fetch_aor(self, aor: str) -> Any:
        """Main holds every AOR (nothing to fetch); a registrar worker asks main for a copy."""
        return await self.routing.fetch_aor(aor)

    def watch(self, tx_key: Any, handler: Any) -> None:
        self.local_uac[tx_key] = handler

    def unwatch(self, tx_key: Any) -> None:
        self.local_uac.pop(tx_key, None)

    def cancel_invite(self, call_id: str, invite_tx: Any) -> bool:
        if self.proxy is not None and self.proxy.on_cancel(invite_tx, self.loop.time()):
            self.transmit()
            return True
        return self.workers is not None and self.workers.cancel(call_id, invite_tx)  # a worker's call

    def branch_for_contact(self, c: Any) -> Branch:
        from .sip.headers import parse_name_addr, split_commas
        from .sip.uri import parse_uri

        if not self.routing.reachable(c):
            return Branch(c.uri, None, label=c.uri)  # registered over TCP/TLS: main's connection
        uri = parse_uri(c.uri)
        routes = split_commas(c.path) if c.path else []
        dest: tuple | None = None
        nated = False
        if routes:
            dest = self.dest_from_uri(parse_name_addr(routes[0]).uri)
        elif c.conn_id is not None and self.transports.connection(c.conn_id) is not None:
            conn = self.transports.connection(c.conn_id)
            dest = (conn.proto, conn.host, conn.port, conn.conn_id)  # type: ignore[union-attr]
        elif c.received and c.received.startswith("udp:") and self.config.nat.enabled and nat_detect.is_nated(c):
            proto, rest = c.received.split(":", 1)
            host, _, port = rest.rpartition(":")
            dest = ("udp", host.strip("[]"), int(port), None)
            nated = ((uri.host or "").strip("[]").lower(), uri.port or 5060) != (dest[1].lower(), dest[2])
        else:
            dest = self.dest_from_uri(uri)
        return Branch(uri, dest, routes, label=_fmt_addr(dest) if dest else c.uri, nated=nated)


def _who(request: Any) -> str:
    try:
        if request.method == "REGISTER":
            return request.to.uri.aor().split(":", 1)[1]
        return request.uri_text
    except Exception:  # noqa: BLE001
        return request.uri_text


def _tune_gc() -> None:
    """Move everything alive after startup (modules, caches) out of the collector's sight and make
    young collections rarer: a REGISTER allocates a few hundred objects, and the default threshold
    (700) ran a collection every other message, full ones walking the whole location table."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 100)


def _ignore_result(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


def run(config: Config) -> int:
    """Run the daemon until SIGTERM/SIGINT. Returns the process exit status."""
    sipd_logging.configure(config)
    try:
        import uvloop  # type: ignore[import-not-found]

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    server = Server(config)
    try:
        return runner(server.serve())
    except KeyboardInterrupt:
        return 130
