"""Failure diversion decisions: which failures divert, the headers, the location wrapper, the proxy hook."""

from __future__ import annotations

from types import SimpleNamespace

from sipd.services import diversion
from sipd.services.pipeline import Branch, Forward, Reply

from _residential import Endpoint, ctx, req, state

VM = {"diversion": {"uri": "sip:voicemail@198.51.100.5:5080"}}


def test_kinds():
    svc = diversion.setup(state(**VM), Endpoint())
    assert svc.kind_of(486) == "busy" and svc.kind_of(600) == "busy"
    assert all(svc.kind_of(s) == "unavailable" for s in (404, 408, 410, 480, 503))
    assert svc.kind_of(603) is None and svc.kind_of(487) is None
    svc.cfg.on_busy = False
    assert svc.kind_of(486) is None
    assert diversion.setup(state(), Endpoint()) is None


def test_diversion_header_rfc5806_and_history_info():
    svc = diversion.setup(state(**VM), Endpoint())
    r = req()
    svc.mark(r, "sip:bob@example.test", "busy")
    assert r.get("Diversion") == "<sip:bob@example.test>;reason=user-busy;counter=1"
    svc = diversion.setup(state(diversion={**VM["diversion"], "header": "history-info"}), Endpoint())
    r = req()
    svc.mark(r, "sip:bob@example.test", "no-answer")
    assert r.get_all("History-Info") == ["<sip:bob@example.test>;index=1",
                                         "<sip:voicemail@198.51.100.5:5080;cause=408>;index=1.1;mp=1"]


def test_location_wrapper():
    st = state(**VM)
    svc = diversion.setup(st, Endpoint())
    stage = svc.wrap_location(lambda c: Reply(480, "Temporarily Unavailable", why="no registered contacts"))
    c = ctx(st, req())
    c.ruri_local = True
    d = stage(c)
    assert isinstance(d, Forward) and str(d.groups[0][0].ruri) == "sip:voicemail@198.51.100.5:5080"
    assert d.groups[0][0].dest == ("udp", "198.51.100.5", 5080, None)
    assert c.request.get("Diversion").endswith("reason=unavailable;counter=1")
    forward = Forward([[Branch("sip:bob@10.0.0.1", ("udp", "10.0.0.1", 5060, None))]])
    c2 = ctx(st, req())
    c2.ruri_local = True
    assert svc.wrap_location(lambda c: forward)(c2).diversion is not None
    for not_diverted in (req("MESSAGE"), req(to_tag="t"), req(ruri="sip:voicemail@198.51.100.5")):
        c3 = ctx(st, not_diverted)
        c3.ruri_local = True
        assert isinstance(stage(c3), Reply)


def fake_proxy(st):
    calls = []
    return SimpleNamespace(_cancel_branch=lambda bs, now: calls.append(("cancel", bs)),
                           _next_group=lambda ctx, now: calls.append(("next", list(ctx.groups)))), calls


def test_proxy_hook_diverts_once():
    st = state(**VM)
    svc = diversion.setup(st, Endpoint())
    cd = diversion.CallDiversion(svc, "sip:bob@example.test", 1e9)
    proxy, calls = fake_proxy(st)
    pending = SimpleNamespace(final=0)
    pctx = SimpleNamespace(cancelled=False, answered=False, final_sent=False, request=req(), responses=[1],
                           challenges=[], groups=[], pending=[pending], timers=[])
    assert cd.on_failure(proxy, pctx, SimpleNamespace(status=603)) is False
    assert cd.on_failure(proxy, pctx, SimpleNamespace(status=486)) is True
    assert cd.redirecting and pending.final == 408 and pctx.responses == []
    assert calls[0] == ("cancel", pending) and calls[1][0] == "next"
    assert str(calls[1][1][0][0].ruri) == "sip:voicemail@198.51.100.5:5080"
    assert cd.on_failure(proxy, pctx, SimpleNamespace(status=486)) is False  # at most once


def test_no_answer_timer():
    st = state(**VM)
    endpoint = Endpoint()
    svc = diversion.setup(st, endpoint)
    cd = diversion.CallDiversion(svc, "sip:bob@example.test", 1e9)
    proxy, calls = fake_proxy(st)
    pctx = SimpleNamespace(cancelled=False, answered=False, final_sent=False, request=req(), responses=[],
                           challenges=[], groups=[], pending=[], timers=[])
    cd.attach(proxy, pctx)
    assert len(pctx.timers) == 1 and endpoint.timers[0][:2] == (svc.cfg.no_answer_timeout, cd._no_answer)
    cd._no_answer(proxy, pctx)
    assert cd.done and not cd.redirecting and endpoint.transmits == 1  # the new branch goes out at once
    assert pctx.request.get("Diversion").endswith("reason=no-answer;counter=1")
    pctx2 = SimpleNamespace(cancelled=True, answered=False, final_sent=False)
    cd2 = diversion.CallDiversion(diversion.setup(st, Endpoint()), "sip:bob@example.test", 1e9)
    cd2._no_answer(proxy, pctx2)
    assert not cd2.done  # the caller cancelled: nothing to divert
