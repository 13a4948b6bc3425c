"""The security glue: stages over real parsed requests and the real pipeline Context."""

from __future__ import annotations

import logging

import pytest

from sipd import config as cfg

parser = pytest.importorskip("sipd.sip.parser")
pipeline = pytest.importorskip("sipd.services.pipeline")
state_mod = pytest.importorskip("sipd.state")

from sipd.services import security  # noqa: E402


def _req(ruri: str, to: str, *, method: str = "INVITE", ua: str | None = None, to_tag: str = ""):
    tag = f";tag={to_tag}" if to_tag else ""
    lines = [f"{method} {ruri} SIP/2.0", "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKabc",
             "From: <sip:caller@outside.example>;tag=1", f"To: <{to}>{tag}", "Call-ID: c1",
             f"CSeq: 1 {method}"]
    if ua:
        lines.append(f"User-Agent: {ua}")
    return parser.parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())


def _state(**sections):
    conf, problems = cfg.from_dict({"server": {"listen": ["udp:192.0.2.10:5060"], "domains": ["example.test"]},
                                    "antiflood": {"trusted_networks": []}, **sections})
    assert not problems
    st = state_mod.ServerState(config=conf)
    security.setup(st)
    return st


def _ctx(st, req, source=("udp", "203.0.113.5", 5060, None), now=100.0):
    return pipeline.Context(request=req, source=source, state=st, now=now, wall=1e9)


def _run(st, ctx):
    for stage in security.stages(st):
        d = stage(ctx)
        if d is not None:
            return d
    return None


def test_spam_to_our_ip_dropped_with_report_line(caplog):
    st = _state()
    with caplog.at_level(logging.INFO, logger="sipd.security"):
        d = _run(st, _ctx(st, _req("sip:vcc-c40@192.0.2.10", "sip:vcc-c40@192.0.2.10")))
    assert isinstance(d, pipeline.Drop)
    assert "Dropped Spam-Call to sip:vcc-c40@192.0.2.10 from 203.0.113.5:5060" in caplog.messages


def test_call_by_domain_passes():
    st = _state()
    assert _run(st, _ctx(st, _req("sip:vcc-c40@example.test", "sip:vcc-c40@example.test"))) is None


def test_spam_reply_status():
    st = _state(spam={"action": "404"})
    d = _run(st, _ctx(st, _req("sip:1234@192.0.2.10", "sip:1234@192.0.2.10")))
    assert isinstance(d, pipeline.Reply) and d.status == 404


def test_scanner_dropped_and_optionally_banned():
    st = _state(antiflood={"trusted_networks": [], "scanner_ban_time": 60.0})
    d = _run(st, _ctx(st, _req("sip:100@example.test", "sip:100@example.test", method="OPTIONS", ua="friendly-scanner")))
    assert isinstance(d, pipeline.Drop)
    assert not security.packet_allowed(st, "203.0.113.5", 101.0)
    assert not security.connection_allowed(st, "203.0.113.5", 101.0)
    assert security.connection_allowed(st, "203.0.113.6", 101.0)


def test_stream_requests_counted_in_stage():
    st = _state(antiflood={"trusted_networks": [], "limit": 3})
    req = _req("sip:a@example.test", "sip:a@example.test", method="OPTIONS")
    tcp = ("tcp", "198.51.100.1", 40000, 7)
    results = [_run(st, _ctx(st, req, tcp)) for _ in range(5)]
    assert results[:3] == [None] * 3 and all(isinstance(r, pipeline.Drop) for r in results[3:])
    udp = ("udp", "198.51.100.2", 5060, None)
    assert all(_run(st, _ctx(st, req, udp)) is None for _ in range(10))  # UDP is counted pre-parse


def test_auth_failures_ban(caplog):
    st = _state(antiflood={"trusted_networks": [], "auth_fail_threshold": 2})
    ctx = _ctx(st, _req("sip:example.test", "sip:alice@example.test", method="REGISTER"))
    with caplog.at_level(logging.WARNING, logger="sipd.security"):
        assert security.auth_failed(ctx, "alice", "example.test", "wrong_password") is None
        assert isinstance(security.auth_failed(ctx, "alice", "example.test", "wrong_password"), pipeline.Drop)
    assert "auth failed: user=alice realm=example.test source=203.0.113.5:5060 reason=wrong_password" in caplog.messages
    assert not security.packet_allowed(st, "203.0.113.5", 100.0)


def test_statistics_exported():
    st = _state()
    assert security.packet_allowed(st, "203.0.113.9", 1.0)
    stats = st.stats.get("antiflood:")
    assert stats["antiflood:tracked_sources"] == 1 and "spam:dropped_calls" in st.stats.get("spam:")


def test_disabled_spam_has_no_stage():
    st = _state(spam={"enabled": False})
    assert security.spam_stage not in security.stages(st)
