"""PSTN gateway routing: prefixes, outbound only for local callers, trusted inbound gateway."""

from __future__ import annotations

from sipd.services import pipeline, pstn
from sipd.services.pipeline import Forward, Reply

from _residential import Endpoint, ctx, req, state

GW = {"pstn": {"gateway": "sip:198.51.100.20:5060", "prefixes": ["00", "+"]}}


def test_match_number():
    assert pstn.match_number("0049301234", ["0", "00"]) == ("00", "49301234")  # longest prefix
    assert pstn.match_number("+4930", ["+"]) == ("+", "4930")
    assert pstn.match_number("00", ["00"]) is None and pstn.match_number("00ab", ["00"]) is None
    assert pstn.match_number("alice", ["00"]) is None


def run_outbound(st, c):
    stage = pstn.outbound_stage(pstn.setup(st), Endpoint())
    return stage(c)


def test_outbound_for_local_caller():
    st = state(**GW)
    c = ctx(st, req(ruri="sip:0049301234@example.test"))
    c.from_local, c.ruri_local = True, True
    d = run_outbound(st, c)
    assert isinstance(d, Forward)
    b = d.groups[0][0]
    assert str(b.ruri) == "sip:0049301234@198.51.100.20:5060" and b.dest == ("udp", "198.51.100.20", 5060, None)
    assert str(c.request.uri) == "sip:0049301234@198.51.100.20:5060"


def test_outbound_strip_prefix_and_foreign_caller():
    st = state(pstn={**GW["pstn"], "strip_prefix": True})
    c = ctx(st, req(ruri="sip:+4930@example.test"))
    c.from_local, c.ruri_local = True, True
    assert str(run_outbound(st, c).groups[0][0].ruri) == "sip:4930@198.51.100.20:5060"
    foreign = ctx(st, req(ruri="sip:0049301234@example.test", frm="sip:x@outside.example"))
    foreign.ruri_local = True
    d = run_outbound(st, foreign)
    assert isinstance(d, Reply) and d.status == 403
    user = ctx(st, req(ruri="sip:bob@example.test"))
    user.from_local = user.ruri_local = True
    assert run_outbound(st, user) is None


def test_inbound_from_gateway_is_not_challenged():
    st = state(**GW)
    stage = pstn.trust_stage(pstn.setup(st), pipeline.local_domain)
    c = ctx(st, req(ruri="sip:alice@example.test"), source=("udp", "198.51.100.20", 5060, None))
    assert stage(c) is None and c.from_local is False and c.extra["pstn_inbound"]
    # number@<our IP> from the gateway is taken as number@<our domain>
    c2 = ctx(st, req(ruri="sip:1234@192.0.2.10", frm="sip:+4930@198.51.100.20"), source=("udp", "198.51.100.20", 5060, None))
    assert stage(c2) is None and str(c2.request.uri) == "sip:1234@example.test"
    # the same from elsewhere: a local From is a local caller (auth applies)
    c3 = ctx(st, req(ruri="sip:alice@example.test"))
    assert stage(c3) is None and c3.from_local is True and "pstn_inbound" not in c3.extra
    # calls from the gateway never go back to it
    c2.ruri_local = True
    c2.request.uri = c2.request.uri.replace(user="0049301234")
    assert run_outbound(st, c2) is None


def test_validation():
    from sipd import config as cfg
    from sipd.services import pstn

    conf, _ = cfg.from_dict({"pstn": {"gateway": "not a uri", "prefixes": [], "trusted_addresses": ["gw.example"]},
                             "nat": {"keepalive_method": "stun"}, "diversion": {"uri": "mailto:x", "header": "x"}})
    keys = {p.key for p in pstn.validate(conf)}
    assert {"pstn.gateway", "pstn.trusted_addresses[0]", "nat.keepalive_method", "diversion.uri",
            "diversion.header"} <= keys
