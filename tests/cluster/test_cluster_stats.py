"""``sipctl stats --node`` and ``--all``: two real sipd nodes (tests/helpers/sipd_nodes.py, on one
MariaDB and on the Galera cluster) store their statistics with each heartbeat; sipctl shows one
node's or the sum over the nodes alive, as a table or JSON, and says clearly when a node is unknown
or the options contradict each other."""

from __future__ import annotations

import json

from helpers.sipd_proc import SipdProcess, options_ping
from helpers.waiting import until

INTERVAL = 0.5  # [cluster] heartbeat_interval: the statistics are at most this old


def _stats(proc: SipdProcess, *args: str) -> dict:
    return json.loads(proc.sipctl("stats", *args, "--json").stdout)


def test_stats_of_one_node_and_of_all(sipd_nodes):
    a, b = sipd_nodes(count=2, config_overrides={"cluster": {"heartbeat_interval": INTERVAL}})
    for proc, n in ((a, 3), (b, 2)):
        for _ in range(n):
            assert options_ping(proc.host, proc.port, timeout=2) is not None
    live_a = _stats(a, "core:rcv_requests")["core:rcv_requests"]  # a's own, over its socket
    live_b = _stats(b, "core:rcv_requests")["core:rcv_requests"]
    assert live_a >= 3 and live_b >= 2

    def stored(node: str, want: int) -> dict | None:
        st = _stats(a, "--node", node, "core:rcv_requests")
        return st if st["values"].get("core:rcv_requests", -1) >= want else None

    st_a, _ = until(lambda: stored("a", live_a), 10)
    st_b, _ = until(lambda: stored("b", live_b), 10)
    assert st_a and st_b, a.log_text()
    assert st_a["node"] == "a" and st_a["state"] == "alive" and st_a["age"] <= 5
    assert list(st_a["values"]) == ["core:rcv_requests"]        # only what was asked for

    every = _stats(b, "--all", "core:")
    by_node = every["by_node"]
    assert set(by_node) == {"a", "b"} and all(k.startswith("core:") for k in every["sum"])
    assert every["sum"]["core:rcv_requests"] == by_node["a"]["core:rcv_requests"] + by_node["b"]["core:rcv_requests"]
    assert {n["node"]: n["state"] for n in every["nodes"]} == {"a": "alive", "b": "alive"}

    table = a.sipctl("stats", "--all", "core:rcv_requests").stdout   # people's table: name, sum, a, b
    assert "core:rcv_requests" in table and "sum" in table

    unknown = a.sipctl("stats", "--node", "zz", check=False)
    assert unknown.returncode != 0 and "no node 'zz'" in unknown.stderr and "a, b" in unknown.stderr
    assert "Traceback" not in unknown.stderr and len(unknown.stderr.strip().splitlines()) <= 2
    as_json = a.sipctl("stats", "--node", "zz", "--json", check=False)
    assert as_json.returncode != 0 and "no node 'zz'" in json.loads(as_json.stdout or as_json.stderr)["error"]
    both = a.sipctl("stats", "--node", "a", "--all", check=False)
    assert both.returncode != 0 and "--node and --all" in both.stderr
