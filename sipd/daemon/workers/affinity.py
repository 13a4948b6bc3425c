"""Which process handles a datagram, read from raw bytes (``[server] workers``, sipd/daemon/workers/).

The rules, all from bytes as received (no parsing: main routes every datagram it reads):

- A REGISTER belongs to the owner of its AOR's user name, ``crc32(user) % N``, read from the To
  header (:func:`owner_of_datagram`; the same as :func:`owner_of_aor` of the parsed AOR). The user
  name alone: in single-domain mode ``alice@IP`` and ``alice@name`` are one AOR (services/realm.py),
  which must have one owner whichever domain the phone wrote. One without
  credentials, when every REGISTER is challenged, may be answered by any process
  (:func:`needs_owner`): the challenge is stateless.
- A request of an INVITE dialog (:data:`CALL_METHODS`) belongs to the owner of its Call-ID,
  ``crc32(Call-ID) % N`` (:func:`owner_of_call`), so a CANCEL, the ACK of a non-2xx and every
  in-dialog request meet the INVITE's transactions. Other methods stay in main (presence).
- A response belongs to the process whose mark is in its top Via branch (:func:`branch_mark`).
- Calls stay in main altogether when a feature keeps per-call state there that call events do not
  carry (:func:`calls_stay_in_main`).
"""

from __future__ import annotations

import re
import zlib
from typing import Any

#: The To header's URI, user and host, from raw bytes: optional quoted display name, then the URI
#: (name-addr or addr-spec). Compact form ``t:`` included. Anything else (folded lines ...) is None.
_TO = re.compile(
    rb'\n(?:to|t)[ \t]*:[ \t]*(?:"(?:[^"\\\r\n]|\\.)*"[ \t]*)?[^<"\r\n]*?<?sips?:(?:([^@>;?\s]*)@)?([^>;?:\s]+)',
    re.IGNORECASE,
)


_CREDENTIALS = re.compile(rb"\nauthorization[ \t]*:", re.IGNORECASE)


def needs_owner(data: bytes, challenge_all: bool) -> bool:
    """False for a REGISTER any process may answer: with ``[auth] register`` on, one without
    credentials only gets a challenge (stateless: the nonce is an HMAC every process checks)."""
    return not challenge_all or _CREDENTIALS.search(data) is not None


def owner_of_aor(aor: str, n: int) -> int:
    """The process owning ``aor`` (a location key ``user@domain``) among ``n``: by its user name."""
    return zlib.crc32(aor.rpartition("@")[0].encode("utf-8", "surrogateescape")) % n


def owner_of_datagram(data: bytes, n: int) -> int:
    """The owner of a REGISTER's AOR, read from its raw To header (0 when it cannot be read)."""
    m = _TO.search(data)
    if m is None:
        return 0
    # escapes stay as written, as in the location key (sip:%61lice and sip:alice are two AORs there)
    return zlib.crc32(m.group(1) or b"") % n


#: The Call-ID value and the top Via line, from raw bytes (compact forms included).
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_VIA = re.compile(rb"\n(?:via|v)[ \t]*:([^\r\n]*)", re.IGNORECASE)
#: The process mark in one of our branches: z9hG4bK<loop hash>.<mark><seq> (proxy) or
#: z9hG4bK<mark>x<seq> (the transaction layer's), the mark being the process's own (8 random hex
#: digits, sent to main in its hello).
_MARK = re.compile(rb";[ \t]*branch[ \t]*=[ \t]*z9hG4bK(?:[^.;,\s]*\.)?([0-9a-f]{8})", re.IGNORECASE)


def call_id_of(data: bytes) -> bytes | None:
    m = _CALL_ID.search(data)
    return m.group(1).strip() if m is not None else None


def owner_of_call(call_id: bytes, n: int) -> int:
    """The process owning a call (every transaction with this Call-ID) among ``n``."""
    return zlib.crc32(call_id) % n


def branch_mark(data: bytes) -> bytes | None:
    """The process mark of a response's top Via branch, if it is one of ours."""
    m = _VIA.search(data)
    if m is None:
        return None
    b = _MARK.search(m.group(1))
    return b.group(1) if b is not None else None


#: Requests handed to the owner of their Call-ID: those of INVITE dialogs. Everything else
#: (SUBSCRIBE, NOTIFY, PUBLISH, MESSAGE, OPTIONS, REFER ...) stays in main, where presence is.
CALL_METHODS = frozenset({b"INVITE", b"ACK", b"CANCEL", b"BYE", b"PRACK", b"UPDATE", b"INFO"})
#: Methods whose transactions feed accounting, dialogs and presence (sipd/services/accounting.py)
EVENT_METHODS = frozenset({"INVITE", "BYE", "CANCEL", "ACK"})


def calls_stay_in_main(config: Any) -> list[str]:
    """Why calls cannot be spread over the workers: features whose per-call state lives in main
    and is not fed by events (accounting, dialogs and presence are: workers send their call
    events to main)."""
    why = []
    if config.diversion.uri:
        why.append("[diversion] uri set")
    if config.routing.hook:
        why.append("[routing] hook set")
    return why
