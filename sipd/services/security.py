"""Glue between the pure security services (antiflood, spam) and the daemon.

What the daemon calls:

* ``setup(state)`` once at start: builds ``state.bans`` (Antiflood) and ``state.spam`` (SpamPolicy)
  from the configuration and registers their statistics. Idempotent.
* ``packet_allowed(state, host, now)`` for every UDP datagram *before* parsing, and
  ``connection_allowed(state, host, now)`` when a TCP/TLS connection is accepted.
* ``stages(state)``: the pipeline stages that go right after ``sanity`` (services/stages.py):
  ``antiflood_stage`` (count requests from stream transports; UDP was counted before parsing) and
  ``spam_stage`` (IP-domain spam, scanner User-Agents).
* ``auth_failed(ctx, user, realm, reason)`` from the auth stage when credentials were wrong
  (unknown user or wrong password): logs the fail2ban line, bans at the threshold; returns a
  ``Drop`` once the source is banned.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from .antiflood import Antiflood
from .spam import SpamPolicy

if TYPE_CHECKING:
    from ..state import ServerState
    from .pipeline import Context, Decision

log = logging.getLogger("sipd.security")


def host_addresses() -> list[str]:
    """This host's addresses as the resolver knows them (for wildcard listens); best effort."""
    out: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            out.add(str(info[4][0]).split("%", 1)[0])
    except OSError:
        pass
    return sorted(out)


def setup(state: ServerState) -> None:
    if getattr(state, "bans", None) is None:
        state.bans = Antiflood.from_config(state.config)
    if getattr(state, "spam", None) is None:
        wildcard = any(":0.0.0.0:" in item or ":[::]:" in item for item in state.config.server.listen)
        state.spam = SpamPolicy.from_config(state.config, host_addresses() if wildcard else ())
        state.spam.set_domains(getattr(state, "domains", None) or ())  # (and again at each domain reload)
    stats = getattr(state, "stats", None)
    if stats is not None and hasattr(stats, "gauge"):
        bans, spam = state.bans, state.spam
        for name in bans.stats():
            stats.gauge(name, lambda n=name: bans.stats()[n])
        for name in spam.stats():
            stats.gauge(name, lambda n=name: spam.stats()[n])


def packet_allowed(state: ServerState, host: str, now: float) -> bool:
    bans = state.bans
    return bans is None or bans.check_packet(host, now)


def connection_allowed(state: ServerState, host: str, now: float) -> bool:
    bans = state.bans
    return bans is None or not bans.is_banned(host, now)


def stages(state: ServerState) -> list[Any]:
    """The stages to insert after ``sanity``; none when both services are switched off."""
    setup(state)
    out = []
    if state.bans is not None:
        out.append(antiflood_stage)
    if state.spam is not None and state.config.spam.enabled:
        out.append(spam_stage)
    return out


def antiflood_stage(ctx: Context) -> Decision | None:
    """Count requests arriving on TCP/TLS (UDP datagrams were counted before parsing)."""
    source = ctx.source
    if source[0] == "udp":
        return None
    if ctx.state.bans.check_packet(source[1], ctx.now):
        return None
    from .pipeline import Drop

    return Drop(f"source {source[1]} banned")


def spam_stage(ctx: Context) -> Decision | None:
    source = ctx.source
    if source[1] in ctx.state.cluster:
        return None  # another node of the cluster relays what it has let through already
    verdict = ctx.state.spam.check_request(ctx.request, source[1], source[2])
    if verdict is None:
        return None
    from .pipeline import Drop, Reply

    if verdict.kind == "scanner":
        ctx.state.bans.scanner_seen(source[1], ctx.now)
    if verdict.status is None:
        return Drop(verdict.reason)
    return Reply(verdict.status, None, why=verdict.reason)


def auth_failed(ctx: Context, user: str, realm: str, reason: str) -> Decision | None:
    """Credentials were wrong (``reason``: unknown_user, wrong_password). Drop once banned."""
    source = ctx.source
    bans = ctx.state.bans
    if bans is None:
        return None
    if bans.auth_failed(source[1], ctx.now, port=source[2], user=user, realm=realm, reason=reason):
        from .pipeline import Drop

        return Drop(f"source {source[1]} banned after failed authentication")
    return None
