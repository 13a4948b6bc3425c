"""Queries for several sipd nodes on one database: the ``cluster_node`` table and Galera's state.

Each node of a cluster has a row in ``cluster_node`` (its ``[cluster] node_id``, the address the
other nodes reach it at, when it started, its last heartbeat, all unix seconds). A node whose
heartbeat is older than ``dead_after`` seconds is taken for dead: it stopped, or it cannot reach
the database, which for the other nodes is the same. With each heartbeat a node also stores its
statistics in ``cluster_stats`` (``sipctl stats --node``, ``--all``).

Each ``dialog`` row names the node that holds the call (``owner``). A node that finds another dead
takes its dialogs over with a conditional UPDATE, so exactly one survivor gets each call.

Galera's state is read from the node sipd is connected to (``SHOW GLOBAL STATUS``): the size of
the cluster it sees, whether it is Synced, and whether it accepts queries (``wsrep_ready``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Database

#: A node is dead when its last heartbeat is older than this (seconds; ``[cluster] dead_after``'s
#: default): three missed heartbeats at the default 10 s interval, so one slow write does not
#: declare a node dead.
DEAD_AFTER = 30


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    started: int
    last_heartbeat: int

    def age(self, now: float) -> int:
        """Seconds since its last heartbeat (0 when the heartbeat is in the future: clock skew)."""
        return max(0, int(now) - self.last_heartbeat)

    def state(self, now: float, dead_after: float = DEAD_AFTER) -> str:
        return "dead" if self.age(now) > dead_after else "alive"


def load_nodes(db: Database) -> list[Node]:
    """Every node that ever wrote its row, by node_id."""
    rows = db.query("SELECT node_id, address, started, last_heartbeat FROM cluster_node ORDER BY node_id")
    return [Node(r["node_id"], r["address"], int(r["started"]), int(r["last_heartbeat"])) for r in rows]


def owned_bindings(db: Database, now: float) -> dict[str, int]:
    """Live registrations each node owns (it holds their TCP/TLS connection or NAT pinhole: only
    it can reach them), by node_id; empty when the location table has no ``node_id`` column yet."""
    from .schema import table_columns

    if "node_id" not in table_columns(db, "location"):
        return {}
    rows = db.query("SELECT node_id, COUNT(*) AS n FROM location WHERE node_id IS NOT NULL "
                    "AND (expires = 0 OR expires > ?) GROUP BY node_id", (int(now),))
    return {str(r["node_id"]): int(r["n"]) for r in rows}


def heartbeat(db: Database, node_id: str, address: str, now: float, *, started: float | None = None) -> None:
    """Record that ``node_id`` is alive at ``now``; with ``started``, it has (re)started then.

    Each node writes only its own row, so an update that finds no row means the node's first
    heartbeat; the node_id primary key keeps two nodes misconfigured with one name from making two
    rows (the second gets DbIntegrityError)."""

    def write(db: Database) -> None:
        if started is None:
            found = db.execute("UPDATE cluster_node SET address = ?, last_heartbeat = ? WHERE node_id = ?",
                               (address, int(now), node_id)).rowcount
        else:
            found = db.execute("UPDATE cluster_node SET address = ?, started = ?, last_heartbeat = ? "
                               "WHERE node_id = ?", (address, int(started), int(now), node_id)).rowcount
        if not found:
            db.execute("INSERT INTO cluster_node (node_id, address, started, last_heartbeat) "
                       "VALUES (?, ?, ?, ?)", (node_id, address, int(now if started is None else started), int(now)))

    db.run_transaction(write)


# -- the calls each node holds (``dialog.owner``) ----------------------------------------------------


def dialog_owners(db: Database) -> dict[str, int]:
    """How many dialogs each owner holds (owner '' = rows of a node without a cluster)."""
    return {str(r["owner"]): int(r["n"])
            for r in db.query("SELECT owner, COUNT(*) AS n FROM dialog GROUP BY owner")}


def take_over_dialogs(db: Database, node_id: str, owner: str) -> int:
    """Make ``node_id`` the owner of every dialog ``owner`` holds; returns how many it got.

    The UPDATE names the old owner, so of two nodes taking over at once each row goes to one:
    on one server the second waits for the first's row locks and then finds the rows changed;
    on Galera both run, the second to commit loses certification and is run again (DbConflict),
    finding nothing left."""
    return db.execute("UPDATE dialog SET owner = ? WHERE owner = ?", (node_id, owner)).rowcount


def owned_dialogs(db: Database, node_id: str) -> list[dict[str, Any]]:
    """The dialog rows ``node_id`` holds."""
    return db.query("SELECT * FROM dialog WHERE owner = ?", (node_id,))


def claim_dialog(db: Database, node_id: str, call_id: str, tag_a: str, tag_b: str) -> dict[str, Any] | None:
    """The dialog row of Call-ID ``call_id`` and tags ``tag_a``/``tag_b`` (either order), made
    ``node_id``'s, as it was read (``owner``: the node that held it); None when there is none, or
    another node claimed it first (the same conditional UPDATE as ``take_over_dialogs``, on the
    owner this node read)."""

    def claim(db: Database) -> dict[str, Any] | None:
        for row in db.query("SELECT * FROM dialog WHERE callid = ?", (call_id,)):
            if {row["from_tag"], row["to_tag"]} != {tag_a, tag_b}:
                continue
            if row["owner"] == node_id:
                return row
            if db.execute("UPDATE dialog SET owner = ? WHERE dlg_id = ? AND owner = ?",
                          (node_id, row["dlg_id"], row["owner"])).rowcount:
                return row
            return None
        return None

    return db.run_transaction(claim)


def owners_of(db: Database, dlg_ids: list[int]) -> dict[int, str]:
    """The owner of each of these dialogs that still has its row."""
    if not dlg_ids:
        return {}
    marks = ", ".join("?" * len(dlg_ids))
    return {int(r["dlg_id"]): str(r["owner"])
            for r in db.query(f"SELECT dlg_id, owner FROM dialog WHERE dlg_id IN ({marks})", dlg_ids)}


def has_cdr(db: Database, call_id: str, from_tag: str, to_tag: str) -> bool:
    """Whether the call of this dialog has its CDR (it has ended, at whichever node)."""
    return db.query_one("SELECT 1 AS x FROM cdrs WHERE callid = ? AND from_tag = ? AND to_tag = ?",
                        (call_id[:255], from_tag[:64], to_tag[:64])) is not None


def write_stats(db: Database, node_id: str, now: float, values: dict[str, int]) -> None:
    """Store ``node_id``'s statistics as of ``now`` (one row per node, replaced each time)."""
    text = json.dumps(values, separators=(",", ":"), sort_keys=True)

    def write(db: Database) -> None:
        if not db.execute("UPDATE cluster_stats SET time = ?, stats = ? WHERE node_id = ?",
                          (int(now), text, node_id)).rowcount:
            db.execute("INSERT INTO cluster_stats (node_id, time, stats) VALUES (?, ?, ?)", (node_id, int(now), text))

    db.run_transaction(write)


