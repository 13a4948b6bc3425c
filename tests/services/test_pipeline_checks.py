"""The pipeline's request checks are the core's (sipd/sip/sanity.py): real parsed requests, the real
stages, and the answers a client reads (status, reason, Allow, Unsupported)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipd.services import pipeline
from sipd.sip.methods import KNOWN_METHODS
from sipd.sip.parser import parse_message

import _residential as R

TORTURE = Path(__file__).parents[1] / "sip" / "data" / "rfc4475"


def _methods(allow: str) -> set[str]:
    return {m.strip() for m in allow.split(",")}


def _allow(reply: pipeline.Reply) -> str:
    (value,) = [v for name, v in reply.headers if name == "Allow"]
    return value


def test_what_the_server_advertises_it_knows():
    """No method in the OPTIONS answer's Allow may ever be answered 501 (RFC 3261 §21.5.2)."""
    st = R.state()
    reply = pipeline.local(R.ctx(st, R.req("OPTIONS", "sip:example.test")))
    assert isinstance(reply, pipeline.Reply) and reply.status == 200
    assert _methods(_allow(reply)) <= KNOWN_METHODS


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS - {"OPTIONS", "REGISTER", "ACK"}))
def test_a_known_method_for_the_server_itself_is_405_with_allow(method):
    st = R.state()
    options = pipeline.local(R.ctx(st, R.req("OPTIONS", "sip:example.test")))
    reply = pipeline.local(R.ctx(st, R.req(method, "sip:example.test")))
    assert isinstance(reply, pipeline.Reply)
    assert (reply.status, reply.reason) == (405, "Method Not Allowed")
    allow = _methods(_allow(reply))
    assert method not in allow and allow == {"OPTIONS", "REGISTER"}
    assert allow <= _methods(_allow(options))  # what the 405 offers, the OPTIONS answer lists
    assert reply.why == f"{method} for the server itself"


def test_publish_is_known_though_not_taken_by_the_server_itself():
    """RFC 3903 defines PUBLISH and the presence service takes it for a presentity: for the
    server's own URI it is a method not allowed there, not one we do not implement."""
    st = R.state()
    assert pipeline.local(R.ctx(st, R.req("PUBLISH", "sip:example.test"))).status == 405


def test_an_unknown_method_for_the_server_itself_is_501_with_the_same_allow():
    st = R.state()
    reply = pipeline.local(R.ctx(st, R.req("FOO", "sip:example.test")))
    assert isinstance(reply, pipeline.Reply)
    assert (reply.status, reply.reason, _allow(reply)) == (501, "Not Implemented", "OPTIONS, REGISTER")
    assert pipeline.local(R.ctx(st, R.req("FOO", "sip:bob@example.test"))) is None  # for a user: routed


def _torture(name: str):
    return parse_message((TORTURE / f"{name}.dat").read_bytes())


def test_rfc4475_application_checks_through_the_stages():
    st = R.state()
    reply = pipeline.sanity(R.ctx(st, _torture("unkscm")))
    assert (reply.status, reply.reason, reply.why) == (416, "Unsupported URI Scheme",
                                                       "R-URI scheme nobodyknowsthisscheme")
    assert pipeline.sanity(R.ctx(st, _torture("novelsc"))).status == 416
    reply = pipeline.sanity(R.ctx(st, _torture("bext01")))
    assert (reply.status, reply.reason) == (420, "Bad Extension")
    assert reply.headers == [("Unsupported", "noProxiesSupportThis, norDoAnyProxiesSupportThis")]
    assert pipeline.sanity(R.ctx(st, _torture("wsinv"))) is None
    reply = pipeline.max_forwards(R.ctx(st, _torture("zeromf")))
    assert (reply.status, reply.reason, reply.why) == (483, "Too Many Hops", "Max-Forwards reached 0")
    reply = pipeline.local_domain(R.ctx(st, _torture("unksm2")))
    assert (reply.status, reply.reason, reply.why) == (400, "Bad Request", "AOR is not a SIP URI")


def test_a_register_is_not_refused_for_max_forwards_0():
    """The registrar answers a REGISTER itself (RFC 4475 §3.3.11), whatever its Max-Forwards."""
    st = R.state()
    data = R.req("REGISTER", "sip:example.test", to="sip:alice@example.test").to_bytes()
    req = parse_message(data.replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
    assert req.max_forwards == 0
    assert pipeline.max_forwards(R.ctx(st, req)) is None
    invite = parse_message(R.req("INVITE").to_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
    assert pipeline.max_forwards(R.ctx(st, invite)).status == 483


def test_the_options_answer_lists_publish_when_presence_takes_it():
    on = pipeline.local(R.ctx(R.state(presence={"enabled": True}), R.req("OPTIONS", "sip:example.test")))
    off = pipeline.local(R.ctx(R.state(presence={"enabled": False}), R.req("OPTIONS", "sip:example.test")))
    assert "PUBLISH" in _methods(_allow(on)) and "PUBLISH" not in _methods(_allow(off))
    assert _methods(_allow(on)) - _methods(_allow(off)) == {"PUBLISH"}


def test_a_require_the_server_does_not_support_is_420_when_the_server_answers():
    """RFC 3261 §8.2.2.3: the registrar and the server's own OPTIONS answer are the UAS; a proxied
    INVITE's Require is the callee's to judge."""
    st = R.state()
    register = R.req("REGISTER", "sip:example.test", to="sip:alice@example.test",
                     extra=("Require: path, foo-ext", "Require: 100rel"))
    reply = pipeline.local_domain(R.ctx(st, register))
    assert (reply.status, reply.reason) == (420, "Bad Extension")
    assert reply.headers == [("Unsupported", "foo-ext, 100rel")]
    ok = R.req("REGISTER", "sip:example.test", to="sip:alice@example.test", extra=("Require: path, Outbound",))
    assert pipeline.local_domain(R.ctx(st, ok)) is None
    reply = pipeline.local(R.ctx(st, R.req("OPTIONS", "sip:example.test", extra=("Require: foo-ext",))))
    assert (reply.status, reply.headers) == (420, [("Unsupported", "foo-ext")])
    invite = R.req("INVITE", extra=("Require: 100rel",))
    assert pipeline.local(R.ctx(st, invite)) is None and pipeline.sanity(R.ctx(st, invite)) is None
