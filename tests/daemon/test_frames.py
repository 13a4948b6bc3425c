"""The frames between main and its worker processes (sipd/daemon/workers/frames.py): every kind
round-trips, and a truncated or garbage frame is refused with FrameError, never another exception;
the Link drops such a frame and keeps the channel open."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipd.daemon.workers.frames import (DATAGRAM_KINDS, LENGTH_SIZE, MAX_FRAME, AorContacts, AorWanted, BanChange,
                                        CallEventFrame, Cancel, Connection, Counters, Datagram, FrameError, FrameKind,
                                        Hello, LogLevel, Passthrough, Probe, Probed, Reload, Reloaded, Synced, decode,
                                        encode, split_frames, with_length)
from sipd.daemon.workers.link import Link
from sipd.services.location import Contact

REGISTER = (b"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
            b"To: <sip:alice@example.test>\r\nCall-ID: 1@x\r\n\r\n")
CONTACTS = (Contact(uri="sip:alice@192.0.2.1:5060", expires=1_900_000_000.5, q=0.5, call_id="c\udcff1", cseq=7,
                    received="udp:192.0.2.1:5060", socket="udp:127.0.0.1:5060", conn_id=None, methods=None),
            Contact(uri="sip:alice@[2001:db8::1]", expires=0))

#: One frame of every kind (and a datagram of every datagram kind).
SAMPLES = [
    Hello("0a1b2c3d"),
    Synced(calls=True, call_events=True), Synced(calls=True), Synced(),
    Passthrough(True), Passthrough(False),
    *(Datagram(kind, REGISTER, "192.0.2.1", 5060) for kind in sorted(DATAGRAM_KINDS)),
    Datagram(FrameKind.CALL, b"SIP/2.0 180 Ringing\r\n\r\n", "2001:db8::1", 65535),
    Datagram(FrameKind.SENT, b"", "127.0.0.1", 1),
    AorContacts("alice@example.test", CONTACTS), AorContacts("bob@example.test", ()),
    AorWanted("al\udcffice@example.test"),
    BanChange(("add", "192.0.2.9", 12.5, 600.0, "flood")), BanChange(("add", "10.0.0.0/8", 1.0, None, "manual")),
    BanChange(("rm", "192.0.2.9")), BanChange(("known", "192.0.2.1", 99.0)),
    Counters({"core:rcv_requests": 12, "registrar:accepted_regs": 0}), Counters({}),
    CallEventFrame("request", b"INVITE sip:b@x SIP/2.0\r\n\r\n", None, ("s", "z9hG4bK1", "x:5060", "INVITE"), 1.5),
    CallEventFrame("response", b"INVITE", b"SIP/2.0 200 OK\r\n\r\n", None, 2.0),
    CallEventFrame("response", b"CANCEL", b"SIP/2.0 200 OK\r\n\r\n", True, 2.0),  # the CANCEL's own transaction
    Cancel(("s", "z9hG4bK1", "x:5060", "INVITE")),
    LogLevel("debug"),
    Reload(7, ("domains", "subscribers"), ("a,b;c@example.test", "d@example.test")), Reload(0, ("aliases",)),
    Reloaded(7),
    # a message read on (or to send on) a TCP/TLS connection: its transport and connection id travel
    Datagram(FrameKind.ROUTE, REGISTER, "192.0.2.1", 50123, "tcp", 257),
    Datagram(FrameKind.SEND, b"SIP/2.0 200 OK\r\n\r\n", "2001:db8::1", 5061, "tls", 2**40 * 256 + 1),
    Datagram(FrameKind.SEND, b"INVITE", "192.0.2.7", 5060, "tcp", None),  # a peer without a known connection
    Connection("up", 513, "tls", "192.0.2.1", 50123, True), Connection("down", 769, "tcp", "::1", 5060, False),
    Connection("released", 0, "tcp", "?", 0, True),
    Probe(3), Probed(3, {"pid": 12, "tcp": 1, "tls": 2, "tls_listeners": [{"listener": "tls:127.0.0.1:5061"}]}),
]


def test_every_kind_has_a_sample():
    assert {s.kind for s in SAMPLES} == set(FrameKind)


def test_kinds_are_one_byte_and_distinct():
    values = [k.value for k in FrameKind]
    assert len(values) == len(set(values))
    assert all(0 < v < 256 for v in values)


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: f"{f.kind.name}")
def test_round_trip(frame):
    data = encode(frame)
    assert data[0] == frame.kind
    assert decode(data) == frame
    assert type(decode(data)) is type(frame)


def test_a_datagram_costs_its_address_and_three_bytes():
    """The hot path: a REGISTER handed between processes is its bytes, unchanged, after a short
    header (kind, port, address length, address)."""
    data = encode(Datagram(FrameKind.REGISTER, REGISTER, "192.0.2.1", 5060))
    assert len(data) == 1 + 3 + len("192.0.2.1") + len(REGISTER)
    assert data.endswith(REGISTER)
    assert decode(data).address == ("udp", "192.0.2.1", 5060, None)


def test_a_stream_message_costs_nine_bytes_more_and_a_datagram_nothing():
    """The transport and connection id follow the address only for a message of a connection."""
    udp = encode(Datagram(FrameKind.CALL, REGISTER, "192.0.2.1", 5060))
    tcp = encode(Datagram(FrameKind.CALL, REGISTER, "192.0.2.1", 5060, "tcp", 513))
    assert len(tcp) == len(udp) + 9 and tcp.endswith(REGISTER)
    assert decode(tcp).address == ("tcp", "192.0.2.1", 5060, 513)


def test_contacts_come_back_as_contacts():
    frame = decode(encode(AorContacts("alice@example.test", CONTACTS)))
    assert all(isinstance(c, Contact) for c in frame.contacts)
    assert frame.contacts[0].call_id == "c\udcff1"  # raw bytes of a Call-ID survive


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: f"{f.kind.name}")
def test_truncated_frames_are_refused_or_read_without_an_exception(frame):
    data = encode(frame)
    refused = 0
    for n in range(len(data)):
        try:
            got = decode(data[:n])
        except FrameError:
            refused += 1
        else:
            assert got.kind == frame.kind  # a shorter datagram or text is still a frame of its kind
    assert refused >= 1  # the empty frame at least


@pytest.mark.parametrize("frame", [s for s in SAMPLES if s.kind in (FrameKind.AOR, FrameKind.BAN, FrameKind.COUNTERS,
                                                                    FrameKind.CALL_EVENT, FrameKind.CANCEL,
                                                                    FrameKind.CONNECTION, FrameKind.PROBED)],
                         ids=lambda f: f.kind.name)
def test_a_truncated_structured_frame_is_refused(frame):
    data = encode(frame)
    for n in range(1, len(data)):
        with pytest.raises(FrameError):
            decode(data[:n])


def test_a_truncated_datagram_header_is_refused():
    data = encode(Datagram(FrameKind.CALL, b"x", "192.0.2.1", 5060))
    for n in range(1, 1 + 3 + len("192.0.2.1")):
        with pytest.raises(FrameError):
            decode(data[:n])


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\xff", b"A" + REGISTER,  # empty, unknown kinds
    b"E", b"E\x04", b"E\x01\x01", b"T", b"T2", b"H", b"H\xff\xfe", b"H;rm -rf",
    b"Y", b"Y7", b"Yx:domains", b"y", b"yseven", b"V\xff",
    b"L" + pickle.dumps(("a@b", [("too", "short")])), b"L" + pickle.dumps(["a@b", []]),
    b"B" + pickle.dumps(("add", "1.2.3.4")), b"B" + pickle.dumps(("drop", "1.2.3.4")), b"B" + pickle.dumps(()),
    b"S" + pickle.dumps({"a": "1"}), b"S" + pickle.dumps([1]), b"S" + pickle.dumps({1: 1}),
    b"K" + pickle.dumps(("request", "not bytes", None, None, 1.0)), b"K" + pickle.dumps((1, 2)),
    b"Z" + pickle.dumps("not a key"), b"Z" + b"\x80\x05garbage",
    b"N" + pickle.dumps(("sideways", 1, "tcp", "h", 1, True)), b"N" + pickle.dumps(("up", 1, "pigeon", "h", 1, True)),
    b"N" + pickle.dumps(("up", 1)), b"O", b"Ox", b"o" + pickle.dumps([1, {}]), b"o" + pickle.dumps(("1", {})),
    b"W\x13\xc4\x81h\x63" + bytes(8) + b"INVITE",  # a transport that does not exist
    b"W\x13\xc4\x81h\x01\x00",  # a connection id cut short
])
def test_garbage_is_refused(data):
    with pytest.raises(FrameError):
        decode(data)


def test_a_frame_naming_a_class_is_refused_and_nothing_runs(tmp_path):
    """A pickle that names a class (here one that would run a command when loaded) is refused
    before anything is looked up."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for kind in (b"L", b"B", b"S", b"K", b"Z"):
        with pytest.raises(FrameError):
            decode(kind + pickle.dumps(Evil()))
    assert not marker.exists()
    with pytest.raises(FrameError):  # a Contact dataclass itself, not its plain tuple
        decode(b"L" + pickle.dumps(("a@b", [CONTACTS[0]])))


