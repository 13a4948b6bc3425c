"""The sipd nodes sharing one database, as the ``cluster_node`` table records them, what each
holds, and the statistics each stores with its heartbeat (``cluster_stats``).

No Typer or rich here: functions return plain data; database failures raise SipctlErrors.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import NotFoundError, UsageError
from .db import session


def status(url: str, timeout: float = 5.0, *, dead_after: float | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Every node with its address, start, last heartbeat, the heartbeat's age, its state
    (``alive``, or ``dead`` when the heartbeat is older than ``dead_after`` seconds) and what it
    holds: ``dialogs``, the calls (a dead node's go to a live one at its next takeover check),
    ``bans``, the bans in force it made (0 when the database predates the table), and
    ``bindings``, the registrations only it can reach (over its connections and NAT pinholes);
    ``unowned_dialogs`` counts the calls of owners that have no node row (a node that ran without
    ``[cluster] node_id``), which a live node takes over too."""
    from sipd.db import cluster, cluster_bans, mask_url, schema

    dead_after = cluster.DEAD_AFTER if dead_after is None else dead_after
    now = time.time() if now is None else now
    with session(url, timeout) as db:
        nodes = cluster.load_nodes(db)
        owned = cluster.dialog_owners(db) if "owner" in schema.table_columns(db, "dialog") else {}
        bans = cluster_bans.active_by_node(db, now) if "cluster_ban" in db.tables() else {}
        bindings = cluster.owned_bindings(db, now)
    rows = [{"node_id": n.node_id, "address": n.address, "started": n.started,
             "last_heartbeat": n.last_heartbeat, "age": n.age(now), "state": n.state(now, dead_after),
             "dialogs": owned.get(n.node_id, 0), "bans": bans.get(n.node_id, 0),
             "bindings": bindings.get(n.node_id, 0)}
            for n in nodes]
    known = {n.node_id for n in nodes}
    return {"url": mask_url(url), "dead_after": dead_after, "nodes": rows,
            "dead": [r["node_id"] for r in rows if r["state"] == "dead"],
            "unowned_dialogs": sum(n for owner, n in owned.items() if owner not in known)}


def _snapshots(url: str, timeout: float) -> tuple[list[Any], dict[str, tuple[int, dict[str, int]]]]:
    from sipd.db import cluster

    with session(url, timeout) as db:
        if "cluster_stats" not in db.tables():
            raise NotFoundError("this database has no cluster_stats table, so no node stored statistics",
                                hint="run `sipctl db migrate`, then the nodes store theirs with each heartbeat")
        return cluster.load_nodes(db), cluster.load_stats(db)


def _pick(values: dict[str, int], names: list[str]) -> dict[str, int]:
    from sipd.stats import selected

    return {k: v for k, v in values.items() if any(selected(k, p) for p in names)}


def node_stats(url: str, timeout: float, node: str, names: list[str], *, dead_after: float,
               now: float | None = None) -> dict[str, Any]:
    """The statistics ``node`` stored with its last heartbeat, selected by ``names`` (``all``,
    ``group:``, ``group:name``), with when they were taken."""
    nodes, snaps = _snapshots(url, timeout)
    known = [n.node_id for n in nodes]
    if node not in known:
        raise NotFoundError(f"no node {node!r} in this database's cluster"
                            + (f" (nodes: {', '.join(known)})" if known else " (no node has written a heartbeat)"),
                            hint="`sipctl cluster status` lists the nodes")
    if node not in snaps:
        raise NotFoundError(f"node {node} has stored no statistics yet",
                            hint="a sipd with [cluster] node_id stores them with each heartbeat; is it this version?")
    now = time.time() if now is None else now
    at, values = snaps[node]
    n = next(x for x in nodes if x.node_id == node)
    return {"node": node, "time": at, "age": max(0, int(now) - at), "state": n.state(now, dead_after),
            "values": _pick(values, names)}


def all_stats(url: str, timeout: float, names: list[str], *, dead_after: float,
              now: float | None = None) -> dict[str, Any]:
    """Every node's statistics and their sum over the nodes alive (a dead node's last values are
    shown but not added: it is not serving)."""
    nodes, snaps = _snapshots(url, timeout)
    if not snaps:
        raise NotFoundError("no node has stored statistics yet",
                            hint="a sipd with [cluster] node_id stores them with each heartbeat")
    now = time.time() if now is None else now
    state = {n.node_id: n.state(now, dead_after) for n in nodes}
    per_node = {node: _pick(values, names) for node, (_, values) in snaps.items()}
    total: dict[str, int] = {}
    for node, values in per_node.items():
        if state.get(node) != "alive":
            continue
        for k, v in values.items():
            total[k] = total.get(k, 0) + v
    return {"nodes": [{"node": node, "time": at, "age": max(0, int(now) - at), "state": state.get(node, "dead")}
                      for node, (at, _) in snaps.items()],
            "sum": dict(sorted(total.items())), "by_node": per_node}


def check_node_choice(node: str | None, every: bool) -> None:
    if node is not None and every:
        raise UsageError("--node and --all ask for different things", hint="give one of them")
