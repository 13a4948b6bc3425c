"""Ongoing calls of a running sipd, over the management interface (dlg_list, dlg_end_dlg).

Plain functions returning dataclasses; failures raise SipctlErrors with exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import SipctlError, UsageError

PAGE = 1000
MAX_PAGES = 10_000  # bound on the paging loop (10 million dialogs)


@dataclass(frozen=True)
class DialogInfo:
    id: str
    state: str          # unconfirmed | early | confirmed
    call_id: str
    caller: str
    callee: str
    from_tag: str
    to_tag: str
    age: int            # seconds since the INVITE
    duration: int       # seconds since the answer (0 when not answered)
    timeout: int        # unix time the lifetime ends (0 = none)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DialogInfo:
        return cls(id=str(d.get("ID", "")), state=str(d.get("state_name") or d.get("state", "")),
                   call_id=str(d.get("callid", "")), caller=str(d.get("from_uri", "")),
                   callee=str(d.get("to_uri", "")), from_tag=str(d.get("from_tag", "")),
                   to_tag=str(d.get("to_tag", "")), age=int(d.get("age") or 0),
                   duration=int(d.get("duration") or 0), timeout=int(d.get("timeout") or 0))

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "callid": self.call_id, "caller": self.caller,
                "callee": self.callee, "from_tag": self.from_tag, "to_tag": self.to_tag, "age": self.age,
                "duration": self.duration, "timeout": self.timeout}


def _call(config: Any, method: str, params: dict[str, Any]) -> Any:
    from . import mgmt

    try:
        return mgmt.call(config, method, params)
    except SipctlError as exc:
        if "not activated" in exc.message:
            raise SipctlError(exc.message, hint="set [dialog] enabled = true in sipd.toml and restart sipd",
                              exit_code=exc.exit_code) from None
        raise


def list_dialogs(config: Any) -> list[DialogInfo]:
    """Every dialog, fetched page by page (dlg_list index/counter)."""
    out: list[DialogInfo] = []
    for _ in range(MAX_PAGES):
        result = _call(config, "dlg_list", {"index": len(out), "counter": PAGE})
        items = result.get("Dialogs", []) if isinstance(result, dict) else []
        out.extend(DialogInfo.from_dict(d) for d in items)
        total = int(result.get("total", 0)) if isinstance(result, dict) else 0
        if not items or len(out) >= total:
            break
    return out


def end_dialog(config: Any, key: str) -> str:
    """Hang up the call with dialog ID or Call-ID ``key``. Returns the key."""
    key = key.strip()
    if not key:
        raise UsageError("give a dialog ID or a Call-ID", hint="sipctl dialog list shows both")
    _call(config, "dlg_end_dlg", {"dialog_id": key})
    return key


__all__ = ["DialogInfo", "list_dialogs", "end_dialog"]
