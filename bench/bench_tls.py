#!/usr/bin/env python3
"""TLS speed: sipd vs Kamailio (tls module) in the same run, same certificate, same client.

Two workloads, each run against both servers one after the other, on 127.0.0.1 only:

* ``persistent``: C long-lived TLS connections, each keeping W REGISTERs in flight (closed loop:
  a new one leaves when a 200 arrives); REGISTERs/s over ``--seconds``.
* ``connect``: K workers each opening a fresh TLS connection (full handshake, no resumption),
  sending one REGISTER, waiting for its 200 and closing; new TLS connections/s.

REGISTERs are not challenged on either side (sipd ``[auth] register = false``, Kamailio without
auth), contacts are kept in memory (sipd ``[location] mode = "memory"``, Kamailio usrloc
``db_mode 0``), so the figures are the transport, the TLS work and the registrar. Both servers use the
same RSA-2048 certificate (``--key-type`` to change), TLS 1.2+ (1.3 negotiated). The load generator is
Python (uvloop when installed) and shares this machine's cores with the server: the CPU seconds each
server used are reported next to the rates (``/cpu-s``: operations per CPU-second of the server, the
figure to compare on a busy machine), and ``ratio`` is sipd / Kamailio. Kamailio runs with ``-x fm -X
fm``: with q_malloc, 5.6.3's tls module double-frees under OpenSSL 3 (kamailio issue #3635) and its
workers die under load.

    bench/bench_tls.py                       # ~1 minute: both workloads, both servers
    bench/bench_tls.py --seconds 10 --connections 100 --window 20 --workers 32
    bench/bench_tls.py --only sipd           # or --only kamailio
    bench/bench_tls.py --sipd-workers 1      # sipd in one process (default 2, as Kamailio's 2 children)

Every server is started and ended by its PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import free_port  # noqa: E402
from helpers.sipd_proc import SipdProcess, _end_pid, options_ping  # noqa: E402
from sipd import eventloop  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")

KAMAILIO_CFG = r"""#!KAMAILIO
debug=1
log_stderror=yes
children=@CHILDREN@
tcp_children=@CHILDREN@
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=off
enable_tls=yes
listen=udp:127.0.0.1:@PORT@
listen=tls:127.0.0.1:@TLSPORT@
alias=127.0.0.1
tcp_max_connections=8192
tls_max_connections=8192
tcp_connection_lifetime=3605
loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "siputils.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "textops.so"
modparam("tls", "config", "@TLSCFG@")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 86400)
request_route {
	if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
	if (is_method("REGISTER")) { if (!save("location")) sl_reply_error(); exit; }
	if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; }
	sl_send_reply("404", "Not here");
}
"""

KAMAILIO_TLS = """[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = @KEY@
certificate = @CERT@

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


# ------------------------------------------------------------------------------------------ servers

def cpu_seconds(pid: int) -> float:
    """utime+stime of pid and its children processes (Kamailio forks workers)."""
    total = 0.0
    pids = [pid]
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                kids.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                continue
    seen = set()
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        pids.extend(kids.get(p, []))
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK
        except OSError:
            continue
    return total


class Kamailio:
    def __init__(self, work: Path, cert: Path, key: Path, children: int) -> None:
        self.dir = work / "kamailio"
        self.dir.mkdir()
        self.port = free_port("udp")
        self.tls_port = free_port("tcp")
        (self.dir / "tls.cfg").write_text(KAMAILIO_TLS.replace("@KEY@", str(key)).replace("@CERT@", str(cert)))
        cfg = (KAMAILIO_CFG.replace("@PORT@", str(self.port)).replace("@TLSPORT@", str(self.tls_port))
               .replace("@TLSCFG@", str(self.dir / "tls.cfg")).replace("@CHILDREN@", str(children)))
        (self.dir / "kamailio.cfg").write_text(cfg)
        self.log = open(self.dir / "kamailio.log", "wb")
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        self.proc = subprocess.Popen([binary, "-DD", "-E", "-f", str(self.dir / "kamailio.cfg"), "-m", "256", "-M", "32",
                                      "-x", "fm", "-X", "fm", "-w", str(self.dir), "-Y", str(self.dir)], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while options_ping("127.0.0.1", self.port) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"kamailio did not start; see {self.dir / 'kamailio.log'}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        _end_pid(self.proc, 10)
        self.log.close()


class Sipd:
    def __init__(self, work: Path, cert: Path, key: Path, workers: int) -> None:
        self.tls_port = free_port("tcp")
        port = free_port("udp")
        conf = {
            "server": {"listen": [f"udp:127.0.0.1:{port}", f"tls:127.0.0.1:{self.tls_port}"], "workers": workers},
            "tls": {"certificate": str(cert), "private_key": str(key), "reload_interval": 0.0,
                    "max_pending_handshakes": 4096},
            "auth": {"register": False, "invite": False},
            "location": {"mode": "memory"},
            "registrar": {"max_expires": 86400},
            "limits": {"tcp_max_connections": 8192, "tcp_max_per_source": 8192},
            "antiflood": {"enabled": False},
            "spam": {"enabled": False},
            "log": {"level": "warning"},
        }
        self.proc = SipdProcess(work, conf, port=port, domains=["127.0.0.1"], users=[])
        self.proc.start()
        # main hands accepted connections only to ready workers: measure once every one is
        deadline = time.monotonic() + 30
        while workers > 1 and not self.ready(workers):
            if time.monotonic() > deadline:
                self.close()
                raise SystemExit("sipd's workers did not get ready in 30 s")
            time.sleep(0.1)

    def ready(self, workers: int) -> bool:
        ps = self.proc.mi("ps")["Processes"]
        return sum(1 for p in ps if p["ID"] != 0 and p["Type"].endswith("TCP/TLS connections)")) == workers - 1

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def close(self) -> None:
        self.proc.close()


# ------------------------------------------------------------------------------------------ client

def register(i: int, lport: int, cseq: int, port: int) -> bytes:
    user = f"user{i:06d}"
    return (f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{lport};branch=z9hG4bK-{i}-{cseq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag={i}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: bench-tls-{i}-{lport}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{lport};transport=tls>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n").encode()


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Counter:
    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.latencies: list[float] = []


async def persistent(port: int, connections: int, window: int, seconds: float) -> dict[str, Any]:
    ctx = client_context()
    count = Counter()
    stop = asyncio.Event()

    async def one(i: int) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 10)
        lport = writer.get_extra_info("sockname")[1]
        cseq = 0
        try:
            for _ in range(window):
                cseq += 1
                writer.write(register(i, lport, cseq, port))
            buf = b""
            while not stop.is_set():
                data = await asyncio.wait_for(reader.read(65536), 10)
                if not data:
                    count.errors += 1
                    return
                *done, buf = (buf + data).split(b"\r\n\r\n")  # responses carry no body
                for head in done:
                    if head.startswith(b"SIP/2.0 200 "):
                        count.ok += 1
                    else:
                        count.errors += 1
                    cseq += 1
                    writer.write(register(i, lport, cseq, port))
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass

    tasks = [asyncio.create_task(one(i)) for i in range(connections)]
    await asyncio.sleep(1.0)  # connections up, pipelines full: measure from here
    ok0, err0, t0 = count.ok, count.errors, time.monotonic()
    await asyncio.sleep(seconds)
    ok1, err1, elapsed = count.ok, count.errors, time.monotonic() - t0
    stop.set()
    failed = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, BaseException)]
    return {"registers_per_s": round((ok1 - ok0) / elapsed), "errors": err1 - err0 + len(failed),
            "seconds": round(elapsed, 2)}


async def connects(port: int, workers: int, seconds: float) -> dict[str, Any]:
    ctx = client_context()
    count = Counter()
    stop_at = time.monotonic() + seconds

    async def worker(w: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            t0 = time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 10)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                count.errors += 1
                await asyncio.sleep(0.01)
                continue
            try:
                lport = writer.get_extra_info("sockname")[1]
                writer.write(register(w * 100000 + i % 100000, lport, 1, port))
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = await asyncio.wait_for(reader.read(65536), 10)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"SIP/2.0 200 "):
                    count.ok += 1
                    count.latencies.append(time.monotonic() - t0)
                else:
                    count.errors += 1
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                count.errors += 1
            finally:
                writer.close()
                try:
                    await asyncio.wait_for(writer.wait_closed(), 2)
                except (OSError, asyncio.TimeoutError, ssl.SSLError):
                    pass

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed = time.monotonic() - t0
    lat = sorted(count.latencies) or [0.0]
    return {"connections_per_s": round(count.ok / elapsed), "errors": count.errors, "seconds": round(elapsed, 2),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 1), "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1)}


