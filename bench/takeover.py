#!/usr/bin/env python3
"""The time from a node's death to its calls being taken over by the other node.

    python bench/takeover.py [--calls 20] [--rows 0] [--interval 1] [--dead-after 3] [--runs 3]
                             [--mysql mysql://root@127.0.0.1:3306]

Two real sipd nodes (tests/helpers/sipd_nodes.py: 127.0.0.2 and .3, one scratch MariaDB database)
with ``[cluster] heartbeat_interval``/``dead_after`` as given. ``--calls`` calls are set up through
node a by phones on real sockets (INVITE, 407, INVITE, 200, ACK) and stay up; ``--rows`` more
dialog rows owned by node a are written straight into the database (to see what loading many calls
costs without placing them one by one). Node a is killed -9; the clock starts there. Reported per
run: when every dialog row names node b (the claim: a conditional UPDATE), and when node b holds
them all in memory (its ``dialog:active_dialogs`` statistic) -- seconds after the kill, and after
node a's last heartbeat. Expected: the last heartbeat plus ``dead_after``, plus up to one
``heartbeat_interval`` (the survivor's next check), plus the claim and the load.
Every wait is bounded; every node is stopped by its PID.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dbadmin import admin_sql  # noqa: E402
from helpers.sipd_nodes import SipdNodes  # noqa: E402
from sipd.db import cluster, connect  # noqa: E402
from tests.daemon.harness import DOMAIN, UA  # noqa: E402
from tests.daemon.test_proxy import SDP, invite  # noqa: E402

PASSWORD = "pw"
LIMIT = 120.0  # seconds any one wait may take


def _answer(ua: UA, req, **kw) -> None:  # type: ignore[no-untyped-def]
    saved, ua.server = ua.server, req.vias[0].response_address()
    try:
        ua.respond(req, 200, **kw)
    finally:
        ua.server = saved


def _calls(a, b, count: int) -> list[UA]:  # type: ignore[no-untyped-def]
    bob = UA(b.port, "bob", password=PASSWORD, server_host=b.host)
    assert bob.register(3600).status == 200
    alice = UA(a.port, "alice", password=PASSWORD, server_host=a.host)
    for i in range(count):
        call_id = f"bench-takeover-{i}-{secrets.token_hex(3)}"
        invite(alice, f"bob@{DOMAIN}", call_id=call_id)
        inv = bob.expect_request("INVITE", timeout=10)
        _answer(bob, inv, body=SDP, headers=["Content-Type: application/sdp"])
        ok = alice.expect(200, timeout=10)
        route = [f"Route: {rr}" for rr in reversed(ok.get_all("Record-Route"))]
        alice.send(alice.request("ACK", str(ok.contacts[0].uri), to=ok.get("To"), headers=route,
                                 call_id=call_id, cseq=2))
        bob.expect_request("ACK", timeout=10)
    return [alice, bob]


def _wait(fn, what: str) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + LIMIT
    while not fn():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {LIMIT:g} s")
        time.sleep(0.02)
    return time.time()


def run_once(tmp: Path, url: str, args: argparse.Namespace) -> dict[str, float]:
    nodes = SipdNodes(tmp, url, count=2, users={"alice": PASSWORD, "bob": PASSWORD},
                      config_overrides={"cluster": {"heartbeat_interval": args.interval,
                                                    "dead_after": args.dead_after,
                                                    "record_route_host": "sip.example.test"}})
    nodes.start(peers=False)
    phones: list[UA] = []
    try:
        a, b = nodes
        with connect(url) as db:
            db.execute("DELETE FROM dialog")
        phones = _calls(a, b, args.calls)
        with connect(url) as db:
            if args.rows:
                db.executemany("INSERT INTO dialog (dlg_id, callid, from_tag, to_tag, state, start_time, owner) "
                               "VALUES (?, ?, 'f', 't', 4, ?, 'a')",
                               [(10**12 + i, f"bench-row-{i}", int(time.time())) for i in range(args.rows)])
            total = args.calls + args.rows
            _wait(lambda: cluster.dialog_owners(db).get("a", 0) == total, "node a's dialog rows")
            a.kill9()
            killed = time.time()
            last_beat = next(n.last_heartbeat for n in cluster.load_nodes(db) if n.node_id == "a")
            claimed = _wait(lambda: cluster.dialog_owners(db).get("b", 0) == total, "the claim by node b")

        def held() -> bool:
            got = b.mi("get_statistics", ["dialog:active_dialogs"]) or {}
            return int(got.get("dialog:active_dialogs", 0)) >= total

        loaded = _wait(held, "node b holding the calls")
        return {"claimed": claimed - killed, "loaded": loaded - killed, "since_last_beat": loaded - last_beat}
    finally:
        for ua in phones:
            ua.close()
        nodes.close(check_log=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--rows", type=int, default=0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--dead-after", type=float, default=3.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--mysql", default="mysql://root@127.0.0.1:3306")
    args = p.parse_args()
    name = f"sipd_bench_{secrets.token_hex(4)}"
    admin_sql(args.mysql, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    url = f"{args.mysql.rstrip('/')}/{name}"
    results = []
    try:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="sipd-takeover-") as tmp:
                r = run_once(Path(tmp), url, args)
            results.append(r)
            print(f"run {run + 1}: claimed {r['claimed']:.2f} s, held {r['loaded']:.2f} s after the kill "
                  f"({r['since_last_beat']:.2f} s after the last heartbeat)", flush=True)
    finally:
        admin_sql(args.mysql, f"DROP DATABASE IF EXISTS `{name}`")
    loaded = [r["loaded"] for r in results]
    print(f"{args.calls} calls + {args.rows} rows, heartbeat_interval {args.interval:g} s, dead_after "
          f"{args.dead_after:g} s: taken over {statistics.median(loaded):.2f} s after the kill (median of "
          f"{len(loaded)}; min {min(loaded):.2f}, max {max(loaded):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
