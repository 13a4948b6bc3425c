"""Presence, pure parts: PIDF validation/merging/winfo (sipd/services/pidf.py) and the
publication/subscription state machine with a fake clock (sipd/services/presence_state.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipd.config import Config, PresenceSection
from sipd.services import pidf
from sipd.services.presence_state import PresenceState, validate
from sipd.sip.message import make_request

DOC = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
  xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:{user}@example.test">
  <tuple id="{tid}"><status><basic>{basic}</basic></status><note>{note}</note></tuple>
  <dm:person id="p1"><rpid:activities><rpid:{act}/></rpid:activities></dm:person>
</presence>"""


def doc(user="bob", basic="open", note="hi", tid="t1", act="away") -> bytes:
    return DOC.format(user=user, basic=basic, note=note, tid=tid, act=act).encode()


# -- PIDF ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,why", [
    (b"", "empty"),
    (b"<presence", "malformed"),
    (b'<presence xmlns="urn:x" entity="sip:a@b"/>', "root element"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>', "entity"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple><status/></tuple></presence>', "without id"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="x"/></presence>', "without status"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="x"><status><basic>busy</basic>'
     b'</status></tuple></presence>', "open or closed"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="x"><status/></tuple>'
     b'<tuple id="x"><status/></tuple></presence>', "duplicate"),
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>', "DOCTYPE"),
])
def test_parse_rejects(body, why):
    with pytest.raises(pidf.PidfError, match=why):
        pidf.parse(body)


def test_parse_and_summary():
    root = pidf.parse(doc(note="at desk"))
    assert root.get("entity") == "sip:bob@example.test"
    s = pidf.summary(doc(note="at desk"))
    assert s.basic == "open" and s.notes == ("at desk",) and s.activities == ("away",)
    assert pidf.summary(None).basic is None and pidf.summary(b"junk").basic is None


def test_merge_single_is_byte_exact_and_many_are_merged():
    one = doc()
    assert pidf.merge([one], "sip:bob@example.test") is one
    merged = pidf.merge([doc(tid="a", note="desk"), doc(tid="a", basic="closed", note="mobile")], "sip:bob@example.test")
    root = pidf.parse(merged)  # still valid PIDF: tuple ids made unique
    ids = [t.get("id") for t in root.iter(f"{{{pidf.PIDF_NS}}}tuple")]
    assert ids == ["a", "a-1"]
    text = merged.decode()
    # customary prefixes (clients match "<basic>" and "<rpid:...") and the default PIDF namespace
    assert "<basic>open</basic>" in text and "<basic>closed</basic>" in text and "<rpid:away" in text
    assert 'xmlns="urn:ietf:params:xml:ns:pidf"' in text and "sipdpidf0" not in text


def test_with_call_overlays_on_the_phone():
    busy = pidf.with_call(None, "sip:bob@example.test")
    s = pidf.summary(busy)
    assert s.basic == "open" and "on-the-phone" in s.activities
    assert b"<rpid:on-the-phone" in busy
    s2 = pidf.summary(pidf.with_call(doc(note="desk"), "sip:bob@example.test"))
    assert "desk" in s2.notes and "on-the-phone" in s2.activities


def test_winfo_document():
    body = pidf.winfo("sip:bob@example.test", 3, [pidf.WatcherEntry("w1", "sip:a&b@example.test", "active", "subscribe", 5)])
    root = ET.fromstring(body)
    assert root.get("version") == "3" and root.get("state") == "full"
    w = root.find(f"{{{pidf.WINFO_NS}}}watcher-list/{{{pidf.WINFO_NS}}}watcher")
    assert w is not None and w.text == "sip:a&b@example.test" and w.get("duration-subscribed") == "5"


# -- state machine ----------------------------------------------------------------------------------


def cfg(**kw) -> PresenceSection:
    return PresenceSection(**{"min_expires": 10, **kw})


