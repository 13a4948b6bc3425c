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
    st.server = SimpleNamespace(self_addresses={("192.0.2.10", 5060)}, self_sockets={("udp", "192.0.2.10", 5060)},
                                reuse_connection=lambda d: d,
                                branch_for_contact=lambda c: pipeline.Branch(c.uri, None, label=c.uri))
    return st


def ctx(st, request, source=("udp", "203.0.113.7", 40000, None)) -> pipeline.Context:
    return pipeline.Context(request=request, source=source, state=st, now=100.0, wall=1e9)
