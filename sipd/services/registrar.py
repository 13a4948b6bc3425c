"""Registrar decisions (RFC 3261 §10.3, RFC 3327 Path, RFC 5626 instance/reg-id, RFC 5627 GRUU).

Pure: ``register(...)`` takes the REGISTER, the current bindings of its AOR, the settings and the
time, and returns an ``Outcome`` (status, headers, the new binding list). Nothing here touches the
network, the clock or the database; the pipeline stage applies the outcome (memory, then store).

Rules, in the order they are checked:
1. The To URI must be sip/sips with a user part (400), else the AOR is unusable.
2. ``Contact: *`` is only valid alone and with ``Expires: 0`` (400); it removes every binding.
3. Each contact's expiry is its ``expires`` param, else the Expires header, else default_expires.
   Out-of-range values (> 2^32-1, RFC 3261 §20.19) count as the default. Non-numeric -> 400.
   0 < expires < min_expires: clamp up (OpenSIPS) or 423 + Min-Expires (``min_expires_mode``).
   expires > max_expires: clamp down.
4. q must be 0..1 (400). Contacts keep their q; unspecified q sorts last.
5. A contact matching an existing binding (same URI, or same +sip.instance/reg-id) with the same
   Call-ID and a lower CSeq is out of order (400 "Invalid CSeq number").
6. More than max_contacts live bindings after the change -> 503 (OpenSIPS "Too many registered
   contacts"); nothing is changed.
The 200 lists every live binding with its remaining expires (and pub-gruu/temp-gruu, RFC 5627).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .location import Contact, aor_key

if TYPE_CHECKING:
    from ..config import RegistrarSection

MAX_EXPIRES_VALUE = 2**32 - 1


@dataclass
class Outcome:
    status: int
    reason: str
    aor: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    contacts: list[Contact] | None = None  # new full binding list (None = unchanged / error)
    changed: bool = False
    error: str = ""  # P-Registrar-Error text / log reason


def _fail(status: int, reason: str, why: str, aor: str = "") -> Outcome:
    return Outcome(status, reason, aor, headers=[("P-Registrar-Error", why)] if status == 400 else [], error=why)


def _parse_expires(text: str | None) -> int | None:
    """int seconds, None when absent; raises ValueError when not a number."""
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise ValueError(text)
    # delta-seconds = 1*DIGIT has no bound; past 2**32-1 it reads as absent (RFC 4475 §3.1.2.4),
    # however many digits, without converting them (Python refuses more than 4300)
    if len(text.lstrip("0")) > len(str(MAX_EXPIRES_VALUE)):
        return None
    value = int(text)
    return None if value > MAX_EXPIRES_VALUE else value


def _unquote(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def register(
    request,
    current: list[Contact],
    cfg: RegistrarSection,
    now: float,
    *,
    received: str,
    socket: str,
    conn_id: int | None,
    token: str | Callable[[], str],
    gruu_supported: bool | None = None,
    cflags: str = "",
    owner: str | None = None,
) -> Outcome:
    """Decide a REGISTER whose AOR is local and already authenticated.

    Args:
        request: the REGISTER (``sipd.sip.message.Request``).
        current: the AOR's bindings now (may include expired ones; they are dropped).
        cfg: the [registrar] settings.
        now: wall-clock unix time.
        received: where it came from, ``"udp:192.0.2.1:5060"``.
        socket: our listen socket it arrived on.
        conn_id: the TCP/TLS connection, or None.
        token: a fresh random token for a temporary GRUU (or a function returning one, called only
            when a temporary GRUU is made).
        cflags: contact flags of the bindings this REGISTER writes (``NAT``: behind NAT).
        owner: the cluster node that alone can reach these bindings (it holds their connection or
            NAT pinhole), recorded in each unless the REGISTER came with a Path (then the first
            hop of the Path reaches them, from any node).
    """
    to_uri = request.to.uri
    if to_uri.scheme not in ("sip", "sips"):
        return _fail(400, "Bad Request", "AOR is not a SIP URI")
    if not to_uri.user:
        return _fail(400, "Bad Request", "No username in To URI")
    aor = aor_key(to_uri.user, to_uri.host)
    call_id = request.call_id
    cseq = request.cseq.seq
    idx = request.headers._idx()  # key -> header lines: what request.get()/get_all() read
    lines = idx.get("expires")
    try:
        header_expires = _parse_expires(lines[0][2] if lines else None)
    except ValueError:
        header_expires = None

    live = [c for c in current if c.expires == 0 or c.expires > now]  # Contact.alive(now)
    if request.contact_star:
        if header_expires != 0 or len(request.get_all("Contact")) > 1:
            return _fail(400, "Bad Request", "* used in contact and expires is not zero or more than 1 contact", aor)
        return _ok(aor, [], now, changed=bool(current), gruu=False)

    if gruu_supported is None:
        gruu_supported = "supported" in idx and "gruu" in _tokens(request.get_all("Supported"))
    gruu = cfg.gruu and gruu_supported
    path_values = request.get_all("Path") if "path" in idx else None
    path = ",".join(path_values) if path_values else None
    lines = idx.get("user-agent")
    user_agent = lines[0][2] if lines else ""
    if len(user_agent) <= 128:
        user_agent = sys.intern(user_agent)  # one copy per UA model in a big location table
    changed = len(live) != len(current)
    new = live
    default_expires, min_expires, max_expires = cfg.default_expires, cfg.min_expires, cfg.max_expires
    for na in request.contacts:
        uri = na.uri_text()  # str(na.uri), without building the URI object when it is written so
        if uri[: uri.find(":")] not in ("sip", "sips", "tel"):  # str(URI) starts with "scheme:"
            return _fail(400, "Bad Request", "Unsupported contact URI scheme", aor)
        params = na.params
        try:
            expires = _parse_expires(params.get("expires")) if "expires" in params else header_expires
        except ValueError:
            return _fail(400, "Bad Request", "Invalid expires param in contact", aor)
        if expires is None:
            expires = default_expires
        q: float | None = None
        if params.get("q") is not None:
            try:
                q = float(params["q"])  # type: ignore[arg-type]
            except ValueError:
                return _fail(400, "Bad Request", "Invalid q param in contact", aor)
            if not 0.0 <= q <= 1.0:
                return _fail(400, "Bad Request", "Invalid q param in contact", aor)
        if expires and min_expires and expires < min_expires:
            if cfg.min_expires_mode == "reject":
                return Outcome(
                    423, "Interval Too Brief", aor, headers=[("Min-Expires", str(min_expires))],
                    error=f"expires {expires} below {min_expires}",
                )
            expires = min_expires
        if max_expires and expires > max_expires:
            expires = max_expires
        instance = params.get("+sip.instance")
        reg_id: int | None = None
        if instance is not None:
            instance = _unquote(instance)
            if instance and params.get("reg-id"):
                try:
                    reg_id = int(params["reg-id"])  # type: ignore[arg-type]
                except ValueError:
                    return _fail(400, "Bad Request", "Invalid reg-id param in contact", aor)
        # positional, in field order (uri, expires, q, call_id, cseq, user_agent, received, path, socket,
        # flags, cflags, methods, instance, reg_id, state, conn_id, temp_gruu, last_modified, params, node_id)
        binding = Contact(
            uri, now + expires if expires else 0.0, q, call_id, cseq, user_agent, received, path, socket,
            0, cflags, None, instance, reg_id, "CS_NEW", conn_id,
            (token() if callable(token) else token) if (gruu and instance) else None, now, "",
            None if path else owner,
        )
        pos = -1
        for i, c in enumerate(new):
            if c.same_binding(binding):
                pos = i
                break
        if pos >= 0:
            old = new[pos]
            if old.call_id == call_id and cseq < old.cseq:
                return _fail(400, "Bad Request", "Invalid CSeq number", aor)
            if expires == 0:
                del new[pos]
            else:
                binding.state = "CS_DIRTY" if old.state != "CS_NEW" else "CS_NEW"
                if binding.temp_gruu is None:
                    binding.temp_gruu = old.temp_gruu
                new[pos] = binding
            changed = True
        elif expires:
            new.append(binding)
            changed = True
    if cfg.max_contacts and len(new) > cfg.max_contacts:
        mine = [c for c in new if c.call_id == call_id and c.cseq == cseq]  # written by this REGISTER
        if cfg.max_contacts_mode == "reject" or len(mine) > cfg.max_contacts:
            return Outcome(503, "Service Unavailable", aor, error="Too many registered contacts")
        # OpenSIPS save() flag "r": the oldest other bindings make room (a phone re-installed or
        # restarted without unregistering must not be locked out until its old bindings expire)
        others = sorted((c for c in new if not (c.call_id == call_id and c.cseq == cseq)), key=lambda c: c.last_modified)
        drop = {id(c) for c in others[: len(new) - cfg.max_contacts]}
        new = [c for c in new if id(c) not in drop]
    return _ok(aor, new, now, changed=changed, gruu=gruu)


def _tokens(values: list[str]) -> set[str]:
    return {t.strip().lower() for v in values for t in v.split(",")}


def _ok(aor: str, contacts: list[Contact], now: float, *, changed: bool, gruu: bool) -> Outcome:
    if len(contacts) > 1:
        contacts.sort(key=Contact.sort_q, reverse=True)
    headers = [("Contact", contact_value(aor, c, now, gruu)) for c in contacts]
    return Outcome(200, "OK", aor, headers, contacts, changed)


def contact_value(aor: str, c: Contact, now: float, gruu: bool = False) -> str:
    """``<uri>;expires=N[;q=..][;+sip.instance=..][;reg-id=..][;pub-gruu=..;temp-gruu=..]``."""
    left = max(0, int(c.expires - now + 0.5)) if c.expires else 0
    if c.q is None and not c.instance:
        return f"<{c.uri}>;expires={left}"
    parts = [f"<{c.uri}>;expires={left}"]
    if c.q is not None:
        parts.append(f"q={c.q:g}")
    if c.instance:
        parts.append(f'+sip.instance="{c.instance}"')
        if c.reg_id is not None:
            parts.append(f"reg-id={c.reg_id}")
        if gruu:
            parts.append(f'pub-gruu="sip:{aor};gr={c.instance.strip("<>")}"')
            if c.temp_gruu:
                domain = aor.rpartition("@")[2]
                parts.append(f'temp-gruu="sip:tgruu.{c.temp_gruu}@{domain};gr"')
    return ";".join(parts)
