#!/usr/bin/env python3
"""Bytes per live transaction in the sans-IO transaction layer, by kind and state.

Usage: .venv/bin/python bench/bench_tx_memory.py [-n 5000] [--cpu] [--soak 100000]

For each case, N transactions are driven through a ``TransactionLayer`` (UDP, so the absorbing
timers D/I/J/K/L/M really keep them alive) into the named state, the way the daemon does it:
messages parsed from bytes, the proxy fields read (which fills the lazy caches), responses built
with ``make_response`` and sent through the layer, events and output drained, and every reference
the caller held dropped. Then, per live transaction:

* ``tracemalloc`` bytes: all memory still allocated by the layer (transactions, keys, kept
  messages and bytes, timer heap entries, dict slots) divided by N;
* GC-tracked objects: ``len(gc.get_objects())`` growth / N (what every full collection walks);
* the timer heap size / N (stale entries included).

Prints a Markdown table and ``RESULT {json}`` on the last line.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipd.sip.layer import LayerConfig, TransactionLayer  # noqa: E402
from sipd.sip.message import make_response  # noqa: E402
from sipd.sip.parser import parse_message  # noqa: E402

SRC = ("udp", "192.0.2.10", 5060, None)
DST = ("udp", "192.0.2.30", 5060, None)

REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK-524287-1---{i:012x}\r\n"
    "Max-Forwards: 70\r\n"
    "Contact: <sip:alice{i}@192.0.2.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-"
    "AABBCCDDEEFF>\";reg-id=1\r\n"
    "To: <sip:alice{i}@example.com>\r\n"
    "From: <sip:alice{i}@example.com>;tag=5a1b{i}\r\n"
    "Call-ID: NjA4ZTYzYzBkMTQ5YmYxNGQ0MDU3NmE3MWIz-{i}\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Expires: 3600\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    "User-Agent: Cisco-CE/9.15\r\n"
    "Supported: replaces, outbound, path\r\n"
    "Content-Length: 0\r\n\r\n"
)

SDP = (
    "v=0\r\no=tandberg 1 2 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nb=AS:6000\r\nt=0 0\r\n"
    "m=audio 2326 RTP/AVP 108 101\r\nb=TIAS:64000\r\na=rtpmap:108 MP4A-LATM/90000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\nm=video 2328 RTP/AVP 97 126\r\n"
    "b=TIAS:6000000\r\na=rtpmap:97 H264/90000\r\na=fmtp:97 profile-level-id=42e016;max-mbps=490000\r\n"
    "a=sendrecv\r\n"
)
INVITE = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-77ab8c93f1-{i};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Room 101\" <sip:room101@example.com>;tag=a73kszlfl{i}\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: 1j9FpLxk3uxtm8tn-{i}@192.0.2.20\r\n"
    "CSeq: 100 INVITE\r\n"
    "Contact: <sip:room101@192.0.2.20:5060;transport=udp>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, UPDATE, INFO, OPTIONS, REFER, NOTIFY\r\n"
    "Supported: replaces, timer\r\n"
    "User-Agent: TANDBERG/529 (TC7.3.6)\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {n}\r\n\r\n{sdp}"
)
ACK = (
    "ACK sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-77ab8c93f1-{i};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Room 101\" <sip:room101@example.com>;tag=a73kszlfl{i}\r\n"
    "To: <sip:bob@example.com>;tag=srv{i}\r\n"
    "Call-ID: 1j9FpLxk3uxtm8tn-{i}@192.0.2.20\r\n"
    "CSeq: 100 ACK\r\n"
    "Content-Length: 0\r\n\r\n"
)


def touch(m):
    """Read what the proxy/registrar reads (fills the lazy header caches as in the daemon)."""
    via = m.via
    return (m.uri.host, via.branch, via.sent_by, m.from_.tag, m.to.tag, m.call_id, m.cseq.seq,
            m.max_forwards, [(c.uri.host, c.params) for c in m.contacts])


def drain(layer):
    while layer.next_event() is not None:
        pass
    layer.messages_to_send(0.0)


# -- server side: a request arrives (bytes), the TU answers ---------------------------------------


def nist(layer, i, status=200):
    layer.receive_datagram(REGISTER.format(i=i).encode(), SRC, 0.0)
    ev = layer.next_event()
    req = ev.request
    touch(req)
    resp = make_response(req, status, to_tag=f"srv{i}", headers=[
        ("Contact", f"<sip:alice{i}@192.0.2.10:5060;transport=udp>;expires=3600"),
        ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"), ("Server", "sipd")])
    layer.send_response(resp, 0.0)


def _invite_bytes(i):
    return INVITE.format(i=i, n=len(SDP), sdp=SDP).encode()


def ist(layer, i, status, ack=False):
    layer.receive_datagram(_invite_bytes(i), SRC, 0.0)
    req = layer.next_event().request
    touch(req)
    layer.send_response(make_response(req, 100), 0.0)
    headers = [("Contact", "<sip:bob@192.0.2.30:5060>"), ("Content-Type", "application/sdp")] if status == 200 else []
    resp = make_response(req, status, to_tag=f"srv{i}", headers=headers)
    if status == 200:
        resp.body = SDP.encode()
    layer.send_response(resp, 0.0)
    if ack:
        layer.receive_datagram(ACK.format(i=i).encode(), SRC, 0.0)


def ist_proceeding(layer, i):
    layer.receive_datagram(_invite_bytes(i), SRC, 0.0)
    req = layer.next_event().request
    touch(req)
    layer.send_response(make_response(req, 100), 0.0)


# -- client side: we send a request (as the proxy forwards), a response comes back ----------------


def _client_request(i, invite):
    if invite:
        req = parse_message(_invite_bytes(i))
    else:
        req = parse_message(REGISTER.format(i=i).encode())
    touch(req)
    req.prepend("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-fwd-{i:08x}")
    req.prepend("Record-Route", "<sip:192.0.2.1;lr>")
    return req


def _response_for(req, status, i):
    resp = make_response(req, status, to_tag=f"uas{i}")
    data = resp.to_bytes()
    return data


def _exchange(layer, i, invite, status):
    """A client transaction (INVITE or not) sent, and a ``status`` response received for it."""
    req = _client_request(i, invite)
    layer.send_request(req, DST, 0.0)
    data = _response_for(req, status, i)
    del req
    layer.receive_datagram(data, DST, 0.0)


CASES = [
    ("NIST Completed (REGISTER 200)", "nist", lambda L, i: nist(L, i)),
    ("IST Completed (INVITE 486)", "ist", lambda L, i: ist(L, i, 486)),
    ("IST Confirmed (486 + ACK)", "ist", lambda L, i: ist(L, i, 486, ack=True)),
    ("IST Accepted (INVITE 200+SDP)", "ist", lambda L, i: ist(L, i, 200)),
    ("IST Proceeding (100 sent)", "ist", ist_proceeding),
    ("ICT Completed (486 recv, ACK sent)", "ict", lambda L, i: _exchange(L, i, True, 486)),
    ("ICT Accepted (200 recv)", "ict", lambda L, i: _exchange(L, i, True, 200)),
    ("ICT Proceeding (180 recv)", "ict", lambda L, i: _exchange(L, i, True, 180)),
    ("NICT Completed (200 recv)", "nict", lambda L, i: _exchange(L, i, False, 200)),
]


def measure(fn, n):
    gc.collect()
    layer = TransactionLayer(LayerConfig(branch_factory=lambda: "z9hG4bK-x", tag_factory=lambda: "t"))
    fn(layer, -1)  # warm caches
    drain(layer)
    gc.collect()
    objs0 = len(gc.get_objects())
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        fn(layer, i)
        drain(layer)
    gc.collect()
    m1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    objs1 = len(gc.get_objects())
    live = len(layer) - 1
    assert live == n, (live, n)
    return {"bytes": round((m1 - m0) / n), "gc_objects": round((objs1 - objs0) / n, 1),
            "heap_entries": round(len(layer._heap) / len(layer), 2)}


def steady_cpu(live: int, n: int, threshold: int | None) -> dict[str, float]:
    """CPU us per REGISTER (datagram in, 200 out, its Timer J later) and the part of it spent in
    the garbage collector, at 1,000 REGISTER per simulated second with Timer J = ``live`` ms: while
    the population grows from 0 to ``live`` ("fill", when every transaction survives and the
    collector runs), then for ``n`` more in the steady state. Thresholds: default, or
    ``threshold`` for generation 0 as the daemon sets it."""
    import time

    layer = TransactionLayer(LayerConfig(t1=live / 1000 / 64, branch_factory=lambda: "z9hG4bK-x",
                                         tag_factory=lambda: "t"))
    old = gc.get_threshold()
    gc_time = [0.0, 0.0]

    def on_gc(phase, info):
        if phase == "start":
            gc_time[1] = time.process_time()
        else:
            gc_time[0] += time.process_time() - gc_time[1]

    def run(first, last):
        gc_time[0] = 0.0
        t0 = time.process_time()
        for i in range(first, last):
            now = i / 1000
            layer.handle_timer(now)
            drain(layer)
            nist_at(layer, i, now)
            drain(layer)
        return (time.process_time() - t0) / (last - first) * 1e6, gc_time[0] / (last - first) * 1e6

    if threshold is not None:
        gc.set_threshold(threshold, old[1], old[2])
    gc.collect()
    gc.callbacks.append(on_gc)
    try:
        fill, fill_gc = run(0, live)
        steady, steady_gc = run(live, live + n)
    finally:
        gc.callbacks.remove(on_gc)
        gc.set_threshold(*old)
    assert abs(len(layer) - live) < live * 0.05 + 2, (len(layer), live)
    return {"fill_us": round(fill, 1), "fill_gc_us": round(fill_gc, 1), "steady_us": round(steady, 1),
            "steady_gc_us": round(steady_gc, 1)}


def soak(live: int, n: int) -> dict:
    """Steady state, mixed kinds: per simulated ms one REGISTER (NIST 200), one INVITE answered
    486 and ACKed (IST), one INVITE sent and answered 200 (ICT, Accepted), with Timer J/H/M keeping
    about ``live`` of each alive; VmRSS, live transactions and heap size sampled 10 times."""
    layer = TransactionLayer(LayerConfig(t1=live / 1000 / 64, branch_factory=lambda: "z9hG4bK-x",
                                         tag_factory=lambda: "t"))
    samples = []
    for i in range(n):
        now = i / 1000
        layer.handle_timer(now)
        drain(layer)
        nist_at(layer, i, now)
        drain(layer)
        layer.receive_datagram(_invite_bytes(i), SRC, now)
        req = layer.next_event().request
        layer.send_response(make_response(req, 486, to_tag=f"srv{i}"), now)
        layer.receive_datagram(ACK.format(i=i).encode(), SRC, now)
        drain(layer)
        creq = _client_request(i, True)
        layer.send_request(creq, DST, now)
        layer.receive_datagram(_response_for(creq, 200, i), DST, now)
        del req, creq
        drain(layer)
        if (i + 1) % (n // 10) == 0:
            rss = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS:"))
            samples.append((i + 1, len(layer), len(layer._heap), round(rss / 1024, 1)))
    return {"samples": samples}


def nist_at(layer, i, now):
    layer.receive_datagram(REGISTER.format(i=i).encode(), SRC, now)
    req = layer.next_event().request
    touch(req)
    resp = make_response(req, 200, to_tag=f"srv{i}", headers=[
        ("Contact", f"<sip:alice{i}@192.0.2.10:5060;transport=udp>;expires=3600"),
        ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"), ("Server", "sipd")])
    layer.send_response(resp, now)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--cpu", action="store_true", help="also: CPU per REGISTER with 5,000 and 32,000 live")
    ap.add_argument("--soak", type=int, default=0, metavar="N",
                    help="also: N steady-state rounds of mixed kinds (3 x 5,000 live), RSS sampled")
    args = ap.parse_args()
    res = {}
    if args.soak:
        r = res["soak"] = soak(5000, args.soak)
        print("| rounds | live transactions | heap entries | VmRSS MiB |\n|---:|---:|---:|---:|")
        for row in r["samples"]:
            print("| " + " | ".join(f"{x:,}" if isinstance(x, int) else str(x) for x in row) + " |")
        print()
    if args.cpu:
        print("| live NIST transactions | gc threshold0 | fill: us/REGISTER | of which GC | steady: us/REGISTER |"
              " of which GC |")
        print("|---:|---:|---:|---:|---:|---:|")
        for live in (5000, 32000):
            for thr in (None, 20000):
                r = res[f"cpu_{live}_{thr or 'default'}"] = steady_cpu(live, 20000, thr)
                print(f"| {live:,} | {thr or gc.get_threshold()[0]} | {r['fill_us']} | {r['fill_gc_us']} | "
                      f"{r['steady_us']} | {r['steady_gc_us']} |")
        print()
    print(f"| case ({args.n:,} live UDP transactions) | bytes/tx | GC objects/tx | heap entries/tx |")
    print("|---|---:|---:|---:|")
    for name, _, fn in CASES:
        r = res[name] = measure(fn, args.n)
        print(f"| {name} | {r['bytes']:,} | {r['gc_objects']} | {r['heap_entries']} |")
    print("RESULT " + json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