def publish(user="bob", body: bytes = b"", *, etag=None, expires=None, event="presence", ctype="application/pidf+xml",
            sender=None):
    headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"), ("From", f"<sip:{sender or user}@example.test>;tag=f"),
               ("To", f"<sip:{user}@example.test>"), ("Call-ID", "c1"), ("CSeq", "1 PUBLISH"), ("Event", event)]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    if etag:
        headers.append(("SIP-If-Match", etag))
    if body:
        headers.append(("Content-Type", ctype))
    return make_request("PUBLISH", f"sip:{user}@example.test", headers=headers, body=body)


def subscribe(target="bob", watcher="alice", *, expires=None, event="presence", call_id="s1", to_tag=None, cseq=1,
              domain="example.test", accept=None, rr=()):
    headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK2"), ("From", f"<sip:{watcher}@{domain}>;tag=wt"),
               ("To", f"<sip:{target}@example.test>" + (f";tag={to_tag}" if to_tag else "")), ("Call-ID", call_id),
               ("CSeq", f"{cseq} SUBSCRIBE"), ("Event", event), ("Contact", f"<sip:{watcher}@127.0.0.1:5071>")]
    headers += [("Record-Route", r) for r in rr]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    if accept:
        headers.append(("Accept", accept))
    return make_request("SUBSCRIBE", f"sip:{target}@example.test", headers=headers)


@pytest.fixture
def st():
    return PresenceState(cfg(), is_local=lambda d: d == "example.test")


LC = "sip:bob@127.0.0.1:5060"


def test_publish_lifecycle(st, clock):
    r = st.publish(publish(body=doc(), expires=100), clock.now)
    assert r.status == 200
    etag = dict(r.headers)["SIP-ETag"]
    assert dict(r.headers)["Expires"] == "100" and st.n_publications == 1
    # refresh: new tag, same body, nothing to notify
    st.outbox.clear()
    r = st.publish(publish(etag=etag, expires=50), clock.now)
    etag2 = dict(r.headers)["SIP-ETag"]
    assert r.status == 200 and etag2 != etag and st.pubs["bob@example.test"][etag2].body == doc()
    assert st.publish(publish(etag=etag), clock.now).status == 412  # old tag is gone
    # modify
    r = st.publish(publish(body=doc(basic="closed"), etag=etag2), clock.now)
    etag3 = dict(r.headers)["SIP-ETag"]
    assert b"closed" in st.document("bob@example.test")
    # expiry
    clock.advance(3600)
    assert st.expire(clock.now) == 1 and st.document("bob@example.test") is None
    assert st.publish(publish(etag=etag3), clock.now).status == 412
    assert ("bob@example.test", etag3) in st.dirty_pubs


def test_publish_errors(st, clock):
    assert st.publish(publish(), clock.now).status == 400  # no body, no etag
    assert st.publish(publish(body=doc(), expires=0), clock.now).status == 400
    assert st.publish(publish(body=doc(), event="dialog"), clock.now).status == 489
    assert st.publish(publish(body=doc(), ctype="text/plain"), clock.now).status == 415
    assert st.publish(publish(body=b"<presence/>"), clock.now).status == 400
    r = st.publish(publish(body=doc(), expires=5), clock.now)
    assert r.status == 423 and dict(r.headers)["Min-Expires"] == "10"
    r = st.publish(publish(body=doc(), expires=999999), clock.now)
    assert dict(r.headers)["Expires"] == "3600"  # clamped to max_expires
    big = PresenceState(cfg(max_body=100))
    assert big.publish(publish(body=doc()), clock.now).status == 413
    full = PresenceState(cfg(max_publications=1))
    assert full.publish(publish(body=doc()), clock.now).status == 200
    assert full.publish(publish(body=doc()), clock.now).status == 503


def test_removal_notifies(st, clock):
    r = st.subscribe(subscribe(), clock.now, local_contact=LC)
    assert r.status == 200 and r.to_tag
    assert [reason for _, reason in st.drain()] == [None]
    etag = dict(st.publish(publish(body=doc()), clock.now).headers)["SIP-ETag"]
    assert len(st.drain()) == 1
    assert st.publish(publish(etag=etag, expires=0), clock.now).status == 200
    (sub, reason), = st.drain()
    headers, body = st.notify_parts(sub, reason, clock.now)
    assert body == b"" and dict(headers)["Subscription-State"].startswith("active;expires=")


