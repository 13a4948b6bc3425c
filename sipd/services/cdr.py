"""CDR and accounting rows, computed from a call's times and final status. Pure: no I/O, no clock.

A *record* is what the accounting writer stores: ``Record(op, table, row)`` with ``op`` one of
``insert`` (acc, missed_calls, cdrs), ``upsert`` / ``delete`` (dialog, keyed by ``dlg_id``). Rows
hold only JSON types so a record can go to the spool file unchanged (sipd/services/spool.py).

Times are wall-clock unix seconds (floats) everywhere; they are written as local
``YYYY-MM-DD HH:MM:SS`` DATETIME text, as the rest of the schema does.

CDR fields (table ``cdrs``), and the rules that spare the operator the gaps of OpenSIPS's CDRs
(times lost over a restart, failed calls without a setup time, columns that vary by outcome):
- ``start_time`` is when the INVITE was forwarded, ``answer_time`` when the 2xx was relayed,
  ``end_time`` when the call ended (BYE seen, timeout, MI end, or the final failure response).
- ``setup_time`` = answer (or final failure) - start: a failed call has its setup time too.
- ``duration`` = end - answer, rounded to whole seconds (``ms_duration`` in milliseconds); 0 when
  the call was not answered. The times come from the persisted dialog, so a call spanning a
  restart keeps its real start and answer times.
- ``status``: answered | cancelled | missed | failed (see ``call_status``); every CDR has the
  same columns whatever the outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

#: Final statuses that mean "the callee did not take the call" (busy, no answer, unavailable,
#: declined, unknown user); other failures are "failed".
MISSED_CODES = frozenset({404, 408, 410, 480, 486, 600, 603, 604})

# end reasons (cdrs.end_reason, char(32))
CALLER_BYE = "Upstream BYE"
CALLEE_BYE = "Downstream BYE"
DIALOG_TIMEOUT = "Dialog Timeout"
MI_TERMINATION = "MI Termination"
CANCELLED = "Cancelled"
REJECTED = "Rejected"


@dataclass(frozen=True, slots=True)
class Record:
    op: str      # insert | upsert | delete
    table: str   # acc | missed_calls | cdrs | dialog
    row: dict[str, Any]

    def to_json(self) -> list[Any]:
        return [self.op, self.table, self.row]

    @classmethod
    def from_json(cls, data: list[Any]) -> Record:
        op, table, row = data
        return cls(str(op), str(table), dict(row))


def fmt_time(wall: float | None) -> str | None:
    """Unix time -> local DATETIME text (None stays None)."""
    if wall is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def call_status(code: int, cancelled: bool) -> str:
    """answered (2xx), cancelled (CANCEL from the caller / 487), missed (callee did not take it),
    failed (anything else)."""
    if 200 <= code < 300:
        return "answered"
    if cancelled or code == 487:
        return "cancelled"
    if code in MISSED_CODES:
        return "missed"
    return "failed"


def acc_row(*, method: str, from_tag: str, to_tag: str, call_id: str, code: int, reason: str,
            wall: float, caller: str, callee: str, created: float | None = None,
            setup: float = 0.0, missed: bool = False, record_id: str | None = None) -> dict[str, Any]:
    """A row of ``acc`` (or ``missed_calls`` when ``missed``: no duration columns); ``record_id``
    names the record, so that writing it again stores nothing."""
    row: dict[str, Any] = {
        "method": method[:16], "from_tag": from_tag[:64], "to_tag": to_tag[:64], "callid": call_id[:255],
        "sip_code": str(code)[:3], "sip_reason": reason[:128], "time": fmt_time(wall),
        "setuptime": max(0, int(round(setup))), "created": fmt_time(created),
        "caller": caller[:255], "callee": callee[:255],
    }
    if not missed:
        row["duration"] = 0
        row["ms_duration"] = 0
    if record_id is not None:
        row["record_id"] = record_id[:64]
    return row


def cdr_row(*, call_id: str, from_tag: str, to_tag: str, caller: str, callee: str, created: float,
            answered: float | None, ended: float, code: int, reason: str, cancelled: bool,
            end_reason: str) -> dict[str, Any]:
    """One CDR. ``answered`` None = not answered (duration 0, setup time until the final reply)."""
    setup_end = answered if answered is not None else ended
    setup = max(0.0, setup_end - created)
    dur = max(0.0, ended - answered) if answered is not None else 0.0
    return {
        "callid": call_id[:255], "from_tag": from_tag[:64], "to_tag": to_tag[:64],
        "caller": caller[:255], "callee": callee[:255],
        "start_time": fmt_time(created), "answer_time": fmt_time(answered), "end_time": fmt_time(ended),
        "setup_time": int(round(setup)), "duration": int(round(dur)), "ms_duration": int(round(dur * 1000)),
        "sip_code": str(code)[:3], "sip_reason": reason[:128],
        "status": call_status(code, cancelled), "end_reason": end_reason[:32],
    }
