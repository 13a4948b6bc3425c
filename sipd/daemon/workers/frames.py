"""The frames main and its worker processes exchange: one kind per meaning, and their codec.

Pure: no I/O, no clock. A frame is one kind byte (:class:`FrameKind`) and its payload; on the
socketpair each frame is preceded by its length (4 bytes, big-endian), which :func:`split_frames`
takes off a received byte stream. :func:`encode` turns a frame object into bytes and
:func:`decode` turns bytes back into the same object, or raises :class:`FrameError` (and nothing
else) for a frame it cannot read: an unknown kind, a truncated payload, garbage.

Datagrams (the hot path: every REGISTER and call message that crosses processes) are packed by hand
(port, address length, address, then the datagram as received). A message read over a TCP or TLS
connection travels the same way, its transport and connection id after the address (the high bit of
the address length says they are there), so a UDP datagram's frame stays as short as ever.
Structured payloads (an AOR's contacts, a ban, counters, a call event) are pickled as plain tuples,
dicts and scalars, and read back by an unpickler that refuses every class: the peer is our own
child, but a frame that names a class is garbage all the same.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, NamedTuple, Union

from ...services.location import Contact


class FrameError(ValueError):
    """A frame that cannot be read (unknown kind, truncated, garbage)."""


class FrameKind(IntEnum):
    """The first byte of a frame. Each kind has one meaning and one direction (or both, when the
    meaning is the same either way). The values are letters, so a frame reads in a hex dump."""

    HELLO = ord("H")  # worker -> main: started; its branch mark (responses to its branches are its)
    SYNCED = ord("E")  # main -> worker: its AORs are sent, serve now (and what it serves)
    PASSTHROUGH = ord("T")  # main -> worker: pass every REGISTER to main (someone traces), or stop
    ROUTE = ord("P")  # worker -> main: a datagram main routes as if its own socket had read it
    FOR_MAIN = ord("R")  # worker -> main: a REGISTER for an AOR main owns (main answers it, no routing)
    HANDED_BACK = ord("M")  # worker -> main: a call it cannot handle (TCP/TLS, DNS); main keeps the call
    REGISTER = ord("G")  # main -> worker: a REGISTER for an AOR the worker owns
    CALL = ord("C")  # main -> worker: a datagram of a call the worker owns (by Call-ID or branch mark)
    SENT = ord("X")  # worker -> main: a copy of what the worker sent, for the trace (while traced)
    AOR = ord("L")  # both: the contacts of an AOR (after its owner changed it, or main's copy)
    AOR_WANTED = ord("Q")  # worker -> main: a copy of an AOR it does not own, and its changes from now on
    BAN = ord("B")  # both: a ban added or removed, or an address that authenticated
    COUNTERS = ord("S")  # worker -> main: its counters (main adds the increments to its own)
    CALL_EVENT = ord("K")  # worker -> main: a call event, for main's accounting, dialogs and presence
    CANCEL = ord("Z")  # main -> worker: cancel a ringing call of the worker's (sipctl dialog end)
    LOG_LEVEL = ord("V")  # main -> worker: the new log level
    RELOAD = ord("Y")  # main -> worker: read these provisioning tables again
    RELOADED = ord("y")  # worker -> main: done reloading (its answer to a RELOAD)
    SEND = ord("W")  # both: send this message on connection X (its owner's), or to a peer main connects
    CONNECTION = ord("N")  # worker -> main: a TCP/TLS connection of the worker's came up, went down or was
    #                        released (a socket main handed over ended, up or not: main's count per source)
    PROBE = ord("O")  # main -> worker: describe yourself (sipctl ps, tls list)
    PROBED = ord("o")  # worker -> main: its answer to a PROBE


#: The kinds whose payload is a datagram and the address it came from or went to.
DATAGRAM_KINDS = frozenset({FrameKind.ROUTE, FrameKind.FOR_MAIN, FrameKind.HANDED_BACK, FrameKind.REGISTER,
                            FrameKind.CALL, FrameKind.SENT, FrameKind.SEND})

LENGTH_SIZE = 4  # the length before each frame on the stream
MAX_FRAME = 64 * 1024 * 1024  # a length above this is garbage, not a frame to wait for


# -- the frames ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    kind: ClassVar[FrameKind] = FrameKind.HELLO
    mark: str  # the worker's branch mark (8 hex digits)


@dataclass(frozen=True, slots=True)
class Synced:
    kind: ClassVar[FrameKind] = FrameKind.SYNCED
    calls: bool = False  # calls are spread: the worker routes the calls of its Call-IDs
    call_events: bool = False  # main listens to call events: the worker sends its own


@dataclass(frozen=True, slots=True)
class Passthrough:
    kind: ClassVar[FrameKind] = FrameKind.PASSTHROUGH
    on: bool


class Datagram(NamedTuple):
    """A UDP datagram that crosses processes; ``kind`` says why (one of :data:`DATAGRAM_KINDS`).
    A named tuple, not a frozen dataclass like the other frames: one is made for every datagram
    handed over, and a tuple is made in a third of the time."""

    kind: FrameKind
    data: bytes
    host: str  # where it came from (or, for SENT and SEND, where it goes)
    port: int
    proto: str = "udp"  # "tcp", "tls": a message read on (or to send on) a connection
    conn_id: int | None = None  # that connection (its owner is in it: sipd/transport/stream.py conn_owner)

    @property
    def address(self) -> tuple[str, str, int, int | None]:
        """The address as the transports write it."""
        return (self.proto, self.host, self.port, self.conn_id)


@dataclass(frozen=True, slots=True)
class AorContacts:
    kind: ClassVar[FrameKind] = FrameKind.AOR
    aor: str
    contacts: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class AorWanted:
    kind: ClassVar[FrameKind] = FrameKind.AOR_WANTED
    aor: str


@dataclass(frozen=True, slots=True)
class BanChange:
    kind: ClassVar[FrameKind] = FrameKind.BAN
    #: ("add", target, now, duration, reason), ("rm", target) or ("known", host, until)
    change: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Counters:
    kind: ClassVar[FrameKind] = FrameKind.COUNTERS
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class CallEventFrame:
    kind: ClassVar[FrameKind] = FrameKind.CALL_EVENT
    event: str  # "request" | "response"
    request: bytes
    response: bytes | None
    tx_key: tuple[Any, ...] | bool | None  # True: "the layer has one" (a CANCEL's own transaction)
    wall: float  # unix time of the event (each process has its own loop clock)


@dataclass(frozen=True, slots=True)
class Cancel:
    kind: ClassVar[FrameKind] = FrameKind.CANCEL
    invite_tx: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class LogLevel:
    kind: ClassVar[FrameKind] = FrameKind.LOG_LEVEL
    name: str


@dataclass(frozen=True, slots=True)
class Reload:
    kind: ClassVar[FrameKind] = FrameKind.RELOAD
    seq: int  # 0: no answer wanted
    tables: tuple[str, ...]
    users: tuple[str, ...] = ()  # user@domain: a subscriber reload narrowed to these


@dataclass(frozen=True, slots=True)
class Reloaded:
    kind: ClassVar[FrameKind] = FrameKind.RELOADED
    seq: int


@dataclass(frozen=True, slots=True)
class Connection:
    """A worker's TCP/TLS connection, for main's table of every process's connections (reuse by
    peer, ``tls list``) and its count of inbound connections per source address (the limits)."""

    kind: ClassVar[FrameKind] = FrameKind.CONNECTION
    event: str  # "up" | "down" | "released" (a socket main handed over is done with, up or not)
    conn_id: int
    proto: str
    host: str
    port: int
    inbound: bool


@dataclass(frozen=True, slots=True)
class Probe:
    kind: ClassVar[FrameKind] = FrameKind.PROBE
    seq: int


@dataclass(frozen=True, slots=True)
class Probed:
    kind: ClassVar[FrameKind] = FrameKind.PROBED
    seq: int
    facts: dict[str, Any]  # plain values only (names, numbers, lists and dicts of them)


Frame = Union[Hello, Synced, Passthrough, Datagram, AorContacts, AorWanted, BanChange, Counters, CallEventFrame,
              Cancel, LogLevel, Reload, Reloaded, Connection, Probe, Probed]


# -- encoding ----------------------------------------------------------------------------------------

_ADDR = struct.Struct("!HB")  # port, length of the address text
_unpack_addr = _ADDR.unpack_from
_STREAM = struct.Struct("!BQ")  # after the address of a message on a connection: transport, connection id
STREAM_FLAG = 0x80  # in the address length: the transport and connection id follow the address
#: Transports a message that crosses processes may have arrived on (an index on the wire).
PROTOS = ("udp", "tcp", "tls", "sctp", "ws", "wss")
_PROTO_INDEX = {p: i for i, p in enumerate(PROTOS)}
_DATAGRAM_HEADER = 1 + _ADDR.size  # kind, port, address length; then the address and the datagram
_CONTACT_FIELDS = tuple(f.name for f in dataclasses.fields(Contact))
_BAN_ACTIONS = {"add": 5, "rm": 2, "known": 3}  # action -> tuple length
_KIND_BYTES = {k: bytes((k,)) for k in FrameKind}


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")  # AORs and Call-IDs keep their raw bytes


def encode(frame: Frame) -> bytes:
    """The bytes of ``frame``: its kind byte, then its payload (without the stream's length)."""
    kind = _KIND_BYTES[frame.kind]
    if isinstance(frame, Datagram):
        host = frame.host.encode("ascii")
        if frame.proto == "udp":
            return kind + _ADDR.pack(frame.port, len(host)) + host + frame.data
        stream = _STREAM.pack(_PROTO_INDEX[frame.proto], frame.conn_id or 0)
        return kind + _ADDR.pack(frame.port, len(host) | STREAM_FLAG) + host + stream + frame.data
    if isinstance(frame, AorContacts):  # plain tuples: pickling the dataclasses costs twice as much
        return kind + _dumps((frame.aor, [tuple([getattr(c, f) for f in _CONTACT_FIELDS]) for c in frame.contacts]))
    if isinstance(frame, Hello):
        return kind + frame.mark.encode("ascii")
    if isinstance(frame, Synced):
        return kind + bytes((frame.calls | frame.call_events << 1,))
    if isinstance(frame, Passthrough):
        return kind + (b"1" if frame.on else b"0")
    if isinstance(frame, (AorWanted, LogLevel)):
        return kind + _text(frame.aor if isinstance(frame, AorWanted) else frame.name)
    if isinstance(frame, BanChange):
        return kind + _dumps(frame.change)
    if isinstance(frame, Counters):
        return kind + _dumps(frame.values)
    if isinstance(frame, CallEventFrame):
        return kind + _dumps((frame.event, frame.request, frame.response, frame.tx_key, frame.wall))
    if isinstance(frame, Cancel):
        return kind + _dumps(frame.invite_tx)
    if isinstance(frame, Reload):
        # a user part may hold "," and ";" (RFC 3261 user-unreserved), never a line break
        text = "\n".join([f"{frame.seq}:{','.join(frame.tables)}", *frame.users])
        return kind + text.encode("utf-8", "surrogateescape")
    if isinstance(frame, Reloaded):
        return kind + str(frame.seq).encode("ascii")
    if isinstance(frame, Connection):
        return kind + _dumps((frame.event, frame.conn_id, frame.proto, frame.host, frame.port, frame.inbound))
    if isinstance(frame, Probe):
        return kind + str(frame.seq).encode("ascii")
    if isinstance(frame, Probed):
        return kind + _dumps((frame.seq, frame.facts))
    raise TypeError(f"not a frame: {frame!r}")


def with_length(frame: bytes) -> bytes:
    """``frame`` as it goes on the stream: its length first."""
    return len(frame).to_bytes(LENGTH_SIZE, "big") + frame


# -- decoding ----------------------------------------------------------------------------------------


class _PlainUnpickler(pickle.Unpickler):
    """Reads tuples, lists, dicts, strings, bytes and numbers; a frame naming any class is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a frame may not name {module}.{name}")


def _loads(payload: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(payload)).load()


def _datagram(kind: FrameKind, frame: bytes) -> Datagram:
    try:
        port, n = _unpack_addr(frame, 1)
    except struct.error:
        raise FrameError("truncated datagram frame") from None
    if n & STREAM_FLAG:
        n &= ~STREAM_FLAG
        end = _DATAGRAM_HEADER + n
        if len(frame) < end + _STREAM.size:
            raise FrameError("truncated datagram frame")
        proto, conn_id = _STREAM.unpack_from(frame, end)
        if proto >= len(PROTOS):
            raise FrameError(f"unknown transport {proto}")
        return Datagram(kind, frame[end + _STREAM.size:], frame[_DATAGRAM_HEADER:end].decode("ascii"), port,
                        PROTOS[proto], conn_id or None)
    end = _DATAGRAM_HEADER + n
    if len(frame) < end:
        raise FrameError("truncated datagram frame")
    return Datagram(kind, frame[end:], frame[_DATAGRAM_HEADER:end].decode("ascii"), port)


def _aor(frame: bytes) -> AorContacts:
    value = _loads(frame[1:])
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], list)):
        raise FrameError("an AOR frame holds an AOR and a list of contacts")
    aor, rows = value
    n = len(_CONTACT_FIELDS)
    if not all(isinstance(row, tuple) and len(row) == n for row in rows):
        raise FrameError("a contact of an AOR frame has the wrong shape")
    return AorContacts(aor, tuple(Contact(*row) for row in rows))


def _ban(frame: bytes) -> BanChange:
    change = _loads(frame[1:])
    if not (isinstance(change, tuple) and change and _BAN_ACTIONS.get(change[0]) == len(change)
            and isinstance(change[1], str)):
        raise FrameError("not a ban change")
    return BanChange(change)


def _counters(frame: bytes) -> Counters:
    values = _loads(frame[1:])
    if not (isinstance(values, dict)
            and all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in values.items())):
        raise FrameError("counters are names and numbers")
    return Counters(values)


def _call_event(frame: bytes) -> CallEventFrame:
    fields = _loads(frame[1:])
    if not (isinstance(fields, tuple) and len(fields) == 5):
        raise FrameError("a call event has five fields")
    event, request, response, tx_key, wall = fields
    if not (isinstance(event, str) and isinstance(request, bytes) and isinstance(response, (bytes, type(None)))
            and isinstance(tx_key, (tuple, bool, type(None))) and isinstance(wall, (int, float))):
        raise FrameError("a call event field has the wrong type")
    return CallEventFrame(event, request, response, tx_key, float(wall))


def _cancel(frame: bytes) -> Cancel:
    invite_tx = _loads(frame[1:])
    if not isinstance(invite_tx, tuple):
        raise FrameError("a cancel names a transaction key")
    return Cancel(invite_tx)


def _synced(frame: bytes) -> Synced:
    if len(frame) != 2 or frame[1] > 3:
        raise FrameError("bad synced flags")
    return Synced(calls=bool(frame[1] & 1), call_events=bool(frame[1] & 2))


def _passthrough(frame: bytes) -> Passthrough:
    if frame[1:] not in (b"0", b"1"):
        raise FrameError("passthrough is 0 or 1")
    return Passthrough(frame[1:] == b"1")


def _hello(frame: bytes) -> Hello:
    mark = frame[1:].decode("ascii")
    if not mark.isalnum():
        raise FrameError("a branch mark is letters and digits")
    return Hello(mark)


def _reload(frame: bytes) -> Reload:
    head, *users = frame[1:].decode("utf-8", "surrogateescape").split("\n")
    seq, sep, names = head.partition(":")
    if not sep:
        raise FrameError("a reload frame starts with seq:tables")
    return Reload(int(seq), tuple(n for n in names.split(",") if n), tuple(users))


def _connection(frame: bytes) -> Connection:
    fields = _loads(frame[1:])
    if not (isinstance(fields, tuple) and len(fields) == 6):
        raise FrameError("a connection frame has six fields")
    event, conn_id, proto, host, port, inbound = fields
    if not (event in ("up", "down", "released") and isinstance(conn_id, int) and proto in _PROTO_INDEX
            and isinstance(host, str) and isinstance(port, int) and isinstance(inbound, bool)):
        raise FrameError("a connection frame field has the wrong type")
    return Connection(event, conn_id, proto, host, port, inbound)


def _probed(frame: bytes) -> Probed:
    fields = _loads(frame[1:])
    if not (isinstance(fields, tuple) and len(fields) == 2 and isinstance(fields[0], int)
            and isinstance(fields[1], dict)):
        raise FrameError("a probe's answer is a number and a dict")
    return Probed(fields[0], fields[1])


_DECODERS: dict[int, Any] = {
    FrameKind.HELLO: _hello,
    FrameKind.SYNCED: _synced,
    FrameKind.PASSTHROUGH: _passthrough,
    FrameKind.AOR: _aor,
    FrameKind.AOR_WANTED: lambda f: AorWanted(f[1:].decode("utf-8", "surrogateescape")),
    FrameKind.BAN: _ban,
    FrameKind.COUNTERS: _counters,
    FrameKind.CALL_EVENT: _call_event,
    FrameKind.CANCEL: _cancel,
    FrameKind.LOG_LEVEL: lambda f: LogLevel(f[1:].decode("ascii")),
    FrameKind.RELOAD: _reload,
    FrameKind.RELOADED: lambda f: Reloaded(int(f[1:].decode("ascii"))),
    FrameKind.CONNECTION: _connection,
    FrameKind.PROBE: lambda f: Probe(int(f[1:].decode("ascii"))),
    FrameKind.PROBED: _probed,
}
_KINDS = {k.value: k for k in FrameKind}


def decode(frame: bytes) -> Frame:
    """The frame object ``frame`` (kind byte and payload) encodes.

    Raises:
        FrameError: for an empty frame, an unknown kind, a truncated or garbled payload; no other
            exception leaves this function.
    """
    if not frame:
        raise FrameError("empty frame")
    kind = _KINDS.get(frame[0])
    if kind is None:
        raise FrameError(f"unknown frame kind {frame[0]}")
    try:
        if kind in DATAGRAM_KINDS:
            return _datagram(kind, frame)
        return _DECODERS[kind](frame)  # type: ignore[no-any-return]
    except FrameError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickle and the text decoders raise many kinds of error
        raise FrameError(f"unreadable {kind.name} frame: {type(exc).__name__}: {exc}") from None


def split_frames(buf: bytearray) -> list[bytes]:
    """Take the complete frames off the front of ``buf`` (a received byte stream), in order; an
    incomplete last frame stays in ``buf`` for the next read.

    Raises:
        FrameError: the next frame announces more than :data:`MAX_FRAME` bytes: the stream cannot
            be resynchronised, so the channel must be closed. (The complete frames before it are
            returned first; the next call raises.)
    """
    pos, end = 0, len(buf)
    frames = []
    while end - pos >= LENGTH_SIZE:
        n = int.from_bytes(buf[pos:pos + LENGTH_SIZE], "big")
        if n > MAX_FRAME:
            if frames:
                break
            raise FrameError(f"a frame of {n} bytes announced: not a frame stream")
        if end - pos - LENGTH_SIZE < n:
            break
        frames.append(bytes(buf[pos + LENGTH_SIZE:pos + LENGTH_SIZE + n]))
        pos += LENGTH_SIZE + n
    if pos:
        del buf[:pos]
    return frames
