"""Start, serve, stop: the life of a sipd process, read top to bottom (uvicorn's ``Server.serve``).

``run(config)`` -> ``Server.serve()`` -> ``startup()`` (bind, open, drop privileges, start the
workers, "ready") -> ``main_loop()`` (housekeeping once a second until SIGTERM/SIGINT) ->
``shutdown()`` (stop the workers, let running calls finish for a moment, flush, close) -> exit
status. A worker process runs the same ``serve``/``main_loop`` with its own startup and shutdown
(sipd/daemon/workers/process.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .. import eventloop
from .. import logging as sipd_logging
from ..config import Config
from ..corebuild import describe as describe_core
from ..errors import StartupError
from ..mgmt.commands.core import reload as reload_command
from ..mgmt.registry import MgmtError
from ..notify import Notifier
from ..privileges import remove_pid_file
from ..readiness import check_listeners
from ..transport.base import BindError
from ..transport.preflight import check_listen_free
from .app import App

logger = logging.getLogger("sipd")

HOUSEKEEPING_INTERVAL = 1.0
SHUTDOWN_GRACE = 3.0  # seconds to let running transactions finish after SIGTERM
GC_THRESHOLD = 20000  # allocations between young collections (CPython's default: 700)
SWEEP_INTERVAL = 10.0  # seconds between two sweeps of idle connections and expired cached answers


def run(config: Config) -> int:
    """Run the daemon until SIGTERM/SIGINT. Returns the process exit status."""
    sipd_logging.configure(config)
    return run_loop(Server(App(config)).serve())


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run a process's ``serve()`` on sipd's event loop (sipd/eventloop.py); Ctrl-C is exit 130."""
    try:
        return eventloop.run(main)
    except KeyboardInterrupt:
        return 130


