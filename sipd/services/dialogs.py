"""Call tracking: dialogs (OpenSIPS ``dialog`` module) and the accounting records calls produce.

Pure: events in (request forwarded, response relayed or sent, with their wall-clock time),
``Record``s out (sipd/services/cdr.py). No I/O, no clock, no asyncio; the service in
``accounting.py`` feeds it from ``state.events`` and stores what comes out.

Theory of operation:
- An initial INVITE forwarded by the proxy creates a ``Dialog`` in state UNCONFIRMED, keyed by
  its server transaction. A 1xx with a To tag makes it EARLY; the first 2xx makes it CONFIRMED
  (answer time, callee's tag/contact/route set) and, with dialogs on, persists it (``upsert``
  of the ``dialog`` row); the ACK makes it CONFIRMED (acknowledged, state 4).
- A final failure (>= 300) ends the call at once: acc row, missed_calls row, CDR.
- A BYE from either side ends the dialog when it is forwarded (as OpenSIPS does): CDR with the
  end reason (Upstream/Downstream BYE) and the ``dialog`` row deleted. The BYE's own acc row is
  written when its final response is relayed (its sip_code is the BYE's).
- A CANCEL (its local 200) is accounted and marks the call cancelled; the INVITE's 487 then
  ends it with status "cancelled".
- An INVITE answered by the server itself (404 unknown user, 480 not registered, ...) is a call
  that failed at once; 401/407 challenges are not calls and are ignored.
- ``due(wall)``: confirmed dialogs past their lifetime; the service sends BYE both ways and calls
  ``end(dialog, wall, DIALOG_TIMEOUT)``.
- After a restart ``restore(rows)`` brings back the persisted dialogs with their original start
  and answer times, so the BYE that comes later still completes a correct CDR.

States use OpenSIPS's numbers (``dlg_list`` shows them): 1 unconfirmed, 2 early, 3 confirmed
(2xx, not yet ACKed), 4 confirmed, 5 deleted.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .cdr import (
    CALLEE_BYE,
    CALLER_BYE,
    CANCELLED,
    REJECTED,
    Record,
    acc_row,
    cdr_row,
)

#: Responses to an INVITE that are not a call outcome (digest challenges, RFC 3261 §22).
CHALLENGES = frozenset({401, 407})


class DlgState(IntEnum):
    UNCONFIRMED = 1
    EARLY = 2
    CONFIRMED_NA = 3
    CONFIRMED = 4
    DELETED = 5

    @property
    def label(self) -> str:
        return {1: "unconfirmed", 2: "early", 3: "confirmed", 4: "confirmed", 5: "deleted"}[int(self)]


@dataclass(eq=False)
class Dialog:
    id: int
    call_id: str
    from_tag: str
    caller: str                      # From URI
    callee: str                      # To URI
    ruri: str = ""
    to_tag: str = ""
    state: DlgState = DlgState.UNCONFIRMED
    created: float = 0.0             # INVITE forwarded (wall)
    answered: float | None = None    # 2xx relayed (wall)
    timeout: float | None = None     # wall time the lifetime ends (None = no limit)
    caller_contact: str = ""
    callee_contact: str = ""
    caller_route_set: list[str] = field(default_factory=list)  # us -> caller, nearest first
    callee_route_set: list[str] = field(default_factory=list)  # us -> callee, nearest first
    caller_cseq: int = 0             # highest CSeq seen from the caller
    callee_cseq: int = 0             # highest CSeq seen from the callee
    caller_addr: str = ""            # "udp:127.0.0.1:5062" where the INVITE came from
    callee_addr: str = ""            # where the 2xx came from
    invite_tx: Any = None
    cancelled: bool = False
    end_reason: str = ""             # set before ending when we end it (MI, timeout)
    restored: bool = False

    def as_dict(self, wall: float | None = None) -> dict[str, Any]:
        """The ``dlg_list`` view (OpenSIPS names where they exist)."""
        d: dict[str, Any] = {
            "ID": str(self.id), "state": int(self.state), "state_name": self.state.label,
            "callid": self.call_id, "from_uri": self.caller, "from_tag": self.from_tag,
            "to_uri": self.callee, "to_tag": self.to_tag, "ruri": self.ruri,
            "caller_contact": self.caller_contact, "callee_contact": self.callee_contact,
            "caller_sock": self.caller_addr, "callee_sock": self.callee_addr,
            "created": self.created, "start_time": self.answered or 0,
            "timeout": self.timeout or 0,
        }
        if wall is not None:
            d["age"] = max(0, int(wall - self.created))
            d["duration"] = max(0, int(wall - self.answered)) if self.answered else 0
        return d

    def to_row(self) -> dict[str, Any]:
        """The ``dialog`` table row (OpenSIPS columns; our extra times in ``vars`` as JSON)."""
        return {
            "dlg_id": self.id, "callid": self.call_id[:255], "from_uri": self.caller[:255],
            "from_tag": self.from_tag[:64], "to_uri": self.callee[:255], "to_tag": self.to_tag[:64],
            "caller_cseq": str(self.caller_cseq), "callee_cseq": str(self.callee_cseq),
            "caller_route_set": ",".join(self.caller_route_set) or None,
            "callee_route_set": ",".join(self.callee_route_set) or None,
            "caller_contact": self.caller_contact[:255] or None, "callee_contact": self.callee_contact[:255] or None,
            "caller_sock": self.caller_addr[:64], "callee_sock": self.callee_addr[:64],
            "state": int(self.state), "start_time": int(self.answered or 0), "timeout": int(self.timeout or 0),
            "vars": json.dumps({"created": self.created, "answered": self.answered, "timeout": self.timeout,
                                "ruri": self.ruri, "caller_route_set": self.caller_route_set,
                                "callee_route_set": self.callee_route_set}),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Dialog:
        raw = row.get("vars") or "{}"
        if isinstance(raw, (bytes, bytearray)):
            raw = raw.decode("utf-8", "replace")
        try:
            v = json.loads(raw)
        except ValueError:
            v = {}
        answered = v.get("answered") or (float(row["start_time"]) if row.get("start_time") else None)
        return cls(
            id=int(row["dlg_id"]), call_id=row.get("callid") or "", from_tag=row.get("from_tag") or "",
            caller=row.get("from_uri") or "", callee=row.get("to_uri") or "", ruri=v.get("ruri", ""),
            to_tag=row.get("to_tag") or "", state=DlgState(int(row.get("state") or 4)),
            created=float(v.get("created") or answered or 0), answered=answered,
            timeout=v.get("timeout") or (float(row["timeout"]) if row.get("timeout") else None),
            caller_contact=row.get("caller_contact") or "", callee_contact=row.get("callee_contact") or "",
            caller_route_set=list(v.get("caller_route_set") or []),
            callee_route_set=list(v.get("callee_route_set") or []),
            caller_cseq=_int(row.get("caller_cseq")), callee_cseq=_int(row.get("callee_cseq")),
            caller_addr=row.get("caller_sock") or "", callee_addr=row.get("callee_sock") or "",
            restored=True,
        )


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _uri(name_addr: Any) -> str:
    return str(name_addr.uri)


def _contact(msg: Any) -> str:
    try:
        contacts = msg.contacts
    except Exception:  # noqa: BLE001 - a bad Contact must not stop accounting
        return ""
    return str(contacts[0].uri) if contacts else ""


def default_ids(start_ms: int) -> Callable[[], int]:
    """Dialog ids unique across restarts: start time in ms << 16, plus a counter (fits BIGINT)."""
    counter = itertools.count(1)
    return lambda: (start_ms << 16) + (next(counter) & 0xFFFF)


class Tracker:
    """Follows calls from proxy events and says what to store.

    Args:
        lifetime: seconds a confirmed dialog may last (0 = no limit).
        acc: produce acc / missed_calls / cdrs records.
        dialogs: persist dialogs (``dialog`` table upserts/deletes).
        ids: dialog id factory.
        is_self_route: True for a Record-Route value naming this server (to split route sets).
    """

    def __init__(self, *, lifetime: float = 0.0, acc: bool = True, dialogs: bool = True,
                 ids: Callable[[], int] | None = None, is_self_route: Callable[[str], bool] | None = None):
        self.lifetime = lifetime
        self.acc = acc
        self.persist = dialogs
        self._ids = ids or default_ids(0)
        self._is_self = is_self_route or (lambda value: False)
        self.dialogs: dict[int, Dialog] = {}
        self.by_call: dict[str, Dialog] = {}
        self.by_tx: dict[Any, Dialog] = {}
        self.pending: dict[Any, Dialog | None] = {}   # BYE transactions -> their dialog

    # -- queries ----------------------------------------------------------------------------------

    def find(self, key: str) -> Dialog | None:
        """A dialog by its ID (decimal) or by its Call-ID."""
        if key.isdigit() and int(key) in self.dialogs:
            return self.dialogs[int(key)]
        return self.by_call.get(key)

    def list(self) -> list[Dialog]:
        return sorted(self.dialogs.values(), key=lambda d: d.id)

    def counts(self) -> tuple[int, int]:
        """(active, early) dialogs."""
        early = sum(1 for d in self.dialogs.values() if d.state == DlgState.EARLY)
        return len(self.dialogs), early

    def due(self, wall: float) -> list[Dialog]:
        """Confirmed dialogs whose lifetime has ended."""
        return [d for d in self.dialogs.values()
                if d.timeout is not None and d.timeout <= wall and d.answered is not None]

    # -- events -----------------------------------------------------------------------------------

    def on_request(self, request: Any, tx_key: Any, wall: float, source: str = "") -> list[Record]:
        """A request the proxy forwarded (ACK for 2xx included, with ``tx_key`` None)."""
        method = request.method
        to_tag = request.to.tag
        if method == "INVITE" and not to_tag:
            return self._new_call(request, tx_key, wall, source)
        if not to_tag:
            return []
        dlg = self._match(request.call_id, request.from_.tag or "", to_tag)
        if dlg is not None:
            from_caller = (request.from_.tag or "") == dlg.from_tag
            seq = request.cseq.seq
            if from_caller:
                dlg.caller_cseq = max(dlg.caller_cseq, seq)
            else:
                dlg.callee_cseq = max(dlg.callee_cseq, seq)
            if method == "ACK" and dlg.state == DlgState.CONFIRMED_NA:
                dlg.state = DlgState.CONFIRMED
        if method == "BYE":
            if tx_key is not None:
                self.pending[tx_key] = dlg
            if dlg is not None:
                from_caller = (request.from_.tag or "") == dlg.from_tag
                return self.end(dlg, wall, CALLER_BYE if from_caller else CALLEE_BYE)
        return []

    def on_response(self, request: Any, response: Any, tx_key: Any, wall: float, peer: str = "") -> list[Record]:
        """A response relayed upstream (or sent by the server itself) for ``request``."""
        method = request.method
        status = response.status
        if method == "INVITE" and not request.to.tag:
            dlg = self.by_tx.get(tx_key) if tx_key is not None else None
            if dlg is None:
                if status < 200 or status in CHALLENGES:
                    return []
                if 200 <= status < 300:
                    return []  # a 2xx we did not see the INVITE of (forwarded before a restart)
                # answered by the server itself: a call that failed at once
                dlg = self._make(request, None, wall, "")
                return self._failed(dlg, response, wall)
            return self._invite_response(dlg, response, wall, peer)
        if status < 200:
            return []
        if method == "BYE":
            dlg = self.pending.pop(tx_key, None) if tx_key is not None else None
            return self._acc_simple(request, response, wall, dlg)
        if method == "CANCEL":
            dlg = self.by_call.get(request.call_id)
            if dlg is not None and dlg.answered is None and dlg.from_tag == (request.from_.tag or ""):
                dlg.cancelled = True
            return self._acc_simple(request, response, wall, dlg)
        return []

    # -- ending -----------------------------------------------------------------------------------

    def end(self, dlg: Dialog, wall: float, reason: str) -> list[Record]:
        """End a confirmed call now: its CDR, and the dialog row deleted."""
        if dlg.id not in self.dialogs:
            return []
        self._forget(dlg)
        dlg.state = DlgState.DELETED
        out: list[Record] = []
        if self.acc:
            out.append(Record("insert", "cdrs", cdr_row(
                call_id=dlg.call_id, from_tag=dlg.from_tag, to_tag=dlg.to_tag, caller=dlg.caller,
                callee=dlg.callee, created=dlg.created, answered=dlg.answered, ended=wall, code=200,
                reason="OK", cancelled=False, end_reason=dlg.end_reason or reason)))
        if self.persist:
            out.append(Record("delete", "dialog", {"dlg_id": dlg.id}))
        return out

    def restore(self, rows: Iterable[dict[str, Any]]) -> int:
        """Load persisted dialogs (``dialog`` rows) after a restart. Returns how many."""
        n = 0
        for row in rows:
            try:
                dlg = Dialog.from_row(row)
            except (KeyError, ValueError, TypeError):
                continue
            if dlg.id in self.dialogs:
                continue
            self.dialogs[dlg.id] = dlg
            self.by_call[dlg.call_id] = dlg
            n += 1
        return n

    # -- internals --------------------------------------------------------------------------------

    def _make(self, request: Any, tx_key: Any, wall: float, source: str) -> Dialog:
        return Dialog(
            id=self._ids(), call_id=request.call_id, from_tag=request.from_.tag or "",
            caller=_uri(request.from_), callee=_uri(request.to), ruri=request.uri_text,
            created=wall, caller_contact=_contact(request),
            caller_route_set=list(request.get_all("Record-Route")),
            caller_cseq=request.cseq.seq, caller_addr=source, invite_tx=tx_key,
        )

    def _new_call(self, request: Any, tx_key: Any, wall: float, source: str) -> list[Record]:
        if tx_key is None or tx_key in self.by_tx:
            return []
        dlg = self._make(request, tx_key, wall, source)
        self.by_tx[tx_key] = dlg
        self.dialogs[dlg.id] = dlg
        self.by_call[dlg.call_id] = dlg
        return []

    def _invite_response(self, dlg: Dialog, response: Any, wall: float, peer: str) -> list[Record]:
        status = response.status
        if dlg.answered is not None:
            return []  # 2xx retransmission or a second forked 2xx
        if status < 200:
            tag = response.to.tag
            if tag and dlg.state == DlgState.UNCONFIRMED:
                dlg.state = DlgState.EARLY
                dlg.to_tag = tag
                dlg.callee_contact = _contact(response) or dlg.callee_contact
            return []
        if status >= 300:
            return self._failed(dlg, response, wall)
        dlg.answered = wall
        dlg.state = DlgState.CONFIRMED_NA
        dlg.to_tag = response.to.tag or ""
        dlg.callee_contact = _contact(response)
        dlg.callee_addr = peer
        dlg.callee_route_set = self._downstream_routes(response.get_all("Record-Route"))
        if self.lifetime > 0:
            dlg.timeout = wall + self.lifetime
        out: list[Record] = []
        if self.acc:
            out.append(Record("insert", "acc", acc_row(
                method="INVITE", from_tag=dlg.from_tag, to_tag=dlg.to_tag, call_id=dlg.call_id, code=status,
                reason=response.reason, wall=wall, caller=dlg.caller, callee=dlg.callee, created=dlg.created,
                setup=wall - dlg.created)))
        if self.persist:
            out.append(Record("upsert", "dialog", dlg.to_row()))
        return out

    def _failed(self, dlg: Dialog, response: Any, wall: float) -> list[Record]:
        self._forget(dlg)
        dlg.state = DlgState.DELETED
        if not self.acc:
            return []
        status, reason = response.status, response.reason
        to_tag = response.to.tag or dlg.to_tag
        common = dict(method="INVITE", from_tag=dlg.from_tag, to_tag=to_tag, call_id=dlg.call_id, code=status,
                      reason=reason, wall=wall, caller=dlg.caller, callee=dlg.callee, created=dlg.created,
                      setup=wall - dlg.created)
        end_reason = dlg.end_reason or (CANCELLED if dlg.cancelled or status == 487 else REJECTED)
        return [
            Record("insert", "acc", acc_row(**common)),  # type: ignore[arg-type]
            Record("insert", "missed_calls", acc_row(**common, missed=True)),  # type: ignore[arg-type]
            Record("insert", "cdrs", cdr_row(
                call_id=dlg.call_id, from_tag=dlg.from_tag, to_tag=to_tag, caller=dlg.caller, callee=dlg.callee,
                created=dlg.created, answered=None, ended=wall, code=status, reason=reason,
                cancelled=dlg.cancelled, end_reason=end_reason)),
        ]

    def _acc_simple(self, request: Any, response: Any, wall: float, dlg: Dialog | None) -> list[Record]:
        if not self.acc:
            return []
        caller = dlg.caller if dlg is not None else _uri(request.from_)
        callee = dlg.callee if dlg is not None else _uri(request.to)
        return [Record("insert", "acc", acc_row(
            method=request.method, from_tag=request.from_.tag or "", to_tag=request.to.tag or response.to.tag or "",
            call_id=request.call_id, code=response.status, reason=response.reason, wall=wall,
            caller=caller, callee=callee))]

    def _forget(self, dlg: Dialog) -> None:
        self.dialogs.pop(dlg.id, None)
        if self.by_call.get(dlg.call_id) is dlg:
            del self.by_call[dlg.call_id]
        if dlg.invite_tx is not None and self.by_tx.get(dlg.invite_tx) is dlg:
            del self.by_tx[dlg.invite_tx]

    def _match(self, call_id: str, tag_a: str, tag_b: str) -> Dialog | None:
        dlg = self.by_call.get(call_id)
        if dlg is None:
            return None
        if {tag_a, tag_b} == {dlg.from_tag, dlg.to_tag}:
            return dlg
        return None

    def _downstream_routes(self, record_routes: list[str]) -> list[str]:
        """Route set from us towards the callee: the Record-Route entries above our own, reversed."""
        below: list[str] = []
        for value in record_routes:
            if self._is_self(value):
                break
            below.append(value)
        else:
            return []  # our own entry not found (record-routing off): the contact is the target
        return list(reversed(below))
