"""Several real sipd nodes sharing one database, for the tests of a cluster (tests/cluster/).

    nodes = SipdNodes(tmp_path, urls, count=2, users={"alice": "pw"})   # nothing runs yet
    nodes.start()          # the schema and the users written once, every node started and
                           # knowing the others (their heartbeats read: within a second)
    a, b = nodes           # SipdProcess each: a.host == "127.0.0.2", a.node_id == "a", a.port ...
    nodes.close()          # every node stopped by its PID; none may have logged a traceback

Node ``i`` is ``[cluster] node_id`` "a", "b", "c" on 127.0.0.2, 127.0.0.3, 127.0.0.4 (UDP and TCP on
one free port of its own), with ``[server] domains = ["example.test"]`` and the location in
``db-only`` mode, the mode for several nodes. ``urls`` is one database URL for every node (one
MariaDB) or one per node (each sipd on its own Galera node: ``galera.nodes[i].url(db)``).
``config_overrides`` is merged into every node's configuration, ``per_node`` (a list, one dict per
node) into one node's. The fixtures ``shared_db`` and ``sipd_nodes`` in tests/cluster/conftest.py
give both databases, MariaDB and Galera, and close the nodes after the test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .sipd_proc import SipdProcess, deep_merge

DOMAIN = "example.test"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
NODE_IDS = ("a", "b", "c")
START_TIMEOUT = 60.0  # seconds for one node to be ready (a machine busy with other tests is slow)


def wait_for(predicate: Callable[[], Any], timeout: float) -> Any:
    """Poll ``predicate`` every 0.1 s until it returns something true (bounded); its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def node_defaults(node_id: str) -> dict[str, dict[str, Any]]:
    """What every node of the harness runs with, before the test's own keys."""
    return {
        "server": {"domains": [DOMAIN]},
        "location": {"mode": "db-only"},
        # a heartbeat every second: a test sees the nodes (and their addresses) within one
        "cluster": {"node_id": node_id, "heartbeat_interval": 1, "dead_after": 3},
    }


def provision(url: str, users: dict[str, str], domain: str = DOMAIN) -> None:
    """The schema, the domain and ``users`` (name -> password) in the shared database, written
    directly (no sipctl run: the tests of sipctl cover it)."""
    from sipd.db import connect, schema
    from sipd.sip import auth as digest

    with connect(url) as db:
        schema.create_all(db)
        for user, password in users.items():
            db.execute("DELETE FROM subscriber WHERE username = ? AND domain = ?", (user, domain))
            db.execute("INSERT INTO subscriber (username, domain, password, email_address, ha1, ha1_sha256,"
                       " ha1_sha512t256) VALUES (?, ?, '', '', ?, ?, '')",
                       (user, domain, digest.ha1_md5(user, domain, password),
                        digest.ha1_sha256(user, domain, password)))


class SipdNodes:
    """``count`` (2 or 3) sipd nodes on one database; see the module docstring."""

    def __init__(self, tmp_path: Path, urls: str | Sequence[str], *, count: int = 2,
                 users: dict[str, str] | None = None, config_overrides: dict | None = None,
                 per_node: Sequence[dict] | None = None, transports: Sequence[str] = ("udp", "tcp")):
        if not 1 <= count <= len(HOSTS):
            raise ValueError(f"1 to {len(HOSTS)} nodes, not {count}")
        self.urls = [urls] * count if isinstance(urls, str) else list(urls)[:count]
        if len(self.urls) < count:
            self.urls += [self.urls[-1]] * (count - len(self.urls))
        self.users = dict(users or {})
        self.nodes: list[SipdProcess] = []
        for i in range(count):
            conf = deep_merge(node_defaults(NODE_IDS[i]), config_overrides or {})
            if per_node and i < len(per_node):
                conf = deep_merge(conf, per_node[i])
            node = SipdProcess(tmp_path, conf, self.urls[i], host=HOSTS[i], transports=transports,
                               provision=False)
            if "spool" not in node.config.get("acc", {}):  # each node its own (the default is one per host)
                node.config.setdefault("acc", {})["spool"] = str(node.dir / "acc.spool")
                node.write_config()
            node.node_id = NODE_IDS[i]  # type: ignore[attr-defined]
            self.nodes.append(node)

    def start(self, *, peers: bool = True) -> SipdNodes:
        """Write the schema and users once (through the first node's database), start every node
        and (``peers``) wait until each knows the others."""
        provision(self.urls[0], self.users)
        try:
            for node in self.nodes:
                node.start(START_TIMEOUT)
            if peers:
                self.wait_peers()
        except BaseException:
            self.close(check_log=False)
            raise
        return self

    def wait_peers(self, timeout: float = 15.0) -> None:
        """Until every node knows every other (its log's last "cluster peers:" line names them):
        they then relay to each other and trust each other's requests. Bounded."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            others = [f"{n.node_id} {n.host}:{n.port}" for n in self.nodes if n is not node]  # type: ignore[attr-defined]
            while True:
                lines = [ln for ln in node.log_text().splitlines() if "cluster peers:" in ln]
                if lines and all(o in lines[-1] for o in others):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {node.node_id} does not know its peers {others}:\n"  # type: ignore[attr-defined]
                                         f"{node.log_tail()}")
                time.sleep(0.1)

    def close(self, *, check_log: bool = True) -> None:
        """Stop every node by its PID (all of them, even when one fails), then check the logs."""
        for node in self.nodes:
            node.stop()
        if check_log:
            for node in self.nodes:
                node.close()

    def __iter__(self) -> Iterator[SipdProcess]:
        return iter(self.nodes)

    def __getitem__(self, index: int) -> SipdProcess:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def __enter__(self) -> SipdNodes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close(check_log=exc[0] is None)
