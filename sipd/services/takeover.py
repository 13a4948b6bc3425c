"""Calls on several nodes: which node holds each dialog, the takeover of a dead node's dialogs, and
a BYE that reaches a node that does not hold its call (``[cluster] node_id`` with ``[dialog]``).

Theory of operation (docs/several-nodes.md tells the operator's side):
- Each ``dialog`` row names its owner, the node that forwarded the INVITE (``dialog.owner``). A
  node starts with the rows it owns (the accounting writer loads them).
- Every ``heartbeat_interval`` seconds a node reads the nodes' heartbeats and the owners of the
  dialog rows. The dialogs of an owner that is no live node (no heartbeat for ``dead_after``
  seconds; or no row at all, as '' for a node that ran without a cluster) are claimed with one
  conditional UPDATE (sipd/db/cluster.py ``take_over_dialogs``): of two survivors doing it at
  once, each row goes to one. The claimed rows come into the tracker with their start and answer
  times and their lifetime, so the BYE or the timer that ends them gives a correct CDR.
- A node lets go of a call it holds once the call's row names another node (taken over while
  this node was cut off from the database) or the call has its CDR without its row (a BYE that
  reached another node ended it), checking ``SWEEP`` calls at each takeover check.
- Lifetime timers fire at the owner only: a due dialog is ended (BYE both ways, CDR "Dialog
  Timeout") when its row still names this node or cannot be read; a node that finds another
  owner, or the call's CDR already stored, lets the dialog go without a BYE or a CDR (it was
  taken for dead while cut off from the database, and another node has the call now).
- A BYE for a dialog this node does not hold reaches it when the Record-Route names a host every
  node counts as itself (``[cluster] record_route_host``). The proxy forwards it as any in-dialog
  request; here the row is claimed (``claim_dialog``: the same conditional UPDATE, on the owner
  read) and the call ended with its CDR, whether its owner is dead or not.
- Whatever happens, one CDR per call: the unique key of the cdrs table on the dialog's identity
  makes a second insert store nothing (acc_writer.py).
- The accounting spool of a dead node (records it could not store while its database was away)
  is replayed by the first survivor that finds it beside its own spool (``acc-NODE.spool``: nodes
  on one machine, or a spool directory on shared storage), under the spool's lock: once, by one
  node, and never while the dead node's writer is still finishing. A node that comes back finds
  it empty; without shared storage, the node replays its own spool when it starts again.

A node's clock decides whether another's heartbeat is too old: the nodes' clocks must agree to
well within ``dead_after`` (NTP).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..db import cluster as cluster_db
from ..db import connect as db_connect
from .acc_writer import replay_left_spool
from .cdr import CALLEE_BYE, CALLER_BYE
from .spool import spool_path

if TYPE_CHECKING:
    from ..config_sections import ClusterSection
    from ..db import Database
    from .accounting import Accounting
    from .dialogs import Dialog
    from .store import Store

logger = logging.getLogger("sipd.cluster")

#: Calls this node holds that each takeover check looks up, in turn, for having moved to another
#: node or ended there (a BYE that reached another node): bounded work per check, every call
#: checked within (held calls / SWEEP) checks.
SWEEP = 200

#: BYEs already looked up in the database (a BYE from each side at once, a retransmission that
#: came as a new transaction): the call is claimed and ended once.
RECENT_CLAIMS = 1024


def orphaned(owners: Iterable[str], nodes: Iterable[cluster_db.Node], me: str, now: float,
             dead_after: float) -> list[str]:
    """The owners whose dialogs are to be taken over: every one but ``me`` that is no live node."""
    alive = {n.node_id for n in nodes if n.state(now, dead_after) == "alive"}
    return sorted(o for o in owners if o != me and o not in alive)


class Ownership:
    """This node's part in holding calls with the other nodes (see the module docstring)."""

    def __init__(self, service: Accounting, store: Store, cfg: ClusterSection):
        self.service = service
        self.store = store
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.task: asyncio.Task | None = None
        self.claims: set[asyncio.Task] = set()
        self._recent: dict[tuple[str, str, str], None] = {}
        self._cut_off = False  # the last look at the database failed: others may have taken calls
        self._cursor = 0       # the sweep goes on after this dialog id
        self._taken = service.state.stats.counter("dialog:taken_over_dialogs")

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="dialog-takeover")

    async def stop(self) -> None:
        for task in [self.task, *self.claims]:
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping: its outcome no longer matters
                    pass
        self.task = None

    async def _run(self) -> None:
        while True:  # ends when stop() cancels it
            try:
                await self.take_over()
                await self.let_go(everything=self._cut_off)
                self._cut_off = False
            except Exception as exc:  # noqa: BLE001 - the database is down for a while: try again later
                if not self._cut_off:
                    logger.warning("dialog takeover check failed (will retry every %g s): %s",
                                   self.cfg.heartbeat_interval, exc)
                self._cut_off = True
            await asyncio.sleep(self.cfg.heartbeat_interval)

    # -- takeover of a dead node's dialogs --------------------------------------------------------

    async def take_over(self) -> int:
        """Claim the dialogs of every owner that is no live node, and replay the accounting spool
        a dead node left beside this node's; returns how many dialogs came here."""
        taken, rows, dead = await self.store.call(self._claim_orphans, time.time())
        for node in dead:
            await self.replay_spool_of(node)
        if not rows:
            return 0
        tracker = self.service.tracker
        n = tracker.restore(rows)
        for owner, count in taken.items():
            if count:
                logger.warning("took over %d dialogs of node %s (no heartbeat for over %g s)",
                               count, owner or "(none)", self.cfg.dead_after)
        self._taken.inc(n)
        if any(r.get("timeout") for r in rows):
            self.service.start_timers()
        return n

    def _claim_orphans(self, now: float) -> tuple[dict[str, int], list[dict[str, Any]], list[str]]:
        db = self.store.db
        assert db is not None
        owners = cluster_db.dialog_owners(db)
        nodes = cluster_db.load_nodes(db)
        orphans = orphaned(owners, nodes, self.node_id, now, self.cfg.dead_after)
        taken = {owner: cluster_db.take_over_dialogs(db, self.node_id, owner) for owner in orphans}
        dead = orphaned([n.node_id for n in nodes], nodes, self.node_id, now, self.cfg.dead_after)
        return taken, (cluster_db.owned_dialogs(db, self.node_id) if any(taken.values()) else []), dead

    async def replay_spool_of(self, node: str) -> int | None:
        """Replay the accounting spool dead ``node`` left in this node's spool directory (nodes
        that share a machine, or a spool directory on shared storage): once, by one node."""
        cfg = self.service.state.config
        path = str(Path(spool_path(cfg)).with_name(f"acc-{node}.spool"))
        url, timeout = cfg.acc.db_url or cfg.database.url, cfg.database.connect_timeout

        def connect() -> Database:
            return db_connect(url, timeout=timeout)

        n = await asyncio.to_thread(replay_left_spool, path, connect)
        if n:
            logger.warning("replayed %d accounting records node %s left in %s", n, node, path)
        return n

    async def let_go(self, *, everything: bool = False) -> int:
        """Let go of the calls held here that another node holds now or has ended: the next
        ``SWEEP`` of them in turn, or (``everything``, after a time cut off from the database,
        when other nodes may have taken this one for dead) all of them."""
        tracker = self.service.tracker
        held = [d for d in tracker.list() if d.answered is not None and (everything or d.id > self._cursor)]
        if not everything:
            self._cursor = held[SWEEP - 1].id if len(held) > SWEEP else 0
            held = held[:SWEEP]
        if not held:
            return 0
        gone = await self.store.call(self._elsewhere, held)
        for dlg in gone:
            if dlg.id in tracker.dialogs:
                tracker.forget(dlg)
        if gone and everything:
            logger.warning("let go of %d dialogs other nodes took over while this node was cut off from the "
                           "database", len(gone))
        elif gone:  # as usual when the SRV records spread a call's BYE over the nodes
            logger.info("let go of %d dialogs another node holds now or has ended", len(gone))
        return len(gone)

    def _elsewhere(self, dialogs: list[Dialog]) -> list[Dialog]:
        """Those of ``dialogs`` another node holds, or that have ended there (their CDR is stored)."""
        db = self.store.db
        assert db is not None
        owners = cluster_db.owners_of(db, [d.id for d in dialogs])
        out = []
        for dlg in dialogs:
            owner = owners.get(dlg.id)
            if owner is not None and owner != self.node_id:
                out.append(dlg)
            elif owner is None and cluster_db.has_cdr(db, dlg.call_id, dlg.from_tag, dlg.to_tag):
                out.append(dlg)
        return out

    # -- lifetime timers at the owner only --------------------------------------------------------

    async def expire(self) -> int:
        """End the due dialogs this node still holds; let go of those another node has now."""
        service = self.service
        due = service.due()
        if not due:
            return 0
        try:
            gone = set(map(id, await self.store.call(self._elsewhere, due)))
        except Exception as exc:  # noqa: BLE001 - cannot tell: end them here (one CDR whatever happens)
            logger.debug("dialog owners not readable: %s", exc)
            gone = set()
        tracker = service.tracker
        mine = []
        for dlg in due:
            if dlg.id not in tracker.dialogs:
                continue  # ended while the database was asked (a BYE)
            if id(dlg) in gone:
                tracker.forget(dlg)
                logger.info("dialog %s (Call-ID %s) is held by another node: its timer fires there",
                            dlg.id, dlg.call_id)
            else:
                mine.append(dlg)
        return service.expire(mine)

    # -- a BYE for a call held elsewhere ----------------------------------------------------------

    def on_bye(self, request: Any, wall: float) -> None:
        """A BYE forwarded here: when its dialog is not held here, claim it and end the call."""
        to_tag = request.to.tag
        if not to_tag:
            return
        from_tag = request.from_.tag or ""
        call_id = request.call_id
        if self.service.tracker.match(call_id, from_tag, to_tag) is not None:
            return
        key = (call_id, *sorted((from_tag, to_tag)))
        if key in self._recent:
            return
        self._recent[key] = None
        if len(self._recent) > RECENT_CLAIMS:
            del self._recent[next(iter(self._recent))]
        task = asyncio.get_running_loop().create_task(self._end_elsewhere(call_id, from_tag, to_tag, wall))
        self.claims.add(task)
        task.add_done_callback(self.claims.discard)

    async def _end_elsewhere(self, call_id: str, from_tag: str, to_tag: str, wall: float) -> None:
        try:
            row = await self.store.call(cluster_db.claim_dialog, self.store.db, self.node_id, call_id,
                                        from_tag, to_tag)
        except Exception as exc:  # noqa: BLE001 - the database is down: the call's owner ends it
            logger.warning("BYE for Call-ID %s: its dialog cannot be read (%s); no CDR from this node",
                           call_id, exc)
            return
        try:
            self._end_claimed(row, call_id, from_tag, wall)
        except Exception:  # noqa: BLE001 - a task's edge: one call's trouble is logged, never lost silently
            logger.error("BYE for Call-ID %s: ending its dialog failed", call_id, exc_info=True)

    def _end_claimed(self, row: dict[str, Any] | None, call_id: str, from_tag: str, wall: float) -> None:
        if row is None:
            return  # not a call sipd tracked, or another node claimed it first
        tracker = self.service.tracker
        tracker.restore([row])
        dlg = tracker.dialogs.get(int(row["dlg_id"]))
        if dlg is None:
            return
        facts = tracker.end(dlg, wall, CALLER_BYE if from_tag == dlg.from_tag else CALLEE_BYE)
        if facts:
            self.service.writer.put(facts)
        logger.info("dialog %s (Call-ID %s) of node %s ended here by a BYE", dlg.id, call_id,
                    row.get("owner") or "(none)")
