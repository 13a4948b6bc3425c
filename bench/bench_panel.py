#!/usr/bin/env python3
"""The control panel under a large installation: page times and the memory of a CSV export.

Builds an SQLite database with 10,000 users (and 2,000 aliases), 1,000,000 CDRs and 1,000
answered dialogs (restored by sipd from its dialog table at start), starts the real sipd and the
real ``sipctl web`` on free loopback ports, logs in, and times the Users, CDR Viewer and Dialog
pages (median and p99 of N requests each), then streams a CSV export of every CDR and reads the
panel's peak memory (VmHWM) before and after it.

    .venv/bin/python bench/bench_panel.py [--cdrs 1000000] [--users 10000] [--dialogs 1000] [-n 50]

Loopback only; every loop is bounded; both processes are ended by their PID.
"""

from __future__ import annotations

import argparse
import hashlib
import http.cookiejar
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOMAIN = "bench.test"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(db_url: str, users: int, cdrs: int, dialogs: int, online: int = 0) -> None:
    from sipd.db import connect
    from sipd.services.location import Contact
    from sipd.services.store import _INSERT_SQL, contact_row

    with connect(db_url) as db:
        db.execute("INSERT INTO domain (domain, accept_subdomain, last_modified) VALUES (?, 0, '2024-01-01 00:00:00')",
                   (DOMAIN,))
        ha1 = hashlib.md5(b"x").hexdigest()
        db.executemany("INSERT INTO subscriber (username, domain, password, email_address, ha1, ha1_sha256) "
                       "VALUES (?, ?, '', '', ?, ?)", [(f"user{i:06d}", DOMAIN, ha1, ha1) for i in range(users)])
        db.executemany("INSERT INTO dbaliases (alias_username, alias_domain, username, domain) VALUES (?, ?, ?, ?)",
                       [(f"{1000 + i}", DOMAIN, f"user{i:06d}", DOMAIN) for i in range(min(users, 2000))])
        # registrations sipd loads at start (write-through): every other user online, for "online only"
        later = time.time() + 36000
        db.executemany(_INSERT_SQL, [contact_row(f"user{i:06d}@{DOMAIN}", Contact(
            uri=f"sip:user{i:06d}@127.0.0.1:9", expires=later, call_id=f"reg-{i}", cseq=1, socket="udp:127.0.0.1:5060"))
            for i in range(0, min(users, 2 * online), 2)])
        start = int(time.time()) - cdrs * 2
        rnd = random.Random(1)
        statuses = ["answered"] * 7 + ["missed", "failed", "cancelled"]
        batch = 50_000
        for base in range(0, cdrs, batch):
            rows = []
            for i in range(base, min(cdrs, base + batch)):
                t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start + 2 * i))
                a, b = rnd.randrange(users), rnd.randrange(users)
                rows.append((f"cdr-{i}@bench", f"ft{i}", f"tt{i}", f"sip:user{a:06d}@{DOMAIN}",
                             f"sip:user{b:06d}@{DOMAIN}", t, t, t, 1, 60, 60000, "200", "OK",
                             rnd.choice(statuses), "Upstream BYE"))
            db.executemany("INSERT INTO cdrs (callid, from_tag, to_tag, caller, callee, start_time, answer_time, "
                           "end_time, setup_time, duration, ms_duration, sip_code, sip_reason, status, end_reason) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        now = int(time.time())
        db.executemany(
            "INSERT INTO dialog (dlg_id, callid, from_uri, from_tag, to_uri, to_tag, caller_cseq, callee_cseq, "
            "caller_contact, callee_contact, caller_sock, callee_sock, state, start_time, timeout) "
            "VALUES (?, ?, ?, ?, ?, ?, '1', '1', ?, ?, 'udp:127.0.0.1:5060', 'udp:127.0.0.1:5060', 4, ?, ?)",
            [(i + 1, f"dlg-{i}@bench", f"sip:user{i:06d}@{DOMAIN}", f"f{i}", f"sip:user{i + 1:06d}@{DOMAIN}",
              f"t{i}", f"sip:user{i:06d}@127.0.0.1:9", f"sip:user{i + 1:06d}@127.0.0.1:9", now, now + 36000)
             for i in range(dialogs)])


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> bytes:
        with self.opener.open(self.base + path, timeout=120) as r:
            return r.read()

    def login(self, user: str, password: str) -> None:
        html = self.get("/login").decode()
        token = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
        body = urllib.parse.urlencode({"csrf": token, "username": user, "password": password}).encode()
        with self.opener.open(self.base + "/login", body, timeout=60) as r:
            assert r.url.endswith("/"), r.url


def timed(client: Client, path: str, n: int) -> tuple[float, float, int]:
    times = []
    size = 0
    for _ in range(n):
        t0 = time.perf_counter()
        size = len(client.get(path))
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], size


