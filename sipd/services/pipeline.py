"""The request pipeline: an ordered list of stages ``stage(ctx) -> Decision | None``.

    sanity -> [antiflood] -> [spam] -> loose_route -> local (server itself) -> max_forwards
           -> [routing hook] -> local_domain [+ PSTN gateway trust] -> auth -> [presence]
           -> [NAT Contact fix] -> registrar -> dialplan -> [hook destination] -> [PSTN outbound]
           -> aliases -> location [+ failure diversion] -> forward

Bracketed stages exist only when their feature is configured (services/hook.py, pstn.py, nat.py,
diversion.py; docs/routing-hook.md).

``None`` means "continue with the next stage". A ``Defer`` carries a coroutine (database or DNS I/O)
whose result is again a Decision; the server awaits it and resumes the pipeline after the stage
that deferred (``Defer.resume``). Other areas insert a stage with one line in
``stages.build_pipeline`` (antiflood and spam come right after ``sanity``, from services/security.py).

Stages are plain functions over the ``Context``; they do no I/O themselves. Everything they say
about a request ends up in one info line (``Context.why``) written by the server.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..boundary import describe
from ..sip.sanity import (
    Refusal, check_aor, check_max_forwards, check_method, check_proxy_require, check_require, check_uri_scheme,
)
from . import registrar as registrar_mod
from .myself import is_local, is_self
from .nat_detect import NAT_FLAG, request_nated
from .realm import local_aor, single_realm, user_domain

if TYPE_CHECKING:
    from ..state import ServerState
    from .ports import AorCopies, Destinations, Listeners

logger = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, PRACK, REFER, SUBSCRIBE, NOTIFY"
SUPPORTED = "path, gruu, outbound"
SUPPORTED_TAGS = frozenset(tag.strip() for tag in SUPPORTED.split(","))
#: PUBLISH is taken when presence is on (RFC 3903), so an OPTIONS answer lists it then
ALLOW_WITH_PUBLISH = ALLOW + ", PUBLISH"
#: What a request for the server itself may be (other methods: 405, or 501 when unknown).
SERVER_METHODS = frozenset({"OPTIONS", "REGISTER"})
#: Methods that create a dialog: Record-Route is inserted for these (RFC 3261 §16.6 step 4).
DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


# -- decisions ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Reply:
    status: int
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    why: str = ""
    to_tag: str | None = None  # None: a fresh one; set when the reply creates a dialog (SUBSCRIBE)


@dataclass(slots=True)
class Branch:
    """One place to try: the R-URI to set, where to send (None: resolve the R-URI, RFC 3263),
    Route values to push (Path), and a label for the log."""

    ruri: Any
    dest: tuple | None = None
    routes: list[str] = field(default_factory=list)
    label: str = ""
    nated: bool = False  # sent to a registered contact's NAT pinhole (received), not its Contact URI


@dataclass(slots=True)
class Forward:
    groups: list[list[Branch]]  # tried in order (serial); the branches of one group in parallel
    why: str = ""
    record_route: bool = True
    stateless: bool = False  # ACK for 2xx
    diversion: Any = None  # diversion.CallDiversion: redirect on busy/no answer/unavailable
    #: a CallEvent for accounting and dialogs; False when a peer node relays the call to us: it
    #: accounts the call itself, and one call must make one CDR
    account: bool = True
    #: Record-Route with this node's own address even where ``[cluster] record_route_host`` names
    #: one all nodes answer to: only this node can reach the callee (its connection or NAT pinhole),
    #: so the call's later requests must come back here, not to any node
    record_route_here: bool = False


@dataclass(slots=True)
class Drop:
    why: str = ""


@dataclass(slots=True)
class Defer:
    coro: Awaitable[Decision | None]
    resume: int = 0  # index of the stage to run after the coroutine returned None


@dataclass(slots=True)
class Elsewhere:
    """A registrar worker does not hold this AOR: the process owning it answers (sipd/daemon/workers/)."""

    why: str = ""


Decision = Reply | Forward | Drop | Defer | Elsewhere


@dataclass(slots=True)
class Context:
    request: Any
    source: tuple
    state: ServerState
    now: float  # loop time
    wall: float  # unix time
    tx_key: Any = None
    from_local: bool = False
    ruri_local: bool = False
    loose_routed: bool = False
    auth_user: str = ""
    why: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


Stage = Callable[[Context], "Decision | None"]


# -- helpers ------------------------------------------------------------------------------------


def targets_server(state: ServerState, uri: Any) -> bool:
    """An R-URI for the server itself: no user part, and one of our addresses or a local domain."""
    if uri.user:
        return False  # user@host is routed (the host may be both our address and a local domain)
    return is_self(state, uri) or is_local(state, uri)


def pop_route(request: Any) -> None:
    """Remove the topmost Route value (ours, RFC 3261 §16.4); the other Route lines stay where and
    as they were."""
    request.remove_first("Route")


def dest_of(uri: Any, conn_table: Any = None) -> tuple | None:
    """(transport, host, port, None) for a URI with a numeric host; None when DNS is needed."""
    from .resolve import is_numeric

    host = uri.params.get("maddr") or uri.host
    if not host or not is_numeric(host):
        return None
    transport = uri.transport or ("tls" if uri.scheme == "sips" else "udp")
    port = uri.port or (5061 if transport == "tls" else 5060)
    return (transport, host, port, None)


# -- stages -------------------------------------------------------------------------------------


def _refused(refusal: Refusal) -> Reply:
    return Reply(refusal.status, refusal.reason, refusal.headers, why=refusal.why)


def sanity(ctx: Context) -> Decision | None:
    """The checks of sip/sanity.py every request goes through (the parser made the others)."""
    req = ctx.request
    refusal = check_uri_scheme(req) or check_proxy_require(req)
    return None if refusal is None else _refused(refusal)


def loose_route(ctx: Context) -> Decision | None:
    """Pop our own Route entries (RFC 3261 §16.4, double Record-Route) and route in-dialog requests."""
    req = ctx.request
    state = ctx.state
    routes = req.routes
    popped = False
    if routes and is_self(state, routes[0].uri):
        pop_route(req)
        routes = routes[1:]
        if routes and is_self(state, routes[0].uri):
            pop_route(req)
            routes = routes[1:]
        popped = True
    in_dialog = req.to.tag is not None
    if not in_dialog:
        # An initial request with a preloaded Route to us (our outbound-proxy role) is consumed here
        # and then checked like any initial request: local domain, no open relay, auth. Only
        # in-dialog requests are trusted for having come back through our Record-Route.
        return None
    ctx.loose_routed = popped
    if req.get("Proxy-Authorization") is not None:
        _strip_own_credentials(req, state.domains, single_realm(state))
    if routes:
        dest = dest_of(routes[0].uri)
        return Forward([[Branch(req.uri, dest, label=str(routes[0].uri))]], why="in-dialog, by Route", record_route=False,
                       stateless=req.method == "ACK")
    if ctx.loose_routed or not targets_server(state, req.uri):
        uri = req.uri
        if "gr" in uri.params or (uri.user and is_local(state, uri)):
            return None  # GRUU / AOR as remote target: resolved through location below
        if not ctx.loose_routed and req.method != "ACK":
            return Reply(404, "Not Here", why="in-dialog request without our Route")
        return Forward([[Branch(uri, dest_of(uri), label=str(uri))]], why="in-dialog, by R-URI", record_route=False,
                       stateless=req.method == "ACK")
    if req.method == "ACK":
        return Drop("ACK for the server itself")
    return None


def local(ctx: Context) -> Decision | None:
    """Requests for the server itself (OPTIONS keep-alive pings, RFC 3261 §11)."""
    req = ctx.request
    if req.method == "REGISTER" or not targets_server(ctx.state, req.uri):
        return None
    if req.method == "ACK":
        return Drop("ACK for the server itself")
    refusal = check_require(req, SUPPORTED_TAGS)
    if refusal is not None:
        return _refused(refusal)
    if req.method == "OPTIONS":
        allow = ALLOW_WITH_PUBLISH if ctx.state.config.presence.enabled else ALLOW
        return Reply(200, "OK", [("Allow", allow), ("Accept", "application/sdp"), ("Supported", SUPPORTED)],
                     why="OPTIONS for the server")
    refusal = check_method(req, SERVER_METHODS)
    return None if refusal is None else _refused(refusal._replace(why=f"{req.method} for the server itself"))


def max_forwards(ctx: Context) -> Decision | None:
    if ctx.request.method == "REGISTER":
        return None  # answered here, never forwarded (RFC 4475 §3.3.11)
    refusal = check_max_forwards(ctx.request)
    return None if refusal is None else _refused(refusal)


def local_domain(ctx: Context) -> Decision | None:
    req = ctx.request
    domains = ctx.state.domains
    if req.method == "REGISTER":
        refusal = check_aor(req) or check_require(req, SUPPORTED_TAGS)  # the registrar is the UAS
        if refusal is not None:
            return _refused(refusal)
        to_uri = req.to.uri
        if to_uri.host not in domains:
            return Reply(403, "Domain Not Served", why=f"registration for foreign domain {to_uri.host}")
        return None
    from_uri = req.from_.uri
    ctx.from_local = from_uri.is_sip and from_uri.host in domains
    ruri = req.uri
    ctx.ruri_local = is_local(ctx.state, ruri)
    if not ctx.from_local and not ctx.ruri_local and not ctx.loose_routed:
        return Reply(403, "Relaying Denied", why=f"neither {from_uri.host} nor {ruri.host} is local (no open relay)")
    return None


_REALM = re.compile(r'realm\s*=\s*"?([^",\s]*)', re.IGNORECASE)


def _strip_own_credentials(req: Any, domains: Any, realm: str | None) -> None:
    """Remove Proxy-Authorization for our realms from an in-dialog request (RFC 3261 §22.3: they are
    ours to consume). UAs such as linphone copy the INVITE's into ACK and BYE; forwarded, they would
    show the callee the caller's nonce, cnonce and response: an offline password-guessing oracle."""
    values = req.get_all("Proxy-Authorization")
    keep = [v for v in values if (m := _REALM.search(v)) is None or (m.group(1).lower() not in domains
                                                                      and m.group(1).lower() != realm)]
    if len(keep) != len(values):
        req.remove("Proxy-Authorization")
        for v in reversed(keep):
            req.prepend("Proxy-Authorization", v)