def test_subscription_state_machine(st, clock):
    r = st.subscribe(subscribe(expires=100, rr=["<sip:p1.test;lr>", "<sip:p2.test;lr>"]), clock.now, local_contact=LC)
    assert r.status == 200 and dict(r.headers)["Expires"] == "100" and dict(r.headers)["Contact"] == f"<{LC}>"
    sub = st.find("s1", r.to_tag)
    assert sub is not None and sub.watcher == "alice@example.test" and sub.presentity == "bob@example.test"
    (s, reason), = st.drain()
    headers, body = st.notify_parts(s, reason, clock.now)
    h = dict(headers)
    assert h["Subscription-State"] == "active;expires=100" and h["CSeq"] == "1 NOTIFY"
    assert h["From"] == f"<sip:bob@example.test>;tag={r.to_tag}" and h["To"] == "<sip:alice@example.test>;tag=wt"
    assert [v for k, v in headers if k == "Route"] == ["<sip:p1.test;lr>", "<sip:p2.test;lr>"]
    # change -> one NOTIFY, coalesced
    st.publish(publish(body=doc(note="a")), clock.now)
    st.publish(publish(body=doc(note="b", tid="t2")), clock.now)
    assert len(st.drain()) == 1
    # refresh in dialog
    clock.advance(50)
    assert st.resubscribe(sub, subscribe(to_tag=r.to_tag, cseq=1, expires=100), clock.now).status == 500  # old CSeq
    r2 = st.resubscribe(sub, subscribe(to_tag=r.to_tag, cseq=2, expires=100), clock.now)
    assert r2.status == 200 and len(st.drain()) == 1
    clock.advance(99)
    assert st.expire(clock.now) == 0  # refreshed: not yet
    clock.advance(2)
    assert st.expire(clock.now) == 1
    (s, reason), = st.drain()
    assert reason == "timeout" and st.find("s1", r.to_tag) is None
    headers, _ = st.notify_parts(s, reason, clock.now)
    assert dict(headers)["Subscription-State"] == "terminated;reason=timeout" and dict(headers)["CSeq"] == "2 NOTIFY"


def test_unsubscribe_fetch_and_errors(st, clock):
    r = st.subscribe(subscribe(), clock.now, local_contact=LC)
    st.drain()
    sub = st.find("s1", r.to_tag)
    assert st.resubscribe(sub, subscribe(to_tag=r.to_tag, cseq=2, expires=0), clock.now).status == 200
    assert st.drain()[0][1] == "timeout" and not st.subs
    # fetch (Expires 0 initial): one terminated NOTIFY, nothing kept
    r = st.subscribe(subscribe(expires=0, call_id="s2"), clock.now, local_contact=LC)
    assert r.status == 200 and not st.subs and st.drain()[0][1] == "timeout"
    assert st.subscribe(subscribe(event="dialog"), clock.now, local_contact=LC).status == 489
    assert st.subscribe(subscribe(accept="application/sdp"), clock.now, local_contact=LC).status == 406
    assert st.subscribe(subscribe(expires=3), clock.now, local_contact=LC).status == 423
    full = PresenceState(cfg(max_subscriptions=1))
    assert full.subscribe(subscribe(call_id="a"), clock.now, local_contact=LC).status == 200
    assert full.subscribe(subscribe(call_id="b"), clock.now, local_contact=LC).status == 503


@pytest.mark.parametrize("policy,rules,watcher,domain,ok", [
    ("same-domain", [], "alice", "example.test", True),
    ("same-domain", [], "eve", "other.test", False),
    ("local", [], "eve", "example.test", True),
    ("local", [], "eve", "other.test", False),
    ("open", [], "eve", "other.test", True),
    ("rules", ["*@other.test bob@example.test"], "eve", "other.test", True),
    ("rules", ["*@other.test boss@example.test"], "eve", "other.test", False),
])
def test_policy(clock, policy, rules, watcher, domain, ok):
    st = PresenceState(cfg(policy=policy, rules=rules), is_local=lambda d: d == "example.test")
    r = st.subscribe(subscribe(watcher=watcher, domain=domain), clock.now, local_contact=LC)
    assert (r.status == 200) is ok, r


