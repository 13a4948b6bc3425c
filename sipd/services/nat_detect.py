"""Is this endpoint behind NAT? (OpenSIPS/Kamailio ``nat_uac_test``; ``[nat] enabled``)

A UDP request comes from an endpoint behind NAT when one of these holds (the nat_uac_test flag
each rule stands for in brackets):

- Its top Via sent-by is an IP address other than the source address of the packet, or its port
  (5060 when absent) is not the source port: a NAT rewrote the packet on its way (2 and 16; the
  RFC 3581 ``received``/``rport`` test). A sent-by host NAME is not compared, only its port.
- Its Contact or its top Via sent-by is a private address (RFC 1918 10/8, 172.16/12,
  192.168/16; RFC 6598 shared address space 100.64/10; link-local 169.254/16) other than the
  source address (1 and 4): the endpoint only knows its address inside the NAT.
- Its Contact or its top Via sent-by is a loopback address while the source is not loopback: the
  endpoint does not know its own address at all.

A Contact with a public address, or a host name, is kept as written even when it differs from the
source: that is a registration on behalf of another endpoint (third-party registration, RFC 3261
§10.2, e.g. a test tool registering its answering machine) or a phone with a second interface,
and the Contact is where it asked to be reached. Requests over TCP/TLS are never "NATed" here:
their endpoints are reached over their own connection.

The registrar marks a NATed binding with the contact flag ``NAT`` (OpenSIPS stores its NAT branch
flag in the location ``cflags`` the same way); calls to a NATed binding go to the address its
REGISTER came from (``received``), calls to any other to its Contact URI.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

NAT_FLAG = "NAT"
#: Named one by one: Python's ``is_private`` also counts the documentation ranges (192.0.2.0/24 ...)
#: and misses RFC 6598.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",  # RFC 6598 shared address space (carrier-grade NAT)
    "169.254.0.0/16", "fe80::/10",  # link-local
    "fc00::/7",  # RFC 4193 unique local
))


@functools.lru_cache(maxsize=4096)
def _address(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address (None: a name, or garbage). Remembered, bounded: every REGISTER and
    call reads its source, Via and Contact hosts, mostly the same few addresses again, and
    ``ipaddress`` parses one in Python (~15 us the pair)."""
    try:
        return ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return None


def is_private(host: str | None) -> bool:
    """RFC 1918, RFC 6598, link-local and IPv6 unique-local addresses (not loopback)."""
    addr = _address(host)
    return addr is not None and any(addr.version == net.version and addr in net for net in PRIVATE_NETWORKS)


def _hides_behind_nat(host: str | None, source_ip: str) -> bool:
    """A Contact / Via host the endpoint cannot be reached at from where its packet came from."""
    addr = _address(host)
    if addr is None or addr == _address(source_ip):
        return False
    if addr.is_loopback:
        src = _address(source_ip)
        return src is None or not src.is_loopback
    return is_private(host)


def request_nated(request: Any, source: tuple) -> bool:
    """True when a UDP request comes from behind NAT (the rules at the top)."""
    if source[0] != "udp":
        return False
    src_ip, src_port = source[1], source[2]
    via = request.via
    via_addr = _address(via.host)
    if via_addr is not None and via_addr != _address(src_ip):
        return True
    if (via.port or 5060) != src_port:
        return True
    # a private or loopback Via sent-by other than the source is caught by the first rule
    contacts = request.contacts
    return bool(contacts) and _hides_behind_nat(contacts[0].uri.host, src_ip)


def is_nated(contact: Any) -> bool:
    """True for a binding the registrar marked as behind NAT (contact flag ``NAT``)."""
    return NAT_FLAG in (contact.cflags or "").split()
