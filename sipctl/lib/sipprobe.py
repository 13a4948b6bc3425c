"""One SIP OPTIONS to a server over UDP, TCP or TLS, for ``sipctl dns check --probe`` and ``sipctl doctor``.

:func:`probe_options` sends the request, waits (bounded in time and in reads) for the final answer
and returns a :class:`ProbeResult`: status, reason and round-trip time, or what went wrong. Network
problems are results, never exceptions. Over TLS the server's certificate comes back as DER,
fetched without verification, so that a self-signed or wrong one can still be reported on.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import time
from dataclasses import dataclass

#: Largest SIP response we read when probing; OPTIONS answers are far smaller.
MAX_PROBE_RESPONSE = 65536


@dataclass(kw_only=True)
class ProbeResult:
    status: int | None = None
    reason: str = ""
    rtt_ms: float | None = None
    error: str = ""
    cert_der: bytes | None = None


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _options(transport: str, local: tuple[str, int], domain: str) -> tuple[bytes, str]:
    call_id = f"{secrets.token_hex(8)}@sipctl"
    scheme = "sips" if transport == "tls" else "sip"
    headers = [
        f"OPTIONS {scheme}:{domain} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {hostport(*local)};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: <sip:dns-check@{domain}>;tag={secrets.token_hex(4)}",
        f"To: <{scheme}:{domain}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "Accept: application/sdp",
        "User-Agent: sipctl dns check",
        "Content-Length: 0",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode(), call_id


def _parse_status(data: bytes, call_id: str) -> tuple[int, str] | None:
    """Status and reason of a response for our Call-ID; None for anything else."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        return None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("call-id", "i") and value.strip() != call_id:
            return None
    return int(parts[1]), parts[2] if len(parts) > 2 else ""


def probe_options(transport: str, host: str, port: int, domain: str, timeout: float) -> ProbeResult:
    """Send one OPTIONS to host:port over ``transport`` and wait for the final answer.

    Never raises for network problems: they come back in ``ProbeResult.error``. For TLS the
    certificate is fetched without verification (so a self-signed one can still be reported on)
    and returned as DER.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    try:
        if transport == "udp":
            return _probe_udp(family, host, port, domain, deadline)
        return _probe_stream(transport, host, port, domain, timeout)
    except TimeoutError:
        return ProbeResult(error=f"no answer within {timeout:g}s")
    except ConnectionRefusedError:  # TCP RST, or ICMP port unreachable on a connected UDP socket
        return ProbeResult(error="port unreachable" if transport == "udp" else "connection refused")
    except ssl.SSLError as exc:
        return ProbeResult(error=f"TLS handshake failed: {exc.reason or exc}")
    except OSError as exc:
        return ProbeResult(error=exc.strerror or str(exc))


def _probe_udp(family: int, host: str, port: int, domain: str, deadline: float) -> ProbeResult:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        local = s.getsockname()[:2]
        msg, call_id = _options("udp", local, domain)
        started = time.perf_counter()
        s.send(msg)
        for _ in range(100):  # bounded: provisional answers and strays are skipped
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            s.settimeout(remaining)
            data = s.recv(MAX_PROBE_RESPONSE)
            status = _parse_status(data, call_id)
            if status and status[0] >= 200:
                return ProbeResult(status=status[0], reason=status[1], rtt_ms=(time.perf_counter() - started) * 1000)
        raise TimeoutError


def _probe_stream(transport: str, host: str, port: int, domain: str, timeout: float) -> ProbeResult:
    deadline = time.monotonic() + timeout
    raw = socket.create_connection((host, port), timeout=timeout)
    cert: bytes | None = None
    sock: socket.socket = raw
    try:
        if transport == "tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # we judge the certificate ourselves (RFC 5922)
            sock = ctx.wrap_socket(raw, server_hostname=domain)
            cert = sock.getpeercert(binary_form=True)
        local = sock.getsockname()[:2]
        msg, call_id = _options(transport, local, domain)
        started = time.perf_counter()
        sock.sendall(msg)
        buf = b""
        for _ in range(1000):  # bounded in reads as well as time
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(4096)
            if not chunk:
                return ProbeResult(error="connection closed without an answer", cert_der=cert)
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l") and value.strip().isdigit():
                        length = int(value.strip())
                if len(rest) < length:
                    break
                buf = rest[length:]
                status = _parse_status(head + b"\r\n\r\n", call_id)
                if status and status[0] >= 200:
                    return ProbeResult(status=status[0], reason=status[1],
                                       rtt_ms=(time.perf_counter() - started) * 1000, cert_der=cert)
            if len(buf) > MAX_PROBE_RESPONSE:
                return ProbeResult(error="answer too large", cert_der=cert)
        raise TimeoutError
    except TimeoutError:
        return ProbeResult(error=f"no answer within {timeout:g}s", cert_der=cert)
    finally:
        sock.close()
        raw.close()
