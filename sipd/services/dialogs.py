"""Call tracking: dialogs (OpenSIPS ``dialog`` module) and the accounting records calls produce.

Pure: events in (request forwarded, response relayed or sent, with their wall-clock time),
*facts* out: compact tuples (see ``expand``) that the accounting writer turns into ``Record``s
(sipd/services/cdr.py) off the event loop. No I/O, no clock, no asyncio; the service in
``accounting.py`` feeds it from ``state.events`` and hands the facts to the writer. The tracker
does the least it can per event: header values are kept as received and parsed only when needed.

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
  and answer times, so the BYE that comes later still completes a correct CDR. A node of a
  cluster stores its ``owner`` (node id) in each row, and restores the rows it owns, or has taken
  over from a dead node (sipd/services/takeover.py).

States use OpenSIPS's numbers (``dlg_list`` shows them): 1 unconfirmed, 2 early, 3 confirmed
(2xx, not yet ACKed), 4 confirmed, 5 deleted.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from enum import IntEnum
from functools import lru_cache
from typing import Any

from ..sip.errors import ProtocolError
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


@lru_cache(maxsize=4096)
def uri_of(value: str) -> str:
    """The URI (as text) of the first name-addr in a From/To/Contact header value; "" if none/bad.

    Dialogs keep header values as received and parse them only when a URI is needed (dlg_list,
    a BYE we send, and the rows, which the accounting writer builds off the event loop).
    """
    if not value:
        return ""
    from ..sip.headers import parse_name_addr, parse_name_addr_list

    try:
        return str(parse_name_addr(value).uri)
    except Exception:  # noqa: BLE001 - several contacts on one line, or garbage
        pass
    try:
        lst = parse_name_addr_list(value)
    except Exception:  # noqa: BLE001 - a bad Contact must not stop accounting
        return ""
    return str(lst[0].uri) if lst else ""


def as_header(uri: str) -> str:
    """A URI (from a persisted row) as a header value ``uri_of`` gives back unchanged."""
    return f"<{uri}>" if uri else ""


class Dialog:
    """One call. Addresses are kept as the header values received (``from_hdr``...) and parsed on
    first use of ``caller``/``callee``/``caller_contact``/``callee_contact``."""

    __slots__ = ("id", "call_id", "from_tag", "from_hdr", "to_hdr", "ruri", "to_tag", "state", "created",
                 "answered", "timeout", "caller_contact_hdr", "callee_contact_hdr", "caller_route_set",
                 "callee_route_set", "caller_cseq", "callee_cseq", "caller_addr", "callee_addr", "invite_tx",
                 "cancelled", "end_reason", "restored")

    def __init__(self, id: int, call_id: str, from_tag: str, from_hdr: str, to_hdr: str, *, ruri: str = "",
                 to_tag: str = "", state: DlgState = DlgState.UNCONFIRMED, created: float = 0.0,
                 answered: float | None = None, timeout: float | None = None, caller_contact_hdr: str = "",
                 callee_contact_hdr: str = "", caller_route_set: list[str] | None = None,
                 callee_route_set: list[str] | None = None, caller_cseq: int = 0, callee_cseq: int = 0,
                 caller_addr: str = "", callee_addr: str = "", invite_tx: Any = None, cancelled: bool = False,
                 end_reason: str = "", restored: bool = False):
        self.id = id
        self.call_id = call_id
        self.from_tag = from_tag
        self.from_hdr = from_hdr                    # From header value (caller)
        self.to_hdr = to_hdr                        # To header value of the INVITE (callee)
        self.ruri = ruri
        self.to_tag = to_tag
        self.state = state
        self.created = created                      # INVITE forwarded (wall)
        self.answered = answered                    # 2xx relayed (wall)
        self.timeout = timeout                      # wall time the lifetime ends (None = no limit)
        self.caller_contact_hdr = caller_contact_hdr
        self.callee_contact_hdr = callee_contact_hdr
        self.caller_route_set = caller_route_set if caller_route_set is not None else []  # us -> caller
        self.callee_route_set = callee_route_set if callee_route_set is not None else []  # us -> callee
        self.caller_cseq = caller_cseq              # highest CSeq seen from the caller
        self.callee_cseq = callee_cseq              # highest CSeq seen from the callee
        self.caller_addr = caller_addr              # "udp:127.0.0.1:5062" where the INVITE came from
        self.callee_addr = callee_addr              # where the 2xx came from
        self.invite_tx = invite_tx
        self.cancelled = cancelled
        self.end_reason = end_reason                # set before ending when we end it (MI, timeout)
        self.restored = restored

    @property
    def caller(self) -> str:  # From URI
        return uri_of(self.from_hdr)

    @property
    def callee(self) -> str:  # To URI
        return uri_of(self.to_hdr)

    @property
    def caller_contact(self) -> str:
        return uri_of(self.caller_contact_hdr)

    @property
    def callee_contact(self) -> str:
        return uri_of(self.callee_contact_hdr)

    def __repr__(self) -> str:
        return f"Dialog(id={self.id}, call_id={self.call_id!r}, state={self.state.label})"

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

    def fact(self, owner: str = "") -> tuple:
        """The ``dialog`` row to store, as a compact tuple (``expand`` builds the row); ``owner``
        is the node that holds the call."""
        return ("dlg", self.id, self.call_id, self.from_tag, self.from_hdr, self.to_hdr, self.to_tag,
                self.caller_cseq, self.callee_cseq, tuple(self.caller_route_set), tuple(self.callee_route_set),
                self.caller_contact_hdr, self.callee_contact_hdr, self.caller_addr, self.callee_addr,
                int(self.state), self.created, self.answered, self.timeout, self.ruri, owner)

    def to_row(self, owner: str = "") -> dict[str, Any]:
        """The ``dialog`` table row (OpenSIPS columns; our extra times in ``vars`` as JSON)."""
        return dialog_row(self.fact(owner))

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
            int(row["dlg_id"]), row.get("callid") or "", row.get("from_tag") or "",
            as_header(row.get("from_uri") or ""), as_header(row.get("to_uri") or ""), ruri=v.get("ruri", ""),
            to_tag=row.get("to_tag") or "", state=DlgState(int(row.get("state") or 4)),
            created=float(v.get("created") or answered or 0), answered=answered,
            timeout=v.get("timeout") or (float(row["timeout"]) if row.get("timeout") else None),
            caller_contact_hdr=as_header(row.get("caller_contact") or ""),
            callee_contact_hdr=as_header(row.get("callee_contact") or ""),
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


# -- facts: what the tracker emits (compact tuples of str/int/float, cheap to pickle) -------------
#
#   ("acc", method, from_tag, to_tag, call_id, code, reason, wall, from_hdr, to_hdr, created|None, record_id)
#   ("fail", from_tag, to_tag, call_id, code, reason, wall, from_hdr, to_hdr, created, cancelled, end_reason,
#    record_id)
#
# ``record_id`` (or None) names the acc record (and the missed_calls one of a "fail") so that it is
# stored once however often it is written: node, start of the process in ms, a number.
#   ("cdr", call_id, from_tag, to_tag, from_hdr, to_hdr, created, answered, ended, end_reason)
#   ("dlg", ...Dialog.fact())           -> dialog upsert
#   ("del", dlg_id)                     -> dialog delete
#
# ``expand`` turns them into ``Record``s (rows with formatted times, URIs, CDR arithmetic). It runs
# in the accounting writer (a child process by default), not on the event loop.


def dialog_row(f: tuple) -> dict[str, Any]:
    (_, dlg_id, call_id, from_tag, from_hdr, to_hdr, to_tag, caller_cseq, callee_cseq, caller_rs, callee_rs,
     caller_contact_hdr, callee_contact_hdr, caller_addr, callee_addr, state, created, answered, timeout, ruri,
     owner) = f
    return {
        "dlg_id": dlg_id, "callid": call_id[:255], "from_uri": uri_of(from_hdr)[:255],
        "from_tag": from_tag[:64], "to_uri": uri_of(to_hdr)[:255], "to_tag": to_tag[:64],
        "caller_cseq": str(caller_cseq), "callee_cseq": str(callee_cseq),
        "caller_route_set": ",".join(caller_rs) or None,
        "callee_route_set": ",".join(callee_rs) or None,
        "caller_contact": uri_of(caller_contact_hdr)[:255] or None,
        "callee_contact": uri_of(callee_contact_hdr)[:255] or None,
        "caller_sock": caller_addr[:64], "callee_sock": callee_addr[:64],
        "state": state, "start_time": int(answered or 0), "timeout": int(timeout or 0),
        "vars": json.dumps({"created": created, "answered": answered, "timeout": timeout,
                            "ruri": ruri, "caller_route_set": list(caller_rs),
                            "callee_route_set": list(callee_rs)}),
        "owner": owner[:64],
    }


def expand(facts: Iterable[tuple]) -> list[tuple]:
    """Facts -> records for the writer (``acc``, ``missed_calls``, ``cdrs``, ``dialog``)."""
    out: list[Record] = []
    for f in facts:
        kind = f[0]
        if kind == "acc":
            _, method, from_tag, to_tag, call_id, code, reason, wall, from_hdr, to_hdr, created, rid = f
            out.append(Record("insert", "acc", acc_row(
                method=method, from_tag=from_tag, to_tag=to_tag, call_id=call_id, code=code, reason=reason,
                wall=wall, caller=uri_of(from_hdr), callee=uri_of(to_hdr), created=created,
                setup=(wall - created) if created is not None else 0.0, record_id=rid)))
        elif kind == "cdr":
            _, call_id, from_tag, to_tag, from_hdr, to_hdr, created, answered, ended, end_reason = f
            out.append(Record("insert", "cdrs", cdr_row(
                call_id=call_id, from_tag=from_tag, to_tag=to_tag, caller=uri_of(from_hdr), callee=uri_of(to_hdr),
                created=created, answered=answered, ended=ended, code=200, reason="OK", cancelled=False,
                end_reason=end_reason)))
        elif kind == "fail":
            (_, from_tag, to_tag, call_id, code, reason, wall, from_hdr, to_hdr, created, cancelled,
             end_reason, rid) = f
            caller, callee = uri_of(from_hdr), uri_of(to_hdr)
            common = dict(method="INVITE", from_tag=from_tag, to_tag=to_tag, call_id=call_id, code=code,
                          reason=reason, wall=wall, caller=caller, callee=callee, created=created,
                          setup=wall - created, record_id=rid)
            out.append(Record("insert", "acc", acc_row(**common)))  # type: ignore[arg-type]
            out.append(Record("insert", "missed_calls", acc_row(**common, missed=True)))  # type: ignore[arg-type]
            out.append(Record("insert", "cdrs", cdr_row(
                call_id=call_id, from_tag=from_tag, to_tag=to_tag, caller=caller, callee=callee,
                created=created, answered=None, ended=wall, code=code, reason=reason,
                cancelled=cancelled, end_reason=end_reason)))
        elif kind == "dlg":
            out.append(Record("upsert", "dialog", dialog_row(f)))
        elif kind == "del":
            out.append(Record("delete", "dialog", {"dlg_id": f[1]}))
    return out


#: Dialog ids count milliseconds from 2025-01-01 UTC: 41 bits of them last until 2094 and leave 22
#: bits of a BIGINT for the calls of one start.
ID_EPOCH_MS = 1_735_689_600_000


def default_ids(start_ms: int) -> Callable[[], int]:
    """Dialog ids unique across restarts: the start time (ms since ``ID_EPOCH_MS``) << 22, plus a
    counter that never wraps. (A wrapping counter gave a call the id of one still up 65,536 calls
    earlier, whose row it then replaced.) A process reaches the ids of one started d ms later
    only after d x 4 million calls. (Two nodes of a cluster started in the same millisecond would
    still share ids: nothing here prevents that.)"""
    counter = itertools.count(1)
    base = max(0, start_ms - ID_EPOCH_MS) << 22
    return lambda: base + next(counter)


class Tracker:
    """Follows calls from proxy events and says what to store.

    Args:
        lifetime: seconds a confirmed dialog may last (0 = no limit).
        acc: produce acc / missed_calls / cdrs records.
        dialogs: persist dialogs (``dialog`` table upserts/deletes).
        ids: dialog id factory.
        is_self_route: True for a Record-Route value naming this server (to split route sets).
        owner: this node's ``[cluster] node_id``, stored with each dialog ('' without a cluster).
        records: the prefix of the acc records' names (``node/start_ms/``; '' = unnamed records).
    """

    def __init__(self, *, lifetime: float = 0.0, acc: bool = True, dialogs: bool = True,
                 ids: Callable[[], int] | None = None, is_self_route: Callable[[str], bool] | None = None,
                 owner: str = "", records: str = ""):
        self.lifetime = lifetime
        self.owner = owner
        self._records = records
        self._record_numbers = itertools.count(1)
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

    def match(self, call_id: str, tag_a: str, tag_b: str) -> Dialog | None:
        """The dialog of a request with these Call-ID and tags (From and To, in either order)."""
        return self._match(call_id, tag_a, tag_b)

    def counts(self) -> tuple[int, int]:
        """(active, early) dialogs."""
        early = sum(1 for d in self.dialogs.values() if d.state == DlgState.EARLY)
        return len(self.dialogs), early

    def due(self, wall: float) -> list[Dialog]:
        """Confirmed dialogs whose lifetime has ended."""
        return [d for d in self.dialogs.values()
                if d.timeout is not None and d.timeout <= wall and d.answered is not None]

    # -- events -----------------------------------------------------------------------------------

    def on_request(self, request: Any, tx_key: Any, wall: float, source: str = "") -> list[tuple]:
        """A request the proxy forwarded (ACK for 2xx included, with ``tx_key`` None)."""
        method = request.method
        to_tag = request.to.tag
        if method == "INVITE" and not to_tag:
            return self._new_call(request, tx_key, wall, source)
        if not to_tag:
            return []
        from_tag = request.from_.tag or ""
        dlg = self._match(request.call_id, from_tag, to_tag)
        from_caller = False
        if dlg is not None:
            from_caller = from_tag == dlg.from_tag
            seq = request.cseq.seq
            if from_caller:
                if seq > dlg.caller_cseq:
                    dlg.caller_cseq = seq
            elif seq > dlg.callee_cseq:
                dlg.callee_cseq = seq
            if method == "ACK" and dlg.state == DlgState.CONFIRMED_NA:
                dlg.state = DlgState.CONFIRMED
        if method == "BYE":
            if tx_key is not None:
                self.pending[tx_key] = dlg
            if dlg is not None:
                return self._end(dlg, wall, CALLER_BYE if from_caller else CALLEE_BYE)
        return []

    def on_response(self, request: Any, response: Any, tx_key: Any, wall: float, peer: str = "") -> list[tuple]:
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

    def end(self, dlg: Dialog, wall: float, reason: str) -> list[tuple]:
        """End a confirmed call now: its CDR, and the dialog row deleted."""
        return self._end(dlg, wall, reason)

    def _end(self, dlg: Dialog, wall: float, reason: str) -> list[tuple]:
        if dlg.id not in self.dialogs:
            return []
        self._forget(dlg)
        dlg.state = DlgState.DELETED
        out: list[tuple] = []
        if self.acc:
            out.append(("cdr", dlg.call_id, dlg.from_tag, dlg.to_tag, dlg.from_hdr, dlg.to_hdr, dlg.created,
                        dlg.answered, wall, dlg.end_reason or reason))
        if self.persist:
            out.append(("del", dlg.id))
        return out

    def forget(self, dlg: Dialog) -> None:
        """Let go of a dialog another node holds now: no CDR, no row change here."""
        self._forget(dlg)

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
            self._ids(), request.call_id, request.from_.tag or "", request.get("From") or "",
            request.get("To") or "", ruri=request.uri_text, created=wall,
            caller_contact_hdr=request.get("Contact") or "",
            caller_route_set=_record_routes(request),
            caller_cseq=request.cseq.seq, caller_addr=source, invite_tx=tx_key,
        )

    def _new_call(self, request: Any, tx_key: Any, wall: float, source: str) -> list[tuple]:
        if tx_key is None or tx_key in self.by_tx:
            return []
        dlg = self._make(request, tx_key, wall, source)
        self.by_tx[tx_key] = dlg
        self.dialogs[dlg.id] = dlg
        self.by_call[dlg.call_id] = dlg
        return []

    def _invite_response(self, dlg: Dialog, response: Any, wall: float, peer: str) -> list[tuple]:
        status = response.status
        if dlg.answered is not None:
            return []  # 2xx retransmission or a second forked 2xx
        if status < 200:
            tag = response.to.tag
            if tag and dlg.state == DlgState.UNCONFIRMED:
                dlg.state = DlgState.EARLY
                dlg.to_tag = tag
                dlg.callee_contact_hdr = response.get("Contact") or dlg.callee_contact_hdr
            return []
        if status >= 300:
            return self._failed(dlg, response, wall)
        dlg.answered = wall
        dlg.state = DlgState.CONFIRMED_NA
        # the INVITE transaction is over for the tracker (a retransmitted or forked 2xx finds no
        # entry and is ignored the same way): a later INVITE under the same key, from a client
        # that repeats a branch, is a call of its own and gets its own dialog and CDR
        if self.by_tx.get(dlg.invite_tx) is dlg:
            del self.by_tx[dlg.invite_tx]
        dlg.to_tag = response.to.tag or ""
        dlg.callee_contact_hdr = response.get("Contact") or ""
        dlg.callee_addr = peer
        dlg.callee_route_set = self._downstream_routes(_record_routes(response))
        if self.lifetime > 0:
            dlg.timeout = wall + self.lifetime
        out: list[tuple] = []
        if self.acc:
            out.append(("acc", "INVITE", dlg.from_tag, dlg.to_tag, dlg.call_id, status, response.reason, wall,
                        dlg.from_hdr, dlg.to_hdr, dlg.created, self._record_id()))
        if self.persist:
            out.append(dlg.fact(self.owner))
        return out

    def _failed(self, dlg: Dialog, response: Any, wall: float) -> list[tuple]:
        self._forget(dlg)
        dlg.state = DlgState.DELETED
        if not self.acc:
            return []
        status = response.status
        end_reason = dlg.end_reason or (CANCELLED if dlg.cancelled or status == 487 else REJECTED)
        return [("fail", dlg.from_tag, response.to.tag or dlg.to_tag, dlg.call_id, status, response.reason, wall,
                 dlg.from_hdr, dlg.to_hdr, dlg.created, dlg.cancelled, end_reason, self._record_id())]

    def _acc_simple(self, request: Any, response: Any, wall: float, dlg: Dialog | None) -> list[tuple]:
        if not self.acc:
            return []
        if dlg is not None:
            from_hdr, to_hdr = dlg.from_hdr, dlg.to_hdr
        else:
            from_hdr, to_hdr = request.get("From") or "", request.get("To") or ""
        return [("acc", request.method, request.from_.tag or "", request.to.tag or response.to.tag or "",
                 request.call_id, response.status, response.reason, wall, from_hdr, to_hdr, None,
                 self._record_id())]

    def _record_id(self) -> str | None:
        return f"{self._records}{next(self._record_numbers)}" if self._records else None

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
        f, t = dlg.from_tag, dlg.to_tag
        if (tag_a == f and tag_b == t) or (tag_a == t and tag_b == f):
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


def _record_routes(msg: Any) -> list[str]:
    """The Record-Route values of ``msg``, none when they do not parse: a response the proxy
    relays is not the tracker's to reject, so the call is still tracked and gets its CDR (only a
    BYE sipd sends itself at the dialog's end then goes without that route set)."""
    try:
        return list(msg.get_all("Record-Route"))
    except ProtocolError:
        return []