def test_winfo(st, clock):
    assert st.subscribe(subscribe(watcher="carol", event="presence.winfo"), clock.now, local_contact=LC).status == 403
    r = st.subscribe(subscribe(watcher="bob", event="presence.winfo", call_id="wi"), clock.now, local_contact=LC)
    assert r.status == 200
    (wi, _), = st.drain()
    _, body = st.notify_parts(wi, None, clock.now)
    assert b"<watcher " not in body and b'version="0"' in body
    ra = st.subscribe(subscribe(call_id="s1"), clock.now, local_contact=LC)
    keys = [s.call_id for s, _ in st.drain()]
    assert sorted(keys) == ["s1", "wi"]  # alice's first NOTIFY and bob's watcher-list update
    headers, body = st.notify_parts(wi, None, clock.now)
    assert dict(headers)["Content-Type"] == pidf.WINFO_TYPE
    assert b"sip:alice@example.test</watcher>" in body and b'version="1"' in body
    st.drop(("s1", ra.to_tag))  # watcher gone (481 to a NOTIFY): no NOTIFY to it, winfo told
    assert [s.call_id for s, _ in st.drain()] == ["wi"]


def test_calls_make_busy(st, clock):
    r = st.subscribe(subscribe(), clock.now, local_contact=LC)
    st.drain()
    st.call_started("call-1", ("bob@example.test", "alice@example.test"))
    st.call_started("call-1", ("bob@example.test",))  # 2xx retransmission: no double count
    assert len(st.drain()) == 1
    sub = st.find("s1", r.to_tag)
    _, body = st.notify_parts(sub, None, clock.now)
    assert b"on-the-phone" in body
    st.call_ended("call-1")
    assert len(st.drain()) == 1 and st.document("bob@example.test") is None
    st.call_ended("call-1")  # BYE retransmission
    assert not st.drain()


def test_validate():
    assert validate(Config()) == []
    probs = validate(Config(presence=PresenceSection(policy="nobody", rules=["onlyone"], min_expires=10, max_expires=5)))
    assert {p.key for p in probs} == {"presence.policy", "presence.rules[0]", "presence.max_expires"}


def test_store_roundtrip(db_url, clock):
    """The presence tables on SQLite and on the real MariaDB (dbfixtures ``db_url`` is parametrized)."""
    from sipd.db import connect
    from sipd.services import presence_store

    st = PresenceState(cfg())
    st.publish(publish(body=doc()), clock.now)
    r = st.subscribe(subscribe(rr=["<sip:p1.test;lr>"]), clock.now, local_contact=LC)
    sub = st.find("s1", r.to_tag)
    st.notify_parts(sub, None, clock.now)
    with connect(db_url) as db:
        pubs = [(k, st.pubs[k[0]].get(k[1])) for k in st.dirty_pubs]
        subs = [(k, st.subs.get(k)) for k in st.dirty_subs]
        presence_store.flush(db, pubs, subs, st.new_watchers, clock.now)
        p2, s2, gone = presence_store.load(db, clock.now)
        assert gone == 0 and len(p2) == 1 and p2[0].body == doc()
        s = s2[0]
        assert (s.call_id, s.to_tag, s.local_cseq, s.route_set) == ("s1", r.to_tag, 1, ["<sip:p1.test;lr>"])
        assert db.query_one("SELECT status FROM watchers")["status"] == 1
        # deletion by key, expired rows cleaned at load
        presence_store.flush(db, [], [(sub.key, None)], [], clock.now)
        _, s3, _ = presence_store.load(db, clock.now)
        assert s3 == []
        _, _, gone = presence_store.load(db, clock.now + 10_000)
        assert gone == 1
    restored = PresenceState(cfg())
    restored.add_publication(p2[0])
    restored.add_subscription(s)
    assert restored.watchers_of("bob@example.test")[0].to_tag == r.to_tag
    assert b"<basic>open</basic>" in restored.document("bob@example.test")
