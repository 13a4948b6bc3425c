"""Benchmark the SIP core on one core: parse + read proxy headers, forward-serialise, digest.

Usage: taskset -c 1 .venv/bin/python bench/bench_parser.py [-n 20000] [--repeat 5] [--profile]

Each figure is the median of ``--repeat`` runs of ``-n`` iterations, measured in *process CPU
time* (so time the scheduler gives to other processes on a shared machine is not counted); the
best run and the wall-clock median are shown too, with the load average at the start.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import statistics
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipd.sip import auth  # noqa: E402
from sipd.sip.layer import LayerConfig, RequestReceived, TransactionLayer  # noqa: E402
from sipd.sip.message import make_response  # noqa: E402
from sipd.sip.parser import parse_message  # noqa: E402

REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK-524287-1---a3c5b1e0f2d4\r\n"
    "Max-Forwards: 70\r\n"
    "Contact: <sip:alice@192.0.2.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1\r\n"
    "To: <sip:alice@example.com>\r\n"
    "From: <sip:alice@example.com>;tag=5a1b2c3d\r\n"
    "Call-ID: NjA4ZTYzYzBkMTQ5YmYxNGQ0MDU3NmE3MWIzNjA0YjQ\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Expires: 3600\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    "User-Agent: Cisco-CE/9.15\r\n"
    "Supported: replaces, outbound, path\r\n"
    "Content-Length: 0\r\n\r\n"
).encode()

SDP = (
    "v=0\r\no=tandberg 1 2 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nb=AS:6000\r\nt=0 0\r\n"
    "m=audio 2326 RTP/AVP 108 101\r\nb=TIAS:64000\r\na=rtpmap:108 MP4A-LATM/90000\r\n"
    "a=fmtp:108 profile-level-id=24;object=23;bitrate=64000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=sendrecv\r\nm=video 2328 RTP/AVP 97 126\r\nb=TIAS:6000000\r\na=rtpmap:97 H264/90000\r\n"
    "a=fmtp:97 profile-level-id=42e016;max-mbps=490000;max-fs=8160;packetization-mode=1\r\n"
    "a=rtpmap:126 H265/90000\r\na=rtcp-fb:* nack pli\r\na=rtcp-fb:* ccm fir\r\n"
    "a=content:main\r\na=label:11\r\na=sendrecv\r\n"
    "m=application 5070 UDP/BFCP *\r\na=floorctrl:c-s\r\na=confid:1\r\na=userid:2\r\n"
    "a=floorid:2 mstrm:12\r\na=setup:actpass\r\na=connection:new\r\n"
)
INVITE = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-77ab8c93f1;rport\r\n"
    "Route: <sip:proxy.example.com;lr>\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Room 101\" <sip:room101@example.com>;tag=a73kszlfl\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.20\r\n"
    "CSeq: 100 INVITE\r\n"
    "Contact: <sip:room101@192.0.2.20:5060;transport=udp>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, UPDATE, INFO, OPTIONS, REFER, NOTIFY\r\n"
    "Supported: replaces, timer\r\n"
    "P-Asserted-Identity: \"Room 101\" <sip:room101@example.com>\r\n"
    "Session-Expires: 1800\r\n"
    "User-Agent: TANDBERG/529 (TC7.3.6)\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
).encode()


def read_proxy_headers(m):
    return (m.vias, m.from_, m.to, m.call_id, m.cseq, m.max_forwards, m.routes, m.contacts)


def read_proxy_fields(m):
    """What a proxy/registrar then looks at inside them (URIs and params are built lazily)."""
    via = m.via
    return (m.uri.host, via.branch, via.sent_by, m.from_.tag, m.to.tag, m.call_id, m.cseq.seq,
            m.max_forwards, [r.uri.params for r in m.routes], [(c.uri.host, c.params) for c in m.contacts])


def bench(name, fn, n, repeat, reset=None):
    fn()
    cpu, wall = [], []
    for _ in range(repeat):
        if reset is not None:
            reset()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        cpu.append(n / (time.process_time() - c0))
        wall.append(n / (time.perf_counter() - w0))
    med = statistics.median(cpu)
    print(f"{name:<42} {med:>9,.0f} /s ({1e6 / med:6.1f} us)  best {max(cpu):>8,.0f}"
          f"  wall-median {statistics.median(wall):>8,.0f}")
    return med


def forward():
    m = parse_message(INVITE)
    m.prepend("Via", "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-fwd-1")
    m.prepend("Record-Route", "<sip:198.51.100.1;lr>")
    m.set("Max-Forwards", str(m.max_forwards - 1))
    m.remove_first("Route")
    m.uri = "sip:bob@192.0.2.30:5060"
    return m.to_bytes()


SECRET = b"s" * 32
REQ = parse_message(REGISTER)
NONCE = auth.make_nonce(SECRET, 1000.0, b"0123456789abcdef")
HA1 = auth.ha1_md5("alice", "example.com", "secret")
_ha2 = auth._h("MD5", "REGISTER:sip:example.com")
_resp = auth._h("MD5", f"{HA1}:{NONCE}:00000001:abc:auth:{_ha2}")
AUTHZ = (f'Digest username="alice", realm="example.com", nonce="{NONCE}", uri="sip:example.com", '
         f'response="{_resp}", algorithm=MD5, cnonce="abc", qop=auth, nc=00000001')


def challenge():
    nonce = auth.make_nonce(SECRET, 1000.0, b"0123456789abcdef")
    r = make_response(REQ, 401, to_tag="srv1", headers=[("WWW-Authenticate", auth.challenge("example.com", nonce))])
    return r.to_bytes()


def verify():
    c = auth.parse_credentials(AUTHZ)
    assert auth.check_nonce(SECRET, c.nonce, 1010.0, 300) == "ok"
    assert auth.verify(c, "REGISTER", HA1)


def layer_bench(n: int):
    """A fresh INVITE server transaction per call: receive, event out, 100 Trying through it."""
    layer = TransactionLayer(LayerConfig(branch_factory=lambda: "z9hG4bKb", tag_factory=lambda: "t"))
    addr = ("udp", "192.0.2.20", 5060, None)
    datagrams = [INVITE.replace(b"z9hG4bK-77ab8c93f1", f"z9hG4bK-{i:010d}".encode()) for i in range(n + 1)]
    it = iter(datagrams)

    def one():
        layer.receive_datagram(next(it), addr, 1.0)
        ev = layer.next_event()
        assert isinstance(ev, RequestReceived)
        layer.send_response(make_response(ev.request, 100), 1.0)
        layer.messages_to_send(1.0)

    def reset():
        nonlocal it, layer
        it = iter(datagrams)
        layer = TransactionLayer(LayerConfig(branch_factory=lambda: "z9hG4bKb", tag_factory=lambda: "t"))

    return one, reset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n, r = args.n, args.repeat
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"Python {sys.version.split()[0]}; REGISTER {len(REGISTER)} B, INVITE {len(INVITE)} B; "
          f"cpus {cpus}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"median of {r} x {n} (CPU time)")
    bench("parse REGISTER + read proxy headers", lambda: read_proxy_headers(parse_message(REGISTER)), n, r)
    bench("parse INVITE (SDP) + read proxy headers", lambda: read_proxy_headers(parse_message(INVITE)), n, r)
    bench("parse INVITE only", lambda: parse_message(INVITE), n, r)
    bench("parse REGISTER + read fields (URIs, tags)", lambda: read_proxy_fields(parse_message(REGISTER)), n, r)
    bench("parse INVITE + read fields (URIs, tags)", lambda: read_proxy_fields(parse_message(INVITE)), n, r)
    bench("parse + forward-serialise INVITE", forward, n, r)
    one, reset = layer_bench(n)
    bench("layer: INVITE in (new tx) + 100 Trying out", one, n, r, reset)
    bench("build 401 challenge (nonce + response)", challenge, n, r)
    bench("verify digest response (parse+nonce+MD5)", verify, n, r)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20000):
            read_proxy_headers(parse_message(INVITE))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
