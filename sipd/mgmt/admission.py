"""Who gets one of the management interface's ``[mgmt] max_connections`` slots.

A local program that opens connections and sends nothing must not lock the operator out: with the
slots simply handed out first come, first served, 64 idle connections held every slot for a whole
``read_timeout`` and a client reconnecting in a loop kept sipctl out for as long as it liked.

The rules:
- A connection is *waiting* from accept until its request has arrived, then *serving* until the
  reply is written. sipctl sends its request as soon as it is connected, so it waits a few
  milliseconds; a connection that sends nothing waits until its read timeout.
- Waiting connections never fill the table: they may hold at most ``max_connections - RESERVED``
  slots, so there is always room for one more client, the operator's.
- When a new connection finds no room, the connection that has waited longest is evicted: it is
  told "busy" and closed. Idle and never-sending connections therefore go first, oldest first, and
  a flood of them only evicts its own.
- Only when every slot is serving a request (real work in progress) is the newcomer answered
  "busy" at once. Nobody is left hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

logger = logging.getLogger(__name__)

#: Slots that waiting (not yet sending) connections may never take: kept for the operator.
RESERVED = 1


class Admission:
    """The slot table. ``admit`` at accept, ``serving`` once the request is read, ``release`` at
    the end (every path). Keys are the connection's handler tasks."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.waiting_limit = max(1, self.limit - RESERVED)
        self._waiting: dict[asyncio.Task, tuple[asyncio.StreamWriter, bytes]] = {}  # oldest first
        self._serving: set[asyncio.Task] = set()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._waiting) + len(self._serving)

    def admit(self, task: asyncio.Task, writer: asyncio.StreamWriter, busy: bytes) -> bool:
        """Take a slot for a new connection, evicting the longest-waiting ones if needed.

        Args:
            task: the connection's handler task (its key in the table).
            writer: where ``busy`` is written when it is evicted.
            busy: the "server busy" answer in the connection's protocol.

        Returns:
            False when every slot is serving a request: answer ``busy`` and close.
        """
        while self._waiting and (len(self._waiting) >= self.waiting_limit or len(self) >= self.limit):
            self._evict_oldest()
        if len(self) >= self.limit:
            return False
        self._waiting[task] = (writer, busy)
        return True

    def serving(self, task: asyncio.Task) -> bool:
        """The request has arrived: the connection is no longer a candidate for eviction.
        False when it was evicted meanwhile (already told "busy"): drop what it sent."""
        if self._waiting.pop(task, None) is None:
            return task in self._serving
        self._serving.add(task)
        return True

    def release(self, task: asyncio.Task) -> None:
        self._waiting.pop(task, None)
        self._serving.discard(task)

    def _evict_oldest(self) -> None:
        task = next(iter(self._waiting))
        writer, busy = self._waiting.pop(task)
        self.evicted += 1
        if self.evicted == 1 or self.evicted % 1000 == 0:
            logger.warning("management: %d connection(s) that sent no request evicted to make room "
                           "(a local client opening connections and sending nothing?)", self.evicted)
        # Closing (not cancelling the handler: Python 3.11's stream callback raises on a cancelled
        # task) ends the handler's read with EOF; it then sees serving() is False and leaves.
        with contextlib.suppress(Exception):  # the peer may be gone already
            writer.write(busy)
            writer.close()  # flushes "busy" first