class Server:
    """One process's life. ``startup``/``shutdown`` default to main's; a worker passes its own."""

    def __init__(self, app: App, *, startup: Callable[[], Awaitable[None]] | None = None,
                 shutdown: Callable[[], Awaitable[None]] | None = None):
        self.app = app
        self.endpoint = app.endpoint
        self.config = app.config
        self.state = app.state
        self._startup = startup or self.startup
        self._shutdown = shutdown or self.shutdown
        self.notifier = Notifier.from_env()  # systemd Type=notify; no-op outside systemd
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.force_exit = False
        self._exit_event: asyncio.Event | None = None
        self._last_watchdog = 0.0
        self._last_flush = 0.0
        self._last_sweep = 0.0

    @property
    def should_exit(self) -> bool:
        return self.endpoint.should_exit

    async def serve(self) -> int:
        self.loop = asyncio.get_running_loop()
        self._exit_event = asyncio.Event()
        self._install_signals()
        try:
            await self._startup()
        except (StartupError, BindError) as exc:
            logger.error("%s", exc)
            await self.close()
            return 1
        try:
            await self.main_loop()
        finally:
            await self._shutdown()
        return 0

    async def startup(self) -> None:
        app, state, config = self.app, self.state, self.config
        check_listen_free(config.server.listen)  # before the database and the spool lock: a 2nd sipd fails at once
        await app.start_core(self.loop)
        await app.start_calls()
        app.build_pipeline()
        names = await app.bind_listeners()  # BindError: one line, exit 1 (serve)
        await app.start_mgmt()
        await app.start_trace()
        app.start_nat_pings()
        app.drop_privileges()
        app.start_workers()
        app.start_polling()
        app.start_heartbeat()
        app.start_ban_sharing()
        tune_gc()
        await check_listeners(self.endpoint.transports.listeners)  # "ready" only once every listener answers (TLS: a handshake)
        logger.info("sipd ready, listening on %s (%s, %s, %s registered, location %s)", ", ".join(names),
                    *(sipd_logging.counted(len(x), noun) for x, noun in ((state.domains, "domain"),
                      (state.subscribers, "subscriber"), (state.location, "AOR"))), config.location.mode)
        core = describe_core()
        if core != "pure Python":  # an operator who built the compiled core sees that it is the one running
            (logger.warning if "STALE" in core else logger.info)("protocol core: %s", core)
        if not len(state.domains):
            logger.warning("no local domain yet: every REGISTER will be refused (403); add one with "
                           "`sipctl domain add example.org` (sipd reloads it at once) or set [server] domains")
        self.notifier.ready(f"listening on {', '.join(names)}")

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
        state, endpoint, config = self.state, self.endpoint, self.config
        removed = state.location.expire(wall)
        if removed:
            state.stats.counter("usrloc:location-expires").inc(len(removed))
            logger.debug("%d contacts expired", len(removed))
            if config.location.mode in ("write-through", "db-only") and state.db is not None:
                for aor in {a for a, _ in removed if endpoint.owns(a)}:
                    fut = state.db.save_aor(aor, state.location.contacts(aor))
                    fut.add_done_callback(_ignore_result)
                state.location.dirty.difference_update(a for a, _ in removed)  # the rest: writes to retry
        if (config.location.mode != "memory" and state.location.dirty
                and now - self._last_flush >= config.location.flush_interval):
            self._last_flush = now
            await self.flush_location()
        if now - self._last_sweep >= SWEEP_INTERVAL:
            self._last_sweep = now
            endpoint.transports.sweep(now)
            endpoint.layer.expire_stateless(now)
            if state.bans is not None:
                state.bans.housekeeping(now)  # expired bans, idle flood counters
        endpoint.routing.tick()

    async def flush_location(self) -> None:
        """Write the AORs changed since the last flush (write-back), those this process owns."""
        state, endpoint = self.state, self.endpoint
        if state.db is None or not state.location.dirty:
            return
        dirty, state.location.dirty = state.location.dirty, set()
        dirty = {aor for aor in dirty if endpoint.owns(aor)}  # another process's AOR: its owner writes it
        items = [(aor, state.location.contacts(aor)) for aor in dirty]
        try:
            await state.db.flush_all(items)
            logger.debug("write-back: flushed %d AORs", len(items))
        except Exception as exc:  # noqa: BLE001 - retry on the next flush
            state.location.dirty |= dirty
            logger.error("location flush failed (%d AORs, will retry): %s", len(items), exc)

    async def shutdown(self) -> None:
        endpoint = self.endpoint
        logger.info("sipd shutting down%s", " (forced)" if self.force_exit else "")
        self.notifier.stopping()
        await endpoint.routing.stop()
        if endpoint.transports is not None:
            endpoint.transports.stop_accepting()
        deadline = self.loop.time() + SHUTDOWN_GRACE
        while not self.force_exit and (endpoint.tasks or endpoint.calls_pending()) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.config.location.mode == "write-back":
            await self.flush_location()
        self.cancel_tasks()
        if self.state.dialogs is not None:
            await self.state.dialogs.close()  # flush accounting (or spool it)
        await self.close()
        remove_pid_file(self.config.server.pid_file)
        self.notifier.close()
        logger.info("sipd stopped")

    def cancel_tasks(self) -> None:
        for task in list(self.endpoint.tasks):
            task.cancel()

    async def close(self) -> None:
        await self.app.close()
        await asyncio.sleep(0)

    # -- signals ----------------------------------------------------------------------------------

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
            try:
                result = await reload_command(self.app.mgmt_context)
                logger.debug("SIGHUP: reloaded %s", ", ".join(result["Reloaded"]) or "nothing")  # (logged by it)
            except MgmtError as exc:
                logger.error("SIGHUP: reload failed: %s", exc)

        self.endpoint.spawn(reload())  # (the reload command also signals the workers)

    def _on_signal(self, sig: int) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.endpoint.should_exit = True
        if self._exit_event is not None:
            self._exit_event.set()

    def request_exit(self) -> None:
        self._on_signal(signal.SIGTERM)


def tune_gc() -> None:
    """Move everything alive after startup (modules, caches) out of the collector's sight and make
    young collections rarer: a REGISTER allocates a few hundred objects, and the default threshold
    (700) ran a collection every other message, full ones walking the whole location table."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 100)


def _ignore_result(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()
