"""The one object the daemon's parts share: configuration, caches, statistics.

Everything a service or a management command needs at run time hangs off ``ServerState``; there
are no module globals. The caches are plain in-memory structures filled at start by
``services/store.py`` and reloaded on demand (``reload()`` coroutines).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .services.auth import SubscriberCache
from .services.location import Location
from .services.myself import OwnAddresses
from .services.peers import ClusterPeers
from .services.resolve import is_numeric
from .stats import Statistics

if TYPE_CHECKING:
    from .config import Config
    from .services.hook import RoutingHook
    from .services.store import Store



class DomainCache:
    """Local domains: the ``domain`` table plus ``[server] domains``; lowercase."""

    def __init__(self, configured: list[str]):
        self.configured = {d.lower() for d in configured}
        self.from_db: dict[str, str | None] = {}
        self._all = frozenset(self.configured)
        self.first_name = _first_name(self._all)
        self.reloader: Callable[[], Any] | None = None

    def set(self, rows: dict[str, str | None]) -> None:
        self.from_db = {k.lower(): v for k, v in rows.items()}
        self._all = frozenset(self.configured | set(self.from_db))
        self.first_name = _first_name(self._all)

    def __contains__(self, domain: object) -> bool:
        return isinstance(domain, str) and domain.lower() in self._all

    def __iter__(self):
        return iter(sorted(self._all))

    def __len__(self) -> int:
        return len(self._all)

    def dump(self) -> list[tuple[str, str | None]]:
        return [(d, self.from_db.get(d)) for d in sorted(self._all)]

    async def reload(self) -> None:
        if self.reloader is not None:
            await self.reloader()


def _first_name(domains: frozenset[str]) -> str:
    """The first domain in alphabetical order that is a name, not an IP address ("" if none): the
    realm of single-domain mode when neither [auth] realm nor [server] domains names one. Found
    once per change of the table, not per request (IP literal tests cost microseconds each)."""
    return min((d for d in domains if not is_numeric(d.strip("[]"))), default="")


class AliasCache:
    """dbaliases: (alias_user, alias_domain) -> (user, domain)."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], tuple[str, str]] = {}
        self.reloader: Callable[[], Any] | None = None

    def set(self, table: dict[tuple[str, str], tuple[str, str]]) -> None:
        self.table = {(u, d.lower()): t for (u, d), t in table.items()}

    def get(self, user: str, domain: str) -> tuple[str, str] | None:
        return self.table.get((user, domain.lower()))

    async def reload(self) -> None:
        if self.reloader is not None:
            await self.reloader()


class DialplanCache:
    """The dialplan engine over the rules loaded from the ``dialplan`` table."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.reloader: Callable[[], Any] | None = None

    def set(self, rules: list[Any]) -> None:
        from .services.dialplan import Dialplan

        self.engine = Dialplan(rules)

    def translate(self, dpid: int, text: str) -> tuple[str, Any] | None:
        if self.engine is None:
            return None
        return self.engine.translate(dpid, text)

    def has_dpid(self, dpid: int) -> bool:
        return self.engine is not None and dpid in self.engine.dpids

    async def reload(self) -> None:
        if self.reloader is not None:
            await self.reloader()


class Events:
    """Transaction-level events (``CallEvent``) for the accounting, dialog and presence listeners."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[Any], None]] = []
        self.boundary: Any = None  # the server's sipd.boundary.Boundaries (counts, logs once)

    def subscribe(self, callback: Callable[[Any], None]) -> None:
        self.listeners.append(callback)

    def emit(self, event: Any) -> None:
        for cb in self.listeners:
            try:
                cb(event)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the call
                from .boundary import caught

                caught(self, "event", exc, None, f"event listener {getattr(cb, '__qualname__', cb)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEvent:
    kind: str  # "request" | "response" | "ended"
    request: Any
    response: Any
    tx_key: Any
    now: float


@dataclass(eq=False)
class ServerState:
    config: Config
    stats: Statistics = field(default_factory=Statistics)
    started_at: float = field(default_factory=time.time)
    location: Location = field(default_factory=Location)
    domains: DomainCache = field(default=None)  # type: ignore[assignment]
    dialplan: DialplanCache = field(default_factory=DialplanCache)
    subscribers: SubscriberCache = field(default_factory=SubscriberCache)
    aliases: AliasCache = field(default_factory=AliasCache)
    db: Store | None = None
    events: Events = field(default_factory=Events)
    bans: Any = None  # antiflood (sipd/services/security.py)
    spam: Any = None
    dialogs: Any = None
    presence: Any = None  # sipd/services/presence.py PresenceService when [presence] enabled
    routing_hook: RoutingHook | None = None  # [routing] hook, loaded (sipd/services/hook.py)
    # our listen addresses (and the advertised one): is this URI us? (sipd/services/myself.py)
    myself: OwnAddresses = field(default_factory=OwnAddresses)
    # a registrar worker handling calls: True for an AOR of another process it has no copy of
    not_here: Callable[[str], bool] | None = None
    # [cluster]: this node's id and the other nodes, from the cluster_node table (services/peers.py)
    cluster: ClusterPeers = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.domains is None:
            self.domains = DomainCache(self.config.server.domains)
        if self.cluster is None:
            self.cluster = ClusterPeers(self.config.cluster.node_id)

    def set_log_level(self, level: str) -> None:
        from .logging import set_level

        set_level(level)