def follow(client: Client, path: str, link: str, times: int) -> str:
    """The path of the page ``times`` clicks on link #``link`` away from ``path`` (keyset pages)."""
    for _ in range(times):
        m = re.search(rf'id="{link}" href="([^"]+)"', client.get(path).decode())
        if not m:
            break
        path = m.group(1).replace("&amp;", "&")
    return path


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--cdrs", type=int, default=1_000_000)
    ap.add_argument("--dialogs", type=int, default=1_000)
    ap.add_argument("--online", type=int, default=5_000, help="users registered (for the online-only search)")
    ap.add_argument("-n", type=int, default=50, help="requests per page")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-panel-"))
    db_url = f"sqlite:///{tmp / 'sipd.db'}"
    sip_port, web_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    (tmp / "sipd.toml").write_text(
        f'[server]\nlisten = ["udp:127.0.0.1:{sip_port}"]\nmultidomain = true\n'
        f'[database]\nurl = "{db_url}"\n[mgmt]\nsocket = "{tmp / "mgmt.sock"}"\n[log]\nlevel = "warning"\n')
    sipctl = [sys.executable, "-m", "sipctl", "--config", str(tmp / "sipd.toml")]
    subprocess.run([*sipctl, "db", "create"], check=True, capture_output=True, cwd=REPO)
    t0 = time.monotonic()
    fill(db_url, args.users, args.cdrs, args.dialogs, args.online)
    print(f"filled {args.users} users, {args.cdrs} CDRs, {args.dialogs} dialogs in {time.monotonic() - t0:.0f} s")
    subprocess.run([*sipctl, "web", "admin", "add", "bench", "--password-stdin"], input="bench-password\n",
                   text=True, check=True, capture_output=True, cwd=REPO)
    procs = []
    try:
        sipd = subprocess.Popen([sys.executable, "-m", "sipd", "--config", str(tmp / "sipd.toml")], cwd=REPO,
                                stdout=open(tmp / "sipd.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(sipd)
        panel = subprocess.Popen([*sipctl, "web", "--listen", f"127.0.0.1:{web_port}"], cwd=REPO,
                                 stdout=open(tmp / "panel.log", "wb"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
        procs.append(panel)
        client = Client(f"http://127.0.0.1:{web_port}")
        for _ in range(300):  # bounded: 60 s for both to come up
            try:
                client.login("bench", "bench-password")
                if b"No calls" not in client.get("/dialog") and b"not running" not in client.get("/dialog"):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        shown = len(re.findall(rb'class="stop"|button type="submit" class="danger stop"', client.get("/dialog")))
        print(f"dialogs listed on the Dialog page: {shown}")
        pages = [
            ("Users, first page", "/users"),
            ("Users, search by name", "/users?user=user0099"),
            ("Users, search by alias", "/users?alias=1999"),
            (f"Users, online only ({args.online} online)", "/users?online=1"),
            ("Users, online only, by name", "/users?online=1&user=user0099"),
            ("Aliases, first page", "/aliases"),
            ("Aliases, search by alias", "/aliases?alias=1999"),
            ("CDR Viewer, newest", "/cdr"),
            ("CDR Viewer, by Call-ID", "/cdr?callid=cdr-123456%40bench"),
            ("CDR Viewer, status + time range", "/cdr?status=missed&since=2020-01-01&until=2100-01-01"),
            ("CDR Viewer, caller substring", "/cdr?caller=user000123"),
            (f"Dialog ({args.dialogs} live)", "/dialog"),
        ]
        pages.append(("CDR Viewer, 200 pages deep", follow(client, "/cdr", "older", 200)))
        pages.append(("Users, 150 pages deep", follow(client, "/users", "next", 150)))
        pages.append(("Users online, 50 pages deep", follow(client, "/users?online=1", "next", 50)))
        pages.append(("Aliases, 30 pages deep", follow(client, "/aliases", "next", 30)))
        print(f"{'page':36} {'median ms':>10} {'p99 ms':>8} {'bytes':>9}")
        for name, path in pages:
            med, p99, size = timed(client, path, args.n)
            print(f"{name:36} {med:10.1f} {p99:8.1f} {size:9d}")
        rss_before, hwm_before = vm(panel.pid, "VmRSS"), vm(panel.pid, "VmHWM")
        t0 = time.monotonic()
        with client.opener.open(client.base + "/cdr/export.csv", timeout=600) as r:
            total, lines = 0, 0
            while chunk := r.read(1 << 16):
                total += len(chunk)
                lines += chunk.count(b"\n")
        took = time.monotonic() - t0
        print(f"CSV export: {lines - 1} rows, {total / 1e6:.0f} MB in {took:.1f} s; panel RSS before "
              f"{rss_before} MiB, peak before {hwm_before} MiB, peak after {vm(panel.pid, 'VmHWM')} MiB")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
