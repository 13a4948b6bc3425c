"""Client side of ``sipctl trace``: read the daemon's trace stream and write pcap files.

The daemon filters (sipd/livetrace.py); this module connects, yields ``TraceEvent``s, and can write them
into a pcap file Wireshark, tshark and sngrep open. Every message is written as a UDP datagram
between the real endpoints (messages that travelled over TCP or TLS included, already decrypted),
so the tools dissect SIP without stream reassembly.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import MgmtPermission, MgmtUnavailable, SipctlError

LINKTYPE_RAW = 101  # raw IPv4/IPv6 packets, version taken from the first nibble


@dataclass(frozen=True)
class TraceEvent:
    time: float
    direction: str          # "in" (received by sipd) or "out" (sent by sipd)
    proto: str
    peer: tuple[str, int]
    local: tuple[str, int] | None
    data: bytes
    dropped: int = 0

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode("latin-1")

    def header(self, *names: str) -> str:
        wanted = {n.lower() for n in names}
        for line in self.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep and name.strip().decode("latin-1").lower() in wanted:
                return value.strip().decode("latin-1")
        return ""


def connect(path: str, filt: dict[str, str], timeout: float = 5.0) -> socket.socket:
    """Open the trace stream with a daemon-side filter. Raises MgmtUnavailable/MgmtPermission."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        s.close()
        raise MgmtUnavailable(f"trace socket {path} does not exist",
                              hint="is sipd running? (sipctl doctor) — the trace socket sits beside [mgmt] socket") from None
    except ConnectionRefusedError:
        s.close()
        raise MgmtUnavailable(f"nothing listens on trace socket {path}", hint="is sipd running?") from None
    except PermissionError:
        s.close()
        raise MgmtPermission(f"permission denied on {path}",
                             hint="run as root or as a member of the group set in [mgmt] socket_group") from None
    s.sendall(json.dumps({k: v for k, v in filt.items() if v}).encode() + b"\n")
    reply = _readline(s)
    if reply is None:
        s.close()
        raise MgmtUnavailable("the daemon closed the trace connection", hint="check sipd's log")
    answer = json.loads(reply)
    if not answer.get("ok"):
        s.close()
        raise SipctlError(f"trace refused: {answer.get('error', 'unknown reason')}")
    return s


def _readline(s: socket.socket, buf: bytearray | None = None) -> bytes | None:
    buf = buf if buf is not None else bytearray()
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def events(s: socket.socket, *, count: int = 0, duration: float = 0.0) -> Iterator[TraceEvent]:
    """Yield events until ``count`` messages, ``duration`` seconds, or the daemon goes away."""
    deadline = time.monotonic() + duration if duration > 0 else None
    buf = bytearray()
    seen = 0
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            s.settimeout(left)
        else:
            s.settimeout(None)
        try:
            line = _readline(s, buf)
        except TimeoutError:
            return
        if line is None:
            raise MgmtUnavailable("sipd went away (trace stream closed)", hint="sipctl doctor")
        ev = _decode(json.loads(line))
        yield ev
        seen += 1
        if count and seen >= count:
            return


def _decode(raw: dict[str, Any]) -> TraceEvent:
    local = tuple(raw["local"]) if raw.get("local") else None
    return TraceEvent(time=float(raw["time"]), direction=raw["dir"], proto=raw["proto"],
                      peer=(raw["peer"][0], int(raw["peer"][1])), local=local,  # type: ignore[arg-type]
                      data=raw["data"].encode("latin-1"), dropped=int(raw.get("dropped", 0)))


# ---------------------------------------------------------------------------------------------
# pcap


class PcapWriter:
    def __init__(self, fh: BinaryIO):
        self.fh = fh
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        self.ident = 0

    def write(self, ev: TraceEvent) -> None:
        local = ev.local or (("::1", 5060) if ":" in ev.peer[0] else ("127.0.0.1", 5060))
        src, dst = (ev.peer, local) if ev.direction == "in" else (local, ev.peer)
        packet = self._packet(src, dst, ev.data)
        sec = int(ev.time)
        usec = int((ev.time - sec) * 1_000_000)
        self.fh.write(struct.pack("<IIII", sec, usec, len(packet), len(packet)))
        self.fh.write(packet)
        self.fh.flush()

    def _packet(self, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
        s_ip, d_ip = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
        payload = payload[:65000]
        udp_len = 8 + len(payload)
        if s_ip.version == 4 and d_ip.version == 4:
            self.ident = (self.ident + 1) & 0xFFFF
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, self.ident, 0, 64, 17, 0,
                              s_ip.packed, d_ip.packed)
            hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
            udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload  # checksum optional on IPv4
            return hdr + udp
        s6 = s_ip.packed if s_ip.version == 6 else ipaddress.IPv6Address(f"::ffff:{s_ip}").packed
        d6 = d_ip.packed if d_ip.version == 6 else ipaddress.IPv6Address(f"::ffff:{d_ip}").packed
        udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload
        pseudo = s6 + d6 + struct.pack("!IxxxB", udp_len, 17)
        csum = _checksum(pseudo + udp) or 0xFFFF
        udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
        return struct.pack("!IHBB16s16s", 0x60000000, udp_len, 17, 64, s6, d6) + udp


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
