"""Presence state of a running sipd: one presentity's publications and document, and
its watchers, over the management interface. No Typer or rich here."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError


def normalize_aor(text: str) -> str:
    """``user@domain`` from ``user@domain`` or ``sip:user@domain``; raises UsageError otherwise."""
    aor = text.strip()
    for prefix in ("sip:", "sips:"):
        if aor.lower().startswith(prefix):
            aor = aor[len(prefix):]
    user, at, domain = aor.rpartition("@")
    if not at or not user or not domain or any(c in aor for c in " <>;"):
        raise UsageError(f"not a presentity: {text!r}", hint="write it as user@domain, e.g. alice@example.com")
    return f"{user}@{domain.lower()}"


def show(config: Any, aor: str) -> dict[str, Any]:
    """``presentity_show``: publications (ETag, Expires, Basic, Notes) and the merged document.
    Raises NotFoundError when sipd holds nothing for ``aor``."""
    from . import mgmt

    return mgmt.call(config, "presentity_show", [normalize_aor(aor)])


def watchers(config: Any, aor: str) -> dict[str, Any]:
    """``watcher_list``: presence subscriptions to ``aor`` and its presence.winfo subscribers."""
    from . import mgmt

    return mgmt.call(config, "watcher_list", [normalize_aor(aor)])


def presentities(config: Any) -> list[dict[str, Any]]:
    """``pres_phtable_list``: every presentity with publications."""
    from . import mgmt

    return mgmt.call(config, "pres_phtable_list", []).get("Presentities", [])
