"""The presence server's state: publications, subscriptions, and the decisions over them.

No I/O. Time comes in as ``now`` (unix seconds, the clock of the ``expires`` columns); entity tags
and To tags come from injected factories. The daemon glue (``presence.py``) feeds requests in,
sends what ``outbox`` asks for as NOTIFY client transactions, and persists what ``dirty_*`` names.

Theory of operation
-------------------
PUBLISH (RFC 3903 §6): an initial publication carries a body and no SIP-If-Match and creates an
entity tag; a refresh carries SIP-If-Match and no body; a modification carries both; a removal is a
refresh with Expires 0. Every success hands out a *new* entity tag (§6 step 8). An unknown tag is
412. All publications of one presentity are merged into the one document watchers see
(``pidf.merge``), newest first, with "on the phone" overlaid while the user is in a call.

SUBSCRIBE (RFC 6665 §4.2.1): an initial SUBSCRIBE creates a dialog (our To tag) and a subscription
authorized by the policy; it is answered 200 and followed by a NOTIFY with the current state
(``Subscription-State: active;expires=N``). A refresh inside the dialog restarts the timer and
sends a NOTIFY; Expires 0 ends it with ``terminated;reason=timeout`` -- as does reaching the end of
the subscription. Each change of a presentity's document queues one NOTIFY per watcher.
``presence.winfo`` (RFC 3857/3858) subscriptions of a user get a watcher list each time the set of
that user's watchers changes.

Outbox semantics: ``outbox`` maps a subscription key to (subscription, terminate reason | None);
queuing twice before the glue drains it sends one NOTIFY with the newest state (coalescing), and a
termination is never overwritten by a later "active".
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..problem import Problem
from . import pidf

EVENT_PRESENCE = "presence"
EVENT_WINFO = "presence.winfo"
EVENTS = (EVENT_PRESENCE, EVENT_WINFO)
POLICIES = ("same-domain", "local", "open", "rules")

SubKey = tuple[str, str]  # (Call-ID, our To tag)


def validate(config: Config) -> list[Problem]:
    """Problems in ``[presence]`` (one of sipd.validation.VALIDATORS)."""
    cfg = config.presence
    problems = []
    if cfg.policy not in POLICIES:
        problems.append(Problem("presence.policy", f"unknown policy {cfg.policy!r}", ", ".join(POLICIES)))
    for i, rule in enumerate(cfg.rules):
        if len(rule.split()) != 2:
            problems.append(Problem(f"presence.rules[{i}]", f"not 'WATCHER PRESENTITY': {rule!r}", '"*@example.com boss@example.com"'))
    if cfg.min_expires < 0 or cfg.max_expires <= 0 or cfg.min_expires > cfg.max_expires:
        problems.append(Problem("presence.max_expires", "need 0 <= min_expires <= max_expires, max_expires > 0", "e.g. 60 and 3600"))
    if cfg.default_expires <= 0:
        problems.append(Problem("presence.default_expires", "must be positive", "e.g. 3600"))
    return problems


def aor_of(uri: Any) -> str:
    """``user@domain`` (domain lowercased) of a SIP URI."""
    return f"{uri.user or ''}@{(uri.host or '').lower()}"


@dataclass(slots=True, eq=False)
class Publication:
    aor: str
    etag: str
    expires: float  # unix time
    body: bytes
    sender: str = ""  # Contact / From of the publisher, for listings
    received: float = 0.0
    event: str = EVENT_PRESENCE


@dataclass(slots=True, eq=False)
class Subscription:
    presentity: str  # user@domain
    event: str
    watcher: str  # user@domain of the subscriber
    call_id: str
    to_tag: str  # ours
    from_tag: str
    remote_uri: str  # From URI of the SUBSCRIBE (NOTIFY's To)
    local_uri: str  # To URI of the SUBSCRIBE (NOTIFY's From)
    contact: str  # remote target (NOTIFY's Request-URI)
    route_set: list[str]
    local_contact: str
    expires: float  # unix time
    remote_cseq: int
    local_cseq: int = 0
    version: int = 0  # watcherinfo document version
    event_id: str | None = None
    socket: str = ""
    source: tuple | None = None  # where the SUBSCRIBE came from (runtime only)
    created: float = 0.0
    # runtime only: one NOTIFY in flight at a time, the next one coalesced
    inflight: Any = None
    again: bool = False

    @property
    def key(self) -> SubKey:
        return (self.call_id, self.to_tag)


@dataclass(slots=True)
class Outcome:
    """The answer to one PUBLISH/SUBSCRIBE: status line and headers; ``to_tag`` for a new dialog."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    why: str = ""
    to_tag: str | None = None