@settings(max_examples=600, deadline=None)
@given(kind=st.sampled_from(sorted(FrameKind)), payload=st.binary(max_size=64))
def test_any_payload_of_any_kind_decodes_or_raises_frame_error(kind, payload):
    try:
        frame = decode(bytes((kind,)) + payload)
    except FrameError:
        return
    assert frame.kind == kind


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_frame_error(data):
    try:
        decode(data)
    except FrameError:
        pass


# -- the stream ----------------------------------------------------------------------------------------


def test_split_frames_keeps_an_incomplete_frame_for_the_next_read():
    a, b = encode(Hello("0a1b2c3d")), encode(Reloaded(3))
    stream = with_length(a) + with_length(b)
    buf = bytearray()
    got = []
    for i in range(len(stream)):  # one byte at a time
        buf += stream[i:i + 1]
        got += split_frames(buf)
    assert got == [a, b]
    assert buf == bytearray()


def test_split_frames_refuses_a_stream_that_lost_its_framing():
    good = with_length(encode(Reloaded(3)))
    buf = bytearray(good + (MAX_FRAME + 1).to_bytes(LENGTH_SIZE, "big") + b"xx")
    assert split_frames(buf) == [encode(Reloaded(3))]  # what came before is delivered first
    with pytest.raises(FrameError):
        split_frames(buf)


