"""Realm and user space: which domain a local user belongs to.

- ``[server] multidomain = true`` (OpenSIPS ``use_domain=1``): every local domain is a user space
  of its own. ``alice@a.example`` and ``alice@b.example`` are two users with two passwords and two
  location entries; the digest realm is the domain itself (the To domain of a REGISTER, the From
  domain of a call; RFC 3261 §22.1).
- ``[server] multidomain = false`` (single domain, OpenSIPS ``use_domain=0``): all local domains
  (names, and the server's IP addresses listed as domains) are ONE user space. There is one realm:
  ``[auth] realm``, else the first of ``[server] domains``, else the first domain name of the
  ``domain`` table (alphabetical). A user is looked up by user name alone
  within it: ``alice@127.0.0.1`` and ``alice@example.test`` are the same user (one password, the
  HA1 stored for the realm) and the same address of record in the location table, so a phone that
  registers to the server's IP address is reached by a call to its domain name and back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .location import aor_key

if TYPE_CHECKING:
    from ..state import ServerState


def single_realm(state: ServerState) -> str | None:
    """The one realm of single-domain mode; None in multidomain mode (or with no domain at all)."""
    config = state.config
    if config.server.multidomain:
        return None
    realm = config.auth.realm or next(iter(config.server.domains), "")
    if not realm:  # only the domain table: its first name (alphabetical, so stable across reloads)
        realm = state.domains.first_name
    return realm.lower() or None


def user_domain(state: ServerState, host: str) -> str:
    """The domain a local user of ``host`` belongs to: the single realm, or ``host`` itself."""
    realm = single_realm(state)
    if realm is not None and host in state.domains:
        return realm
    return host.lower()


def realm_for(state: ServerState, host: str) -> str:
    """The digest realm that challenges a user of the local domain ``host``."""
    return single_realm(state) or host


def local_aor(state: ServerState, user: str | None, host: str) -> str:
    """The location key of ``user@host`` (``host`` a local domain)."""
    return aor_key(user, user_domain(state, host))
