"""Presence benchmark: NOTIFY fan-out to 1,000 watchers of one presentity, and memory
per subscription.

    .venv/bin/python bench/bench_presence.py [--watchers 1000] [--sockets 10] [--rounds 5]

Live part: a real sipd (tests/daemon/harness.live_daemon, SQLite, auth off for the watchers) gets N
SUBSCRIBEs for bob@example.test from a few UDP sockets (many dialogs per socket), every initial
NOTIFY answered 200. Then bob PUBLISHes a new document and we time from sending the PUBLISH until
all N NOTIFYs carrying it have arrived (each answered 200 as a phone would). Repeated ``--rounds``
times; the daemon's RSS growth per subscription is read from /proc.

In-process part: ``PresenceState`` alone -- the cost of building N NOTIFYs (headers + merged
document + serialization) without the network, and tracemalloc bytes per subscription.
"""

from __future__ import annotations

import argparse
import select
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.test">'
        '<tuple id="t1"><status><basic>{basic}</basic></status><note>{note}</note></tuple></presence>')


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _ok(data: bytes) -> bytes:
    """200 OK to a NOTIFY (Via/From/To/Call-ID/CSeq copied)."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [h for h in head[1:] if h.split(b":", 1)[0].strip().lower() in (b"via", b"v", b"from", b"f", b"to", b"t",
                                                                          b"call-id", b"i", b"cseq")]
    return b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0", b"", b""])


def live(n: int, nsock: int, rounds: int, settle: float) -> dict:
    from tests.daemon.harness import live_daemon

    with tempfile.TemporaryDirectory() as tmp:
        d = live_daemon(Path(tmp), {"auth": {"invite": False},
                                    "presence": {"max_subscriptions": n + 100}})
        d.start()
        socks = []
        try:
            port = d.port
            for _ in range(nsock):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
                socks.append(s)
            rss0 = _rss(d.proc.pid)

            def pump(want: int, marker: bytes | None, timeout: float) -> tuple[int, int]:
                """Read until ``want`` messages (NOTIFYs containing marker, or 200s) arrived."""
                got = notifies = 0
                end = time.monotonic() + timeout
                while got < want and time.monotonic() < end:
                    r, _, _ = select.select(socks, [], [], 0.5)
                    for s in r:
                        for _ in range(1000):
                            try:
                                data, addr = s.recvfrom(65535)
                            except BlockingIOError:
                                break
                            if data.startswith(b"NOTIFY"):
                                s.sendto(_ok(data), addr)
                                notifies += 1
                                if marker is None or marker in data:
                                    got += 1 if marker is not None else 0
                            elif marker is None and data.startswith(b"SIP/2.0 200"):
                                got += 1
                return got, notifies

            t0 = time.perf_counter()
            for i in range(n):
                s = socks[i % nsock]
                lp = s.getsockname()[1]
                msg = (f"SUBSCRIBE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKs{i}\r\n"
                       f"Max-Forwards: 70\r\nFrom: <sip:w{i}@example.test>;tag=t{i}\r\nTo: <sip:bob@example.test>\r\n"
                       f"Call-ID: bench-{i}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w{i}@127.0.0.1:{lp}>\r\n"
                       f"Event: presence\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n").encode()
                s.sendto(msg, ("127.0.0.1", port))
                if i % 200 == 199:
                    pump(0, None, 0.01)
            answered, _ = pump(n, None, 30)  # the 200s (initial NOTIFYs are answered as they come)
            t_sub = time.perf_counter() - t0
            rss_busy = _rss(d.proc.pid)
            # the SUBSCRIBE server transactions (Timer J) and initial-NOTIFY client transactions
            # (Timer K) hold memory for up to 64*T1 = 32 s on UDP: read RSS again once they are gone
            end = time.monotonic() + settle
            while time.monotonic() < end:
                pump(1, b"\x00never", 0.5)
            rss1 = _rss(d.proc.pid)
            pub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            pub.bind(("127.0.0.1", 0))
            times = []
            for r in range(rounds):
                body = PIDF.format(basic="open" if r % 2 else "closed", note=f"round-{r}").encode()
                lp = pub.getsockname()[1]
                msg = (f"PUBLISH sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKp{r}\r\n"
                       f"Max-Forwards: 70\r\nFrom: <sip:bob@example.test>;tag=p{r}\r\nTo: <sip:bob@example.test>\r\n"
                       f"Call-ID: pub-{r}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\n"
                       f"Content-Type: application/pidf+xml\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
                t0 = time.perf_counter()
                pub.sendto(msg, ("127.0.0.1", port))
                got, _ = pump(n, f"round-{r}".encode(), 30)
                times.append(time.perf_counter() - t0)
                if got < n:
                    print(f"round {r}: only {got}/{n} NOTIFYs", file=sys.stderr)
            pub.close()
            return {"subscribe_all_s": t_sub, "answers": answered, "fanout_s": times,
                    "rss_per_sub": (rss_busy - rss0) / n, "rss_settled_per_sub": (rss1 - rss0) / n, "rss_mb": rss1 / 1e6}
        finally:
            for s in socks:
                s.close()
            d.stop()


def in_process(n: int) -> dict:
    from sipd.config import PresenceSection
    from sipd.services.presence_state import PresenceState
    from sipd.sip.message import make_request

    def sub_req(i: int):
        return make_request("SUBSCRIBE", "sip:bob@example.test", headers=[
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK{i}"), ("From", f"<sip:w{i}@example.test>;tag=t{i}"),
            ("To", "<sip:bob@example.test>"), ("Call-ID", f"c{i}@host"), ("CSeq", "1 SUBSCRIBE"), ("Event", "presence"),
            ("Contact", f"<sip:w{i}@127.0.0.1:5071>"), ("Expires", "3600")])

    reqs = [sub_req(i) for i in range(n)]
    st = PresenceState(PresenceSection(max_subscriptions=n + 1))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for r in reqs:
        st.subscribe(r, 1000.0, local_contact="sip:bob@127.0.0.1:5060", source=("udp", "127.0.0.1", 5071, None))
    st.drain()
    st.dirty_subs.clear()
    st.new_watchers.clear()
    per_sub = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    body = PIDF.format(basic="open", note="x").encode()
    pub = make_request("PUBLISH", "sip:bob@example.test", headers=[
        ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKp"), ("From", "<sip:bob@example.test>;tag=p"),
        ("To", "<sip:bob@example.test>"), ("Call-ID", "p"), ("CSeq", "1 PUBLISH"), ("Event", "presence"),
        ("Content-Type", "application/pidf+xml")], body=body)
    t0 = time.perf_counter()
    st.publish(pub, 1000.0)
    items = st.drain()
    for sub, reason in items:
        headers, b = st.notify_parts(sub, reason, 1000.0)
        headers.insert(0, ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx"))
        make_request("NOTIFY", sub.contact, headers=headers, body=b).to_bytes()
    return {"build_s": time.perf_counter() - t0, "notifies": len(items), "bytes_per_sub": per_sub}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--sockets", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--settle", type=float, default=35.0, help="seconds to wait for transactions to end before the RSS reading")
    args = ap.parse_args()
    ip = in_process(args.watchers)
    print(f"in-process: {ip['notifies']} NOTIFYs built in {ip['build_s'] * 1000:.1f} ms "
          f"({ip['build_s'] / max(ip['notifies'], 1) * 1e6:.1f} us each); "
          f"{ip['bytes_per_sub']:.0f} bytes per subscription (tracemalloc)")
    lv = live(args.watchers, args.sockets, args.rounds, args.settle)
    fan = lv["fanout_s"]
    print(f"live sipd: {args.watchers} SUBSCRIBEs answered in {lv['subscribe_all_s']:.2f} s")
    print(f"live sipd: PUBLISH -> all {args.watchers} NOTIFYs received: median {statistics.median(fan) * 1000:.0f} ms "
          f"(min {min(fan) * 1000:.0f}, max {max(fan) * 1000:.0f}, {len(fan)} rounds)")
    print(f"live sipd: RSS growth per subscription {lv['rss_per_sub']:.0f} bytes with transactions alive, "
          f"{lv['rss_settled_per_sub']:.0f} bytes {args.settle:.0f} s later (RSS {lv['rss_mb']:.1f} MB)")


if __name__ == "__main__":
    main()
