"""Queries for the bans the nodes of a cluster share: the ``cluster_ban`` table.

One row per banned address or network (its primary key). A node writes the bans it makes and the
bans it lifts; every node reads the rows changed since its last look. Times are unix seconds from
the writing node's clock, so the nodes' clocks must agree (NTP) to well within ``CLOCK_MARGIN``.

Which write wins when two nodes disagree is decided by the times the events happened, not by the
order the writes arrive: a ban overwrites the row only if it began at or after the row's ban and
after the row's lift; a lift applies only to a ban that began at or before it. A write that loses
returns the row that beat it, so the writer can take the newer state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import DbIntegrityError

if TYPE_CHECKING:
    from .base import Database

#: Seconds a poll looks back before its previous one: covers a write whose ``changed`` was taken
#: just before the previous poll but committed after it, and small clock differences between nodes.
CLOCK_MARGIN = 10

#: Seconds a row is kept after its ban expired or was lifted, so that a node that could not reach
#: the database for a while still learns the lift when it is back.
RETENTION = 86400

_COLUMNS = "target, reason, node_id, since, expires, lifted, changed"


@dataclass(frozen=True)
class BanRow:
    target: str       # an address, or a network in CIDR notation (as Ban.target writes it)
    reason: str       # flood | auth | scanner | manual
    node_id: str      # the node that wrote it last
    since: int        # when the ban began
    expires: int      # when it ends; 0 = until removed
    lifted: int       # when it was lifted; 0 = not lifted
    changed: int      # when the row was written

    def active(self, now: float) -> bool:
        return not self.lifted and (self.expires == 0 or self.expires > now)


@dataclass(frozen=True)
class NewBan:
    target: str
    reason: str
    since: int
    expires: int      # 0 = until removed


def _row(r: dict) -> BanRow:
    return BanRow(str(r["target"]), str(r["reason"]), str(r["node_id"]), int(r["since"]), int(r["expires"]),
                  int(r["lifted"]), int(r["changed"]))


def write(db: Database, node_id: str, bans: Sequence[NewBan], lifts: Sequence[tuple[str, int]],
          now: float) -> list[BanRow]:
    """Record ``bans`` made and ``lifts`` (target, when) done at ``node_id``, in one transaction.

    Returns the rows that beat a ban written here (a newer ban, or a lift after it)."""

    def run(db: Database) -> list[BanRow]:
        lost: list[BanRow] = []
        # lifts first: an unban and a new ban of one address in the same second (a flood that
        # goes on after the operator lifted its ban) leave the new ban in force
        for target, at in lifts:
            db.execute("UPDATE cluster_ban SET lifted = ?, node_id = ?, changed = ? "
                       "WHERE target = ? AND since <= ? AND lifted = 0", (at, node_id, int(now), target, at))
        for ban in bans:
            found = db.query_one(f"SELECT {_COLUMNS} FROM cluster_ban WHERE target = ?", (ban.target,))
            if found is None:
                db.execute(f"INSERT INTO cluster_ban ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, ?)",
                           (ban.target, ban.reason, node_id, ban.since, ban.expires, int(now)))
                continue
            row = _row(found)
            if row.since > ban.since or row.lifted > ban.since:
                lost.append(row)
                continue
            db.execute("UPDATE cluster_ban SET reason = ?, node_id = ?, since = ?, expires = ?, lifted = 0, "
                       "changed = ? WHERE target = ?",
                       (ban.reason, node_id, ban.since, ban.expires, int(now), ban.target))
        return lost

    try:
        return db.run_transaction(run)
    except DbIntegrityError:  # another node inserted one of these targets at the same moment
        return db.run_transaction(run)


def changed_since(db: Database, since: float | None, now: float) -> list[BanRow]:
    """Rows written at or after ``since``; with ``since`` None (a node's first look), every ban
    still in force."""
    if since is None:
        rows = db.query(f"SELECT {_COLUMNS} FROM cluster_ban WHERE lifted = 0 AND (expires = 0 OR expires > ?)",
                        (int(now),))
    else:
        rows = db.query(f"SELECT {_COLUMNS} FROM cluster_ban WHERE changed >= ?", (int(since),))
    return [_row(r) for r in rows]


def purge(db: Database, now: float, retention: float = RETENTION) -> int:
    """Delete rows whose ban expired or was lifted more than ``retention`` seconds ago."""
    before = int(now - retention)
    return db.execute("DELETE FROM cluster_ban WHERE (lifted > 0 AND lifted < ?) OR (expires > 0 AND expires < ?)",
                      (before, before)).rowcount


def active_by_node(db: Database, now: float) -> dict[str, int]:
    """How many bans in force each node made (``sipctl cluster status``)."""
    rows = db.query("SELECT node_id, COUNT(*) AS n FROM cluster_ban WHERE lifted = 0 AND (expires = 0 OR expires > ?) "
                    "GROUP BY node_id", (int(now),))
    return {str(r["node_id"]): int(r["n"]) for r in rows}
