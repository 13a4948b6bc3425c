"""The challenge of a REGISTER without credentials, answered from the datagram's raw bytes.

Half of a digest registration is its first REGISTER, which only earns a 401: no state is kept for
it, and nothing of the parsed message but five copied header lines reaches the answer. Parsing it
whole, running it through the request pipeline and building a ``Response`` cost more than twice
what the answer needs. ``RawChallenge`` gives the same answer (the same bytes, counters, log line
and reply-cache entry) from what ``sip/stateless.read_plain_register`` reads, when the answer is
certain to be that challenge:

* the stages before authentication are all ones that let a plain REGISTER through (anything else
  configured there -- a routing hook, a cluster relay, a PSTN gateway -- turns this off);
* the request is plain (``read_plain_register``), its To domain is local, and the spam check would
  not catch it (a scanner's User-Agent, or REGISTER among the checked methods: the general path
  decides, and counts, as before).

Everything else is declined (None) and takes the general path, which answers as it always did.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..boundary import describe
from ..sip.stateless import answer_bytes, raw_stateless_tag, read_plain_register
from ..sip.status import reason_phrase
from . import pipeline, presence, security
from .realm import realm_for

if TYPE_CHECKING:
    from ..state import ServerState
    from .auth import Authenticator

logger = logging.getLogger("sipd")  # the endpoint's logger: the same line as a challenge it sends

#: Stages that never answer nor route a plain REGISTER (``read_plain_register``) from a local domain
#: and not caught by the spam check; the stage after them is authentication.
PASSING = frozenset((pipeline.sanity, security.antiflood_stage, security.spam_stage, presence.in_dialog,
                     pipeline.loose_route, pipeline.local, pipeline.max_forwards, pipeline.local_domain))
_STATUS_LINE = f"SIP/2.0 401 {reason_phrase(401)}"


class RawChallenge:
    """``LayerConfig.answer_raw`` of a process whose pipeline allows it (``for_pipeline``)."""

    def __init__(self, state: ServerState, endpoint: Any, authenticator: Authenticator):
        self.state = state
        self.endpoint = endpoint  # its stateless tag prefix (mark), counters and Server header
        self.authenticator = authenticator

    @classmethod
    def for_pipeline(cls, state: ServerState, endpoint: Any, authenticator: Authenticator,
                     stages: list[Any]) -> RawChallenge | None:
        if not state.config.auth.register:
            return None
        for stage in stages:
            if getattr(stage, "authenticates", False):
                return cls(state, endpoint, authenticator)
            if stage not in PASSING:
                return None
        return None

    def __call__(self, data: bytes, addr: tuple) -> tuple[int, bytes] | None:
        state = self.state
        plain = read_plain_register(data) if state.config.auth.register else None
        if plain is None:
            return None
        uri_text, values, answered, to = plain
        host = to.uri.host
        if host not in state.domains:
            return None  # 403 Domain Not Served, from the general path
        spam = state.spam
        if spam is not None and spam.settings.enabled:
            if "REGISTER" in spam.methods or spam.is_scanner(values.get("user-agent")):
                return None
        endpoint = self.endpoint
        result = self.authenticator.challenge(realm_for(state, host), time.time(), proxy=False, why="no credentials")
        extra = [f"{name}: {value}" for name, value in result.headers]
        server_header = endpoint.config.server.server_header
        if server_header:
            extra.append(f"Server: {server_header}")
        answer = answer_bytes(_STATUS_LINE, answered, raw_stateless_tag(endpoint.mark, uri_text, values), extra)
        endpoint.c_rcv_requests.inc()
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s %s from %s -> %d%s", "REGISTER", to.uri.aor().split(":", 1)[1], describe(addr), 401,
                        f" ({result.why})")
        endpoint.sl.replied(401)
        return 401, answer