def load_stats(db: Database) -> dict[str, tuple[int, dict[str, int]]]:
    """Each node's last statistics: node_id -> (unix time written, name -> value)."""
    out: dict[str, tuple[int, dict[str, int]]] = {}
    for r in db.query("SELECT node_id, time, stats FROM cluster_stats ORDER BY node_id"):
        try:
            values = json.loads(r["stats"] or "{}")
        except ValueError:
            values = {}
        if isinstance(values, dict):
            out[str(r["node_id"])] = (int(r["time"]), {str(k): int(v) for k, v in values.items()
                                                         if isinstance(v, (int, float))})
    return out


#: Galera's status variables shown to the operator, by the name ``galera_status`` gives them.
_WSREP = {
    "wsrep_cluster_size": "cluster_size",
    "wsrep_cluster_status": "cluster_status",          # Primary | non-Primary | Disconnected
    "wsrep_local_state_comment": "local_state",        # Synced | Donor/Desynced | Joining | ...
    "wsrep_ready": "ready",                            # ON: this node accepts queries
    "wsrep_connected": "connected",
}


def galera_status(db: Database) -> dict[str, Any] | None:
    """Galera's view from the node this connection reaches, or None when it is no Galera node
    (SQLite, a plain MariaDB/MySQL server, or wsrep switched off)."""
    if db.dialect != "mysql":
        return None
    on = db.show("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('wsrep_on', 'wsrep_provider', 'wsrep_node_name')")
    variables = {str(r["Variable_name"]).lower(): str(r["Value"]) for r in on}
    if variables.get("wsrep_on", "OFF").upper() != "ON" or variables.get("wsrep_provider", "none") in ("", "none"):
        return None
    rows = db.show("SHOW GLOBAL STATUS WHERE Variable_name IN ("
                    + ", ".join("?" * len(_WSREP)) + ")", tuple(_WSREP))
    status = {_WSREP[str(r["Variable_name"]).lower()]: str(r["Value"]) for r in rows
              if str(r["Variable_name"]).lower() in _WSREP}
    size = status.get("cluster_size", "0")
    return {
        "node_name": variables.get("wsrep_node_name", ""),
        "cluster_size": int(size) if size.isdigit() else 0,
        "cluster_status": status.get("cluster_status", ""),
        "local_state": status.get("local_state", ""),
        "ready": status.get("ready", "OFF").upper() == "ON",
        "connected": status.get("connected", "OFF").upper() == "ON",
    }
