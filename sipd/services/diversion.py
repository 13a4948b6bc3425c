"""Failure diversion (osipsconfig's VM_DIVERSION): a failed call to a local user goes elsewhere.

Rules (``[diversion]``, active when ``uri`` is set), for an initial INVITE to a local user:
- Unavailable (``on_unavailable``): no registered contact or unknown user (the location stage's
  480/404), or every branch failed with 480, 404, 408, 410 or 503 -> diverted.
- Busy (``on_busy``): the best final response is 486 or 600 (a 600 ends the search at once).
- No answer (``on_no_answer``): nobody answered within ``no_answer_timeout`` seconds -> the ringing
  branches are CANCELled and the call is diverted.
- A call is diverted at most once, never when the caller cancelled, never when the callee answered,
  and never when the R-URI already is the diversion target (no loops).
- The diverted INVITE carries the original target and the reason: ``Diversion`` (RFC 5806:
  ``<sip:bob@example.com>;reason=user-busy;counter=1``) or ``History-Info`` (RFC 7044 with the RFC
  4458 ``cause`` URI parameter), per ``[diversion] header``. Its R-URI is the diversion URI; a
  target in a local domain is looked up in the location table like any local user.

Hooks into the proxy: ``Forward.diversion`` carries a ``CallDiversion``;
``Proxy.forward`` calls ``attach`` and ``Proxy._send_best`` asks ``on_failure`` before a failure goes
upstream (True = diverted: the proxy keeps the call going with the new branch).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .pipeline import Branch, Forward, Reply, dest_of

if TYPE_CHECKING:
    from ..state import ServerState
    from .pipeline import Context, Decision, Stage
    from .ports import Destinations, Endpoint, Scheduler, Transmitter
    from .proxy import Proxy, ProxyContext

logger = logging.getLogger("sipd.diversion")

BUSY = frozenset({486, 600})
UNAVAILABLE = frozenset({404, 408, 410, 480, 503})
#: RFC 5806 reason and RFC 4458 cause for each kind of failure.
REASONS = {"busy": ("user-busy", 486), "no-answer": ("no-answer", 408), "unavailable": ("unavailable", 480)}


class DiversionService:
    def __init__(self, state: ServerState, *, destinations: Destinations, scheduler: Scheduler,
                 transmitter: Transmitter):
        from ..sip.uri import parse_uri

        self.state = state
        self.cfg = cfg = state.config.diversion
        self.target = parse_uri(cfg.uri)
        self.destinations = destinations
        self.scheduler = scheduler
        self.transmitter = transmitter

    def kind_of(self, status: int) -> str | None:
        if status in BUSY and self.cfg.on_busy:
            return "busy"
        if status in UNAVAILABLE and self.cfg.on_unavailable:
            return "unavailable"
        return None

    def applies(self, ctx: Context) -> bool:
        req = ctx.request
        if req.method != "INVITE" or req.to.tag is not None or not ctx.ruri_local:
            return False
        uri = req.uri
        t = self.target
        return not (uri.user == t.user and (uri.host or "").lower() == (t.host or "").lower())

    def mark(self, request: Any, original: str, kind: str) -> None:
        """Add the Diversion / History-Info header telling the target why."""
        reason, cause = REASONS[kind]
        if self.cfg.header == "history-info":
            if not request.get_all("History-Info"):
                request.append("History-Info", f"<{original}>;index=1")
            target = self.target.replace(params={**self.target.params, "cause": str(cause)})
            request.append("History-Info", f"<{target}>;index=1.1;mp=1")
        else:
            counter = len(request.get_all("Diversion")) + 1
            request.prepend("Diversion", f"<{original}>;reason={reason};counter={counter}")

    def branches(self, wall: float) -> list[Branch]:
        """Where the diverted call goes: a target in a local domain is a local user, reached at its
        registered contacts only (never through DNS: our own domain may have no SRV/A records);
        empty when it has none. A foreign target is reached at its URI."""
        from .myself import is_local
        from .realm import local_aor

        t = self.target
        state = self.state
        if t.user and is_local(state, t):
            contacts = state.location.lookup(local_aor(state, t.user, t.host), wall)
            return [self.destinations.branch_for_contact(c) for c in contacts]
        dest = dest_of(t)
        if dest is not None:
            dest = self.destinations.reuse_connection(dest)
        return [Branch(t, dest, label=f"diversion {t}")]

    def wrap_location(self, location: Stage) -> Stage:
        def location_or_divert(ctx: Context) -> Decision | None:
            decision = location(ctx)
            if not self.applies(ctx):
                return decision
            if isinstance(decision, Reply) and decision.status in (404, 480) and self.cfg.on_unavailable:
                original = str(ctx.request.uri)
                branches = self.branches(ctx.wall)
                if not branches:
                    logger.info("INVITE %s: %s; not diverted: %s has no registered contact", original, decision.why, self.target)
                    return decision
                self.mark(ctx.request, original, "unavailable")
                logger.info("INVITE %s: %s -> diverted to %s (unavailable)", original, decision.why, self.target)
                return Forward([branches], why=f"diverted to {self.target} ({decision.why})")
            if isinstance(decision, Forward):
                decision.diversion = CallDiversion(self, str(ctx.request.uri), ctx.wall)
            return decision

        return location_or_divert


class CallDiversion:
    """The diversion state of one call (lives in ``ProxyContext.diversion``)."""

    __slots__ = ("service", "original", "wall", "done", "redirecting")

    def __init__(self, service: DiversionService, original: str, wall: float):
        self.service = service
        self.original = original
        self.wall = wall
        self.done = False
        self.redirecting = False  # set while the proxy must not finish the call (see Proxy._finish)

    def attach(self, proxy: Proxy, ctx: ProxyContext) -> None:
        """Called by ``Proxy.forward``: start the no-answer timer."""
        svc = self.service
        if svc.cfg.on_no_answer:
            ctx.timers.append(svc.scheduler.call_later(svc.cfg.no_answer_timeout, self._no_answer, proxy, ctx))

    def on_failure(self, proxy: Proxy, ctx: ProxyContext, best: Any) -> bool:
        """Called by ``Proxy._send_best`` before a final failure goes upstream; True = diverted."""
        if self.done or ctx.cancelled or ctx.answered or ctx.final_sent:
            return False
        status = best.status if best is not None else 408
        kind = self.service.kind_of(status)
        if kind is None:
            return False
        branches = self.service.branches(time.time())
        if not branches:  # the caller gets the callee's own failure (and the CDR records it)
            logger.info("INVITE %s: %s (%d); not diverted: %s has no registered contact",
                        self.original, kind, status, self.service.target)
            self.done = True
            return False
        self._divert(proxy, ctx, kind, f"{status}", branches)
        return True

    def _no_answer(self, proxy: Proxy, ctx: ProxyContext) -> None:
        if self.done or ctx.cancelled or ctx.answered or ctx.final_sent:
            return
        branches = self.service.branches(time.time())
        if not branches:  # keep ringing the callee: there is nowhere to divert to
            logger.info("INVITE %s: no answer; not diverted: %s has no registered contact", self.original, self.service.target)
            return
        self._divert(proxy, ctx, "no-answer", f"no answer in {self.service.cfg.no_answer_timeout:g}s", branches)
        self.redirecting = False
        self.service.transmitter.transmit()

    def _divert(self, proxy: Proxy, ctx: ProxyContext, kind: str, why: str, branches: list[Branch]) -> None:
        now = self.service.scheduler.time()
        self.done = True
        self.redirecting = True
        for bs in ctx.pending:
            proxy._cancel_branch(bs, now)
            bs.final = bs.final or 408  # their late 487s are ignored
        svc = self.service
        svc.mark(ctx.request, self.original, kind)
        ctx.responses.clear()
        ctx.challenges.clear()
        ctx.groups[:] = [branches]
        logger.info("INVITE %s: %s (%s) -> diverted to %s", self.original, kind, why, svc.target)
        proxy._next_group(ctx, now)


def setup(state: ServerState, endpoint: Endpoint) -> DiversionService | None:
    """The service when ``[diversion] uri`` is set; ``endpoint`` implements its ports."""
    if not state.config.diversion.uri:
        return None
    return DiversionService(state, destinations=endpoint, scheduler=endpoint, transmitter=endpoint)


def location_stage(state: ServerState, location: Stage, endpoint: Endpoint) -> Stage:
    """``location`` itself, or wrapped with diversion when ``[diversion] uri`` is set."""
    svc = setup(state, endpoint)
    return svc.wrap_location(location) if svc is not None else location
