"""This node's heartbeat in a cluster of sipd nodes sharing one database (``[cluster]``).

With ``[cluster] node_id`` set, the main process writes its row of the ``cluster_node`` table
(sipd/db/cluster.py) when it starts and every ``heartbeat_interval`` seconds after; ``sipctl
cluster status`` takes a node whose heartbeat is older than ``dead_after`` seconds for dead. The
writes run on the database's worker thread (``Store.call``), so a slow or absent database delays
the heartbeat, never the event loop. A write that fails (the database is down) is logged once and
tried again at the next interval: the node then looks dead to the others, which it is for them.
With each heartbeat the node stores its statistics (``cluster_stats``), which ``sipctl stats
--node``/``--all`` read, so they are at most one interval old.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import time
from typing import TYPE_CHECKING

from ..config import parse_listen
from ..db import cluster as cluster_db
from ..problem import Problem
from ..sip.uri import format_host

if TYPE_CHECKING:
    from ..config import Config
    from ..config_sections import ClusterSection
    from ..db import Database
    from ..state import ServerState

logger = logging.getLogger("sipd.cluster")

_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:([1-9]\d{0,4}))?")


def validate(config: Config) -> list[Problem]:
    """Problems in [cluster] (one of sipd.validation.VALIDATORS)."""
    c = config.cluster
    out: list[Problem] = []
    if c.node_id and not _NODE_ID.fullmatch(c.node_id):
        out.append(Problem("cluster.node_id", f"not a short name: {c.node_id!r}",
                           "letters, digits, '.', '_', '-', at most 64, e.g. \"a\""))
    m = _ADDRESS.fullmatch(c.address) if c.address else None
    if c.address and (m is None or not 0 < int(m.group(2)) < 65536):
        out.append(Problem("cluster.address", f"not HOST:PORT: {c.address!r}", 'e.g. "192.0.2.10:5060" or "[2001:db8::1]:5060"'))
    if c.record_route_host and shared_host(c) is None:
        out.append(Problem("cluster.record_route_host", f"not HOST or HOST:PORT: {c.record_route_host!r}",
                           'a name all nodes answer to, e.g. "sip.example.org"'))
    if c.ban_interval <= 0:
        out.append(Problem("cluster.ban_interval", "must be positive", "e.g. 1"))
    if c.heartbeat_interval <= 0:
        out.append(Problem("cluster.heartbeat_interval", "must be positive", "e.g. 10"))
    elif c.dead_after <= c.heartbeat_interval:
        out.append(Problem("cluster.dead_after", f"must be more than heartbeat_interval ({c.heartbeat_interval:g} s)",
                           f"e.g. {3 * c.heartbeat_interval:g} (three missed heartbeats)"))
    return out


def shared_host(cfg: ClusterSection) -> tuple[str, int | None] | None:
    """``[cluster] record_route_host`` as (host, port or None); None when unset or malformed."""
    m = _HOST.fullmatch(cfg.record_route_host) if cfg.record_route_host else None
    if m is None or (m.group(3) and int(m.group(3)) > 65535):
        return None
    return m.group(1).lower(), int(m.group(3)) if m.group(3) else None


def node_address(config: Config) -> str:
    """``[cluster] address``, else the first listen address (host: ``advertised_address`` if set)."""
    if config.cluster.address:
        return config.cluster.address
    listen = parse_listen(config.server.listen[0])
    host = config.server.advertised_address or listen.host
    return f"{format_host(host)}:{listen.port}"


class NodeTask:
    """Work of this node's that runs in a task of its own from ``start`` until ``stop``."""

    name = "cluster"
    task: asyncio.Task | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None