async def load_subscriber(state: ServerState, user: str, realm: str, wall: float) -> None:
    from .auth import Credentials

    subs = state.subscribers  # over its look-up budget (a flood of random names): unknown, from memory
    row = await state.db.load_subscriber(user, realm) if state.db is not None and subs.may_look_up(wall) else None
    subs.put(user, realm, Credentials(row["ha1"] or "", row["ha1_sha256"] or "") if row else None, wall)
    return None


def _gruu_token() -> str:
    return os.urandom(8).hex()


def registrar_stage(listeners: Listeners) -> Stage:
    """The registrar (RFC 3261 §10.3); a binding records the listener it came in on."""

    def registrar(ctx: Context) -> Decision | None:
        req = ctx.request
        if req.method != "REGISTER":
            return None
        state = ctx.state
        mode = state.config.location.mode
        to_uri = req.to.uri
        aor = local_aor(state, to_uri.user, to_uri.host)
        if mode == "db-only" and not ctx.extra.get("aor_loaded"):
            return Defer(_load_aor(ctx, aor), resume=ctx.extra["stage_index"])
        src = ctx.source
        received = describe(src)
        nated = state.config.nat.enabled and request_nated(req, src)
        conn_id = src[3] if len(src) > 3 else None
        outcome = registrar_mod.register(
            req, state.location.current(aor), state.config.registrar, ctx.wall,
            received=received, socket=listeners.local_socket_name(src),
            conn_id=conn_id, token=_gruu_token, cflags=NAT_FLAG if nated else "",
            # in a cluster, only this node can reach a binding over its connection or NAT pinhole
            owner=(state.config.cluster.node_id or None) if conn_id is not None or nated else None,
        )
        stats = state.stats
        if outcome.status != 200:
            stats.counter("registrar:rejected_regs").inc()
            return Reply(outcome.status, outcome.reason, outcome.headers, why=outcome.error)
        stats.counter("registrar:accepted_regs").inc()
        n = len(outcome.contacts or ())
        why = f"{n} binding{'s' if n != 1 else ''}"
        if outcome.changed:
            before = list(state.location.current(aor))
            state.location.replace(aor, list(outcome.contacts or []), mark_dirty=mode == "write-back")
            if mode in ("write-through", "db-only") and state.db is not None:
                return Defer(_commit(state, aor, outcome, why, before))
        return Reply(200, "OK", outcome.headers, why=why)

    return registrar


