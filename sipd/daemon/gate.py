"""The overload gate (sipd/overload.py) wired into one process: its statistics, its probes of the
loop's lag and of the UDP receive queues, and what is done with a request it sheds."""

from __future__ import annotations

import socket
import struct
from typing import Any

from ..overload import PROBE_INTERVAL, PROBE_START, OverloadGate
from ..sip.errors import RemoteProtocolError
from ..sip.message import make_response
from ..sip.parser import parse_message

SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux: the socket's memory, SK_MEMINFO_* (4.6 and later)


def setup(endpoint: Any) -> OverloadGate:
    """Build the gate of one process, register its statistics and start its lag probe."""
    config = endpoint.config
    # the operator's trusted networks are the ban tables' (built first, whether or not automatic
    # banning is on): one list, one answer cache
    gate = OverloadGate(config.overload, trusted=endpoint.state.bans.trusted,
                        transactions=lambda: len(endpoint.layer), max_transactions=config.limits.max_transactions)
    loop = endpoint.loop
    stats = endpoint.state.stats
    gate.c_shed, gate.c_shed_503 = stats.counter("overload:shed_requests"), stats.counter("overload:shed_503")
    for name, fn in gate.stats(loop.time).items():
        stats.gauge(name, fn)
    if config.overload.enabled:
        last = [loop.time()]

        def probe(expected: float) -> None:
            now = loop.time()
            gate.lagged(max(0.0, now - expected), now - last[0], now)
            gate.queue_filled(receive_queue_fill(endpoint.transports), now)
            last[0] = now
            loop.call_at(now + PROBE_INTERVAL, probe, now + PROBE_INTERVAL)

        start = loop.time() + PROBE_START
        loop.call_at(start, probe, start)
    return gate


def receive_queue_fill(transports: Any) -> float:
    """The fullest receive queue of this process's UDP sockets, as a share of its buffer (0 where
    the kernel cannot tell)."""
    worst = 0.0
    for lst in transports.listeners if transports is not None else ():
        transport = getattr(lst, "transport", None)
        if getattr(lst, "proto", "") != "udp" or transport is None:
            continue
        try:
            info = transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
            rmem_alloc, rcvbuf = struct.unpack_from("2I", info)
        except (OSError, AttributeError, struct.error):
            continue
        if rcvbuf:
            worst = max(worst, rmem_alloc / rcvbuf)
    return worst


def shed(endpoint: Any, data: bytes, addr: tuple) -> None:
    """A request the gate refused: dropped, or answered 503 + Retry-After ([overload] reply_503)."""
    gate = endpoint.gate
    if not endpoint.config.overload.reply_503:
        return
    try:
        req = parse_message(data)
        if req.method == "ACK":
            return
        resp = make_response(req, 503, "Service Unavailable", to_tag=endpoint.to_tag(),
                             headers=[("Retry-After", str(endpoint.config.overload.retry_after))])
        endpoint.send_bytes(resp.to_bytes(), addr)
        gate.shed_503 += 1
        gate.c_shed_503.inc()
    except (RemoteProtocolError, ValueError):
        pass  # unparsable: dropped
