"""The channel between main and one worker process, and what both ends share over it (bans).

A :class:`Link` is one end of a socketpair carrying frames (sipd/daemon/workers/frames.py): it
batches what it sends in one loop iteration into one write, reads the stream back into frame
objects, and drops (and counts) a frame it cannot read without stopping the channel.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Callable

from .frames import BanChange, Frame, FrameError, decode, encode, split_frames, with_length

logger = logging.getLogger("sipd")

IPC_BUFFER = 4 * 1024 * 1024  # socketpair buffers: a burst of relayed datagrams must fit
IPC_BACKLOG = 32 * 1024 * 1024  # bytes queued for a peer before relayed datagrams are dropped


class Link(asyncio.Protocol):
    """One end of a worker's socketpair: a byte stream of frames. A stream, not SOCK_SEQPACKET:
    Linux queues at most ``net.unix.max_dgram_qlen`` (10) datagrams per socket, far too few for
    relayed bursts."""

    def __init__(self, on_frame: Callable[[Frame], None], on_close: Callable[[], None]):
        self.on_frame = on_frame
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.dropped = 0  # frames not sent: the peer was too far behind
        self.unreadable = 0  # frames received that did not decode
        self.closed = False
        self._buf = bytearray()
        self._out: list[bytes] = []  # frames queued in this loop iteration (see _flush)
        self._out_size = 0

    @classmethod
    async def open(cls, sock: socket.socket, on_frame: Callable[[Frame], None], on_close: Callable[[], None]) -> Link:
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, IPC_BUFFER)
            except OSError:
                pass
        sock.setblocking(False)
        link = cls(on_frame, on_close)
        await asyncio.get_running_loop().create_unix_connection(lambda: link, sock=sock)
        return link

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def send(self, frame: Frame | bytes) -> bool:
        """Queue one frame (``bytes``: already encoded, e.g. once for several workers); dropped
        (counted) when the peer is far behind (a relayed datagram is then lost like any UDP
        datagram, and the UA retransmits)."""
        if not isinstance(frame, bytes):
            frame = encode(frame)
        t = self.transport
        if t is None or self.closed:
            return False
        if self._out_size + t.get_write_buffer_size() > IPC_BACKLOG:
            self.dropped += 1
            return False
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(len(frame).to_bytes(4, "big"))
        self._out.append(frame)
        self._out_size += len(frame) + 4
        return True

    def send_now(self, frame: Frame) -> None:
        """Write ``frame`` (after anything queued) at once: an AOR update must be on its way to
        main before the REGISTER's 200, so a call right after the 200 finds the binding."""
        if self._out:
            self.send(frame)
            self._flush()
        elif self.transport is not None and not self.closed:
            self.transport.write(with_length(encode(frame)))

    def _flush(self) -> None:
        """One write (one syscall) for every frame queued during this loop iteration."""
        out, self._out, self._out_size = self._out, [], 0
        if out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            frames = split_frames(self._buf)
        except FrameError as exc:  # the stream lost its framing: nothing after this can be trusted
            logger.error("worker channel: %s; closing it", exc)
            self.close()
            return
        for raw in frames:
            try:
                frame = decode(raw)
            except FrameError as exc:
                self.unreadable += 1
                logger.warning("worker channel: a frame dropped: %s", exc)
                continue
            try:
                self.on_frame(frame)
            except Exception:  # noqa: BLE001 - one bad message must not stop the channel
                logger.exception("worker channel: error handling a %s frame", frame.kind.name)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.on_close()


def share_bans(state: Any, gate: Any, send: Callable[[Frame], Any]) -> None:
    """Send every ban this process adds or removes (:func:`apply_ban` applies one from elsewhere
    without sending it back)."""
    if state.bans is not None:
        state.bans.bans.watch(lambda change: send(BanChange(change)))
    if gate is not None:  # addresses that authenticated here pass every process's gate
        gate.on_new = lambda host, until: send(BanChange(("known", host, until)))


def apply_ban(state: Any, gate: Any, change: tuple) -> None:
    """A ban (or an authenticated address) another process shared."""
    bans = state.bans
    if change[0] == "known":
        if gate is not None:
            gate.learn(change[1], change[2])
    elif bans is None:
        return
    elif change[0] == "add":
        _, target, now, duration, reason = change
        try:
            bans.bans.add(target, now, duration, reason, notify=False)
        except ValueError:
            pass
    else:
        bans.bans.remove(change[1], notify=False)
