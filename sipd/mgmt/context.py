"""What a management command may use: ``MgmtContext``, handed to every command as its first argument.

The management interface reaches the running daemon only through this object, which the daemon
builds and fills as its parts start; a command never looks for the daemon itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..state import ServerState


@dataclass(eq=False)
class MgmtContext:
    state: ServerState
    #: sipd.tlsconf.TlsManager when a TLS listener or [tls] certificate is configured, else None.
    tls: Any = None
    #: The transport listeners (``tls_list`` shows the handshake counters of the TLS ones).
    listeners: list[Any] = field(default_factory=list)
    #: The worker pool (sipd/daemon/workers/pool.py) once it started; None with one process.
    workers: Any = None
    #: () -> {"tcp": n, "tls": m}: the connections this process holds (``ps``, ``tls_list``).
    connections: Any = None
