"""Which stages a configuration runs, in order, each built with the port of the daemon it uses.

The stages themselves live beside what they decide: the core ones in ``pipeline.py`` (which imports
no feature), the features' in their own modules (security, presence, hook, pstn, nat, diversion).
This module is the one place that knows them all; the order is drawn at the top of ``pipeline.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import diversion, hook, nat, presence, pstn, relay, security
from .pipeline import (Context, Decision, Defer, Reply, Stage, aliases, dialplan, forward, load_subscriber, local,
                       local_domain, location_stage, loose_route, max_forwards, registrar_stage, sanity)
from .realm import realm_for

if TYPE_CHECKING:
    from ..state import ServerState
    from .auth import Authenticator
    from .ports import Endpoint


def build_pipeline(state: ServerState, endpoint: Endpoint, authenticator: Authenticator) -> list[Stage]:
    """The stages for ``state.config``; each stage that needs the daemon gets its port from
    ``endpoint`` here. ``state.presence`` (when [presence] is on) is set before."""
    stages: list[Stage] = [sanity, *security.stages(state)]  # antiflood, spam

    pres_early, pres_late = presence.stages(state)  # [presence]: own subscription dialogs; PUBLISH/SUBSCRIBE
    gateway = pstn.setup(state)
    # [cluster]: what a peer node relays to a binding of ours goes out before any other routing
    relayed = [relay.owner_stage(endpoint)] if state.config.cluster.node_id else []
    stages += [*pres_early, *relayed, loose_route, local, max_forwards, *hook.stages(state),
               pstn.trust_stage(gateway, local_domain) if gateway else local_domain]
    stages.append(_auth_stage(len(stages), authenticator))
    stages += [*pres_late, *nat.stages(state), registrar_stage(endpoint), dialplan, *hook.route_stages(state, endpoint),
               *([pstn.outbound_stage(gateway, endpoint)] if gateway else []), aliases,
               diversion.location_stage(state, location_stage(endpoint, endpoint), endpoint), forward]
    return stages


def _auth_stage(index: int, authenticator: Authenticator) -> Stage:
    def auth(ctx: Context) -> Decision | None:
        req = ctx.request
        state = ctx.state
        cfg = state.config.auth
        if req.method == "REGISTER":
            if not cfg.register:
                return None
            to_uri = req.to.uri
            realm, proxy, user = realm_for(state, to_uri.host), False, to_uri.user
        else:
            if not (cfg.invite and ctx.from_local and not ctx.loose_routed) or req.method in ("ACK", "CANCEL", "PRACK"):
                return None
            if req.to.tag is not None:
                return None
            realm, proxy, user = realm_for(state, req.from_.uri.host), True, req.from_.uri.user
        result = authenticator.check(req, realm, state.subscribers, ctx.wall, proxy=proxy)
        if result.ok:
            if result.user != user:
                return Reply(403, "Forbidden", why=f"authenticated as {result.user}, not {user}")
            ctx.auth_user = result.user
            if proxy:
                _strip_credentials(req, realm)
            return None
        if result.lookup is not None:
            return Defer(load_subscriber(state, *result.lookup, ctx.wall), resume=index)
        if result.failed and state.bans is not None:
            dropped = security.auth_failed(ctx, result.user_tried, realm, result.failed)
            if dropped is not None:
                return dropped
        return Reply(result.status, None, list(result.headers), why=result.why)

    auth.authenticates = True  # type: ignore[attr-defined]  # where challenge.RawChallenge looks for it
    return auth


def _strip_credentials(req: Any, realm: str) -> None:
    values = req.get_all("Proxy-Authorization")
    keep = [v for v in values if f'realm="{realm}"' not in v and f"realm={realm}" not in v]
    if len(keep) != len(values):
        req.remove("Proxy-Authorization")
        for v in keep:
            req.prepend("Proxy-Authorization", v)
