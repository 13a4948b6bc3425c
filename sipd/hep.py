"""HEPv3 (EEP) packets: the encapsulation Homer and other sipcapture collectors read.

Pure code, no sockets: ``encode`` turns one SIP message and where it went into a HEPv3 packet,
``decode`` reads one back (for tests, and for anyone checking what a collector receives).

Layout (sipcapture HEP specification, version 3): the four octets ``HEP3``, a uint16 total length,
then chunks. Every chunk is a uint16 vendor id (0 = generic), a uint16 type, a uint16 length that
includes this 6-octet chunk header, and the value; integers are in network byte order. The generic
chunks used here:

  1 uint8 IP family (2 = IPv4, 10 = IPv6)   2 uint8 IP protocol (17 = UDP, 6 = TCP, also for TLS)
  3/4 IPv4 source/destination address        5/6 IPv6 source/destination address
  7/8 uint16 source/destination port         9/10 uint32 timestamp seconds / microseconds
  11 uint8 protocol type (1 = SIP)           12 uint32 capture agent id
  14 authentication key (the collector's password, optional)   15 the captured payload
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

MAGIC = b"HEP3"
FAMILY_IPV4 = 2
FAMILY_IPV6 = 10
PROTO_UDP = 17
PROTO_TCP = 6
PROTO_TYPE_SIP = 1

# generic chunk types (vendor 0)
IP_FAMILY, IP_PROTO, SRC_IP4, DST_IP4, SRC_IP6, DST_IP6 = 1, 2, 3, 4, 5, 6
SRC_PORT, DST_PORT, TIME_SEC, TIME_USEC, PROTO_TYPE, CAPTURE_ID = 7, 8, 9, 10, 11, 12
AUTH_KEY, PAYLOAD = 14, 15

_CHUNK = struct.Struct("!HHH")
MAX_PACKET = 0xFFFF  # the total length is a uint16


class HepError(ValueError):
    """Bytes that are not a well-formed HEPv3 packet, or a message too large to encapsulate."""


@dataclass(frozen=True, kw_only=True)
class HepPacket:
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    time: float  # seconds since the epoch
    payload: bytes
    ip_proto: int = PROTO_UDP
    proto_type: int = PROTO_TYPE_SIP
    capture_id: int = 0
    auth_key: bytes = b""


def ip_proto_of(transport: str) -> int:
    """The IP protocol number carried in chunk 2 for a SIP transport name (udp, tcp, tls, ws...)."""
    return PROTO_UDP if transport.lower() == "udp" else PROTO_TCP


def _chunk(kind: int, value: bytes) -> bytes:
    return _CHUNK.pack(0, kind, _CHUNK.size + len(value)) + value


def _addresses(src: str, dst: str) -> tuple[int, bytes, bytes]:
    """Family and packed addresses. HEP carries one family for both ends: a mixed pair (an IPv4
    listener answering an IPv4-mapped peer) is written as IPv6 with the IPv4 side mapped."""
    try:
        a, b = ipaddress.ip_address(src.strip("[]")), ipaddress.ip_address(dst.strip("[]"))
    except ValueError as exc:
        raise HepError(f"not an IP address: {exc}") from None
    if a.version == b.version == 4:
        return FAMILY_IPV4, a.packed, b.packed
    a6 = a if a.version == 6 else ipaddress.IPv6Address(f"::ffff:{a}")
    b6 = b if b.version == 6 else ipaddress.IPv6Address(f"::ffff:{b}")
    return FAMILY_IPV6, a6.packed, b6.packed


def encode(p: HepPacket) -> bytes:
    if len(p.payload) + len(p.auth_key) + 2 * _CHUNK.size > MAX_PACKET:
        raise HepError(f"message of {len(p.payload)} bytes does not fit in one HEP packet")
    family, src, dst = _addresses(p.src_ip, p.dst_ip)
    sec = int(p.time)
    usec = min(int(round((p.time - sec) * 1_000_000)), 999_999)
    ip_chunks = (SRC_IP4, DST_IP4) if family == FAMILY_IPV4 else (SRC_IP6, DST_IP6)
    parts = [
        _chunk(IP_FAMILY, bytes([family])),
        _chunk(IP_PROTO, bytes([p.ip_proto])),
        _chunk(ip_chunks[0], src),
        _chunk(ip_chunks[1], dst),
        _chunk(SRC_PORT, struct.pack("!H", p.src_port & 0xFFFF)),
        _chunk(DST_PORT, struct.pack("!H", p.dst_port & 0xFFFF)),
        _chunk(TIME_SEC, struct.pack("!I", sec & 0xFFFFFFFF)),
        _chunk(TIME_USEC, struct.pack("!I", usec)),
        _chunk(PROTO_TYPE, bytes([p.proto_type])),
        _chunk(CAPTURE_ID, struct.pack("!I", p.capture_id & 0xFFFFFFFF)),
    ]
    if p.auth_key:
        parts.append(_chunk(AUTH_KEY, p.auth_key))
    parts.append(_chunk(PAYLOAD, p.payload))
    body = b"".join(parts)
    total = len(MAGIC) + 2 + len(body)
    if total > MAX_PACKET:
        raise HepError(f"message of {len(p.payload)} bytes does not fit in one HEP packet")
    return MAGIC + struct.pack("!H", total) + body


def packet_length(head: bytes) -> int | None:
    """The total length announced by a packet's first 6 octets (for reading HEP over TCP), or None
    while fewer are there."""
    if len(head) < 6:
        return None
    if head[:4] != MAGIC:
        raise HepError("not a HEP3 packet")
    return struct.unpack("!H", head[4:6])[0]


def decode(data: bytes) -> HepPacket:
    total = packet_length(data)
    if total is None or total > len(data) or total < 6:
        raise HepError("truncated HEP3 packet")
    chunks: dict[int, bytes] = {}
    pos = 6
    while pos < total:
        if pos + _CHUNK.size > total:
            raise HepError("truncated chunk header")
        vendor, kind, length = _CHUNK.unpack_from(data, pos)
        if length < _CHUNK.size or pos + length > total:
            raise HepError(f"bad length {length} of chunk {kind}")
        if vendor == 0:
            chunks[kind] = data[pos + _CHUNK.size: pos + length]
        pos += length

    def need(kind: int) -> bytes:
        if kind not in chunks:
            raise HepError(f"chunk {kind} missing")
        return chunks[kind]

    try:
        return _fields(need, chunks)
    except (struct.error, IndexError, ValueError) as exc:
        raise HepError(f"bad chunk value: {exc}") from None


def _fields(need: Callable[[int], bytes], chunks: dict[int, bytes]) -> HepPacket:
    family = need(IP_FAMILY)[0]
    if family == FAMILY_IPV4:
        src, dst = str(ipaddress.IPv4Address(need(SRC_IP4))), str(ipaddress.IPv4Address(need(DST_IP4)))
    elif family == FAMILY_IPV6:
        src, dst = str(ipaddress.IPv6Address(need(SRC_IP6))), str(ipaddress.IPv6Address(need(DST_IP6)))
    else:
        raise HepError(f"unknown IP family {family}")
    sec, usec = struct.unpack("!I", need(TIME_SEC))[0], struct.unpack("!I", need(TIME_USEC))[0]
    return HepPacket(
        src_ip=src, dst_ip=dst,
        src_port=struct.unpack("!H", need(SRC_PORT))[0], dst_port=struct.unpack("!H", need(DST_PORT))[0],
        time=sec + usec / 1_000_000, payload=need(PAYLOAD), ip_proto=need(IP_PROTO)[0],
        proto_type=need(PROTO_TYPE)[0], capture_id=struct.unpack("!I", need(CAPTURE_ID))[0],
        auth_key=chunks.get(AUTH_KEY, b""),
    )
