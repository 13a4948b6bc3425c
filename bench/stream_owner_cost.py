#!/usr/bin/env python3
"""What the owner of a TCP/TLS connection spends on a message another process serves.

    bench/stream_owner_cost.py

Routed by its parsed form, the owner parsed the message and serialised it again to hand it over
(and the other process parsed it once more); routed by its bytes, it frames it and reads its owner
from them (sipd/daemon/workers/affinity.py). Prints each part's CPU time per message for a
REGISTER with credentials and an INVITE with SDP: the lowest of 15 rounds of 2,000 (the lowest is
what a busy machine's neighbours least add to).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipd.daemon.workers.affinity import call_id_of, owner_of_call, owner_of_datagram  # noqa: E402
from sipd.sip.framing import StreamParser  # noqa: E402
from sipd.sip.parser import parse_message  # noqa: E402

REG = (b"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5071;branch=z9hG4bK-1-2;rport\r\n"
       b"From: <sip:user0001@example.test>;tag=1a2b\r\nTo: <sip:user0001@example.test>\r\nCall-ID: 1-2@127.0.0.1\r\n"
       b"CSeq: 2 REGISTER\r\nContact: <sip:user0001@127.0.0.1:5071;transport=tcp>\r\nMax-Forwards: 70\r\nExpires: 3600\r\n"
       b'Authorization: Digest username="user0001",realm="example.test",nonce="abcdef0123456789abcdef0123456789",'
       b'uri="sip:example.test",response="0123456789abcdef0123456789abcdef",algorithm=MD5\r\n'
       b"User-Agent: SIPp\r\nContent-Length: 0\r\n\r\n")
SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
INV = (b"INVITE sip:callee@example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5071;branch=z9hG4bK-1-3\r\n"
       b"From: sipp <sip:caller@example.test>;tag=1\r\nTo: <sip:callee@example.test>\r\nCall-ID: 1-3@127.0.0.1\r\n"
       b"CSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:5071;transport=tcp>\r\nMax-Forwards: 70\r\n"
       b"Subject: Performance Test\r\n"
       b"Content-Type: application/sdp\r\nContent-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP)



def best(fn, n: int = 2000, rounds: int = 15) -> float:
    out = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(n):
            fn()
        out.append((time.process_time() - t) / n * 1e6)
    return min(out)



for name, data in (("REGISTER with credentials", REG), ("INVITE with SDP", INV)):
    old = best(lambda: parse_message(data).to_bytes())
    frame = best(lambda: StreamParser().frames(data))
    route = best(lambda: owner_of_datagram(data, 2) if data[:9] == b"REGISTER "
                 else owner_of_call(call_id_of(data), 2))
    print(f"{name}: parse + serialise {old:.1f} us; frame {frame:.1f} us; owner from bytes {route:.1f} us")
