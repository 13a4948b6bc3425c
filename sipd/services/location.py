"""The location service (usrloc): registered contacts in memory, indexed by address-of-record.

No I/O: persistence lives in ``store.py``; this module only holds and changes the bindings.
Times are wall-clock unix seconds passed in (bindings are stored in the database as unix time).

Theory of operation:
- An AOR is the key ``user@domain`` (lowercase domain, user case kept: OpenSIPS ``case_sensitive``).
- Each AOR has a list of ``Contact`` kept in descending q, older first among equal q (OpenSIPS order).
- A contact is identified within its AOR by its URI text, or by ``+sip.instance`` (+ reg-id) when the
  UA sent one (RFC 5626 §6: the instance replaces the flow, not the URI).
- Expired contacts are purged by ``expire(now)``, driven by a heap of expiry times so a housekeeping
  tick costs O(expired), not O(contacts).
- Temporary GRUUs (RFC 5627 §3.2) map an opaque token to (aor, instance).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Contact:
    """One binding. Field names follow OpenSIPS usrloc, as the management commands show them."""

    uri: str
    expires: float  # unix time; 0 = permanent
    q: float | None = None
    call_id: str = ""
    cseq: int = 0
    user_agent: str = ""
    received: str | None = None  # "udp:192.0.2.1:5060" — where the REGISTER came from
    path: str | None = None  # comma-joined Path header values
    socket: str = ""  # our listen socket that received the REGISTER ("udp:10.0.0.1:5060")
    flags: int = 0
    cflags: str = ""
    methods: int | None = None
    instance: str | None = None
    reg_id: int | None = None
    state: str = "CS_NEW"
    conn_id: int | None = None  # TCP/TLS connection the REGISTER arrived on (not persisted)
    temp_gruu: str | None = None
    last_modified: float = 0.0
    params: str = ""  # contact header params to echo (other than expires/q)
    #: the cluster node holding this binding's TCP/TLS connection or NAT pinhole ([cluster] node_id);
    #: None when any node can reach the contact itself (docs/several-nodes.md)
    node_id: str | None = None

    def alive(self, now: float) -> bool:
        return self.expires == 0 or self.expires > now

    def same_binding(self, other: Contact) -> bool:
        if self.instance and other.instance:
            return self.instance == other.instance and self.reg_id == other.reg_id
        return self.uri == other.uri

    def sort_q(self) -> float:
        return -1.0 if self.q is None else self.q


def _identity(c: Contact) -> tuple:
    """What a refresh of a binding leaves as it was: everything but its expiry, Call-ID and CSeq
    (a UA that restarted, or one that never kept its Call-ID, registers the same binding with a new
    one), times and write-back state. What calls and NAT pings read is all here."""
    return (c.uri, c.q, c.user_agent, c.received, c.path, c.socket, c.flags, c.cflags, c.methods,
            c.instance, c.reg_id, c.conn_id, c.temp_gruu, c.params, c.node_id)


def refresh_only(old: Sequence[Contact], new: Sequence[Contact], until: float) -> bool:
    """Whether ``new`` is ``old`` refreshed: the same bindings in the same order, each changed at
    most in its Call-ID, CSeq and times, its expiry not earlier, and every old binding alive past ``until``
    (a reader of ``old`` that sees the change late still finds each binding live)."""
    if len(old) != len(new) or not old:
        return False
    for o, n in zip(old, new):
        if not until < o.expires <= n.expires or _identity(o) != _identity(n):
            return False
    return True


def aor_key(user: str | None, host: str) -> str:
    """``user@domain`` as the location index key (domain lowercased)."""
    return f"{user or ''}@{host.lower()}"


class Location:
    """In-memory location table. See the module docstring for the rules."""

    def __init__(self) -> None:
        self._aors: dict[str, list[Contact]] = {}
        self._heap: list[tuple[float, str]] = []
        self._temp_gruus: dict[str, tuple[str, str]] = {}
        self.dirty: set[str] = set()  # AORs changed since the last write-back flush
        #: called with the AOR and its bindings before the change after each ``replace`` (registrar
        #: workers: sipd/daemon/workers/)
        self.on_change: Callable[[str, Sequence[Contact]], None] | None = None

    # -- reading ------------------------------------------------------------------------------

    def aors(self) -> Iterable[str]:
        return list(self._aors)

    def contacts(self, aor: str) -> list[Contact]:
        return list(self._aors.get(aor, ()))

    def current(self, aor: str) -> list[Contact] | tuple[()]:
        """The stored bindings of ``aor`` without a copy: read them, never change the list (the
        registrar builds a new one and hands it to ``replace``)."""
        return self._aors.get(aor, ())

    def lookup(self, aor: str, now: float) -> list[Contact]:
        """Live contacts of ``aor``, descending q."""
        return [c for c in self._aors.get(aor, ()) if c.alive(now)]

    def __contains__(self, aor: str) -> bool:
        return aor in self._aors

    def __len__(self) -> int:
        return len(self._aors)

    def count_contacts(self) -> int:
        return sum(len(v) for v in self._aors.values())

    def items(self) -> Iterator[tuple[str, list[Contact]]]:
        return iter(list(self._aors.items()))

    def by_instance(self, aor: str, instance: str, now: float) -> list[Contact]:
        return [c for c in self.lookup(aor, now) if c.instance == instance]

    def resolve_temp_gruu(self, token: str) -> tuple[str, str] | None:
        return self._temp_gruus.get(token)

    # -- changing -----------------------------------------------------------------------------

    def replace(self, aor: str, contacts: list[Contact], *, mark_dirty: bool = True, notify: bool = True) -> None:
        """Set the full contact list of ``aor`` (empty removes it); ``notify``: tell ``on_change``."""
        old = self._aors.get(aor, ())
        if contacts:
            if len(contacts) > 1:
                contacts.sort(key=Contact.sort_q, reverse=True)  # stable: older first among equal q
            self._aors[aor] = contacts
            for c in contacts:
                if c.expires:
                    heapq.heappush(self._heap, (c.expires, aor))
                if c.temp_gruu and c.instance:
                    self._temp_gruus[c.temp_gruu] = (aor, c.instance)
        else:
            self._aors.pop(aor, None)
        if mark_dirty:
            self.dirty.add(aor)
        if notify and self.on_change is not None:
            self.on_change(aor, old)

    def remove(self, aor: str, contact: str | None = None) -> int:
        """Remove one contact (by URI) or the whole AOR; returns how many were removed."""
        current = self._aors.get(aor)
        if not current:
            return 0
        if contact is None:
            self.replace(aor, [])
            return len(current)
        keep = [c for c in current if c.uri != contact]
        removed = len(current) - len(keep)
        if removed:
            self.replace(aor, keep)
        return removed

    def clear(self) -> None:
        self._aors.clear()
        self._heap.clear()
        self._temp_gruus.clear()

    def expire(self, now: float) -> list[tuple[str, Contact]]:
        """Purge contacts whose time has come; returns what was removed."""
        removed: list[tuple[str, Contact]] = []
        heap = self._heap
        seen: set[str] = set()
        while heap and heap[0][0] <= now:
            _, aor = heapq.heappop(heap)
            if aor in seen:
                continue
            seen.add(aor)
            current = self._aors.get(aor)
            if not current:
                continue
            keep = [c for c in current if c.alive(now)]
            if len(keep) != len(current):
                removed.extend((aor, c) for c in current if not c.alive(now))
                for c in current:
                    if not c.alive(now) and c.temp_gruu:
                        self._temp_gruus.pop(c.temp_gruu, None)
                if keep:
                    self._aors[aor] = keep
                else:
                    del self._aors[aor]
                self.dirty.add(aor)
        # Stale entries from refreshes pile up: rebuild once they outnumber the contacts four to
        # one. Every AOR holds a contact, so below four per AOR the contacts need no counting (a
        # walk over the whole table, once a second, would be most of an idle server's work).
        if len(heap) > 1024 and len(heap) > 4 * len(self._aors) and len(heap) > 4 * self.count_contacts():
            self._heap = [(c.expires, a) for a, cs in self._aors.items() for c in cs if c.expires]
            heapq.heapify(self._heap)
        return removed
