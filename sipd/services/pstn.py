"""PSTN gateway routing (osipsconfig's HAVE_OUTBOUND_PSTN / HAVE_INBOUND_PSTN), and the validation
of the residential feature sections ([nat], [diversion], [pstn]).

Rules:
- Outbound: an initial request from a *local* caller (so authenticated when ``[auth] invite`` is on)
  whose R-URI user is one of ``[pstn] prefixes`` followed by digits, for a local domain or for this
  server's address, goes to ``[pstn] gateway`` with the R-URI rewritten to ``number@gateway``
  (the prefix removed when ``strip_prefix``). A foreign caller dialling such a number gets 403: the
  gateway costs money (toll fraud is what scanners try first).
- Inbound: requests whose source IP is a trusted gateway address (``trusted_addresses``, else the
  gateway's own IP) are not challenged; ``number@<our IP>`` from it is taken as ``number@<first
  local domain>`` so aliases/dialplan/location can route it. Calls from the gateway are never sent
  back to it.
Pure decisions over the pipeline context; the stages are inserted by ``pipeline.build_pipeline``.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..problem import Problem
from ..sip.uri import parse_uri
from .pipeline import Branch, Forward, Reply, dest_of

if TYPE_CHECKING:
    from ..state import ServerState
    from .pipeline import Context, Decision, Stage
    from .ports import Destinations

logger = logging.getLogger("sipd.pstn")


def match_number(user: str, prefixes: list[str]) -> tuple[str, str] | None:
    """(prefix, digits) when ``user`` is a prefix followed by one or more digits; longest prefix wins."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if user.startswith(prefix):
            rest = user[len(prefix):]
            if rest.isdigit():
                return prefix, rest
    return None


class Pstn:
    """The [pstn] settings in usable form (``state.pstn`` is not needed: stages close over it)."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.gateway = parse_uri(cfg.gateway)
        trusted = list(cfg.trusted_addresses) or [self.gateway.host or ""]
        self.trusted = {t.strip("[]").lower() for t in trusted if t}

    def is_trusted(self, ip: str) -> bool:
        return ip.strip("[]").lower() in self.trusted

    def outbound_uri(self, user: str) -> Any | None:
        found = match_number(user, self.cfg.prefixes)
        if found is None:
            return None
        prefix, digits = found
        number = digits if self.cfg.strip_prefix else prefix + digits
        return self.gateway.replace(user=number)


def trust_stage(pstn: Pstn, local_domain: Stage) -> Stage:
    """``local_domain`` with the inbound-PSTN exception for trusted gateway addresses."""

    def local_domain_pstn(ctx: Context) -> Decision | None:
        req = ctx.request
        if req.method == "REGISTER" or not pstn.is_trusted(ctx.source[1]):
            return local_domain(ctx)
        uri = req.uri
        state = ctx.state
        if uri.user and uri.host and uri.host not in state.domains and state.myself.is_own_host(uri.host):
            domain = next(iter(state.config.server.domains), None) or next(iter(state.domains), None)
            if domain:
                req.uri = uri.replace(host=domain, port=None)
        decision = local_domain(ctx)
        if decision is None:
            ctx.from_local = False  # the gateway is trusted: no digest challenge
            ctx.extra["pstn_inbound"] = True
        return decision

    return local_domain_pstn


def outbound_stage(pstn: Pstn, destinations: Destinations) -> Stage:
    def pstn_outbound(ctx: Context) -> Decision | None:
        req = ctx.request
        if req.method in ("REGISTER", "ACK", "CANCEL") or req.to.tag is not None or ctx.extra.get("pstn_inbound"):
            return None
        uri = req.uri
        if not uri.user or not (ctx.ruri_local or ctx.state.myself.is_own_host(uri.host or "")):
            return None
        target = pstn.outbound_uri(uri.user)
        if target is None:
            return None
        if not ctx.from_local:
            return Reply(403, "Forbidden", why="PSTN numbers only for local users")
        req.uri = target
        dest = dest_of(target)
        if dest is not None:
            dest = destinations.reuse_connection(dest)
        return Forward([[Branch(target, dest, label=f"PSTN gateway {pstn.cfg.gateway}")]], why="PSTN number")

    return pstn_outbound


def setup(state: ServerState) -> Pstn | None:
    cfg = state.config.pstn
    return Pstn(cfg) if cfg.gateway else None


# -- validation of the residential sections ------------------------------------------------------


def validate(config: Config) -> list[Problem]:
    """Problems in [nat], [diversion], [pstn] (one of sipd.validation.VALIDATORS)."""
    out: list[Problem] = []
    nat = config.nat
    if nat.keepalive_method not in ("options", "crlf"):
        out.append(Problem("nat.keepalive_method", f"unknown method {nat.keepalive_method!r}", '"options" or "crlf"'))
    if nat.keepalive_interval < 0:
        out.append(Problem("nat.keepalive_interval", "must not be negative", "e.g. 30 (0 = no pings)"))
    div = config.diversion
    if div.uri:
        try:
            u = parse_uri(div.uri)
            if u.scheme not in ("sip", "sips"):
                raise ValueError
        except Exception:  # noqa: BLE001
            out.append(Problem("diversion.uri", f"not a SIP URI: {div.uri!r}", 'e.g. "sip:voicemail@example.com"'))
    if div.header not in ("diversion", "history-info"):
        out.append(Problem("diversion.header", f"unknown header {div.header!r}", '"diversion" or "history-info"'))
    if div.no_answer_timeout <= 0:
        out.append(Problem("diversion.no_answer_timeout", "must be positive", "e.g. 20"))
    pstn = config.pstn
    if pstn.gateway:
        try:
            g = parse_uri(pstn.gateway)
            if g.scheme not in ("sip", "sips") or not g.host:
                raise ValueError
        except Exception:  # noqa: BLE001
            out.append(Problem("pstn.gateway", f"not a SIP URI: {pstn.gateway!r}", 'e.g. "sip:192.0.2.10:5060"'))
        if not pstn.prefixes:
            out.append(Problem("pstn.prefixes", "empty: no number would reach the gateway", 'e.g. ["+", "00"]'))
    for i, item in enumerate(pstn.trusted_addresses):
        try:
            ipaddress.ip_address(item.strip("[]"))
        except ValueError:
            out.append(Problem(f"pstn.trusted_addresses[{i}]", f"not an IP address: {item!r}", "e.g. 192.0.2.10"))
    return out
