"""The SIP Trace page's ladder layout (sipctl/web/ladder.py): lifelines in order of appearance,
one arrow per message from its sender to its receiver, labels and colours by message kind."""

from __future__ import annotations

from sipctl.web.ladder import LABEL_MAX, layout


def _m(src: str, dst: str, first_line: str, t: str = "12:00:00.000") -> dict[str, str]:
    return {"from": src, "to": dst, "first_line": first_line, "time": t}


def test_call_through_the_proxy_is_drawn_caller_sipd_callee():
    a, b = "192.0.2.1:5060", "192.0.2.2:5062"
    lad = layout([
        _m(a, "sipd", "INVITE sip:bob@example.test SIP/2.0"),
        _m("sipd", a, "SIP/2.0 100 Trying"),
        _m("sipd", b, "INVITE sip:bob@192.0.2.2:5062 SIP/2.0"),
        _m(b, "sipd", "SIP/2.0 486 Busy Here"),
        _m("sipd", a, "SIP/2.0 200 OK"),
    ])
    assert [name for name, _ in lad.lanes] == [a, "sipd", b]
    xa, xs, xb = (x for _, x in lad.lanes)
    assert xa < xs < xb
    assert [(r.x1, r.x2) for r in lad.arrows] == [(xa, xs), (xs, xa), (xs, xb), (xb, xs), (xs, xa)]
    assert [r.label for r in lad.arrows] == ["INVITE", "100 Trying", "INVITE", "486 Busy Here", "200 OK"]
    assert [r.kind for r in lad.arrows] == ["request", "provisional", "request", "failure", "success"]
    ys = [r.y for r in lad.arrows]
    assert ys == sorted(ys) and len(set(ys)) == len(ys) and lad.height > ys[-1]
    assert lad.width > xb


def test_long_reason_is_cut_and_a_lone_message_still_has_room():
    lad = layout([_m("sipd", "10.0.0.1:5060", "SIP/2.0 603 " + "x" * 100)])
    assert len(lad.arrows[0].label) == LABEL_MAX and lad.arrows[0].label.endswith("…")
    assert lad.width > max(x for _, x in lad.lanes)
