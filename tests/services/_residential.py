"""Shared builders for the residential-feature unit tests (hook, nat, diversion, pstn)."""

from __future__ import annotations

from types import SimpleNamespace

from sipd import config as cfg
from sipd.services import pipeline
from sipd.sip.parser import parse_message
from sipd.state import ServerState


def req(method: str = "INVITE", ruri: str = "sip:bob@example.test", *, frm: str = "sip:alice@example.test",
        to: str | None = None, to_tag: str = "", contact: str | None = "<sip:alice@10.0.0.5:5060>",
        via: str = "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc;rport", extra: tuple[str, ...] = ()):
    tag = f";tag={to_tag}" if to_tag else ""
    lines = [f"{method} {ruri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70", f"From: <{frm}>;tag=1",
             f"To: <{to or ruri}>{tag}", "Call-ID: c1@test", f"CSeq: 1 {method}", *extra]
    if contact:
        lines.append(f"Contact: {contact}")
    return parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())


def state(**sections) -> ServerState:
    base = {"server": {"listen": ["udp:192.0.2.10:5060"], "domains": ["example.test"]}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    conf, problems = cfg.from_dict(base)
    assert not problems, problems
    st = ServerState(config=conf)
    st.myself.note_socket("udp", "192.0.2.10", 5060)
    return st


class Endpoint:
    """The ports the residential features call (sipd/services/ports.py), without sockets: a fixed
    clock, timers and sent datagrams recorded, destinations as given."""

    LISTENER = SimpleNamespace(proto="udp", host="192.0.2.10", port=5060, name="udp:192.0.2.10:5060")

    def __init__(self) -> None:
        self.now = 5.0
        self.timers: list[tuple] = []
        self.sent: list[tuple] = []
        self.transmits = 0
        self.stopping = False

    def time(self) -> float:
        return self.now

    def call_later(self, delay, callback, *args):
        self.timers.append((delay, callback, *args))
        return SimpleNamespace(cancel=lambda: None)

    def transmit(self) -> None:
        self.transmits += 1

    def send_datagram(self, data: bytes, dest: tuple) -> None:
        self.sent.append((data, dest))

    def reuse_connection(self, dest: tuple) -> tuple:
        return dest

    def branch_for_contact(self, c):
        return pipeline.Branch(c.uri, None, label=c.uri)

    def listener_for(self, addr: tuple):
        return self.LISTENER

    def advertised_host(self, listener) -> str:
        return listener.host


def ctx(st, request, source=("udp", "203.0.113.7", 40000, None)) -> pipeline.Context:
    return pipeline.Context(request=request, source=source, state=st, now=100.0, wall=1e9)