async def _load_aor(ctx: Context, aor: str) -> None:
    contacts = await ctx.state.db.load_aor(aor, ctx.wall)
    ctx.state.location.replace(aor, contacts, mark_dirty=False)
    ctx.extra["aor_loaded"] = True
    return None


async def _commit(state: ServerState, aor: str, outcome: Any, why: str, before: list[Any]) -> Decision:
    """Store the new bindings; answer when the database has them (write-through, db-only).

    A database that could never be written stopped the start (Store.open), so a failure here is a
    database that is down for a while. The rule is "serve from memory, retry, never lose a
    registration": in write-through the bindings stay in memory, are used, the UA gets its 200 and
    the AOR is written again at the next flush (Server.housekeeping). In db-only the database is the
    only copy the other nodes see, so the change is undone in memory and the UA told to retry: a
    binding the UA was refused is never used."""
    contacts = list(outcome.contacts or [])
    try:
        await state.db.save_aor(aor, contacts, before)  # a refresh of stored bindings: a cheaper write
    except Exception as exc:  # noqa: BLE001 - logged by the store
        if state.config.location.mode == "db-only":
            if list(state.location.current(aor)) == contacts:  # not replaced meanwhile by a newer REGISTER
                state.location.replace(aor, before, mark_dirty=False)
            return Reply(500, "Server Internal Error", [("Retry-After", "5")], why=f"location not stored: {exc}")
        state.location.dirty.add(aor)
        return Reply(200, "OK", outcome.headers, why=f"{why}, kept in memory: not stored yet ({exc}), retrying")
    return Reply(200, "OK", outcome.headers, why=why)