def run_client(coro: Any) -> Any:
    return eventloop.run(coro)  # the daemon's choice of loop, for a client measured beside it


def measure(server: Any, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c0, t0 = cpu_seconds(server.pid), time.monotonic()
    out["persistent"] = run_client(persistent(server.tls_port, args.connections, args.window, args.seconds))
    c1, t1 = cpu_seconds(server.pid), time.monotonic()
    out["persistent"]["server_cpu_pct"] = round(100 * (c1 - c0) / (t1 - t0))
    out["persistent"]["per_cpu_s"] = round(out["persistent"]["registers_per_s"] * (t1 - t0) / max(c1 - c0, 1e-3))
    out["connect"] = run_client(connects(server.tls_port, args.workers, args.seconds))
    c2, t2 = cpu_seconds(server.pid), time.monotonic()
    out["connect"]["server_cpu_pct"] = round(100 * (c2 - c1) / (t2 - t1))
    out["connect"]["per_cpu_s"] = round(out["connect"]["connections_per_s"] * (t2 - t1) / max(c2 - c1, 1e-3))
    return out


def make_cert(work: Path, key_type: str) -> tuple[Path, Path]:
    from sipctl.lib import cert as lib

    lib.ca_init(work / "ca", "bench CA", key_type=key_type)
    lib.ca_issue(work / "ca", "sip.bench.test", ["127.0.0.1"], cert_out=work / "srv.pem", key_out=work / "srv.key",
                 key_type=key_type)
    return work / "srv.pem", work / "srv.key"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=50, help="persistent: TLS connections")
    ap.add_argument("--window", type=int, default=10, help="persistent: REGISTERs in flight per connection")
    ap.add_argument("--workers", type=int, default=16, help="connect: concurrent connect-register-close loops")
    ap.add_argument("--key-type", default="rsa:2048")
    ap.add_argument("--kamailio-children", type=int, default=2)
    ap.add_argument("--sipd-workers", type=int, default=2,
                    help="sipd [server] workers (processes; each serves the TLS connections main hands it), as "
                         "Kamailio's children")
    ap.add_argument("--only", choices=["sipd", "kamailio"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    results: dict[str, Any] = {"load_before": open("/proc/loadavg").read().split()[:3], "args": vars(args)}
    try:
        cert, key = make_cert(work, args.key_type)
        if args.only != "kamailio":
            sipd = Sipd(work, cert, key, args.sipd_workers)
            try:
                results["sipd"] = measure(sipd, args)
            finally:
                sipd.close()
        if args.only != "sipd":
            if not shutil.which("kamailio") and not Path("/usr/sbin/kamailio").exists():
                print("kamailio not installed: sipd only", file=sys.stderr)
            else:
                kam = Kamailio(work, cert, key, args.kamailio_children)
                try:
                    results["kamailio"] = measure(kam, args)
                finally:
                    kam.close()
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    if "sipd" in results and "kamailio" in results:
        s, k = results["sipd"], results["kamailio"]
        results["ratio"] = {
            "persistent_registers": round(s["persistent"]["registers_per_s"] / max(k["persistent"]["registers_per_s"], 1), 2),
            "new_connections": round(s["connect"]["connections_per_s"] / max(k["connect"]["connections_per_s"], 1), 2),
            "persistent_registers_per_cpu_s": round(s["persistent"]["per_cpu_s"] / max(k["persistent"]["per_cpu_s"], 1), 2),
            "new_connections_per_cpu_s": round(s["connect"]["per_cpu_s"] / max(k["connect"]["per_cpu_s"], 1), 2),
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"load average before: {' '.join(results['load_before'])}; key {args.key_type}; {args.seconds:g} s per run; "
              f"sipd workers {args.sipd_workers}, kamailio children {args.kamailio_children}")
        print(f"{'server':10} {'REGISTER/s':>10} {'cpu%':>5} {'/cpu-s':>7} {'new conn/s':>10} {'cpu%':>5} {'/cpu-s':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>7}")
        for name in ("sipd", "kamailio"):
            if name in results:
                p, c = results[name]["persistent"], results[name]["connect"]
                print(f"{name:10} {p['registers_per_s']:>10} {p['server_cpu_pct']:>5} {p['per_cpu_s']:>7} "
                      f"{c['connections_per_s']:>10} {c['server_cpu_pct']:>5} {c['per_cpu_s']:>7} "
                      f"{c['p50_ms']:>7} {c['p99_ms']:>7} {p['errors'] + c['errors']:>7}")
        if "ratio" in results:
            r = results["ratio"]
            print(f"ratio sipd/kamailio: persistent REGISTERs {r['persistent_registers']} "
                  f"(per server CPU-second {r['persistent_registers_per_cpu_s']}), new TLS connections "
                  f"{r['new_connections']} (per CPU-second {r['new_connections_per_cpu_s']})")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
