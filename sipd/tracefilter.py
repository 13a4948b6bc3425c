"""Which SIP messages a watcher of ``sipctl trace`` or the HEP export wants, read from raw bytes.

A filter names a user (in the request URI, From, To or Contact), a peer IP address, a CSeq method
and a Call-ID; an empty field matches everything. The message is not parsed: the filter runs on
every message while someone traces, so it reads the few header lines it needs with regexes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(.*?)[ \t]*$", re.I | re.M)
_CSEQ = re.compile(rb"^cseq[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.I | re.M)
_USERS = re.compile(rb"^(?:from|f|to|t|contact|m)[ \t]*:.*?sips?:([^@;>\s]+)@", re.I | re.M)


@dataclass
class Filter:
    user: str = ""
    ip: str = ""
    method: str = ""
    call_id: str = ""

    def matches(self, data: bytes, peer_host: str) -> bool:
        if self.ip and peer_host != self.ip:
            return False
        head = data[: data.find(b"\r\n\r\n") + 2 if b"\r\n\r\n" in data else len(data)]
        if self.method:
            m = _CSEQ.search(head)
            if not m or m.group(1).decode("ascii", "replace").upper() != self.method.upper():
                return False
        if self.call_id:
            m = _CALL_ID.search(head)
            if not m or m.group(1).decode("latin-1") != self.call_id:
                return False
        if self.user:
            line = head.split(b"\r\n", 1)[0]
            users = {u.decode("latin-1").lower() for u in _USERS.findall(head)}
            m = re.search(rb"sips?:([^@;>\s]+)@", line)
            if m:
                users.add(m.group(1).decode("latin-1").lower())
            if self.user.lower() not in users:
                return False
        return True
