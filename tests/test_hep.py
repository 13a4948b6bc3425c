"""HEPv3 encoding (sipd/hep.py) as pure bytes, and the exporter's UDP and TCP senders on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

import pytest

from sipd import hep
from sipd.config import TraceSection
from sipd.hep_export import HepExporter, parse_collector

REGISTER = (b"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
            b"From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: c1\r\n"
            b"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n")


def _chunks(packet: bytes) -> dict[int, bytes]:
    """An independent reading of the chunk list, to check encode() against the specification."""
    assert packet[:4] == b"HEP3" and struct.unpack("!H", packet[4:6])[0] == len(packet)
    out, pos = {}, 6
    while pos < len(packet):
        vendor, kind, length = struct.unpack("!HHH", packet[pos:pos + 6])
        assert vendor == 0
        out[kind] = packet[pos + 6:pos + length]
        pos += length
    assert pos == len(packet)
    return out


def test_ipv4_packet_has_the_generic_chunks_in_network_order():
    p = hep.HepPacket(src_ip="192.0.2.1", src_port=5070, dst_ip="198.51.100.2", dst_port=5060, time=1700000000.25,
                      payload=REGISTER, capture_id=2001)
    c = _chunks(hep.encode(p))
    assert c[1] == b"\x02" and c[2] == b"\x11"
    assert c[3] == socket.inet_aton("192.0.2.1") and c[4] == socket.inet_aton("198.51.100.2")
    assert c[7] == struct.pack("!H", 5070) and c[8] == struct.pack("!H", 5060)
    assert c[9] == struct.pack("!I", 1700000000) and c[10] == struct.pack("!I", 250000)
    assert c[11] == b"\x01" and c[12] == struct.pack("!I", 2001) and c[15] == REGISTER
    assert 14 not in c and 5 not in c
    assert hep.decode(hep.encode(p)) == p


def test_ipv6_tcp_with_auth_key_round_trips():
    p = hep.HepPacket(src_ip="::1", src_port=5060, dst_ip="2001:db8::7", dst_port=40000, time=1.5, payload=b"x",
                      ip_proto=hep.ip_proto_of("tls"), capture_id=7, auth_key=b"homer")
    data = hep.encode(p)
    c = _chunks(data)
    assert c[1] == b"\x0a" and c[2] == b"\x06" and c[14] == b"homer"
    assert c[5] == socket.inet_pton(socket.AF_INET6, "::1") and 3 not in c
    assert hep.decode(data) == p


def test_mixed_families_are_written_as_ipv6_mapped():
    p = hep.HepPacket(src_ip="127.0.0.1", src_port=1, dst_ip="::1", dst_port=2, time=0.0, payload=b"x")
    assert ipaddress.ip_address(hep.decode(hep.encode(p)).src_ip).ipv4_mapped == ipaddress.ip_address("127.0.0.1")


def test_too_large_and_garbage_are_hep_errors():
    with pytest.raises(hep.HepError):
        hep.encode(hep.HepPacket(src_ip="127.0.0.1", src_port=1, dst_ip="127.0.0.1", dst_port=2, time=0.0,
                                 payload=b"x" * 70000))
    good = hep.encode(hep.HepPacket(src_ip="127.0.0.1", src_port=1, dst_ip="127.0.0.1", dst_port=2, time=0.0,
                                    payload=b"x"))
    for bad in (b"", b"HEP2\x00\x06", good[:-3], good[:6] + b"\x00\x00\x00\x01\x00\x02" + good[12:],
                good.replace(b"\x00\x00\x00\x01\x00\x07\x02", b"\x00\x00\x00\x01\x00\x07\x09")):
        with pytest.raises(hep.HepError):
            hep.decode(bad)


def test_collector_syntax():
    assert parse_collector("udp:127.0.0.1:9060") == ("udp", "127.0.0.1", 9060)
    assert parse_collector("tcp:[::1]:9061") == ("tcp", "::1", 9061)
    for bad in ("127.0.0.1:9060", "sctp:1.2.3.4:9060", "udp:1.2.3.4:70000", "udp::9060"):
        with pytest.raises(ValueError):
            parse_collector(bad)


def test_config_check_names_a_bad_collector(tmp_path):
    import subprocess
    import sys

    conf = tmp_path / "sipd.toml"
    conf.write_text('[trace]\nhep_collector = "homer:9060"\n')
    r = subprocess.run([sys.executable, "-m", "sipd", "--config", str(conf), "--check-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "trace.hep_collector" in r.stdout + r.stderr and "Traceback" not in r.stderr
    conf.write_text('[trace]\nhep_collector = "udp:127.0.0.1:9060"\nhep_capture_id = 2001\n')
    r = subprocess.run([sys.executable, "-m", "sipd", "--config", str(conf), "--check-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_collector_password_is_masked_in_config_show():
    from sipd.config import Config, to_dict

    conf = Config()
    conf.trace.hep_password = "homer-secret"
    assert to_dict(conf)["trace"]["hep_password"] == "***"
    assert to_dict(conf, mask_secrets=False)["trace"]["hep_password"] == "homer-secret"


def test_udp_export_filters_and_never_raises_without_collector():
    async def run():
        coll = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        coll.bind(("127.0.0.1", 0))
        coll.settimeout(5)
        port = coll.getsockname()[1]
        ex = HepExporter(TraceSection(hep_collector=f"udp:127.0.0.1:{port}", hep_capture_id=9, hep_user="alice"))
        await ex.start()
        ex.emit("in", ("udp", "127.0.0.1", 5070, None), ("127.0.0.1", 5060), REGISTER)
        ex.emit("in", ("udp", "127.0.0.1", 5070, None), ("127.0.0.1", 5060), REGISTER.replace(b"alice", b"bob"))
        ex.emit("out", ("udp", "127.0.0.1", 5070, None), ("127.0.0.1", 5060), b"SIP/2.0 401 x\r\nTo: <sip:alice@x>\r\n\r\n")
        got = [hep.decode(coll.recv(65535)) for _ in range(2)]
        coll.close()
        # the collector is gone: sends fail (ICMP port unreachable) and are counted, never raised
        for _ in range(5):
            ex.emit("in", ("udp", "127.0.0.1", 5070, None), ("127.0.0.1", 5060), REGISTER)
            await asyncio.sleep(0.01)
        await ex.close()
        return got, ex

    got, ex = asyncio.run(run())
    assert [(p.src_port, p.dst_port, p.capture_id) for p in got] == [(5070, 5060, 9), (5060, 5070, 9)]
    assert got[0].payload == REGISTER and got[1].payload.startswith(b"SIP/2.0 401")
    assert ex.sent >= 2 and ex.sent + ex.dropped == 7


def test_tcp_export_queues_until_the_collector_comes_and_reconnects():
    async def run():
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nobody listens yet: the exporter keeps its packets and retries
        ex = HepExporter(TraceSection(hep_collector=f"tcp:127.0.0.1:{port}"))
        await ex.start()
        for i in range(3):
            ex.emit("in", ("tcp", "127.0.0.1", 6000 + i, None), ("127.0.0.1", 5060), REGISTER)
        received: list[hep.HepPacket] = []
        first = asyncio.Event()

        async def collector(reader, writer):
            buf = b""
            while chunk := await reader.read(65536):
                buf += chunk
                while (n := hep.packet_length(buf)) is not None and len(buf) >= n:
                    received.append(hep.decode(buf[:n]))
                    buf = buf[n:]
                if len(received) >= 3:
                    first.set()
                    writer.close()  # the collector restarts: the exporter must reconnect
                    return

        await asyncio.sleep(0.3)
        srv = await asyncio.start_server(collector, "127.0.0.1", port)
        await asyncio.wait_for(first.wait(), 30)
        for _ in range(300):  # until the exporter saw the closed connection and reconnected
            ex.emit("in", ("tcp", "127.0.0.1", 7000, None), ("127.0.0.1", 5060), REGISTER)
            if len(received) > 3:
                break
            await asyncio.sleep(0.1)
        srv.close()
        await ex.close()
        return received

    received = asyncio.run(run())
    assert [p.src_port for p in received[:3]] == [6000, 6001, 6002]
    assert all(p.ip_proto == hep.PROTO_TCP and p.payload == REGISTER for p in received)
    assert len(received) > 3 and received[3].src_port == 7000
