"""The ``sl:`` statistics, with the names and meaning of OpenSIPS's sl module (stateless replies).

* ``sl:sent_replies`` - replies sipd generated itself (not relayed from a downstream UAS), and
  ``sl:1xx_replies`` ... ``sl:6xx_replies`` the same by class;
* ``sl:sent_err_replies`` - those of them that are errors, status 300 and above (OpenSIPS counts
  every negative local reply here: a 401/407 challenge, a 404, a 403 spam refusal...);
* ``sl:received_ACKs`` - ACKs that acknowledged a stateless non-2xx answer and were absorbed by
  the To tag signature of that answer (sip/stateless.py), as sl's ACK filter does; ACKs matched by
  a server transaction are the transaction layer's and are not counted here.

All are counters, so the workers' share reaches main with the other counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stats import Statistics


class StatelessReplyStats:
    def __init__(self, stats: Statistics):
        self.sent_replies = stats.counter("sl:sent_replies")
        self.sent_err_replies = stats.counter("sl:sent_err_replies")
        self.received_acks = stats.counter("sl:received_ACKs")
        self.by_class = {k: stats.counter(f"sl:{k}xx_replies") for k in range(1, 7)}

    def replied(self, status: int) -> None:
        """sipd sent a reply of its own with ``status``."""
        self.sent_replies.inc()
        self.by_class[status // 100].inc()
        if status >= 300:
            self.sent_err_replies.inc()

    def ack_absorbed(self) -> None:
        """The ACK of a stateless non-2xx answer was absorbed (a LayerConfig.on_stateless_ack)."""
        self.received_acks.inc()
