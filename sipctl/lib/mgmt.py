"""Talking to a running sipd: one call, errors turned into sipctl errors with hints and exit codes.

The transport is the Unix socket unless ``$SIPCTL_MGMT_TRANSPORT`` says ``fifo`` or ``http``.
No Typer or rich here.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from typing import Any

from ..errors import (
    ExitStatus,
    MgmtCommandError,
    MgmtPermission,
    MgmtTimeout,
    MgmtUnavailable,
    NotFoundError,
    SipctlError,
    UsageError,
)

TRANSPORT_ENV = "SIPCTL_MGMT_TRANSPORT"


def transport() -> str:
    value = os.environ.get(TRANSPORT_ENV, "socket").strip().lower() or "socket"
    if value not in ("socket", "fifo", "http"):
        raise UsageError(f"${TRANSPORT_ENV}={value!r} is not a transport", hint="socket, fifo or http")
    return value


def call(config: Any, method: str, params: list[Any] | dict[str, Any] | None = None,
         timeout: float | None = None) -> Any:
    """Run management command ``method`` on the daemon and return its result.

    Raises:
        MgmtUnavailable (daemon not running, socket missing), MgmtPermission, MgmtTimeout,
        SipctlError with MGMT_UNKNOWN_COMMAND / MGMT_BAD_PARAMS, NotFoundError (404 replies),
        UsageError (400 replies), MgmtCommandError (anything else the daemon refused).
    """
    from sipd.mgmt import client, protocol

    try:
        return client.call(config, method, params, timeout, transport=transport())
    except client.MgmtConnectError as exc:
        kind = {"permission": MgmtPermission, "timeout": MgmtTimeout}.get(exc.kind, MgmtUnavailable)
        raise kind(exc.message, hint=exc.hint) from None
    except protocol.RpcError as exc:
        if exc.code == protocol.METHOD_NOT_FOUND:
            raise SipctlError(f"sipd has no management command {method!r}", hint="sipctl mi which lists them",
                              exit_code=ExitStatus.MGMT_UNKNOWN_COMMAND) from None
        if exc.code == protocol.INVALID_PARAMS:
            raise SipctlError(f"{method}: wrong parameters ({exc.data or exc.message})",
                              hint=f"sipctl mi which {method} shows what it takes",
                              exit_code=ExitStatus.MGMT_BAD_PARAMS) from None
        hint = refusal_hint(method, exc.message)
        if exc.code == 404:
            raise NotFoundError(exc.message, hint=hint) from None
        if exc.code == 400:
            raise UsageError(exc.message, hint=hint) from None
        raise MgmtCommandError(f"sipd answered {exc}", hint=hint) from None


#: What to do when sipd refuses a command, by the start of its (OpenSIPS-worded) reason.
_REFUSAL_HINTS: list[tuple[str, str]] = [
    ("Statistics Not Found", "sipctl stats show all lists the statistics sipd keeps (names like core:rcv_requests)"),
    ("AOR not found", "sipctl ul show lists the registered AORs; write the AOR as user@domain"),
    ("Contact not found", "sipctl ul show AOR lists that AOR's contacts"),
    ("Table not found", "the location table is called location"),
    ("command not activated", "the feature is off in sipd.toml: turn it on (sipctl config show), then restart sipd"),
]


def refusal_hint(method: str, reason: str) -> str:
    """The hint for a refusal of ``method`` with ``reason``; a generic one for reasons not listed."""
    for start, hint in _REFUSAL_HINTS:
        if reason.startswith(start):
            return hint
    return f"sipctl mi which {method} shows what the command takes; sipd's log may say more"


def parse_mi_args(args: list[str]) -> list[Any] | dict[str, Any]:
    """``sipctl mi`` arguments: all ``k=v`` -> named params, else positional (OpenSIPS CLI rule).
    A value written as JSON (``'["a","b"]'``, ``3``) is sent as that JSON value."""
    import json

    def value(text: str) -> Any:
        if text[:1] in "[{":
            try:
                return json.loads(text)
            except ValueError:
                return text
        return text

    named = [a for a in args if "=" in a and a.split("=", 1)[0].isidentifier()]
    if args and len(named) == len(args):
        return {k: value(v) for k, v in (a.split("=", 1) for a in args)}
    if named and len(named) != len(args):
        raise UsageError("mix of named (k=v) and positional parameters",
                         hint="use either all k=v or all positional values")
    return [value(a) for a in args]


def command_names(config: Any) -> list[str]:
    """Names for shell completion (empty when the daemon cannot be asked)."""
    try:
        names = call(config, "which", timeout=1.0)
    except SipctlError:
        return []
    return [n for n in names if isinstance(n, str)]


def ul_dump_pages(config: Any, *, brief: bool = False, page: int = 5000) -> Iterator[dict[str, Any]]:
    """Every AOR of ul_dump, fetched ``page`` AORs at a time (bounded memory on both sides)."""
    after: str | None = None
    for _ in range(1_000_000):  # bounded: each page advances the cursor
        params: dict[str, Any] = {"limit": page}
        if brief:
            params["brief"] = "1"
        if after:
            params["after"] = after
        result = call(config, "ul_dump", params)
        for domain in result.get("Domains", []):
            yield from domain.get("AORs", [])
        after = result.get("Next")
        if not after:
            return


def online_aors(config: Any) -> set[str]:
    """The ``user@domain`` AORs with at least one unexpired contact, as the running registrar holds
    them (right in every location mode, memory only included)."""
    return {a["AOR"] for a in ul_dump_pages(config)
            if any(c.get("Expires") != "expired" for c in a.get("Contacts", []))}


def quote_args(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
