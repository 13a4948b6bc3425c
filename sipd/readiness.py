"""Start-up readiness: "sipd ready" (and systemd's READY=1) means every listener answers.

Before sipd says it is ready it connects to each of its own stream listeners from inside the
running event loop: a TCP listener must accept, a TLS listener must complete a handshake (with
the certificate it will serve), each within ``PROBE_TIMEOUT`` seconds. A UDP listener is ready
once its socket is bound (the kernel queues datagrams from then on). So the first TLS request
after "ready" meets a listener whose accept path and TLS context have already served one
handshake, and a listener that cannot serve stops the start with one line instead of leaving
clients to time out.

The probes carry no SIP message: they count as connections, never as requests.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from .errors import StartupError

logger = logging.getLogger("sipd")

PROBE_TIMEOUT = 10.0  # seconds for one listener to accept (and handshake) on a loaded machine


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we talk to ourselves: the handshake is what is checked
    return ctx


def _connect_host(host: str) -> str:
    """Where to reach a listener bound to ``host`` (the wildcard addresses through loopback)."""
    host = host.strip("[]")
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


async def probe(listener: Any, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when ``listener`` answers; else what went wrong, for the operator."""
    if listener.proto == "udp":
        return None
    ssl_ctx = _client_context() if listener.proto == "tls" else None
    try:
        transport, _ = await asyncio.wait_for(
            asyncio.get_running_loop().create_connection(
                asyncio.Protocol, _connect_host(listener.host), listener.port, ssl=ssl_ctx,
                server_hostname="" if ssl_ctx else None),
            timeout)
    except asyncio.TimeoutError:
        return f"{listener.name} did not {'complete a TLS handshake' if ssl_ctx else 'accept'} within {timeout:g} s"
    except ssl.SSLError:
        return None  # a TLS alert is an answer (a listener that demands a client certificate ends here)
    except OSError as exc:
        return f"{listener.name} does not answer: {exc}"
    transport.close()
    return None


async def check_listeners(listeners: Any, timeout: float = PROBE_TIMEOUT) -> None:
    """Probe every listener at once; raise StartupError naming each that fails."""
    listeners = list(listeners)
    problems = [p for p in await asyncio.gather(*(probe(lst, timeout) for lst in listeners)) if p]
    if problems:
        raise StartupError("not ready: " + "; ".join(problems))
    logger.debug("readiness: %d listeners answer", len(listeners))
