"""The edges of the event loop's callbacks: an exception is caught, counted, logged once, and the
next message is handled (sipd/boundary.py, the UDP listener, the send path)."""

from __future__ import annotations

import logging

from sipd.boundary import Boundaries
from sipd.stats import Statistics
from sipd.transport.manager import udp_destination_ok
from sipd.transport.udp import UdpListener


class Sink:
    def __init__(self):
        self.stats = Statistics()
        self.boundary = Boundaries(self.stats)
        self.seen: list[bytes] = []

    def datagram_received(self, data, addr):
        if data == b"boom":
            raise AttributeError("'NoneType' object has no attribute 'sendto'")
        self.seen.append(data)


def test_listener_survives_a_failing_sink_counts_and_logs_once(caplog):
    sink = Sink()
    lst = UdpListener("127.0.0.1", 5060, sink)
    with caplog.at_level(logging.DEBUG, logger="sipd.errors"):
        lst.datagram_received(b"boom", ("192.0.2.7", 5099))
        lst.datagram_received(b"boom", ("192.0.2.8", 5099))
        lst.datagram_received(b"next", ("192.0.2.7", 5099))
    assert sink.seen == [b"next"]
    assert sink.stats.counter("errors:udp_receive").value == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "udp:192.0.2.7:5099" in errors[0].getMessage()
    assert "again" in caplog.records[-1].getMessage()  # the repeat: debug level, no traceback


def test_every_site_is_a_statistic_from_the_start():
    stats = Statistics()
    Boundaries(stats)
    for site in ("udp_receive", "stream_receive", "timer", "event", "send", "loop_callback"):
        assert stats.counter(f"errors:{site}").value == 0


def test_loop_handler_counts_callback_exceptions():
    stats = Statistics()
    b = Boundaries(stats)
    try:
        raise OverflowError("sendto(): port must be 0-65535.")
    except OverflowError as exc:
        b.loop_handler(None, {"message": "Exception in callback Server._on_timer()", "exception": exc})
    assert stats.counter("errors:loop_callback").value == 1 and b.total == 1


def test_udp_destination_ok():
    assert udp_destination_ok("127.0.0.1", 5060, False)
    assert udp_destination_ok("::1", 5060, True)
    assert not udp_destination_ok("::1", 5060, False)          # IPv6 peer, IPv4 socket
    assert not udp_destination_ok("127.0.0.1", 65536, False)
    assert not udp_destination_ok("127.0.0.1", 0, False)
    assert not udp_destination_ok("65536.0.0.1", 5060, False)
    assert not udp_destination_ok("pc33.example.com", 5060, False)  # would need a DNS lookup
    assert not udp_destination_ok("127.0.0.1", "5060", False)


def test_event_listener_failure_is_counted_and_the_next_listener_runs():
    from sipd.state import Events

    stats = Statistics()
    events = Events()
    events.boundary = Boundaries(stats)
    seen = []
    events.subscribe(lambda ev: 1 / 0)
    events.subscribe(seen.append)
    events.emit("e1")
    events.emit("e2")
    assert seen == ["e1", "e2"] and stats.counter("errors:event").value == 2