def test_a_link_drops_unreadable_frames_and_goes_on():
    """Over a real socketpair: garbage between good frames is counted and dropped, a handler that
    raises does not stop the channel, and every good frame arrives in order."""
    got: list = []

    def on_frame(frame):
        got.append(frame)
        if isinstance(frame, LogLevel) and frame.name == "boom":
            raise RuntimeError("a handler's bug")

    async def run() -> tuple[Link, list]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        closed = asyncio.Event()
        sender = await Link.open(a, lambda f: None, lambda: None)
        receiver = await Link.open(b, on_frame, closed.set)
        sent = [Hello("0a1b2c3d"), LogLevel("boom"), Datagram(FrameKind.CALL, REGISTER, "192.0.2.1", 5060),
                AorContacts("alice@example.test", CONTACTS), Reloaded(9)]
        sender.send(sent[0])
        sender.send(b"\x00garbage")  # unknown kind
        sender.send(sent[1])
        sender.send(b"L" + pickle.dumps("not an AOR"))
        for frame in sent[2:]:
            sender.send(frame)
        for _ in range(200):  # bounded: 2 s
            if len(got) == len(sent):
                break
            await asyncio.sleep(0.01)
        sender.close()
        await asyncio.wait_for(closed.wait(), 2)
        return receiver, sent

    receiver, sent = asyncio.run(run())
    assert got == sent
    assert receiver.unreadable == 2
    assert receiver.closed
