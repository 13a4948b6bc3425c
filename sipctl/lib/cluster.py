"""The sipd nodes sharing one database, as the ``cluster_node`` table records them.

No Typer or rich here: ``status`` returns plain data; database failures raise SipctlErrors.
"""

from __future__ import annotations

import time
from typing import Any

from .db import session


def status(url: str, timeout: float = 5.0, *, dead_after: float | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Every node with its address, start, last heartbeat, the heartbeat's age, its state
    (``alive``, or ``dead`` when the heartbeat is older than ``dead_after`` seconds) and the calls
    it holds (``dialogs``: a dead node's go to a live one at its next takeover check);
    ``unowned_dialogs`` counts the calls of owners that have no node row (a node that ran without
    ``[cluster] node_id``), which a live node takes over too."""
    from sipd.db import cluster, mask_url, schema

    dead_after = cluster.DEAD_AFTER if dead_after is None else dead_after
    with session(url, timeout) as db:
        nodes = cluster.load_nodes(db)
        owned = cluster.dialog_owners(db) if "owner" in schema.table_columns(db, "dialog") else {}
    now = time.time() if now is None else now
    rows = [{"node_id": n.node_id, "address": n.address, "started": n.started,
             "last_heartbeat": n.last_heartbeat, "age": n.age(now), "state": n.state(now, dead_after),
             "dialogs": owned.get(n.node_id, 0)}
            for n in nodes]
    known = {n.node_id for n in nodes}
    return {"url": mask_url(url), "dead_after": dead_after, "nodes": rows,
            "dead": [r["node_id"] for r in rows if r["state"] == "dead"],
            "unowned_dialogs": sum(n for owner, n in owned.items() if owner not in known)}