def dialplan(ctx: Context) -> Decision | None:
    """dp_translate(dpid, "$ru/$ru") as in the report: the whole R-URI in, the whole R-URI out."""
    cfg = ctx.state.config.proxy
    req = ctx.request
    if not cfg.dialplan or not ctx.ruri_local or req.to.tag is not None:
        return None
    text = str(req.uri)
    result = ctx.state.dialplan.translate(cfg.dialplan_id, text)
    if result is None:
        return None
    output = result[0]
    from ..sip.uri import parse_uri

    try:
        new = parse_uri(output) if ":" in output.split("@", 1)[0] else req.uri.replace(user=output)
    except Exception:  # noqa: BLE001 - a bad rule must not kill the call
        logger.warning("dialplan %d turned %s into an invalid URI %r; R-URI unchanged", cfg.dialplan_id, text, output)
        return None
    req.uri = new
    ctx.ruri_local = is_local(ctx.state, new)
    ctx.extra["dialplan"] = f"dialplan {text} -> {new}"
    return None


def aliases(ctx: Context) -> Decision | None:
    req = ctx.request
    if not ctx.state.config.proxy.aliases or not ctx.ruri_local or not req.uri.user or req.to.tag is not None:
        return None
    target = ctx.state.aliases.get(req.uri.user, user_domain(ctx.state, req.uri.host))
    if target is None:
        return None
    user, domain = target
    old = req.uri.aor()
    req.uri = req.uri.replace(user=user, host=domain, port=None)
    ctx.ruri_local = domain in ctx.state.domains
    ctx.extra["alias"] = f"alias {old} -> {user}@{domain}"
    return None


