#!/usr/bin/env python3
"""10,000 persistent TLS endpoints on one box: what sipd costs while it holds them, and call setup.

On 127.0.0.0/8 only. sipd runs with its default configuration (digest auth for REGISTER and INVITE,
accounting, dialogs, location written through to SQLite, flood protection) plus a TLS listener,
``[limits] tcp_max_connections`` raised to hold the endpoints and ``[server] workers`` as given. The
endpoints (``bench/tls_ua.py``, in ``--clients`` processes on uvloop) each open one TLS connection
from one of ``--sources`` loopback addresses (127.0.1.1 ... so that no address passes sipd's
``tcp_max_per_source`` of 64), REGISTER with digest, refresh, and send RFC 5626 CRLF keep-alives.

Phases, each bounded in time:

1. ``ramp``: open and register all endpoints (at most ``--rate`` new connections/s);
2. ``idle``: after ``--settle`` s, sipd's CPU (all its processes, % of one core) over ``--idle`` s while
   the endpoints only refresh and ping: each refreshes every R s, R drawn per endpoint in
   ``--refresh`` (default 60-600 s, the issue's range: about 43 REGISTERs/s for 10,000, each with
   digest credentials on the nonce of the last challenge) and pings
   every 80-100 % of ``--keepalive`` s (default 120, RFC 5626's 95-120 s: about 93 pings/s); the first
   refresh and ping of each endpoint fall at a random point of its interval, so the idle window sees
   the steady rate. ``--scale N`` divides every interval by N (a denser run; Expires stay above
   ``[registrar] min_expires``);
3. ``calls``: ``--call-rate`` calls/s for ``--call-seconds`` s between random pairs of the connected
   endpoints (INVITE -> 407 -> INVITE -> 200, ACK, BYE after ``--hold`` s): setup time from the first
   INVITE to the 200, p50/p99/max;
4. the end: endpoints still connected and registered (as the endpoints see it and as sipd's
   ``usrloc:registered_users`` does), TLS connections established at sipd's port, RSS/PSS.

RSS is VmRSS added up over sipd and its descendants (workers, accounting writer); PSS counts pages
shared after fork once. The clients' CPU is measured separately (their own processes).

    bench/tls_endpoints.py                                  # 10,000 endpoints, ~2 minutes
    bench/tls_endpoints.py --endpoints 1000 --idle 10 --call-seconds 5     # a quick look
    bench/tls_endpoints.py --workers 2 --json bench/results/tls10k.json

Every process started is ended by its PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(HERE)]

from bench_tls import make_cert  # noqa: E402
from conftest import free_port  # noqa: E402
from helpers.procstat import cpu_seconds, process_tree, pss_kib, rss_kib, thread_cpu_seconds  # noqa: E402
from helpers.sipd_proc import SipdProcess  # noqa: E402

import tls_ua  # noqa: E402

DOMAIN = "bench.test"
PER_SOURCE_DEFAULT = 50  # below sipd's default tcp_max_per_source (64)


def provision(db_path: Path, endpoints: int) -> None:
    """The domain and one subscriber per endpoint (user000000 / pw000000 ...), in one transaction."""
    from sipctl.lib import provision as prov
    from sipd.db import connect, schema

    db = connect(f"sqlite:///{db_path}")
    try:
        schema.create_all(db)
        with db.transaction():
            prov.add_domain(db, DOMAIN)
            for i in range(endpoints):
                prov.add_user(db, f"user{i:06d}", DOMAIN, tls_ua.Agent.password(i))
    finally:
        db.close()


def sources(count: int) -> list[str]:
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


def established(port: int, peers: set[str]) -> int:
    """TCP connections in ESTABLISHED state at local port ``port`` (sipd's side) from one of the
    addresses ``peers`` (the endpoints' sources: other work on the box may use the same port
    number on another address)."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local_port, remote = int(f[1].rsplit(":", 1)[1], 16), f[2].split(":")[0]
        if f[3] == "01" and local_port == port and socket.inet_ntoa(bytes.fromhex(remote)[::-1]) in peers:
            total += 1
    return total


class Clients:
    """The endpoint processes and their pipes; every call is bounded by ``timeout``."""

    def __init__(self, n: int, config: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes, self.procs = [], []
        for i in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=tls_ua.serve, args=(child, {**config, "client": i}), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def ask(self, commands: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        for pipe, cmd in zip(self.pipes, commands):
            pipe.send(cmd)
        deadline = time.monotonic() + timeout
        out = []
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"client did not answer {commands[0]['cmd']!r} within {timeout:.0f} s")
            out.append(pipe.recv())
        return out

    def status(self) -> dict[str, Any]:
        replies = self.ask([{"cmd": "status"}] * len(self.pipes), 30)
        total: dict[str, Any] = {"endpoints": 0, "connected": 0, "registered": 0, "stats": {}}
        for r in replies:
            for k in ("endpoints", "connected", "registered"):
                total[k] += r[k]
            for k, v in r["stats"].items():
                total["stats"][k] = total["stats"].get(k, 0) + v
        return total

    def close(self) -> None:
        try:
            self.ask([{"cmd": "stop"}] * len(self.pipes), 20)
        except (TimeoutError, OSError, EOFError):
            pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def start_sipd(work: Path, args: argparse.Namespace) -> SipdProcess:
    cert, key = make_cert(work, "rsa:2048")
    db_path = work / "sipd.db"
    provision(db_path, args.endpoints)
    conf = {
        "server": {"workers": args.workers},
        "tls": {"certificate": str(cert), "private_key": str(key)},
        "limits": {"tcp_max_connections": args.endpoints + 256},
    }
    for section, values in json.loads(args.sipd_config).items():  # --sipd-config: a diagnosis run
        conf[section] = {**conf.get(section, {}), **values}
    proc = SipdProcess(work, conf, db_url=f"sqlite:///{db_path}", transports=("udp",), provision=False)
    proc.tls_port = free_port("tcp")  # type: ignore[attr-defined]
    proc.config["server"]["listen"].append(f"tls:127.0.0.1:{proc.tls_port}")  # type: ignore[attr-defined]
    proc.write_config()
    if args.profile:  # cProfile with a CPU clock (bench/profiled_sipd.py), written when sipd stops
        proc.argv = lambda: [sys.executable, str(HERE / "profiled_sipd.py"), str(Path(args.profile).resolve()),  # type: ignore[method-assign]
                             "--config", str(proc.config_path)]
    proc.start(timeout=60)
    return proc


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(math.ceil(q * len(values))) - 1)]


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": open("/proc/loadavg").read().split()[:3]}
    n_clients = max(1, min(args.clients, args.endpoints))
    config = {"domain": DOMAIN, "total": args.endpoints, "refresh": args.refresh, "keepalive": args.keepalive,
              "scale": args.scale, "hold": args.hold, "seed": args.seed}
    sipd = start_sipd(work, args)
    clients = None
    try:
        config["port"] = sipd.tls_port  # type: ignore[attr-defined]
        clients = Clients(n_clients, config)
        pids = lambda: process_tree(sipd.pid)  # noqa: E731 - workers may start late: look each time
        time.sleep(2)
        out["before"] = {"rss_kib": rss_kib(pids()), "pss_kib": pss_kib(pids()), "processes": len(pids())}

        # 1. ramp
        srcs = sources(math.ceil(args.endpoints / args.per_source))
        specs = [[(i, srcs[i % len(srcs)]) for i in range(c, args.endpoints, n_clients)] for c in range(n_clients)]
        c0, k0, t0 = cpu_seconds(pids()), cpu_seconds(clients.pids), time.monotonic()
        opened = clients.ask([{"cmd": "open", "specs": s, "rate": args.rate / n_clients,
                               "concurrency": max(1, args.concurrency // n_clients)} for s in specs], args.ramp_timeout)
        wall = time.monotonic() - t0
        out["ramp"] = {"seconds": round(wall, 1), "server_cpu_s": round(cpu_seconds(pids()) - c0, 1),
                       "client_cpu_s": round(cpu_seconds(clients.pids) - k0, 1),
                       "connected": sum(r["connected"] for r in opened), "registered": sum(r["registered"] for r in opened)}
        print(f"ramp: {out['ramp']}", file=sys.stderr)

        # 2. idle
        time.sleep(args.settle)
        s0 = clients.status()
        c0, k0, t0 = cpu_seconds(pids()), cpu_seconds(clients.pids), time.monotonic()
        threads0 = thread_cpu_seconds(pids())
        time.sleep(args.idle)
        wall = time.monotonic() - t0
        c1, k1, s1 = cpu_seconds(pids()), cpu_seconds(clients.pids), clients.status()
        threads = {k: round(100 * (v - threads0.get(k, 0.0)) / wall, 2) for k, v in thread_cpu_seconds(pids()).items()}
        done = {k: s1["stats"].get(k, 0) - s0["stats"].get(k, 0) for k in ("register_ok", "pings", "pongs")}
        out["idle"] = {"seconds": round(wall, 1), "server_cpu_pct": round(100 * (c1 - c0) / wall, 2),
                       "client_cpu_pct": round(100 * (k1 - k0) / wall, 2),
                       "registers_per_s": round(done["register_ok"] / wall, 1),
                       "pings_per_s": round(done["pings"] / wall, 1), "pongs_per_s": round(done["pongs"] / wall, 1),
                       "rss_kib": rss_kib(pids()), "pss_kib": pss_kib(pids()), "processes": len(pids()),
                       "connected": s1["connected"], "registered": s1["registered"],
                       "established_at_sipd": established(sipd.tls_port, set(srcs)),  # type: ignore[attr-defined]
                       "server_threads_cpu_pct": {k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v}}
        print(f"idle: {out['idle']}", file=sys.stderr)

        # 3. calls
        c0, k0, t0 = cpu_seconds(pids()), cpu_seconds(clients.pids), time.monotonic()
        replies = clients.ask([{"cmd": "calls", "rate": args.call_rate / n_clients, "seconds": args.call_seconds}] * n_clients,
                              args.call_seconds + tls_ua.CALL_TIMEOUT + args.hold + 30)
        wall = time.monotonic() - t0
        lat = [x for r in replies for x in r["latencies"]]
        outcomes: dict[str, int] = {}
        for r in replies:
            for k, v in r["outcomes"].items():
                outcomes[k] = outcomes.get(k, 0) + v
        out["calls"] = {"started": sum(r["started"] for r in replies), "answered": len(lat),
                        "p50_ms": round(1000 * percentile(lat, 0.5), 1), "p99_ms": round(1000 * percentile(lat, 0.99), 1),
                        "max_ms": round(1000 * max(lat, default=float("nan")), 1),
                        "server_cpu_pct": round(100 * (cpu_seconds(pids()) - c0) / wall, 1),
                        "client_cpu_pct": round(100 * (cpu_seconds(clients.pids) - k0) / wall, 1),
                        "outcomes": outcomes, "rss_kib": rss_kib(pids())}
        print(f"calls: {out['calls']}", file=sys.stderr)

        # 4. the end
        end = clients.status()
        try:
            server_view = sipd.mi("get_statistics", [["usrloc:registered_users"]])
        except Exception as exc:  # noqa: BLE001 - reported, not fatal to the figures above
            server_view = f"{type(exc).__name__}: {exc}"
        out["end"] = {"connected": end["connected"], "registered": end["registered"],
                      "registered_fraction": round(end["registered"] / args.endpoints, 4),
                      "usrloc": server_view, "established_at_sipd": established(sipd.tls_port, set(srcs)),  # type: ignore[attr-defined]
                      "client_stats": end["stats"]}
    finally:
        if clients is not None:
            clients.close()
        sipd.stop()
        log = sipd.log_text()
        out["sipd_log"] = {"tracebacks": log.count("Traceback"), "warnings": log.count(" WARNING "),
                           "errors": log.count(" ERROR "), "path": str(sipd.log_path)}
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    i, c, e, b = out["idle"], out["calls"], out["end"], out["before"]
    print(f"load average before: {' '.join(out['load_before'])}; {args.endpoints} endpoints, sipd workers "
          f"{args.workers}, {args.clients} client processes, refresh {args.refresh[0]:g}-{args.refresh[1]:g} s, "
          f"keep-alive {args.keepalive:g} s, scale {args.scale:g}")
    print(f"ramp: {out['ramp']['connected']} connected, {out['ramp']['registered']} registered in "
          f"{out['ramp']['seconds']} s (sipd {out['ramp']['server_cpu_s']} CPU-s, clients {out['ramp']['client_cpu_s']} CPU-s)")
    per_conn = (i["rss_kib"] - b["rss_kib"]) / max(i["connected"], 1)
    print(f"held: {i['established_at_sipd']} TLS connections at sipd; RSS {i['rss_kib'] / 1024:.0f} MB "
          f"(PSS {i['pss_kib'] / 1024:.0f} MB, {i['processes']} processes; {b['rss_kib'] / 1024:.0f} MB before: "
          f"{per_conn:.1f} KiB per connection)")
    print(f"idle: sipd {i['server_cpu_pct']} % of a core over {i['seconds']} s with {i['registers_per_s']} REGISTERs/s "
          f"and {i['pings_per_s']} pings/s ({i['pongs_per_s']} pongs/s); clients {i['client_cpu_pct']} %; "
          f"by thread: {', '.join(f'{k} {v} %' for k, v in i['server_threads_cpu_pct'].items())}")
    print(f"calls: {c['answered']}/{c['started']} answered at {args.call_rate:g}/s, setup p50 {c['p50_ms']} ms, "
          f"p99 {c['p99_ms']} ms, max {c['max_ms']} ms; sipd {c['server_cpu_pct']} %, clients {c['client_cpu_pct']} %; "
          f"outcomes {c['outcomes']}")
    print(f"end: {e['registered']}/{args.endpoints} registered ({100 * e['registered_fraction']:.2f} %), "
          f"{e['connected']} connected, {e['established_at_sipd']} at sipd; usrloc {e['usrloc']}; "
          f"sipd log: {out['sipd_log']['tracebacks']} tracebacks, {out['sipd_log']['errors']} errors, "
          f"{out['sipd_log']['warnings']} warnings")
    verdict = [("RSS < 600 MB", i["rss_kib"] < 600 * 1024), ("idle CPU < 5 %", i["server_cpu_pct"] < 5),
               ("p99 setup < 50 ms", c["p99_ms"] < 50)]
    print("targets: " + ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in verdict))


def pair(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    return float(lo), float(hi or lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=1, help="sipd [server] workers (its default: 1)")
    ap.add_argument("--clients", type=int, default=2, help="endpoint processes")
    ap.add_argument("--per-source", type=int, default=PER_SOURCE_DEFAULT, help="endpoints per source address")
    ap.add_argument("--rate", type=float, default=400.0, help="ramp: new connections per second, at most")
    ap.add_argument("--concurrency", type=int, default=64, help="ramp: handshakes + registrations in progress")
    ap.add_argument("--ramp-timeout", type=float, default=240.0)
    ap.add_argument("--refresh", type=pair, default=(60.0, 600.0), help="seconds between REGISTERs, MIN-MAX")
    ap.add_argument("--keepalive", type=float, default=120.0, help="seconds between CRLF pings (80-100 %% of it)")
    ap.add_argument("--scale", type=float, default=1.0, help="divide refresh and keep-alive intervals by this")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    ap.add_argument("--call-rate", type=float, default=100.0)
    ap.add_argument("--call-seconds", type=float, default=20.0)
    ap.add_argument("--hold", type=float, default=1.0, help="seconds from ACK to BYE")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--sipd-config", default="{}", help='sipd settings over the defaults, JSON: \'{"log": {"level": "warning"}}\'')
    ap.add_argument("--profile", help="run sipd under cProfile (bench/profiled_sipd.py), stats to this file")
    args = ap.parse_args()
    if args.endpoints < 2 or args.per_source < 1 or args.per_source > 64:
        ap.error("--endpoints must be at least 2 and --per-source 1-64 (sipd's tcp_max_per_source)")

    work = Path(tempfile.mkdtemp(prefix="bench-tls10k-"))
    try:
        out = measure(args, work)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    out["args"] = vars(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    report(out, args)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
