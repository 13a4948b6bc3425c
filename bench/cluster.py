#!/usr/bin/env python3
"""Several nodes on one machine: REGISTER and call throughput of one sipd node against two, and
the time for a registration made at node A to be usable at node B.

Both nodes share one MariaDB database (``--db-url``, a fresh database created and dropped by this
run) with ``[location] mode = "db-only"`` and ``[cluster] node_id`` set, as docs/several-nodes.md
deploys them; they listen on 127.0.0.1 at two ports, so the SIPp scenarios' AORs
(``user@127.0.0.1``) are the same at both. Each node is pinned to a core of its own with
``taskset`` when the machine has two (node A on CPU 0, node B on CPU 1); SIPp and MariaDB share
those cores, so on a two-core machine the two-node figure is bounded by the load generator too:
the CPU seconds each node used are reported beside the rates (``/cpu-s``: operations per
CPU-second of the nodes, the figure to compare on a busy machine).

* ``reg``: SIPp's bench/scenarios/reg.xml (REGISTER -> 200, not challenged) at a ladder of
  offered rates, ``--seconds`` per step, against one node, then the same rate against each of two
  nodes at once. The highest step with under 1 % failed and at least 95 % of the offered rate
  achieved is the result.
* ``call``: call_uac.xml -> node -> call_uas.xml (INVITE, 200, ACK, BYE; the UAS registered as
  "callee" at node A, so node B finds it in the database: registered at A, called through B).
* ``propagation``: a REGISTER answered by node A, then INVITEs to node B (a new one every 10 ms
  while B answers 404/480) until one reaches the contact: the time from A's 200 to B's INVITE,
  ``--samples`` times (p50, p90, max).

    bench/cluster.py                           # ~4 minutes
    bench/cluster.py --seconds 3 --reg-rates 500,1000 --call-rates 50,100 --samples 10   # a quick look
    bench/cluster.py --json bench/results/cluster.json

Every SIPp run is bounded by a call count (-m), SIPp's -timeout and a subprocess timeout; every
process is started and ended by its PID; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import free_port  # noqa: E402
from dbadmin import admin_sql  # noqa: E402
from helpers.sipd_proc import SipdProcess, _end_pid  # noqa: E402

SCENARIOS = REPO / "bench" / "scenarios"
CLK = os.sysconf("SC_CLK_TCK")
FAIL_PCT = 1.0


class PinnedSipd(SipdProcess):
    """sipd started through ``taskset -c CPU`` (taskset execs it: the PID is sipd's)."""

    def __init__(self, *args: Any, cpu: int | None = None, **kwargs: Any) -> None:
        self.cpu = cpu
        super().__init__(*args, **kwargs)

    def argv(self) -> list[str]:
        argv = super().argv()
        return ["taskset", "-c", str(self.cpu), *argv] if self.cpu is not None else argv


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` and its children that were waited for."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / CLK


# ------------------------------------------------------------------------------ the database


def make_database(admin_url: str) -> str:
    """A fresh database with sipd's schema and the domain 127.0.0.1; returns its URL."""
    from sipctl.lib import provision
    from sipd.db import connect, schema

    u = urlparse(admin_url)
    name = "sipd_bench_" + secrets.token_hex(4)
    admin_sql(admin_url, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    cred = (u.username or "root") + (f":{u.password}" if u.password else "")
    url = f"mysql://{cred}@{u.hostname or '127.0.0.1'}:{u.port or 3306}/{name}"
    with connect(url) as db:
        schema.create_all(db)
        provision.add_domain(db, "127.0.0.1")
    return url


def drop_database(url: str) -> None:
    admin_sql(url, f"DROP DATABASE IF EXISTS `{urlparse(url).path.lstrip('/')}`")


# ------------------------------------------------------------------------------ nodes


def start_nodes(work: Path, db_url: str, count: int, pin: bool) -> list[PinnedSipd]:
    nodes = []
    for i, node_id in enumerate("ab"[:count]):
        conf = {
            "cluster": {"node_id": node_id},
            "location": {"mode": "db-only"},
            "auth": {"register": False, "invite": False},
            "antiflood": {"enabled": False},
            "spam": {"enabled": False},
            "log": {"level": "warning"},
            "registrar": {"max_expires": 86400},
        }
        for section in ("acc", "dialog", "presence", "nat"):  # as bench/sipd_target.py: the routing alone
            conf[section] = {"enabled": False}
        node = PinnedSipd(work, conf, db_url=db_url, provision=False, cpu=i if pin else None)
        node.start(timeout=60)
        nodes.append(node)
    return nodes


def stop_nodes(nodes: list[PinnedSipd]) -> None:
    for node in nodes:
        node.close(check_log=False)


# ------------------------------------------------------------------------------ SIPp


def users_file(work: Path, n: int, prefix: str) -> Path:
    path = work / f"{prefix}.csv"
    path.write_text("SEQUENTIAL\n" + "".join(f"{prefix}{i:06d}\n" for i in range(n)))
    return path


def sipp(work: Path, name: str, target: str | None, scenario: str, *, rate: int = 0, calls: int = 1,
         inf: Path | None = None, port: int, timeout: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    argv = ["sipp"] + ([target] if target else []) + [
        "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port), "-t", "u1", "-nostdin",
        "-trace_stat", "-stf", f"{name}_stat.csv", "-fd", "1", "-timeout", f"{timeout}s", "-buff_size", "4194304"]
    if target:
        argv += ["-m", str(calls), "-recv_timeout", "10000"]
        if rate:
            argv += ["-r", str(rate), "-l", str(max(rate * 5, 50))]
    if inf:
        argv += ["-inf", str(inf)]
    argv += list(extra)
    out = open(work / f"{name}.out", "wb")
    return subprocess.Popen(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def sipp_stats(work: Path, name: str) -> dict[str, int]:
    import csv

    try:
        with open(work / f"{name}_stat.csv", newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except FileNotFoundError:
        return {"ok": 0, "failed": 0}
    if len(rows) < 2:
        return {"ok": 0, "failed": 0}
    last = dict(zip(rows[0], rows[-1]))
    return {"ok": int(last.get("SuccessfulCall(C)") or 0), "failed": int(last.get("FailedCall(C)") or 0)}


def end(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_pid(proc, 5)


def step(work: Path, nodes: list[PinnedSipd], scenario: str, rate: int, seconds: float, tag: str) -> dict[str, Any]:
    """``rate`` per second offered to each node for ``seconds``; the counts, rate and CPU."""
    calls = int(rate * seconds)
    timeout = int(seconds + 25)
    scen = {"reg": "reg.xml", "call": "call_uac.xml"}[scenario]
    extra = ("-nd",) if scenario == "reg" else ("-d", "0", "-default_behaviors", "all,-abortunexp")
    cpu0 = [cpu_seconds(n.pid) for n in nodes]
    t0 = time.monotonic()
    procs = []
    callee = work / "callee.csv"  # written once: rewritten while a started SIPp reads it, it reads empty
    callee.write_text("SEQUENTIAL\ncallee\n")
    for i, node in enumerate(nodes):
        inf = users_file(work, calls, f"{tag}n{i}") if scenario == "reg" else callee
        procs.append((f"{tag}-{i}", sipp(work, f"{tag}-{i}", node.address, scen, rate=rate, calls=calls, inf=inf,
                                         port=free_port(), timeout=timeout, extra=extra)))
    for _, proc in procs:
        end(proc, timeout + 10)
    elapsed = time.monotonic() - t0
    cpu = sum(cpu_seconds(n.pid) for n in nodes) - sum(cpu0)
    counts = [{**sipp_stats(work, name), "rc": proc.returncode} for name, proc in procs]
    for (name, _), c in zip(procs, counts, strict=True):
        if c["rc"] not in (0, 1) or not c["ok"] + c["failed"]:  # else: some calls failed, counted
            tail = (work / f"{name}.out").read_text(errors="replace").strip().splitlines()[-3:]
            print(f"  ! SIPp {name} ended with {c['rc']}: {' | '.join(tail)}", flush=True)
    ok, failed = sum(c["ok"] for c in counts), sum(c["failed"] for c in counts)
    offered = rate * len(nodes)
    achieved = ok / max(elapsed, seconds)  # SIPp ends when the last answer is in
    passed = failed <= FAIL_PCT / 100 * max(1, ok + failed) and achieved >= 0.95 * offered
    return {"scenario": scenario, "nodes": len(nodes), "offered": offered, "ok": ok, "failed": failed,
            "seconds": round(elapsed, 2), "achieved": round(achieved, 1), "node_cpu_s": round(cpu, 2),
            "per_cpu_s": round(ok / cpu, 1) if cpu > 0 else None, "pass": passed, "sipp": counts}


def ladder(work: Path, nodes: list[PinnedSipd], scenario: str, rates: list[int], seconds: float,
           results: list[dict]) -> dict | None:
    best = None
    for rate in rates:
        r = step(work, nodes, scenario, rate, seconds, f"{scenario}{len(nodes)}r{rate}")
        results.append(r)
        print(f"  {scenario} {len(nodes)} node(s), offered {r['offered']}/s: ok {r['ok']} failed {r['failed']} "
              f"achieved {r['achieved']}/s, node CPU {r['node_cpu_s']} s ({r['per_cpu_s']}/cpu-s) "
              f"{'PASS' if r['pass'] else 'FAIL'}", flush=True)
        if not r["pass"]:
            break
        best = r
        time.sleep(1.0)
    return best


def start_uas(work: Path, node: PinnedSipd, port: int, timeout: int) -> subprocess.Popen:
    """The callee: a SIPp UAS registered as "callee" at ``node``."""
    inf = work / "callee-reg.csv"
    inf.write_text("SEQUENTIAL\ncallee\n")
    reg = sipp(work, "callee-reg", node.address, "reg.xml", calls=1, inf=inf, port=port, timeout=20)
    end(reg, 30)
    if sipp_stats(work, "callee-reg")["ok"] != 1:
        raise RuntimeError("the callee could not register: " + (work / "callee-reg.out").read_text()[-2000:])
    return sipp(work, "uas", None, "call_uas.xml", port=port, timeout=timeout,
                extra=("-default_behaviors", "all,-abortunexp"))


# ------------------------------------------------------------------------------ propagation


def _request(method: str, ruri: str, to: str, sock: socket.socket, call_id: str, extra: str = "") -> bytes:
    host, port = sock.getsockname()
    return (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:bench@{host}>;tag={secrets.token_hex(4)}\r\nTo: <{to}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def _status(data: bytes) -> int:
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def _busy(invite: bytes) -> bytes:
    """486 to an INVITE that reached the contact (its Via, From, To, Call-ID and CSeq kept)."""
    head = invite.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [h for h in head[1:] if h.split(b":", 1)[0].strip().lower() in (b"via", b"v", b"from", b"f", b"to", b"t",
                                                                           b"call-id", b"i", b"cseq")]
    keep = [h + b";tag=busy" if h.lower().startswith((b"to:", b"t:")) and b"tag=" not in h else h for h in keep]
    return b"SIP/2.0 486 Busy Here\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"


def propagation(a: PinnedSipd, b: PinnedSipd, samples: int, limit: float = 10.0) -> list[float]:
    """Seconds from A's 200 to a REGISTER until B routes an INVITE to the contact, per sample."""
    times = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as contact, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        contact.bind(("127.0.0.1", 0))
        caller.bind(("127.0.0.1", 0))
        contact.settimeout(0.01)
        caller.settimeout(0.01)
        chost, cport = contact.getsockname()
        for i in range(samples):
            user = f"prop{secrets.token_hex(3)}{i}"
            aor = f"sip:{user}@127.0.0.1"
            contact.sendto(_request("REGISTER", f"sip:127.0.0.1:{a.port}", aor, contact, secrets.token_hex(8),
                                    f"Contact: <sip:{user}@{chost}:{cport}>\r\nExpires: 600\r\n"), (a.host, a.port))
            deadline = time.monotonic() + 5
            registered = None
            while registered is None and time.monotonic() < deadline:
                data = _contact_receive(contact, None)
                if data is not None and data.startswith(b"SIP/2.0 200"):
                    registered = time.monotonic()
            if registered is None:
                raise RuntimeError(f"node a did not answer the REGISTER of {user}")
            reached = None
            next_invite = 0.0
            while reached is None and time.monotonic() - registered < limit:
                now = time.monotonic()
                if now >= next_invite:
                    caller.sendto(_request("INVITE", f"sip:{user}@127.0.0.1:{b.port}", aor, caller,
                                           secrets.token_hex(8), f"Contact: <sip:bench@{caller.getsockname()[0]}:"
                                           f"{caller.getsockname()[1]}>\r\n"), (b.host, b.port))
                    next_invite = now + 0.01
                if _contact_receive(contact, user) == b"reached":
                    reached = time.monotonic()
                try:
                    caller.recv(65535)  # 100, 404/480 while B does not know it yet, then the 486
                except socket.timeout:
                    pass
            if reached is None:
                raise RuntimeError(f"node b never routed to {user} within {limit:g} s")
            times.append(reached - registered)
            time.sleep(0.05)
    return times


def _contact_receive(contact: socket.socket, user: str | None) -> bytes | None:
    """One datagram at the contact: an INVITE is answered 486 (so it is not sent again) and is
    ``b"reached"`` when it is for ``user``; anything else is returned as it came (None: nothing)."""
    try:
        data, src = contact.recvfrom(65535)
    except socket.timeout:
        return None
    if data.startswith(b"INVITE "):
        contact.sendto(_busy(data), src)
        return b"reached" if user is not None and data.startswith(f"INVITE sip:{user}@".encode()) else b""
    return data


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# ------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-url", default=os.environ.get("SIPD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
                    help="MariaDB server (admin) URL: a fresh database is made on it and dropped after")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per ladder step")
    ap.add_argument("--reg-rates", default="250,500,750,1000,1500,2000", help="REGISTERs/s offered to each node")
    ap.add_argument("--call-rates", default="100,200,400,600,800,1200", help="calls/s offered to each node")
    ap.add_argument("--samples", type=int, default=20, help="registrations timed from node A to node B")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the nodes to CPUs")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (SIPp's output and statistics)")
    args = ap.parse_args()
    for tool in ("sipp", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    reg_rates = [int(x) for x in args.reg_rates.split(",") if x]
    call_rates = [int(x) for x in args.call_rates.split(",") if x]
    work = Path(tempfile.mkdtemp(prefix="sipd-bench-cluster-"))
    db_url = make_database(args.db_url)
    results: list[dict] = []
    summary: dict[str, Any] = {"cpus": os.cpu_count(), "pinned": pin, "seconds": args.seconds,
                               "load": os.getloadavg()[0]}
    print(f"work {work}, database {db_url.rsplit('/', 1)[1]}, {os.cpu_count()} CPUs, nodes pinned: {pin}, "
          f"load average {summary['load']:.2f}", flush=True)
    uas: subprocess.Popen | None = None
    try:
        for count in (1, 2):
            nodes = start_nodes(work, db_url, count, pin)
            try:
                print(f"{count} node(s): {', '.join(n.address for n in nodes)}", flush=True)
                summary[f"reg_{count}"] = ladder(work, nodes, "reg", reg_rates, args.seconds, results)
                uas_port = free_port()
                uas = start_uas(work, nodes[0], uas_port, int(len(call_rates) * (args.seconds + 30) + 30))
                time.sleep(0.5)
                summary[f"call_{count}"] = ladder(work, nodes, "call", call_rates, args.seconds, results)
                _end_pid(uas, 5)
                uas = None
                if count == 2:
                    times = propagation(nodes[0], nodes[1], args.samples)
                    summary["propagation_ms"] = {"samples": len(times), "p50": round(pct(times, 0.5) * 1000, 1),
                                                 "p90": round(pct(times, 0.9) * 1000, 1),
                                                 "max": round(max(times) * 1000, 1)}
                    print(f"  registration at a usable at b after: p50 {summary['propagation_ms']['p50']} ms, "
                          f"p90 {summary['propagation_ms']['p90']} ms, max {summary['propagation_ms']['max']} ms "
                          f"({len(times)} samples)", flush=True)
            finally:
                if uas is not None:
                    _end_pid(uas, 5)
                    uas = None
                stop_nodes(nodes)
    finally:
        drop_database(db_url)
    summary["load_after"] = os.getloadavg()[0]
    print("\n| workload | 1 node | 2 nodes | ratio |\n|---|---|---|---|")
    for scen in ("reg", "call"):
        one, two = summary.get(f"{scen}_1"), summary.get(f"{scen}_2")

        def cell(r: dict | None) -> str:
            return "no passing step" if not r else f"{r['achieved']:,.0f}/s ({r['per_cpu_s']}/cpu-s)"

        ratio = f"{two['achieved'] / one['achieved']:.2f}" if one and two else "-"
        print(f"| {scen} | {cell(one)} | {cell(two)} | {ratio} |")
    if "propagation_ms" in summary:
        p = summary["propagation_ms"]
        print(f"| registration at A usable at B | p50 {p['p50']} ms | p90 {p['p90']} ms | max {p['max']} ms |")
    print(f"(load average {summary['load']:.2f} before, {summary['load_after']:.2f} after: a shared machine's "
          "figures move with the other work on it)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "steps": results}, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
