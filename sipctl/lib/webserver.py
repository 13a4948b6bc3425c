"""Starting the control panel: check the listen address and TLS files, then run uvicorn.

The panel is its own process: uvicorn serves the Starlette app from ``sipctl.web``. With a
certificate and key in ``[web]`` it serves HTTPS only and its session cookie is marked Secure.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sipd.sip.uri import format_host

from ..errors import UsageError


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:8080``) -> (host, port). Raises UsageError."""
    raw = text.strip()
    host, sep, port = raw.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{text!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8080 or [::1]:8080")
    return host, int(port)


def check_tls(web: Any) -> tuple[str, str] | None:
    cert, key = web.certificate, web.private_key
    if not cert and not key:
        return None
    if not (cert and key):
        raise UsageError("[web] needs both certificate and private_key for HTTPS",
                         hint="set both, or neither for plain HTTP on loopback")
    for what, path in (("certificate", cert), ("private_key", key)):
        if not os.access(path, os.R_OK):
            raise UsageError(f"[web] {what} {path} is not readable", hint="check the path and its mode")
    return cert, key


def ensure_can_listen(host: str, port: int) -> None:
    """A taken port is one clear line, not uvicorn's log and exit. The probe binds as uvicorn
    will, with SO_REUSEADDR: connections of a panel stopped a moment ago linger in TIME_WAIT on
    its port for a minute, and a restart on the same port must not be refused for them; only a
    program listening there stops it."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            probe.listen(1)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}",
                         hint="choose another with --listen HOST:PORT") from None


def serve(config: Any, create_app: Callable[..., Any], listen: str | None = None) -> None:
    """Run the panel in this process until interrupted; ``create_app(config, secure_cookie=...)``
    builds it (``sipctl.web.app.create_app``, handed in by the command: no web code here)."""
    import uvicorn

    host, port = parse_listen(listen or config.web.listen)
    tls = check_tls(config.web)
    ensure_can_listen(host, port)
    app = create_app(config, secure_cookie=tls is not None)
    scheme = "https" if tls else "http"
    where = format_host(host)
    print(f"sipd control panel on {scheme}://{where}:{port}/ (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None,
                server_header=False)
