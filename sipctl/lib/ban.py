"""The ban table of a running sipd, over the management interface (ban_list, ban_add, ban_rm).

Plain functions returning dataclasses; failures raise SipctlErrors with exit codes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..errors import (
    MgmtCommandError,
    MgmtPermission,
    MgmtTimeout,
    MgmtUnavailable,
    NotFoundError,
    UsageError,
)


@dataclass(frozen=True)
class BanEntry:
    ip: str                  # address or CIDR network
    reason: str              # flood | auth | scanner | manual
    expires_in: int | None   # seconds left; None = until removed
    age: int                 # seconds since the ban
    hits: int                # packets dropped because of it
    node: str = ""           # the cluster node that made it, when another one did

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BanEntry:
        return cls(ip=str(d.get("ip", "")), reason=str(d.get("reason", "")),
                   expires_in=d.get("expires_in"), age=int(d.get("age") or 0), hits=int(d.get("hits") or 0),
                   node=str(d.get("node") or ""))

    def as_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "reason": self.reason, "expires_in": self.expires_in, "age": self.age,
                "hits": self.hits, "node": self.node}


def check_target(ip: str) -> str:
    """An address or CIDR network, normalised; UsageError otherwise."""
    text = ip.strip().replace("[", "").replace("]", "")
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise UsageError(f"not an IP address or network: {ip!r}", hint="e.g. 192.0.2.7, 2001:db8::7 or 198.51.100.0/24") from None


def call(config: Any, method: str, params: dict[str, Any] | None = None) -> Any:
    """One management call; connection problems and daemon errors become SipctlErrors."""
    from sipd.mgmt import client
    from sipd.mgmt.protocol import RpcError

    try:
        return client.call(config, method, params or {}, config.mgmt.timeout)
    except client.MgmtConnectError as exc:
        kind = {"permission": MgmtPermission, "timeout": MgmtTimeout}.get(exc.kind, MgmtUnavailable)
        raise kind(exc.message, hint=exc.hint or "is sipd running? (systemctl status sipd)") from None
    except RpcError as exc:
        if exc.code == 404:
            raise NotFoundError(exc.message) from None
        if exc.code in (400, -32602):
            raise UsageError(str(exc.message if exc.data in (None, "") else exc.data)) from None
        if exc.code == 500 and "not activated" in exc.message:
            raise MgmtCommandError(exc.message, hint="set [antiflood] enabled = true") from None
        raise MgmtCommandError(f"sipd answered {exc}") from None


def list_bans(config: Any) -> list[BanEntry]:
    result = call(config, "ban_list")
    items = result.get("Bans", []) if isinstance(result, dict) else result or []
    return [BanEntry.from_dict(d) for d in items]


def add_ban(config: Any, ip: str, seconds: int = 0) -> BanEntry:
    if seconds < 0:
        raise UsageError("--seconds must not be negative", hint="0 bans until removed")
    target = check_target(ip)
    params: dict[str, Any] = {"ip": target}
    if seconds:
        params["seconds"] = seconds
    return BanEntry.from_dict(call(config, "ban_add", params))


def remove_ban(config: Any, ip: str) -> str:
    target = check_target(ip)
    call(config, "ban_rm", {"ip": target})
    return target
