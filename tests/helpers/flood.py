"""A distributed flood on loopback and the legitimate endpoint that must get through it (the
benchmark bench/flood.py and the suite's tests/e2e/test_flood.py).

``start_flood`` runs a sender process per 20,000 packets/s: each spreads its packets over its
share of the source addresses (127.1.x.y, one socket each) and sends, at the given rate for a
bounded time, INVITEs from random users of the domain to random users (never ACKed) and REGISTERs
of random users without credentials, every message new (no two alike). ``legit_run`` is one
endpoint registering with digest at a fixed interval, each request retransmitted as Timer A does
and the registration given up ``GIVE_UP`` seconds after its first send.
"""

from __future__ import annotations

import subprocess
import sys
import time

from tests.e2e.security_ua import UA, digest

DOMAIN = "example.test"
LEGIT_HOST = "127.3.0.1"
GIVE_UP = 4.0  # seconds after its first send a registration counts as failed
PER_SENDER = 20000  # packets/s one sender process is asked for

FLOODER = r"""
import random, socket, sys, time
host, port, rate, seconds, domain = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
addrs = sys.argv[6].split(",")
socks = []
for a in addrs:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answers are not read
    s.bind((a, 0)); s.setblocking(False)
    socks.append((s, a, s.getsockname()[1]))
rnd = random.Random()
INV = ("INVITE sip:u%d@{d} SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%x;rport\r\nMax-Forwards: 70\r\n"
       "From: <sip:b%d@{d}>;tag=%x\r\nTo: <sip:u%d@{d}>\r\nCall-ID: %x@%s\r\nCSeq: 1 INVITE\r\n"
       "Contact: <sip:b@%s:%d>\r\nUser-Agent: softphone/1.0\r\nContent-Type: application/sdp\r\nContent-Length: 52\r\n\r\n"
       "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n").replace("{d}", domain)
REG = ("REGISTER sip:{d} SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%x;rport\r\nMax-Forwards: 70\r\n"
       "From: <sip:r%d@{d}>;tag=%x\r\nTo: <sip:r%d@{d}>\r\nCall-ID: %x@%s\r\nCSeq: 1 REGISTER\r\n"
       "Contact: <sip:r@%s:%d>\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n").replace("{d}", domain)
dest = (host, port)
sent = errors = i = 0
start = time.monotonic()
end = start + seconds
n = len(socks)
while True:
    now = time.monotonic()
    if now >= end:
        break
    due = int((now - start) * rate) - sent - errors
    if due <= 0:
        time.sleep(0.002)
        continue
    for _ in range(min(due, 2000)):
        s, a, p = socks[i % n]
        i += 1
        r = rnd.getrandbits(62)
        u = r & 0xFFFFF
        if i & 1:
            m = INV % (u, a, p, r, r >> 40, r, u ^ 1, r, a, a, p)
        else:
            m = REG % (a, p, r, u, r, u, r, a, a, p)
        try:
            s.sendto(m.encode(), dest); sent += 1
        except OSError:
            errors += 1
print(sent, errors)
"""


def sources(n: int) -> list[str]:
    return [f"127.1.{i // 250}.{1 + i % 250}" for i in range(n)]


def start_flood(port: int, rate: float, seconds: float, addrs: list[str], domain: str = DOMAIN) -> list[subprocess.Popen]:
    n = max(1, -(-int(rate) // PER_SENDER))
    return [subprocess.Popen([sys.executable, "-c", FLOODER, "127.0.0.1", str(port), str(rate / n), str(seconds),
                              domain, ",".join(addrs[k::n])], stdout=subprocess.PIPE, text=True) for k in range(n)]


def finish_flood(procs: list[subprocess.Popen], seconds: float) -> tuple[int, int]:
    """Wait (bounded) for the senders; (packets sent, send errors)."""
    sent = errors = 0
    for p in procs:
        try:
            out, _ = p.communicate(timeout=seconds + 30)
            a, b = (out.split() + ["0", "0"])[:2]
            sent, errors = sent + int(a), errors + int(b)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return sent, errors


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))], 1)


def register_once(ua: UA, user: str, password: str) -> float | None:
    """One registration with digest, Timer A retransmissions, given up GIVE_UP s after it began.
    Returns its time in ms, or None."""
    t0 = time.monotonic()
    aor, ruri = f"sip:{user}@{DOMAIN}", f"sip:{DOMAIN}"
    extra = ["Expires: 300"]
    data, branch = ua._request("REGISTER", ruri, aor, aor, extra=extra)
    reply = ua.transaction(data, branch, GIVE_UP)
    if reply is not None and reply.status == 401:
        left = GIVE_UP - (time.monotonic() - t0)
        if left <= 0:
            return None
        auth = digest("REGISTER", ruri, user, password, reply.header("www-authenticate") or "")
        data, branch = ua._request("REGISTER", ruri, aor, aor, extra=extra + [f"Authorization: {auth}"])
        reply = ua.transaction(data, branch, left)
    if reply is None or reply.status != 200:
        return None
    return (time.monotonic() - t0) * 1000


def legit_run(port: int, count: int, interval: float = 0.2, host: str = LEGIT_HOST) -> dict:
    lat: list[float] = []
    with UA(("127.0.0.1", port), host=host, user_agent="legit/1.0") as ua:
        start = time.monotonic()
        for k in range(count):
            pause = start + k * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ms = register_once(ua, "alice", "alicepw")
            if ms is not None:
                lat.append(ms)
    return {"count": count, "ok": len(lat), "ok_pct": round(100 * len(lat) / count, 1),
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}
