"""Benchmark of the management interface with a big location table.

    .venv/bin/python bench/bench_mgmt.py [--contacts 100000]

Starts a server process holding N registered contacts (a real ServerState + mgmt server on a tmp
Unix socket), then measures from separate client processes:
- ul_dump of all contacts in one reply: wall time, client peak RSS, server RSS growth, and the
  worst event-loop stall seen by the server while it streamed (what SIP traffic would feel);
- the same through paging (what `sipctl ul show` / `online` do);
- `sipctl ul show AOR` wall time (a full CLI process start) against that daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def serve(sock: str, n: int) -> None:
    from sipd import config as cfg
    from sipd.mgmt.context import MgmtContext
    from sipd.mgmt.registry import command
    from sipd.mgmt.server import start
    from sipd.services.location import Contact
    from sipd.state import ServerState

    conf = cfg.Config()
    conf.mgmt.socket = sock
    conf.mgmt.timeout = 120
    conf.mgmt.read_timeout = 120
    state = ServerState(config=conf)
    now = time.time()
    for i in range(n):
        aor = f"u{i:06d}@example.test"
        state.location.replace(aor, [Contact(
            uri=f"sip:u{i}@10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:5060;transport=udp", expires=now + 3600,
            call_id=f"{i:08x}-callid@10.0.0.1", cseq=i % 1000 + 1, user_agent="TANDBERG/529 (TC7.3.6)",
            received=f"udp:192.0.2.{i & 255}:5060", socket="udp:10.0.0.1:5060", instance=None)],
            mark_dirty=False)
    lag = {"max": 0.0}

    @command("bench_lag", help="bench only: worst loop stall since the last call")
    async def bench_lag(ctx: object) -> float:
        v, lag["max"] = lag["max"], 0.0
        return v

    async def main() -> None:
        server = await start(MgmtContext(state))
        loop = asyncio.get_running_loop()

        async def ticker() -> None:
            while True:
                t = loop.time()
                await asyncio.sleep(0.001)
                lag["max"] = max(lag["max"], loop.time() - t - 0.001)
        task = asyncio.ensure_future(ticker())
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        task.cancel()
        await server.close()

    asyncio.run(main())


CLIENT = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from sipd import config as cfg
conf = cfg.Config(); conf.mgmt.socket = {sock!r}; conf.mgmt.timeout = 120
mode = {mode!r}
t0 = time.perf_counter()
if mode == "full":
    from sipd.mgmt import client
    r = client.call(conf, "ul_dump", None, 120)
    n = sum(len(a["Contacts"]) for a in r["Domains"][0]["AORs"])
else:
    from sipctl.lib import mgmt
    n = sum(len(a["Contacts"]) for a in mgmt.ul_dump_pages(conf, page=5000))
dt = time.perf_counter() - t0
print(json.dumps({{"n": n, "seconds": dt, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""


def mb(b: float) -> str:
    return f"{b / 1e6:.0f} MB"


def run(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_mgmt_"))
    sock = str(tmp / "sipd.sock")
    conf_file = tmp / "sipd.toml"
    conf_file.write_text(f'[mgmt]\nsocket = "{sock}"\ntimeout = 120\n')
    t0 = time.perf_counter()
    srv = subprocess.Popen([sys.executable, __file__, "--serve", sock, "--contacts", str(n)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        print(f"server: {n} contacts loaded in {time.perf_counter() - t0:.1f} s, RSS {mb(_vm(srv.pid, 'VmRSS'))}")
        from sipd import config as cfg
        from sipd.mgmt import client

        conf = cfg.Config()
        conf.mgmt.socket = sock
        for mode in ("full", "paged"):
            Path(f"/proc/{srv.pid}/clear_refs").write_text("5")  # reset the server's VmHWM
            before = _vm(srv.pid, "VmRSS")
            client.call(conf, "bench_lag", None, 10)
            out = subprocess.run([sys.executable, "-c", CLIENT.format(repo=str(REPO), sock=sock, mode=mode)],
                                 capture_output=True, text=True, check=True, timeout=600)
            res = json.loads(out.stdout)
            stall = client.call(conf, "bench_lag", None, 10)
            peak = _vm(srv.pid, "VmHWM")
            print(f"ul_dump {mode:5}: {res['n']} contacts in {res['seconds']:.2f} s; client peak RSS "
                  f"{mb(res['maxrss'])}; server RSS growth {mb(max(0, peak - before))}; "
                  f"worst server loop stall {stall * 1000:.1f} ms")
        times = []
        for i in range(5):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sipctl", "-c", str(conf_file), "ul", "show",
                            f"u{(i * 19997) % n:06d}@example.test"], check=True, capture_output=True,
                           timeout=60, cwd=REPO)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(200):
            client.call(conf, "ul_show_contact", ["location", f"u{(i * 7919) % n:06d}@example.test"], 10)
        per_call = (time.perf_counter() - t) / 200
        print(f"sipctl ul show AOR: median {sorted(times)[2] * 1000:.0f} ms wall (process start included); "
              f"ul_show_contact call alone {per_call * 1000:.2f} ms")
    finally:
        if srv.stdin:
            srv.stdin.close()
        srv.wait(timeout=30)
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--serve", metavar="SOCKET")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.contacts)
    else:
        run(args.contacts)
