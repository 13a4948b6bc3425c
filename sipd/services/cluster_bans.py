"""Bans shared by the nodes of a cluster: a ban made at one node applies at every node.

With ``[cluster] node_id`` set, the main process keeps its ban table (``state.bans``, the
flood, auth-failure, scanner and operator bans, its workers' included) in step with the
``cluster_ban`` table every node of the cluster uses (sipd/db/cluster_bans.py):

* A ban this node holds that the table does not know yet is written with its reason, start and
  end (unix seconds). The bans are compared with what was last written rather than reported one
  by one, so a ban a registrar worker made (handed to main without a notification) goes too.
* An operator's unban (``sipctl ban rm``, which reaches one node) is written as a lift, which
  every node applies to a ban that began before it.
* The rows changed since the previous look (less ``CLOCK_MARGIN``) are read and applied: a newer
  ban replaces the local one, a lift removes it. A node's first look reads every ban in force, so a
  node that starts late, or restarts, gets the bans made while it was away.

Timing: a new ban wakes the loop at once, so it is written within a moment, and every node looks
every ``[cluster] ban_interval`` seconds: a ban (or unban) made at one node applies at the others
within ``ban_interval`` plus one write, at most two intervals (a worker's ban waits for the next
look at its own node). All of it runs on the database's worker thread: a slow or absent database
delays the sharing, never the event loop; while it is down each node keeps its own bans and the
writes wait for it. Without a node_id none of this runs (no extra database traffic).

Rows written by another node are trusted as that node's decision, except that an automatic ban of
an address in this node's ``[antiflood] trusted_networks`` is not applied here (as this node would
never have made it); an operator's ban applies everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING

from ..db import cluster_bans as db_bans
from .antiflood import MANUAL, canonical
from .cluster import NodeTask

if TYPE_CHECKING:
    from ..config import Config
    from ..state import ServerState
    from .antiflood import Antiflood

logger = logging.getLogger("sipd.cluster")

#: Seconds of difference between a ban's start here and in a row that still make them the same ban
#: (the table keeps whole seconds; the event loop's clock and the wall clock drift a little apart).
SAME_BAN = 1.5

#: Seconds between two writes at least, however many bans a flood makes: each write carries all
#: the new bans since the previous one.
MIN_GAP = 0.1

#: Bans written in one exchange at most: the database thread is also the one REGISTERs are stored
#: through, so a flood that bans thousands of sources is written in turns of this many (the next
#: turn starts at once), never in one transaction that keeps registrations waiting for seconds.
BATCH = 200

#: Seconds between two deletions of rows long expired or lifted (by whichever node gets there).
PURGE_INTERVAL = 300.0


class BanSync(NodeTask):
    """Writes this node's new bans and unbans and applies the other nodes', until ``stop``."""

    name = "cluster-bans"

    def __init__(self, state: ServerState, node_id: str, interval: float):
        self.state = state
        self.antiflood: Antiflood = state.bans  # type: ignore[assignment]
        self.node_id = node_id
        self.interval = interval
        #: target -> (since, until) on the event loop's clock of the ban the table holds for it
        self.written: dict[str, tuple[float, float]] = {}
        self.lifts: dict[str, int] = {}       # target -> unix time of the unban, not yet written
        self.cursor: float | None = None      # unix time to read changed rows from; None: all bans
        self.applying = False                 # changes made by apply() are the table's, not news
        self.failing = False
        self.more = False                     # bans left for the next turn (more than BATCH were new)
        self.last_purge = 0.0
        self.wake = asyncio.Event()
        self.antiflood.bans.watch(self._changed)

    def _changed(self, change: tuple) -> None:
        if self.applying:
            return
        if change[0] == "rm":
            target = canonical(change[1])
            self.lifts[target] = int(time.time())
            self.written.pop(target, None)
        self.wake.set()

    async def _run(self) -> None:
        while True:  # ends when stop() cancels it; the first look is at once (the bans in force)
            self.wake.clear()
            await self.sync()
            await asyncio.sleep(MIN_GAP)
            try:
                await asyncio.wait_for(self.wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    async def sync(self) -> bool:
        """One exchange with the table: write what is new here, apply what is new there."""
        store = self.state.db
        if store is None or store.db is None:
            return False
        loop = asyncio.get_running_loop()
        wall = time.time()
        offset = wall - loop.time()  # event-loop time + offset = unix time
        new, keys = self._new_bans(loop.time(), offset)
        lifts = list(self.lifts.items())
        cursor = self.cursor
        purge = wall - self.last_purge >= PURGE_INTERVAL
        db = store.db

        def exchange() -> list[db_bans.BanRow]:
            lost = db_bans.write(db, self.node_id, new, lifts, wall)
            if purge:
                db_bans.purge(db, wall)
            return lost + db_bans.changed_since(db, cursor, wall)

        try:
            rows = await store.call(exchange)
        except Exception as exc:  # noqa: BLE001 - the database is down for a while: try again later
            if not self.failing:
                hint = " (run `sipctl db migrate` to create it)" if "cluster_ban" in str(exc) else ""
                logger.warning("cluster bans of node %s not shared (will retry every %g s): %s%s",
                               self.node_id, self.interval, exc, hint)
            self.failing = True
            return False
        if self.failing:
            logger.info("cluster bans of node %s shared again", self.node_id)
        self.failing = False
        self.written.update(keys)
        for target, at in lifts:
            if self.lifts.get(target) == at:
                del self.lifts[target]
        if purge:
            self.last_purge = wall
        self.cursor = wall - db_bans.CLOCK_MARGIN
        self.apply(rows, loop.time(), time.time() - loop.time())
        if self.more:
            self.wake.set()
        return True

    def _new_bans(self, now: float, offset: float) -> tuple[list[db_bans.NewBan], dict[str, tuple[float, float]]]:
        """The bans held here that the table does not know (and their keys for ``written``)."""
        new: list[db_bans.NewBan] = []
        keys: dict[str, tuple[float, float]] = {}
        self.more = False
        held = self.antiflood.bans.entries()
        for ban in held:
            key = (ban.since, ban.until)
            if ban.until <= now or self.written.get(ban.target) == key:
                continue
            if len(new) == BATCH:
                self.more = True  # the rest in the next turn, right after this one
                break
            expires = 0 if math.isinf(ban.until) else max(1, math.ceil(ban.until + offset))
            new.append(db_bans.NewBan(ban.target, ban.reason, int(ban.since + offset), expires))
            keys[ban.target] = key
        if len(self.written) > len(held):  # bans expired or evicted here: forget them
            present = {ban.target for ban in held}
            self.written = {t: k for t, k in self.written.items() if t in present}
        return new, keys

    def apply(self, rows: list[db_bans.BanRow], now: float, offset: float) -> None:
        """Take the rows' state into this node's ban table (``now``: event-loop time)."""
        table, wall = self.antiflood.bans, now + offset
        self.applying = True
        try:
            for row in rows:
                local = table.get(row.target)
                here = None if local is None else local.since + offset
                if row.lifted:
                    if here is not None and here <= row.lifted + SAME_BAN:
                        self.antiflood.lift(row.target)
                        self.written.pop(row.target, None)
                        logger.info("ban of %s lifted at node %s", row.target, row.node_id)
                    continue
                if not row.active(wall):
                    continue
                if here is not None and abs(here - row.since) <= SAME_BAN:
                    self.written[local.target] = (local.since, local.until)  # type: ignore[union-attr]
                    continue
                if here is not None and here > row.since:
                    continue  # newer here: the next write takes it to the table
                if row.reason != MANUAL and "/" not in row.target and row.target in self.antiflood.trusted:
                    continue
                duration = None if row.expires == 0 else max(1, row.expires - row.since)
                try:
                    ban = table.add(row.target, row.since - offset, duration, row.reason, node=row.node_id)
                except ValueError:  # not an address: no node writes one, so someone edited the table
                    continue
                self.written[ban.target] = (ban.since, ban.until)
                logger.info("banned %s as node %s did: reason=%s, %s", ban.target, row.node_id, row.reason,
                            "until removed" if row.expires == 0 else f"{max(0, row.expires - int(wall))} s left")
        finally:
            self.applying = False


def start(state: ServerState, config: Config) -> BanSync | None:
    """The ban sharing of ``[cluster] node_id``, started; None without a node_id or a ban table."""
    if not config.cluster.node_id or getattr(state, "bans", None) is None:
        return None
    sync = BanSync(state, config.cluster.node_id, config.cluster.ban_interval)
    sync.start()
    return sync
