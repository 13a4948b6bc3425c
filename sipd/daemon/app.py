"""What sipd is made of, built and wired from its Config: the one place that constructs the parts.

``App`` holds the parts of one process (state, endpoint, TLS, management) and has one method per
part to build it; ``lifecycle.py`` calls them in order at start and closes them at stop. A worker
process builds the same core (``start_core``) and none of what only main has (listeners it binds,
accounting, management, trace, NAT pings, reload polling).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ..config import Config, load, parse_listen
from ..db import DbError, DbSchemaError, migrations, parse_url, schema
from ..errors import StartupError
from ..livetrace import start_tracing
from ..mgmt import server as mgmt_server
from ..mgmt.context import MgmtContext
from ..privileges import PrivilegeError, drop, write_pid_file
from ..services import accounting, cluster, cluster_bans, nat, presence, security
from ..services.auth import Authenticator, Credentials
from ..services.challenge import RawChallenge
from ..services.proxy import Proxy
from ..services.resolve import SipResolver
from ..services.stages import build_pipeline
from ..services.store import Store
from ..sip.layer import LayerConfig, TransactionLayer
from ..state import ServerState
from ..tlsconf import TlsManager
from ..validation import VALIDATORS
from ..transport.manager import Transports
from .. import reloading
from .endpoint import Endpoint
from .gate import setup as setup_gate
from .workers.pool import WorkerPool
from .workers.routing import MainRouting

logger = logging.getLogger("sipd")



def load_config(path: str | None) -> Config:
    """The daemon's configuration: read, and checked by every feature's validator
    (``sipd/validation.py``); ``ConfigError`` lists the problems."""
    return load(path, validators=VALIDATORS)

class App:
    def __init__(self, config: Config, routing: Any = None):
        self.config = config
        self.state = ServerState(config)
        self.endpoint = Endpoint(config, self.state, routing)
        self.mgmt_context = MgmtContext(self.state)  # what management commands may use; filled as parts start
        self.tls: TlsManager | None = None
        self.mgmt: Any = None
        self.nat_keepalive: Any = None
        self.heartbeat: cluster.Heartbeat | None = None
        self.ban_sync: cluster_bans.BanSync | None = None

    # -- what every process needs -----------------------------------------------------------------

    async def start_core(self, loop: Any) -> None:
        """Statistics, the database and its caches, digest authentication, the resolver, the
        transaction layer, the proxy and the overload gate (main and worker processes alike)."""
        endpoint, config = self.endpoint, self.config
        endpoint.loop = loop
        endpoint.stats_init()
        self._gauges()
        await self._open_database()
        endpoint.authenticator = Authenticator(config.auth, nonce_table=config.limits.nonce_table)
        endpoint.resolver = endpoint.hop.resolver = SipResolver(config)
        endpoint.layer = TransactionLayer(LayerConfig(
            branch_factory=endpoint.branch, tag_factory=endpoint.to_tag, stateless_prefix=endpoint.mark,
            on_stateless_ack=endpoint.sl.ack_absorbed, stateless_requests=True))
        endpoint.proxy = Proxy(self.state, scheduler=endpoint, replier=endpoint, transactions=endpoint.layer,
                               upstream=endpoint, listeners=endpoint, hop=endpoint, destinations=endpoint,
                               transmitter=endpoint)
        security.setup(self.state)  # the ban tables, whose trusted networks the overload gate shares
        endpoint.gate = setup_gate(endpoint)

    def build_pipeline(self) -> None:
        """The request stages (after accounting and presence: their stages use what they set)."""
        endpoint = self.endpoint
        endpoint.stages = build_pipeline(self.state, endpoint, endpoint.authenticator)
        # the challenge of a REGISTER without credentials, from its raw bytes when these stages allow
        endpoint.layer.config.answer_raw = RawChallenge.for_pipeline(self.state, endpoint, endpoint.authenticator,
                                                                     endpoint.stages)

    def _gauges(self) -> None:
        s, config, loc, endpoint = self.state.stats, self.config, self.state.location, self.endpoint
        for name in ("core:fwd_requests", "tm:UAC_transactions", "registrar:accepted_regs",
                     "registrar:rejected_regs", "usrloc:location-expires", "core:bad_URIs_rcvd"):
            s.counter(name)
        s.gauge("usrloc:registered_users", lambda: len(loc))
        s.gauge("usrloc:location-users", lambda: len(loc))
        s.gauge("usrloc:location-contacts", loc.count_contacts)
        s.gauge("registrar:max_expires", lambda: config.registrar.max_expires)
        s.gauge("registrar:max_contacts", lambda: config.registrar.max_contacts)
        s.gauge("registrar:default_expire", lambda: config.registrar.default_expires)
        s.gauge("tm:inuse_transactions", lambda: len(endpoint.proxy.contexts) if endpoint.proxy else 0)

    async def _open_database(self) -> None:
        state, config = self.state, self.config
        store = Store(config.database.url, config.database.connect_timeout)
        try:
            await store.open()
            if config.database.url.startswith("sqlite:"):  # sipd keeps its own SQLite schema current
                await store.call(schema.create_all, store.db)
                await store.call(migrations.migrate, store.db)
            else:
                await store.call(self._check_call_tables, store.db)
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

    def _check_call_tables(self, db: Any) -> None:
        """Tables from before a column this sipd writes (dialog.owner, acc/missed_calls.record_id)
        cannot take its rows: one line saying so instead of every record spooled."""
        written = {"dialog"} if self.config.dialog.enabled else set()
        if self.config.acc.enabled:
            written |= {"acc", "missed_calls"}
        for st in schema.status(db):
            if st.name in written and st.state == "outdated":
                raise DbSchemaError(f"table {st.name} is at version {st.version}, this sipd writes version "
                                    f"{st.expected}", hint="run sipctl db migrate")

    async def _load_caches(self) -> None:
        state = self.state
        await self._reload_domains()
        await self._reload_subscribers()
        await self._reload_aliases()
        await self._reload_dialplan()
        if self.config.location.mode != "memory" and self.endpoint.routing.loads_locations:
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

    # -- what only the main process has -----------------------------------------------------------

    async def start_calls(self) -> None:
        """Accounting and dialog tracking ([acc]/[dialog]: state.dialogs), presence ([presence]:
        state.presence): main's listeners of the call events."""
        endpoint = self.endpoint
        await accounting.start(self.state, endpoint, endpoint.layer)
        presence.setup(self.state, endpoint, endpoint.layer)

    def worker_count(self) -> int:
        """Processes reading the UDP listeners: ``[server] workers``, 0 = one per CPU."""
        return self.config.server.workers or os.cpu_count() or 1

    async def bind_listeners(self) -> list[str]:
        """TLS domains, then every ``[server] listen`` address; returns the listeners' names.
        Raises BindError (one line for the operator) when one cannot be bound."""
        endpoint = self.endpoint
        self.open_tls()
        endpoint.attach(Transports(endpoint, self.config.limits, tls=self.tls))
        endpoint.transports.udp_readers = self.worker_count()
        self.mgmt_context.listeners = endpoint.transports.listeners
        self.mgmt_context.connections = endpoint.transports.counts
        names = []
        for item in self.config.server.listen:
            listener = await endpoint.transports.bind(parse_listen(item))
            names.append(listener.name)
            endpoint.note_self_address(listener)
        return names

    def open_tls(self) -> TlsManager | None:
        """The TLS domains (main, and a worker that serves TLS connections main hands over)."""
        self.tls = self.mgmt_context.tls = self._tls_manager()
        return self.tls

    def _tls_manager(self) -> TlsManager | None:
        """TLS domains (sipd/tlsconf.py); None when no tls listener and no [tls] certificate/CA."""
        t = self.config.tls
        if not (any(x.strip().lower().startswith("tls:") for x in self.config.server.listen)
                or t.certificate or t.ca_file or t.client_domains):
            return None
        try:
            manager = TlsManager(t, self.config.server.listen)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise StartupError(f"TLS: cannot load certificate/key/CA: {exc} — see [tls]; check with sipctl cert check") from None
        manager.start(self.endpoint.loop)
        return manager

    async def start_mgmt(self) -> None:
        try:
            self.mgmt = await mgmt_server.start(self.mgmt_context)
        except Exception as exc:  # noqa: BLE001 - the SIP service runs without management
            logger.warning("management interface not started: %s", exc)

    async def start_trace(self) -> None:
        await start_tracing(self.endpoint.tracer, self.config, self.state.stats)  # sipctl trace, [trace] HEP export

    def start_nat_pings(self) -> None:
        self.nat_keepalive = nat.start(self.state, self.endpoint)  # [nat] keep-alive pings to NATed contacts

    def start_heartbeat(self) -> None:
        self.heartbeat = cluster.start(self.state, self.config)  # [cluster] node_id: this node's row in cluster_node

    def start_ban_sharing(self) -> None:
        self.ban_sync = cluster_bans.start(self.state, self.config)  # [cluster] node_id: bans in cluster_ban

    def start_polling(self) -> None:
        """[database] reload_interval: re-read the tables (and tell the workers what changed)."""
        reloading.start_polling(self.state, self.endpoint, self.mgmt_context.workers)

    def drop_privileges(self) -> None:
        """PID file, then [server] user/group once every socket is bound and the database open."""
        server = self.config.server
        try:
            write_pid_file(server.pid_file)
        except OSError as exc:
            raise StartupError(f"server.pid_file: cannot write {server.pid_file}: {exc.strerror}") from None
        db_url = parse_url(self.config.database.url)
        writable = [db_url.path] if db_url.scheme == "sqlite" and db_url.path.startswith("/") else []
        if self.state.dialogs is not None:  # [acc] spool file: written whenever the database is down
            writable.append(accounting.spool_path(self.config))
        try:
            drop(server.user, server.group, writable=writable)
        except (PrivilegeError, OSError) as exc:
            raise StartupError(str(exc)) from None

    def start_workers(self) -> None:
        """``[server] workers`` > 1: the worker processes, and main's routing to them."""
        n = self.worker_count()
        if n <= 1:
            return
        transports = self.endpoint.transports
        if transports.udp4 is None and transports.udp6 is None:
            logger.warning("[server] workers = %d ignored: the workers read UDP listeners and there is none", n)
            return
        pool = self.mgmt_context.workers = WorkerPool(self.endpoint, n)
        self.endpoint.set_routing(MainRouting(pool))
        pool.start()

    # -- closing ----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close what was opened, whatever startup reached; errors are logged, never raised."""
        await self.endpoint.tracer.close()
        if self.heartbeat is not None:  # before the database closes under it
            await self.heartbeat.stop()
            self.heartbeat = None
        if self.ban_sync is not None:
            await self.ban_sync.stop()
            self.ban_sync = None
        if self.mgmt is not None:
            try:
                await self.mgmt.close()
            except Exception:  # noqa: BLE001
                logger.exception("closing the management server failed")
            self.mgmt = None
        self.endpoint.close()
        if self.tls is not None:
            self.tls.close()
        if self.state.db is not None:
            try:
                await self.state.db.close()
            except Exception:  # noqa: BLE001
                logger.exception("closing the database failed")
            self.state.db = None
