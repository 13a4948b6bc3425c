"""Stateful forwarding (RFC 3261 §16): branches, forking, CANCEL, best-response selection.

The pipeline decides *where* (a ``Forward`` with serial groups of parallel ``Branch``es); this
module carries it out over the transaction layer and follows the client transactions until a final
response goes upstream.

Theory of operation:
- One ``ProxyContext`` per server transaction (keyed by its tx_key). Each branch is a client
  transaction (keyed by its tx_key in ``Proxy.branches``).
- INVITE: 100 Trying at once (§16.2: the proxy, not the layer, decides). Provisional responses
  other than 100 go upstream as they come. The first 2xx goes upstream and the other branches are
  CANCELled (§16.7 step 10); later 2xx are forwarded too (each is a dialog of its own).
- A final non-2xx is kept. When every branch of the current group has answered: a 6xx ends the
  search; otherwise the next q-group is tried (serial forking by descending q); when none is left
  the best response goes upstream (§16.7 step 6: 6xx, else the lowest class, 503 -> 500, 401/407
  challenges merged). No response at all -> 408.
- Branch timers: the whole INVITE search is bounded by ``proxy.invite_timeout`` (Timer C, §16.8);
  one q-group by ``proxy.serial_timeout``.
- A branch whose destination needs DNS (foreign domain, RFC 3263) resolves first; its targets
  are tried in order, moving on after a timeout or a 503 (RFC 3263 §4.3).
- CANCEL from upstream cancels every pending branch; the 487s they produce come back as the
  best response. If downstream stays silent, 487 is sent after a grace period.
- Loop detection (RFC 5393 §4.2): our branch ids carry a hash of the fields that identify the
  request as we received it; a request that comes back with one of our Vias holding the same hash
  is a loop (482). Max-Forwards catches the rest (483).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..boundary import describe
from ..sip.header_fields import Headers
from ..sip.message import Request
from .pipeline import DIALOG_METHODS, Branch, Forward
from .nat import fix_response_contact
from .nat_detect import request_nated

if TYPE_CHECKING:
    from ..state import ServerState
    from .ports import (Cancellable, Destinations, Hop, Listeners, Replier, Scheduler, Transactions, Transmitter,
                        Upstream)

logger = logging.getLogger("sipd.proxy")
_new = object.__new__

CANCEL_GRACE = 4.0  # seconds to wait for the 487s after CANCEL before answering 487 ourselves


# The list headers the loop hash covers besides the fixed fields, by key and name; most requests
# carry none of them, and looking a key up is cheaper than building an empty list for it.
_LOOP_FIELDS = (("route", "Route"), ("proxy-require", "Proxy-Require"), ("proxy-authorization", "Proxy-Authorization"))


def loop_hash(req: Any) -> str:
    """RFC 5393 §4.2 loop hash over the request as received (before our changes)."""
    parts = [req.uri_text, req.from_.tag or "", req.to.tag or "", req.call_id, str(req.cseq.seq)]
    idx = req.headers._idx()
    for key, name in _LOOP_FIELDS:
        if key in idx:
            parts += req.get_all(name)
    return format(zlib.crc32("\x00".join(parts).encode("utf-8", "surrogateescape")), "08x")


def best_response(responses: list[Any]) -> Any | None:
    """RFC 3261 §16.7 step 6 among final non-2xx responses (None when there are none)."""
    if not responses:
        return None
    six = [r for r in responses if r.status >= 600]
    if six:
        return six[0]
    best = min(responses, key=lambda r: (r.status // 100, r.status in (408, 503), r.status))
    return best


def clone_request(req: Any) -> Any:
    """A copy to edit and forward. It shares the header entries (immutable tuples), a copy of the
    name index and the parsed values of the original: every edit replaces entries and drops the
    parsed value of the header it touches, so what the copy keeps still describes its lines, and
    the headers a proxy only copies (From, To, Call-ID, CSeq, Contact) are not parsed again."""
    h = req.headers
    copy = _new(Headers)
    copy._items = list(h._items)
    copy._index = dict(h._idx())
    copy._cache = dict(h._cache)
    clone = _new(Request)
    clone.method, clone.version, clone.headers, clone.body = req.method, req.version, copy, req.body
    clone._uri, clone._uri_text, clone._uri_m = req._uri, req._uri_text, req._uri_m  # URIs are replaced, never edited
    return clone


@dataclass(eq=False)
class BranchState:
    ctx: ProxyContext
    branch: Branch
    tx_key: Any = None
    request: Any = None
    dest: tuple | None = None
    alternates: list[tuple] = field(default_factory=list)
    provisional: bool = False
    final: int = 0
    cancelled: bool = False

    @property
    def nat_fix(self) -> bool:
        """A dialog-creating UDP branch sent to a registered contact's NAT pinhole: its answer's Contact
        may need fixing. Never for branches to other proxies or domains (their Contact is not ours to fix)."""
        dest = self.dest
        return (dest is not None and dest[0] == "udp" and self.branch.nated and not self.branch.routes
                and self.ctx.request.method in DIALOG_METHODS and self.ctx.nat)


@dataclass(eq=False)
class ProxyContext:
    server_tx: Any
    request: Any
    source: tuple
    groups: list[list[Branch]]
    record_route: bool
    loop_hash: str
    why: str = ""
    branches: list[BranchState] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    answered: bool = False  # a 2xx went upstream
    final_sent: bool = False
    cancelled: bool = False
    timers: list[Cancellable] = field(default_factory=list)
    group_timer: Cancellable | None = None
    challenges: list[tuple[str, str]] = field(default_factory=list)
    local_ids: set[int] = field(default_factory=set)  # responses we generated (no Via of ours to pop)
    diversion: Any = None  # diversion.CallDiversion: may redirect instead of a final failure
    nat: bool = False  # [nat] enabled: fix private Contacts in responses
    account: bool = True  # its events go to accounting and dialogs (Forward.account)
    record_route_here: bool = False  # our own address in Record-Route (Forward.record_route_here)

    @property
    def pending(self) -> list[BranchState]:
        return [b for b in self.branches if not b.final]


class _Finished:
    """What stays of a context whose final response went upstream and whose branches all ended: a
    CANCEL still finds it (200, nothing to cancel) until the server transaction ends, and
    tm:inuse_transactions counts it. The request, the branch copies and the responses are freed
    at once instead of at Timer L/J (32 s on UDP): at 1,400 calls/s they were 800,000 objects
    that made one collection of the older generations stop the loop for 200-500 ms."""

    __slots__ = ()
    final_sent = True
    cancelled = False


FINISHED = _Finished()


class Proxy:
    def __init__(self, state: ServerState, *, scheduler: Scheduler, replier: Replier, transactions: Transactions,
                 upstream: Upstream, listeners: Listeners, hop: Hop, destinations: Destinations,
                 transmitter: Transmitter):
        self.config = state.config
        self.scheduler = scheduler
        self.replier = replier
        self.transactions = transactions
        self.upstream = upstream
        self.listeners = listeners
        self.hop = hop
        self.destinations = destinations
        self.transmitter = transmitter
        stats = state.stats
        self.c_fwd_requests = stats.counter("core:fwd_requests")
        self.c_uac = stats.counter("tm:UAC_transactions")
        self.c_drop_requests = stats.counter("core:drop_requests")
        self.contexts: dict[Any, ProxyContext] = {}
        self.branch_tx: dict[Any, BranchState] = {}

    # -- starting ---------------------------------------------------------------------------------

    def forward(self, request: Any, source: tuple, tx_key: Any, decision: Forward, now: float, why: str) -> None:
        req_hash = loop_hash(request)
        if self.hop.has_own_via(request, req_hash):
            self.replier.reply(request, tx_key, 482, "Loop Detected", why="loop detected (RFC 5393)", source=source)
            return
        if decision.account:
            self.upstream.emit_request(request, tx_key, now)  # accounting, dialogs, presence
        if decision.stateless or request.method == "ACK":  # ACK for 2xx: end to end, no transaction
            self._forward_stateless(request, source, decision, now, req_hash)
            return
        ctx = ProxyContext(tx_key, request, source, list(decision.groups), decision.record_route and request.method in DIALOG_METHODS,
                           req_hash, why=why)
        if tx_key is not None:
            self.contexts[tx_key] = ctx
        ctx.nat = self.config.nat.enabled
        ctx.account = decision.account
        ctx.record_route_here = decision.record_route_here or self._caller_bound_here(request, source)
        if decision.diversion is not None and request.method == "INVITE":
            ctx.diversion = decision.diversion
            ctx.diversion.attach(self, ctx)  # no-answer timer
        if request.method == "INVITE":
            self.replier.reply(request, tx_key, 100, "Trying", quiet=True, source=source)
            timeout = self.config.proxy.invite_timeout
            ctx.timers.append(self.scheduler.call_later(timeout, self._invite_timeout, ctx))
        self._next_group(ctx, now)

    def _caller_bound_here(self, request: Any, source: tuple) -> bool:
        """A caller on a TCP/TLS connection to this node, or behind a NAT pinhole opened towards
        it, is reached by this node alone: requests to it later in the call must come here, so our
        Record-Route names this node even where all nodes share one (``record_route_host``)."""
        if not self.config.cluster.record_route_host or request.method not in DIALOG_METHODS:
            return False
        return source[0] != "udp" or (self.config.nat.enabled and request_nated(request, source))

    def _next_group(self, ctx: ProxyContext, now: float) -> bool:
        if not ctx.groups:
            return False
        group = ctx.groups.pop(0)
        if ctx.group_timer is not None:
            ctx.group_timer.cancel()
            ctx.group_timer = None
        if ctx.groups and ctx.request.method == "INVITE":
            ctx.group_timer = self.scheduler.call_later(self.config.proxy.serial_timeout, self._group_timeout, ctx)
        for branch in group:
            bs = BranchState(ctx, branch)
            ctx.branches.append(bs)
            if branch.dest is None:
                self._resolve_then_send(bs)
            else:
                bs.dest = branch.dest
                self._send_branch(bs, now)
        return True

    def _resolve_then_send(self, bs: BranchState) -> None:
        scheduler = self.scheduler

        async def resolve() -> None:
            try:
                targets = await self.destinations.resolve(bs.branch.ruri)
            except Exception as exc:  # noqa: BLE001 - DNS failure is a 503/404 upstream, not a crash
                logger.info("DNS lookup for %s failed: %s", bs.branch.ruri, exc)
                targets = []
            if not targets:
                bs.final = 404
                bs.ctx.responses.append(self._local(bs.ctx, 404, "Not Found (DNS)"))
                self._after_final(bs.ctx, scheduler.time())
                return
            dests = [(t.transport, t.host, t.port, None) for t in targets]
            bs.dest, bs.alternates = dests[0], dests[1:]
            self._send_branch(bs, scheduler.time())
            self.transmitter.transmit()

        scheduler.spawn(resolve())

    def _send_branch(self, bs: BranchState, now: float) -> None:
        ctx = bs.ctx
        req = clone_request(ctx.request)
        branch = bs.branch
        ruri = branch.ruri
        if ruri is not None and ruri is not req._uri and str(ruri) != req.uri_text:  # the request's own: unchanged
            req.uri = ruri
        mf = ctx.request.max_forwards
        req.set("Max-Forwards", str((70 if mf is None else mf) - 1))
        for route in reversed(branch.routes):
            req.prepend("Route", route)
        dest = bs.dest
        assert dest is not None
        listeners, hop = self.listeners, self.hop
        out_listener = listeners.listener_for(dest)
        if ctx.record_route:
            in_listener = listeners.listener_for(ctx.source)
            if in_listener is not out_listener and in_listener is not None:
                req.prepend("Record-Route", hop.record_route_value(in_listener, here=ctx.record_route_here))
            req.prepend("Record-Route", hop.record_route_value(out_listener, here=ctx.record_route_here))
        hop.add_via(req, out_listener, ctx.loop_hash)
        bs.request = req
        try:
            bs.tx_key = self.transactions.send_request(req, dest, now)
        except Exception as exc:  # noqa: BLE001 - e.g. a destination we cannot use; answer 500/503 upstream
            logger.warning("cannot forward %s to %s: %s", req.method, dest, exc)
            bs.final = 503
            ctx.responses.append(self._local(ctx, 503, "Service Unavailable"))
            self._after_final(ctx, now)
            return
        self.branch_tx[bs.tx_key] = bs
        self.c_fwd_requests.inc()
        self.c_uac.inc()

    def _forward_stateless(self, request: Any, source: tuple, decision: Forward, now: float, req_hash: str) -> None:
        """ACK for 2xx: end to end, no transaction (RFC 3261 §16.11 / §13.2.2.4)."""
        branch = decision.groups[0][0]
        dest = branch.dest
        if dest is None:
            dest = self.destinations.dest_from_uri(branch.ruri)
            if dest is None:
                self.c_drop_requests.inc()
                return
        req = clone_request(request)
        mf = request.max_forwards
        req.set("Max-Forwards", str((70 if mf is None else mf) - 1))
        self.hop.add_via(req, self.listeners.listener_for(dest), req_hash)
        self.transactions.send_stateless(req, self.destinations.reuse_connection(dest), now)
        self.c_fwd_requests.inc()

    # -- events -----------------------------------------------------------------------------------

    def on_response(self, response: Any, tx_key: Any, now: float) -> None:
        bs = self.branch_tx.get(tx_key) if tx_key is not None else None
        if bs is None:
            self.upstream.forward_response_stateless(response, now)
            return
        ctx = bs.ctx
        status = response.status
        if status < 300 and bs.nat_fix:  # [nat]: callee reached at its NAT pinhole
            fix_response_contact(response, bs.dest)
        if status < 200:
            bs.provisional = True
            if bs.cancelled and bs.tx_key is not None:
                self.transactions.cancel(bs.tx_key, now)
            if status == 100 or ctx.final_sent:
                return
            self._relay(ctx, response, now)
            return
        if bs.final:
            if 200 <= status < 300 and ctx.request.method == "INVITE":
                self._relay(ctx, response, now)  # 2xx retransmission / second 2xx
            return
        bs.final = status
        if ctx.final_sent:  # a late final (487 of a cancelled fork, a second 2xx)
            if 200 <= status < 300 and ctx.request.method == "INVITE":
                self._relay(ctx, response, now)
            self._release(ctx)
            return
        if 200 <= status < 300:
            ctx.answered = True
            self._relay(ctx, response, now)
            self._finish(ctx, now, cancel_others=True)
            return
        if status == 503 and bs.alternates and not ctx.cancelled:  # RFC 3263 §4.3 failover
            self._failover(bs, now)
            return
        if status in (401, 407):
            for name in ("WWW-Authenticate", "Proxy-Authenticate"):
                for v in response.get_all(name):
                    ctx.challenges.append((name, v))
        ctx.responses.append(response)
        if status >= 600:
            self._send_best(ctx, now)
            self._finish(ctx, now, cancel_others=True)
            return
        self._after_final(ctx, now)

    def on_timeout(self, tx_key: Any, now: float) -> None:
        bs = self.branch_tx.get(tx_key)
        if bs is None or bs.final:
            return
        if bs.alternates and not bs.ctx.cancelled:
            self._failover(bs, now)
            return
        bs.final = 408
        if not bs.provisional or bs.ctx.request.method != "INVITE":
            bs.ctx.responses.append(self._local(bs.ctx, 408, "Request Timeout"))
        else:
            bs.ctx.responses.append(self._local(bs.ctx, 408, "Request Timeout"))
        self._after_final(bs.ctx, now)

    def on_terminated(self, tx_key: Any) -> None:
        bs = self.branch_tx.pop(tx_key, None)
        if bs is not None:
            return
        ctx = self.contexts.pop(tx_key, None)
        if ctx is not None and ctx is not FINISHED:
            self._clear_timers(ctx)

    def on_cancel(self, invite_tx: Any, now: float) -> bool:
        """CANCEL matched ``invite_tx``; returns False when there is no such proxied INVITE."""
        ctx = self.contexts.get(invite_tx)
        if ctx is None:
            return False
        if ctx.final_sent or ctx.cancelled:  # FINISHED included
            return True
        ctx.cancelled = True
        ctx.groups.clear()
        for bs in ctx.pending:
            self._cancel_branch(bs, now)
        ctx.timers.append(self.scheduler.call_later(CANCEL_GRACE, self._cancel_grace, ctx))
        return True

    def _local(self, ctx: ProxyContext, status: int, reason: str) -> Any:
        resp = self.replier.local_response(ctx.request, status, reason)
        ctx.local_ids.add(id(resp))
        return resp

    # -- internals --------------------------------------------------------------------------------

    def _failover(self, bs: BranchState, now: float) -> None:
        self.branch_tx.pop(bs.tx_key, None)
        bs.dest = bs.alternates.pop(0)
        bs.final = 0
        bs.provisional = False
        logger.info("%s %s: trying next target %s", bs.ctx.request.method, bs.branch.ruri, _fmt(bs.dest))
        self._send_branch(bs, now)

    def _cancel_branch(self, bs: BranchState, now: float) -> None:
        if bs.final or bs.cancelled:
            return
        bs.cancelled = True
        if bs.tx_key is not None and bs.provisional:
            self.transactions.cancel(bs.tx_key, now)
        # no provisional yet: the CANCEL goes out when one arrives (RFC 3261 §9.1), see on_response

    def _after_final(self, ctx: ProxyContext, now: float) -> None:
        if ctx.final_sent:
            self._release(ctx)
            return
        if ctx.pending:
            return
        if not ctx.cancelled and self._next_group(ctx, now):
            return
        self._send_best(ctx, now)
        self._finish(ctx, now, cancel_others=False)

    def _send_best(self, ctx: ProxyContext, now: float) -> None:
        if ctx.final_sent:
            return
        best = best_response(ctx.responses)
        if ctx.diversion is not None and ctx.diversion.on_failure(self, ctx, best):
            return  # diverted (busy/unavailable): a new branch is under way
        if best is None:
            best = self._local(ctx, 408, "Request Timeout")
        elif best.status == 503:
            best = self._local(ctx, 500, "Server Internal Error")  # §16.7 step 6
        elif best.status in (401, 407) and len(ctx.challenges) > 1:
            for name in ("WWW-Authenticate", "Proxy-Authenticate"):
                best.remove(name)
            for name, v in ctx.challenges:
                best.append(name, v)
        self._relay(ctx, best, now)

    def _relay(self, ctx: ProxyContext, response: Any, now: float) -> None:
        upstream = self.upstream
        if ctx.account:
            upstream.emit_response(ctx, response, now)  # what goes upstream, for accounting, dialogs, presence
        if response.status >= 200:
            ctx.final_sent = True
            upstream.log_final(ctx, response)
        upstream.relay_response(ctx, response, now)

    def _finish(self, ctx: ProxyContext, now: float, *, cancel_others: bool) -> None:
        if ctx.diversion is not None and ctx.diversion.redirecting:
            ctx.diversion.redirecting = False  # _send_best diverted the call: it is not finished
            return
        ctx.final_sent = True
        ctx.groups.clear()
        if cancel_others:
            for bs in ctx.pending:
                self._cancel_branch(bs, now)
        self._clear_timers(ctx)
        self._release(ctx)

    def _release(self, ctx: ProxyContext) -> None:
        """Once the final went upstream and every branch has its final, nothing needs the context:
        the transactions absorb retransmissions by themselves, a retransmitted 2xx is forwarded
        statelessly by its Via (RFC 3261 §16.11), a CANCEL finds FINISHED."""
        if not ctx.final_sent or ctx.pending or (ctx.diversion is not None and ctx.diversion.redirecting):
            return
        branch_tx = self.branch_tx
        for bs in ctx.branches:
            if bs.tx_key is not None and branch_tx.get(bs.tx_key) is bs:
                del branch_tx[bs.tx_key]
        ctx.branches.clear()  # BranchState.ctx <-> ctx.branches: freed by refcount, not by a collection
        if ctx.server_tx is not None and self.contexts.get(ctx.server_tx) is ctx:
            self.contexts[ctx.server_tx] = FINISHED

    def _clear_timers(self, ctx: ProxyContext) -> None:
        for t in ctx.timers:
            t.cancel()
        ctx.timers.clear()
        if ctx.group_timer is not None:
            ctx.group_timer.cancel()
            ctx.group_timer = None

    def _invite_timeout(self, ctx: ProxyContext) -> None:
        now = self.scheduler.time()
        if ctx.final_sent:
            return
        ctx.groups.clear()
        for bs in ctx.pending:
            self._cancel_branch(bs, now)
            bs.final = 408
        if not ctx.responses:
            ctx.responses.append(self._local(ctx, 408, "Request Timeout"))
        self._send_best(ctx, now)
        self._finish(ctx, now, cancel_others=False)
        self.transmitter.transmit()

    def _group_timeout(self, ctx: ProxyContext) -> None:
        now = self.scheduler.time()
        ctx.group_timer = None
        if ctx.final_sent or not ctx.groups:
            return
        for bs in ctx.pending:
            self._cancel_branch(bs, now)
            bs.final = 408
        self._next_group(ctx, now)
        self.transmitter.transmit()

    def _cancel_grace(self, ctx: ProxyContext) -> None:
        if ctx.final_sent:
            return
        now = self.scheduler.time()
        for bs in ctx.pending:
            bs.final = 487
        self._relay(ctx, self._local(ctx, 487, "Request Terminated"), now)
        self._finish(ctx, now, cancel_others=False)
        self.transmitter.transmit()


def _fmt(dest: tuple | None) -> str:
    return describe(dest) or "?"
