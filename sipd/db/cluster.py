"""Queries for several sipd nodes on one database: the ``cluster_node`` table and Galera's state.

Each node of a cluster has a row in ``cluster_node`` (its ``[cluster] node_id``, the address the
other nodes reach it at, when it started, its last heartbeat, all unix seconds). A node whose
heartbeat is older than ``dead_after`` seconds is taken for dead: it stopped, or it cannot reach
the database, which for the other nodes is the same.

Galera's state is read from the node sipd is connected to (``SHOW GLOBAL STATUS``): the size of
the cluster it sees, whether it is Synced, and whether it accepts queries (``wsrep_ready``).
"""

from __future__ import annotations

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