def _counter_tag(prefix: str) -> Callable[[], str]:
    seq = itertools.count(1)
    return lambda: f"{prefix}{next(seq)}"


class PresenceState:
    """Publications and subscriptions of one server. See the module docstring."""

    def __init__(self, cfg: Any, *, is_local: Callable[[str], bool] = lambda d: True,
                 etag_factory: Callable[[], str] | None = None, tag_factory: Callable[[], str] | None = None):
        self.cfg = cfg
        self.is_local = is_local
        self.new_etag = etag_factory or _counter_tag("e")
        self.new_tag = tag_factory or _counter_tag("p")
        self.pubs: dict[str, dict[str, Publication]] = {}  # aor -> etag -> publication
        self.subs: dict[SubKey, Subscription] = {}
        self.by_presentity: dict[tuple[str, str], dict[SubKey, None]] = {}  # (aor, event) -> keys
        self.calls: dict[str, tuple[str, ...]] = {}  # Call-ID -> local users in that call
        self.in_call: dict[str, int] = {}  # aor -> calls
        self.outbox: dict[SubKey, tuple[Subscription, str | None]] = {}
        self.dirty_pubs: set[tuple[str, str]] = set()  # (aor, etag): write or delete
        self.dirty_subs: set[SubKey] = set()
        self.new_watchers: list[Subscription] = []  # for the ``watchers`` table
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._docs: dict[str, bytes | None] = {}  # cache of merged documents

    # -- counts -----------------------------------------------------------------------------------

    @property
    def n_publications(self) -> int:
        return sum(len(p) for p in self.pubs.values())

    def watchers_of(self, aor: str, event: str = EVENT_PRESENCE) -> list[Subscription]:
        return [self.subs[k] for k in self.by_presentity.get((aor, event), ())]

    # -- documents --------------------------------------------------------------------------------

    def document(self, aor: str) -> bytes | None:
        """The merged PIDF document of ``aor`` (None: nothing published and not in a call)."""
        if aor in self._docs:
            return self._docs[aor]
        pubs = sorted(self.pubs.get(aor, {}).values(), key=lambda p: p.received, reverse=True)
        entity = f"sip:{aor}"
        body = pidf.merge([p.body for p in pubs], entity) if pubs else None
        if self.in_call.get(aor):
            body = pidf.with_call(body, entity)
        self._docs[aor] = body
        return body

    def winfo_document(self, sub: Subscription, now: float) -> bytes:
        entries = [
            pidf.WatcherEntry(id=f"{w.call_id[:16]}.{w.to_tag}", uri=f"sip:{w.watcher}", status="active",
                              event="subscribe", duration=int(now - w.created))
            for w in self.watchers_of(sub.presentity)
        ]
        body = pidf.winfo(f"sip:{sub.presentity}", sub.version, entries)
        sub.version += 1
        return body

    def _changed(self, aor: str) -> None:
        """The document of ``aor`` changed: queue a NOTIFY for each of its watchers."""
        self._docs.pop(aor, None)
        for key in self.by_presentity.get((aor, EVENT_PRESENCE), ()):
            self._queue(self.subs[key], None)

    def _watchers_changed(self, aor: str) -> None:
        for key in self.by_presentity.get((aor, EVENT_WINFO), ()):
            self._queue(self.subs[key], None)

    def _queue(self, sub: Subscription, reason: str | None) -> None:
        old = self.outbox.get(sub.key)
        if old is not None and old[1] is not None:
            return
        self.outbox[sub.key] = (sub, reason)

    def drain(self) -> list[tuple[Subscription, str | None]]:
        out = list(self.outbox.values())
        self.outbox.clear()
        return out

    # -- expiry -----------------------------------------------------------------------------------

    def _arm(self, expires: float, kind: str, key: Any) -> None:
        heapq.heappush(self._heap, (expires, next(self._seq), kind, key))

    def next_expiry(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def expire(self, now: float) -> int:
        """Remove what expired by ``now``; queue NOTIFYs. Returns how many entries went."""
        n = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, kind, key = heapq.heappop(heap)
            if kind == "pub":
                aor, etag = key
                pub = self.pubs.get(aor, {}).get(etag)
                if pub is not None and pub.expires <= now:
                    self._remove_pub(pub)
                    n += 1
            else:
                sub = self.subs.get(key)
                if sub is not None and sub.expires <= now:
                    self._remove_sub(sub, "timeout")
                    n += 1
        return n

    # -- PUBLISH ----------------------------------------------------------------------------------

    def _expires(self, req: Any) -> int | Outcome:
        cfg = self.cfg
        try:
            value = req.expires
        except Exception:  # noqa: BLE001 - bad Expires value
            return Outcome(400, "Bad Request", why="invalid Expires")
        if value is None:
            return cfg.default_expires
        if 0 < value < cfg.min_expires:
            return Outcome(423, "Interval Too Brief", [("Min-Expires", str(cfg.min_expires))], why=f"Expires {value}")
        return min(value, cfg.max_expires)

    def publish(self, req: Any, now: float, *, sender: str = "") -> Outcome:
        """RFC 3903 §6 processing of a PUBLISH whose Request-URI is a local presentity."""
        event = (req.get("Event") or "").split(";", 1)[0].strip().lower()
        if event != EVENT_PRESENCE:
            return Outcome(489, "Bad Event", [("Allow-Events", EVENT_PRESENCE)], why=f"Event {event or 'missing'}")
        expires = self._expires(req)
        if isinstance(expires, Outcome):
            return expires
        aor = aor_of(req.uri)
        etag = (req.get("SIP-If-Match") or "").strip()
        body = req.body
        if body:
            ctype = (req.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if ctype != pidf.PIDF_TYPE:
                return Outcome(415, "Unsupported Media Type", [("Accept", pidf.PIDF_TYPE)], why=f"Content-Type {ctype!r}")
            if len(body) > self.cfg.max_body:
                return Outcome(413, "Request Entity Too Large", why=f"{len(body)} bytes")
            try:
                pidf.parse(body)
            except pidf.PidfError as exc:
                return Outcome(400, "Bad Request", why=f"invalid PIDF: {exc}")
        current = self.pubs.get(aor, {})
        if etag:
            pub = current.get(etag)
            if pub is None or pub.expires <= now:
                return Outcome(412, "Conditional Request Failed", why=f"unknown entity tag {etag}")
            del current[etag]
            self.dirty_pubs.add((aor, etag))
            if expires == 0:
                if not current:
                    self.pubs.pop(aor, None)
                self._changed(aor)
                return Outcome(200, "OK", [("SIP-ETag", etag), ("Expires", "0")], why=f"publication {etag} removed")
            new = Publication(aor, self.new_etag(), now + expires, body or pub.body, sender or pub.sender,
                              now if body else pub.received)
            why = "modified" if body else "refreshed"
        else:
            if not body:
                return Outcome(400, "Bad Request", why="PUBLISH without body and without SIP-If-Match")
            if expires == 0:
                return Outcome(400, "Bad Request", why="initial PUBLISH with Expires 0")
            if self.n_publications >= self.cfg.max_publications:
                return Outcome(503, "Service Unavailable", [("Retry-After", "60")], why="too many publications")
            new = Publication(aor, self.new_etag(), now + expires, body, sender, now)
            why = "published"
        self.pubs.setdefault(aor, {})[new.etag] = new
        self.dirty_pubs.add((aor, new.etag))
        self._arm(new.expires, "pub", (aor, new.etag))
        if body or why == "modified":
            self._changed(aor)
        return Outcome(200, "OK", [("SIP-ETag", new.etag), ("Expires", str(expires))], why=f"{why} {new.etag} ({expires}s)")

    def _remove_pub(self, pub: Publication) -> None:
        cur = self.pubs.get(pub.aor)
        if cur is None or cur.pop(pub.etag, None) is None:
            return
        if not cur:
            del self.pubs[pub.aor]
        self.dirty_pubs.add((pub.aor, pub.etag))
        self._changed(pub.aor)

    def add_publication(self, pub: Publication) -> None:
        """Restore one publication (from the database at start)."""
        self.pubs.setdefault(pub.aor, {})[pub.etag] = pub
        self._docs.pop(pub.aor, None)
        self._arm(pub.expires, "pub", (pub.aor, pub.etag))

    # -- SUBSCRIBE --------------------------------------------------------------------------------

    def authorized(self, watcher: str, presentity: str, event: str) -> bool:
        if watcher == presentity:
            return True
        if event == EVENT_WINFO:
            return False  # only the user sees who watches them
        policy = self.cfg.policy
        if policy == "open":
            return True
        wdom = watcher.rpartition("@")[2]
        if policy == "same-domain":
            return wdom == presentity.rpartition("@")[2]
        if policy == "local":
            return self.is_local(wdom)
        for rule in self.cfg.rules:
            parts = rule.split()
            if len(parts) == 2 and fnmatch.fnmatchcase(watcher, parts[0]) and fnmatch.fnmatchcase(presentity, parts[1]):
                return True
        return False

    def subscribe(self, req: Any, now: float, *, local_contact: str, source: tuple | None = None,
                  socket: str = "") -> Outcome:
        """An initial SUBSCRIBE (no To tag) for a local presentity: RFC 6665 §4.2.1."""
        event_hdr = req.get("Event") or ""
        event, _, params = event_hdr.partition(";")
        event = event.strip().lower()
        if event not in EVENTS:
            return Outcome(489, "Bad Event", [("Allow-Events", ", ".join(EVENTS))], why=f"Event {event or 'missing'}")
        event_id = _param(params, "id")
        accept = req.get_all("Accept")
        wanted = pidf.PIDF_TYPE if event == EVENT_PRESENCE else pidf.WINFO_TYPE
        if accept and not any(a.split(";", 1)[0].strip().lower() in (wanted, "*/*", "application/*") for a in accept):
            return Outcome(406, "Not Acceptable", [("Accept", wanted)], why=f"Accept {', '.join(accept)}")
        expires = self._expires(req)
        if isinstance(expires, Outcome):
            return expires
        contacts = req.contacts
        if not contacts:
            return Outcome(400, "Bad Request", why="SUBSCRIBE without Contact")
        presentity = aor_of(req.uri)
        watcher = aor_of(req.from_.uri)
        if not self.authorized(watcher, presentity, event):
            return Outcome(403, "Forbidden", why=f"{watcher} may not watch {presentity} ({self.cfg.policy})")
        if expires and len(self.subs) >= self.cfg.max_subscriptions:
            return Outcome(503, "Service Unavailable", [("Retry-After", "60")], why="too many subscriptions")
        sub = Subscription(
            presentity=presentity, event=event, watcher=watcher, call_id=req.call_id, to_tag=self.new_tag(),
            from_tag=req.from_.tag or "", remote_uri=str(req.from_.uri), local_uri=str(req.to.uri),
            contact=str(contacts[0].uri), route_set=[str(r) for r in req.record_routes], local_contact=local_contact,
            expires=now + expires, remote_cseq=req.cseq.seq, event_id=event_id, socket=socket, source=source,
            created=now,
        )
        headers = [("Expires", str(expires)), ("Contact", f"<{local_contact}>")]
        if expires == 0:  # a fetch: one NOTIFY with the state, then nothing (RFC 6665 §4.4.3)
            self._queue(sub, "timeout")
            return Outcome(200, "OK", headers, why=f"{event} fetch by {watcher}", to_tag=sub.to_tag)
        self._add_sub(sub)
        self.new_watchers.append(sub)
        self._queue(sub, None)
        return Outcome(200, "OK", headers, why=f"{event} subscription of {watcher} ({expires}s)", to_tag=sub.to_tag)

    def find(self, call_id: str, to_tag: str | None) -> Subscription | None:
        return self.subs.get((call_id, to_tag or ""))

    def resubscribe(self, sub: Subscription, req: Any, now: float) -> Outcome:
        """A SUBSCRIBE inside the subscription's dialog: refresh, or end it with Expires 0."""
        seq = req.cseq.seq
        if seq <= sub.remote_cseq:
            return Outcome(500, "Server Internal Error", [("Retry-After", "1")], why=f"CSeq {seq} not above {sub.remote_cseq}")
        expires = self._expires(req)
        if isinstance(expires, Outcome):
            return expires
        sub.remote_cseq = seq
        if req.contacts:
            sub.contact = str(req.contacts[0].uri)
        headers = [("Expires", str(expires)), ("Contact", f"<{sub.local_contact}>")]
        if expires == 0:
            self._remove_sub(sub, "timeout")
            return Outcome(200, "OK", headers, why=f"{sub.event} subscription of {sub.watcher} ended")
        sub.expires = now + expires
        self._arm(sub.expires, "sub", sub.key)
        self.dirty_subs.add(sub.key)
        self._queue(sub, None)
        return Outcome(200, "OK", headers, why=f"{sub.event} subscription of {sub.watcher} refreshed ({expires}s)")

    def _add_sub(self, sub: Subscription) -> None:
        self.subs[sub.key] = sub
        self.by_presentity.setdefault((sub.presentity, sub.event), {})[sub.key] = None
        self._arm(sub.expires, "sub", sub.key)
        self.dirty_subs.add(sub.key)
        if sub.event == EVENT_PRESENCE:
            self._watchers_changed(sub.presentity)

    def add_subscription(self, sub: Subscription) -> None:
        """Restore one subscription (from the database at start); no NOTIFY."""
        self.subs[sub.key] = sub
        self.by_presentity.setdefault((sub.presentity, sub.event), {})[sub.key] = None
        self._arm(sub.expires, "sub", sub.key)

    def _remove_sub(self, sub: Subscription, reason: str | None) -> None:
        if self.subs.pop(sub.key, None) is None:
            return
        index = self.by_presentity.get((sub.presentity, sub.event))
        if index is not None:
            index.pop(sub.key, None)
            if not index:
                del self.by_presentity[(sub.presentity, sub.event)]
        self.dirty_subs.add(sub.key)
        if reason is not None:
            self._queue(sub, reason)
        else:
            self.outbox.pop(sub.key, None)
        if sub.event == EVENT_PRESENCE:
            self._watchers_changed(sub.presentity)

    def drop(self, key: SubKey, reason: str | None = None) -> Subscription | None:
        """End a subscription: the watcher is gone (481/408 to a NOTIFY) -- ``reason`` None sends
        nothing; or by operator/config (``reason`` "deactivated", "noresource"...)."""
        sub = self.subs.get(key)
        if sub is not None:
            self._remove_sub(sub, reason)
        return sub

    # -- calls (dialog-driven "on the phone") -------------------------------------------------------

    def call_started(self, call_id: str, aors: tuple[str, ...]) -> None:
        if call_id in self.calls:
            return
        self.calls[call_id] = aors
        for aor in aors:
            self.in_call[aor] = self.in_call.get(aor, 0) + 1
            if self.in_call[aor] == 1:
                self._changed(aor)

    def call_ended(self, call_id: str) -> None:
        for aor in self.calls.pop(call_id, ()):
            left = self.in_call.get(aor, 0) - 1
            if left <= 0:
                self.in_call.pop(aor, None)
                self._changed(aor)
            else:
                self.in_call[aor] = left

    # -- NOTIFY -----------------------------------------------------------------------------------

    def notify_parts(self, sub: Subscription, reason: str | None, now: float) -> tuple[list[tuple[str, str]], bytes]:
        """Headers (without Via) and body of the next NOTIFY of ``sub`` (RFC 6665 §4.2.2)."""
        sub.local_cseq += 1
        self.dirty_subs.add(sub.key)
        if reason is None:
            state = f"active;expires={max(0, int(sub.expires - now))}"
        else:
            state = f"terminated;reason={reason}"
        event = sub.event + (f";id={sub.event_id}" if sub.event_id else "")
        headers = [("Route", r) for r in sub.route_set]
        headers += [
            ("From", f"<{sub.local_uri}>;tag={sub.to_tag}"),
            ("To", f"<{sub.remote_uri}>;tag={sub.from_tag}" if sub.from_tag else f"<{sub.remote_uri}>"),
            ("Call-ID", sub.call_id),
            ("CSeq", f"{sub.local_cseq} NOTIFY"),
            ("Max-Forwards", "70"),
            ("Contact", f"<{sub.local_contact}>"),
            ("Event", event),
            ("Subscription-State", state),
        ]
        if sub.event == EVENT_WINFO:
            body = self.winfo_document(sub, now)
            headers.append(("Content-Type", pidf.WINFO_TYPE))
        else:
            body = self.document(sub.presentity) or b""
            if body:
                headers.append(("Content-Type", pidf.PIDF_TYPE))
        return headers, body


def _param(params: str, name: str) -> str | None:
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.strip().lower() == name:
            return v.strip() or None
    return None