class Heartbeat(NodeTask):
    """Writes this node's row now and every ``heartbeat_interval`` seconds until ``stop``."""

    name = "cluster-heartbeat"

    def __init__(self, state: ServerState, cfg: ClusterSection, address: str):
        self.state = state
        self.cfg = cfg
        self.address = address
        self.started = time.time()
        self.failing = False
        self.stats_failing = False

    async def _run(self) -> None:
        restarted = False  # the row says when this node started once a heartbeat is written
        while True:  # ends when stop() cancels it
            restarted = await self.beat(started=None if restarted else self.started) or restarted
            await asyncio.sleep(self.cfg.heartbeat_interval)

    async def beat(self, *, started: float | None = None) -> bool:
        store = self.state.db
        if store is None or store.db is None:
            return False
        try:
            await store.call(lambda: cluster_db.heartbeat(store.db, self.cfg.node_id, self.address,
                                                          time.time(), started=started))
        except Exception as exc:  # noqa: BLE001 - the database is down for a while: try again later
            if not self.failing:
                logger.warning("cluster heartbeat of node %s not written (will retry every %g s): %s",
                               self.cfg.node_id, self.cfg.heartbeat_interval, exc)
            self.failing = True
            return False
        if self.failing:
            logger.info("cluster heartbeat of node %s written again", self.cfg.node_id)
        self.failing = False
        await self.load_peers()
        await self.write_stats()
        return True

    async def load_peers(self) -> None:
        """The other nodes' rows, into ``state.cluster`` and the trusted addresses of flood
        protection (a new node is known to the others within one heartbeat interval)."""
        store = self.state.db
        try:
            rows, hosts = await store.call(lambda: _peers(store.db, self.cfg.node_id))  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - keep the peers known so far; the next beat retries
            logger.warning("cluster nodes not read (the last ones known are kept): %s", exc)
            return
        before, dead_before = self.state.cluster.addresses, self.state.cluster.dead
        now = time.time()
        self.state.cluster.update([(n.node_id, n.address) for n in rows], hosts,
                                  [n.node_id for n in rows
                                   if n.node_id != self.cfg.node_id and n.state(now, self.cfg.dead_after) == "dead"])
        for node_id in sorted(self.state.cluster.dead - dead_before):
            logger.warning("cluster node %s is dead (no heartbeat for over %g s): the registrations only it "
                           "could reach are unavailable until they register again", node_id, self.cfg.dead_after)
        for node_id in sorted(dead_before - self.state.cluster.dead):
            logger.info("cluster node %s is alive again", node_id)
        if self.state.cluster.addresses != before:
            logger.info("cluster peers: %s", ", ".join(f"{n} {a}" for n, a in sorted(self.state.cluster.addresses.items()))
                        or "none")
        if self.state.bans is not None:
            self.state.bans.trusted.set_peers(hosts)

    async def write_stats(self) -> None:
        """This node's statistics beside its heartbeat (a failure here never fails the heartbeat:
        an older database may lack the table until ``sipctl db migrate``)."""
        store, stats = self.state.db, getattr(self.state, "stats", None)
        if stats is None or store is None or store.db is None:
            return
        values = stats.get("all")
        try:
            await store.call(lambda: cluster_db.write_stats(store.db, self.cfg.node_id, time.time(), values))
        except Exception as exc:  # noqa: BLE001 - logged once, tried again with the next heartbeat
            if not self.stats_failing:
                logger.warning("statistics of node %s not stored (sipctl stats --node cannot show them; "
                               "does `sipctl db migrate` need running?): %s", self.cfg.node_id, exc)
            self.stats_failing = True
            return
        self.stats_failing = False


def _peers(db: Database, node_id: str) -> tuple[list[cluster_db.Node], list[str]]:
    """Every node's row, and the IP addresses of the others (a name in an address is resolved
    here, on the database thread, never on the event loop)."""
    nodes = cluster_db.load_nodes(db)
    hosts: set[str] = set()
    for other, address in ((n.node_id, n.address) for n in nodes):
        if other == node_id:
            continue
        host = address.rpartition(":")[0].strip("[]")
        try:
            ipaddress.ip_address(host)
            hosts.add(host)
        except ValueError:
            try:
                hosts.update(str(info[4][0]).split("%", 1)[0] for info in socket.getaddrinfo(host, None))
            except OSError:
                logger.warning("cluster node %s: address %s does not resolve", other, address)
    return nodes, sorted(hosts)


def start(state: ServerState, config: Config) -> Heartbeat | None:
    """The heartbeat of ``[cluster] node_id``, started; None without a node_id (no cluster)."""
    if not config.cluster.node_id:
        return None
    if config.location.mode != "db-only":
        logger.warning("cluster node %s with [location] mode = %s: registrations made at the other nodes are "
                       "not seen here; set mode = \"db-only\" on every node", config.cluster.node_id,
                       config.location.mode)
    heartbeat = Heartbeat(state, config.cluster, node_address(config))
    heartbeat.start()
    logger.info("cluster node %s (%s): heartbeat every %g s", config.cluster.node_id, heartbeat.address,
                config.cluster.heartbeat_interval)
    return heartbeat
