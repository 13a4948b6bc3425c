"""The sipd nodes sharing one database, as the ``cluster_node`` table records them.

No Typer or rich here: ``status`` returns plain data; database failures raise SipctlErrors.
"""

from __future__ import annotations

import time
from typing import Any

from .db import session


def status(url: str, timeout: float = 5.0, *, dead_after: float | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Every node with its address, start, last heartbeat, the heartbeat's age and its state
    (``alive``, or ``dead`` when the heartbeat is older than ``dead_after`` seconds)."""
    from sipd.db import cluster, mask_url

    dead_after = cluster.DEAD_AFTER if dead_after is None else dead_after
    with session(url, timeout) as db:
        nodes = cluster.load_nodes(db)
    now = time.time() if now is None else now
    rows = [{"node_id": n.node_id, "address": n.address, "started": n.started,
             "last_heartbeat": n.last_heartbeat, "age": n.age(now), "state": n.state(now, dead_after)}
            for n in nodes]
    return {"url": mask_url(url), "dead_after": dead_after, "nodes": rows,
            "dead": [r["node_id"] for r in rows if r["state"] == "dead"]}