def location_stage(destinations: Destinations, aors: AorCopies) -> Stage:
    """Local users: their registered contacts, by q groups (serial), in parallel within one."""

    def location(ctx: Context) -> Decision | None:
        req = ctx.request
        state = ctx.state
        uri = req.uri
        if not ctx.ruri_local:
            if is_local(state, uri):
                ctx.ruri_local = True
            else:
                return None
        if not uri.user:
            return Reply(404, "Not Found", why="no user in R-URI")
        loc = state.location
        aor = local_aor(state, uri.user, uri.host)
        if state.not_here is not None and state.not_here(aor):  # a worker: main sends a copy, kept up to date
            return Defer(aors.fetch_aor(aor), resume=ctx.extra["stage_index"])
        if state.config.location.mode == "db-only" and not ctx.extra.get("aor_loaded"):
            return Defer(_load_aor(ctx, aor), resume=ctx.extra["stage_index"])
        gr = uri.params.get("gr", False)
        if gr is not False:
            if uri.user.startswith("tgruu."):
                found = loc.resolve_temp_gruu(uri.user[6:])
                if found is None and state.not_here is not None:
                    return Elsewhere("temporary GRUU of an AOR of another process")
                contacts = loc.by_instance(found[0], found[1], ctx.wall) if found else []
            else:
                contacts = loc.by_instance(aor, f"<{gr}>", ctx.wall) + loc.by_instance(aor, gr or "", ctx.wall)
            if not contacts:
                return Reply(480, "Temporarily Unavailable", why=f"GRUU {uri} has no contact")
        else:
            contacts = loc.lookup(aor, ctx.wall)
        if contacts and state.cluster.dead:  # [cluster]: a dead node's connections and pinholes died with it
            reachable = [c for c in contacts if not state.cluster.unreachable(c.node_id)]
            if not reachable:
                return Reply(480, "Temporarily Unavailable", why="registered through a node that is down")
            contacts = reachable
        if not contacts:
            user, _, domain = aor.rpartition("@")
            subs = state.subscribers
            if subs.get(user, domain) is None and aor not in loc:
                if subs.loader is not None and not subs.known_missing(user, domain, ctx.wall) and not ctx.extra.get("sub_loaded"):
                    ctx.extra["sub_loaded"] = True
                    return Defer(load_subscriber(state, user, domain, ctx.wall), resume=ctx.extra["stage_index"])
                return Reply(404, "Not Found", why="unknown user")
            return Reply(480, "Temporarily Unavailable", why="no registered contacts")
        groups: list[list[Branch]] = []
        last_q: object = object()
        for c in contacts:
            branch = destinations.branch_for_contact(c)
            if c.q != last_q or not groups:
                groups.append([])
                last_q = c.q
            groups[-1].append(branch)
        return Forward(groups, why=f"{len(contacts)} contact{'s' if len(contacts) != 1 else ''}")

    return location


def forward(ctx: Context) -> Decision | None:
    """Everything not local goes out by its R-URI (RFC 3263 when the host is a name)."""
    uri = ctx.request.uri
    return Forward([[Branch(uri, dest_of(uri), label=str(uri))]], why="foreign domain")


def run(stages: list[Stage], ctx: Context, start: int = 0) -> Decision:
    """Run from stage ``start``; returns the first decision (``forward`` always decides)."""
    extra = ctx.extra
    for i in range(start, len(stages)):
        extra["stage_index"] = i
        decision = stages[i](ctx)
        if decision is not None:
            return decision
    return Drop("no stage decided")
