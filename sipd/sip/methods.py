"""The request methods sipd knows by name.

A request with a method outside this set is answered 501 Not Implemented (RFC 3261 §21.5.2: the
server does not recognise the method); one inside it that a given target does not accept is
answered 405 Method Not Allowed with an Allow header (§21.4.6). The set is every method of
RFC 3261 and the extensions sipd serves or relays: PRACK (RFC 3262), SUBSCRIBE/NOTIFY (RFC 6665),
PUBLISH (RFC 3903, answered by the presence service), INFO (RFC 6086), REFER (RFC 3515), MESSAGE
(RFC 3428) and UPDATE (RFC 3311). The parser also takes these spellings without a regex.
"""

from __future__ import annotations

KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER MESSAGE UPDATE".split()
)
