"""A live sipd exporting its traffic as HEPv3 ([trace] hep_collector) to a collector socket on loopback:
a REGISTER exchange arrives decoded with its addresses, ports, capture id and the messages themselves,
filtered by user; over UDP from one process, and over TCP with worker processes."""

from __future__ import annotations

import socket
import time

import pytest

from sipd import hep
from sipd.sip.parser import parse_message
from tests.conftest import free_port
from tests.daemon.harness import UA, add_subscriber, live_daemon


def _wait(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _first_line(p: hep.HepPacket) -> str:
    return p.payload.split(b"\r\n", 1)[0].decode()


class _Collector:
    """HEP packets received on one loopback socket (UDP datagrams, or one TCP stream read by length)."""

    def __init__(self, transport: str):
        self.transport = transport
        self.port = free_port()
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", self.port))
        if transport == "tcp":
            self.sock.listen(4)
        self.conn: socket.socket | None = None
        self.buf = b""
        self.packets: list[hep.HepPacket] = []

    def collect(self, want: int, timeout: float = 20.0) -> list[hep.HepPacket]:
        end = time.monotonic() + timeout
        while len(self.packets) < want and time.monotonic() < end:
            self.sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                if self.transport == "udp":
                    self.packets.append(hep.decode(self.sock.recv(65535)))
                    continue
                if self.conn is None:
                    self.conn, _ = self.sock.accept()
                self.conn.settimeout(max(0.05, end - time.monotonic()))
                self.buf += self.conn.recv(65536)
            except (TimeoutError, socket.timeout):
                break
            while (n := hep.packet_length(self.buf)) is not None and len(self.buf) >= n:
                self.packets.append(hep.decode(self.buf[:n]))
                self.buf = self.buf[n:]
        return self.packets

    def close(self) -> None:
        for s in (self.conn, self.sock):
            if s is not None:
                s.close()


@pytest.mark.parametrize("transport,workers", [("udp", 1), ("tcp", 2)])
def test_register_exchange_reaches_the_collector(tmp_path, transport, workers):
    coll = _Collector(transport)
    d = live_daemon(tmp_path, {"server": {"workers": workers},
                          "trace": {"hep_collector": f"{transport}:127.0.0.1:{coll.port}", "hep_capture_id": 2001,
                                    "hep_user": "alice", "hep_password": "homer-key"}})
    add_subscriber(d.db_url, "alice", "secret")
    add_subscriber(d.db_url, "bob", "hunter2")
    try:
        d.start()
        if workers > 1:  # the workers pass their traffic to main once its housekeeping tick told them
            def passing() -> bool:
                procs = d.mi("ps")["Processes"][1:]
                return len(procs) == workers - 1 and all("passing REGISTERs" in p["Type"] for p in procs)

            assert _wait(passing, 20), d.mi("ps")
            time.sleep(0.3)  # main's word reaches the workers over their socketpair
        with UA(d.port, "bob", password="hunter2") as bob:  # traffic the filter keeps out
            assert bob.register(300).status == 200
        with UA(d.port, "alice", password="secret") as alice:
            assert alice.register(300).status == 200
            ua_port = alice.port
        packets = coll.collect(4)
        time.sleep(0.3)
        packets = coll.collect(5, timeout=0.5)  # nothing more may come (bob's exchange is filtered out)
    finally:
        coll.close()
        d.stop()
    assert "Traceback" not in d.log_text(), d.log_text()
    assert [_first_line(p).split()[0 if i % 2 == 0 else 1] for i, p in enumerate(packets)] == \
        ["REGISTER", "401", "REGISTER", "200"], [_first_line(p) for p in packets]
    now = time.time()
    for i, p in enumerate(packets):
        inbound = i % 2 == 0
        assert (p.src_port, p.dst_port) == ((ua_port, d.port) if inbound else (d.port, ua_port))
        assert p.src_ip == p.dst_ip == "127.0.0.1"
        assert p.ip_proto == hep.PROTO_UDP and p.proto_type == hep.PROTO_TYPE_SIP  # the SIP leg was UDP
        assert p.capture_id == 2001 and p.auth_key == b"homer-key"
        assert now - 120 < p.time <= now + 1
        msg = parse_message(p.payload)
        assert "alice@" in msg.get("From") and msg.get("CSeq").endswith("REGISTER")
    assert "Authorization" in packets[2].payload.decode() and "WWW-Authenticate" in packets[1].payload.decode()
    assert len({parse_message(p.payload).get("Call-ID") for p in packets}) == 1
