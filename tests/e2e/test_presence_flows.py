"""Presence against a live sipd with raw-socket user agents: PUBLISH with entity tags,
SUBSCRIBE/NOTIFY (initial state, change, refresh, unsubscribe, expiry), presence.winfo, policy,
malformed PIDF, digest auth of PUBLISH, and state surviving a restart (SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from sipd.sip.message import Request, Response
from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon

PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
  xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:{user}@example.test">
  <tuple id="{tid}"><status><basic>{basic}</basic></status><note>{note}</note></tuple>
</presence>
"""


def pidf(user: str, basic: str = "open", note: str = "", tid: str = "t1") -> str:
    return PIDF.format(user=user, basic=basic, note=note, tid=tid)


def publish(ua: UA, body: str = "", *, etag: str | None = None, expires: int = 600, ctype: str = "application/pidf+xml",
            event: str = "presence") -> Response:
    headers = [f"Event: {event}", f"Expires: {expires}"]
    if body:
        headers.append(f"Content-Type: {ctype}")
    if etag:
        headers.append(f"SIP-If-Match: {etag}")
    uri = f"sip:{ua.user}@{DOMAIN}"
    ua.send(ua.request("PUBLISH", uri, headers=headers, body=body, call_id=f"pub-{time.monotonic_ns()}"))
    resp = ua.expect()
    if resp.status == 407:
        auth = ua.authorization(resp, "PUBLISH", uri, proxy=True)
        ua.send(ua.request("PUBLISH", uri, headers=[*headers, auth], body=body, call_id=resp.call_id))
        resp = ua.expect()
    return resp


class Watcher:
    """One SUBSCRIBE dialog seen from the subscriber: sends SUBSCRIBE, answers NOTIFYs."""

    def __init__(self, ua: UA, target: str, event: str = "presence"):
        self.ua, self.target, self.event = ua, target, event
        self.call_id = f"sub-{ua.user}-{time.monotonic_ns()}"
        self.to_tag: str | None = None
        self.cseq = 0
        self.last_notify_cseq = 0
        self.pending: list[Request] = []  # NOTIFYs that arrived while waiting for a response

    def _response(self) -> Response:
        for _ in range(20):
            msg = self.ua.recv(3.0)
            if isinstance(msg, Response):
                if msg.status == 100:
                    continue
                return msg
            if msg.method == "NOTIFY":
                self.ua.respond(msg, 200)
                if msg.call_id == self.call_id:
                    self.pending.append(msg)
        raise AssertionError("no response")

    def notify_until(self, predicate, timeout: float = 3.0) -> Request:
        """Skip NOTIFYs (coalescing may merge or split quick changes) until one matches."""
        for _ in range(10):
            n = self.notify(timeout)
            if predicate(n):
                return n
        raise AssertionError("no matching NOTIFY")

    def subscribe(self, expires: int = 600, extra: list[str] = ()) -> Response:
        self.cseq += 1
        to = f"<sip:{self.target}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        uri = f"sip:{self.target}" if self.to_tag is None else self.remote_target
        headers = [f"Event: {self.event}", f"Expires: {expires}", *extra]
        self.ua.send(self.ua.request("SUBSCRIBE", uri, to=to, call_id=self.call_id, cseq=self.cseq, from_tag="wt",
                                     headers=headers))
        resp = self._response()
        if resp.status == 407 and self.ua.password:
            self.cseq += 1
            auth = self.ua.authorization(resp, "SUBSCRIBE", uri, proxy=True)
            self.ua.send(self.ua.request("SUBSCRIBE", uri, to=to, call_id=self.call_id, cseq=self.cseq, from_tag="wt",
                                         headers=[*headers, auth]))
            resp = self._response()
        if resp.status == 200 and self.to_tag is None:
            self.to_tag = resp.to.tag
            self.remote_target = str(resp.contacts[0].uri)
        return resp

    def notify(self, timeout: float = 3.0) -> Request:
        """The next NOTIFY of this dialog, answered 200."""
        for _ in range(20):
            if self.pending:
                req = self.pending.pop(0)
            else:
                req = self.ua.expect_request("NOTIFY", timeout)
                self.ua.respond(req, 200)
            if req.call_id != self.call_id:
                continue
            assert req.from_.tag == self.to_tag and req.to.tag == "wt"
            assert req.cseq.seq > self.last_notify_cseq
            self.last_notify_cseq = req.cseq.seq
            return req
        raise AssertionError("no NOTIFY for this dialog")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("presence")
    d = live_daemon(tmp, {"auth": {"invite": True}, "presence": {"min_expires": 1}})
    for user in ("alice", "bob", "carol"):
        add_subscriber(d.db_url, user, f"{user}pw")
    d.start()
    yield d
    assert d.running(), d.log_text()
    assert d.stop() == 0
    assert "Traceback" not in d.log_text(), d.log_text()


def ua(daemon, user: str) -> UA:
    return UA(daemon.port, user, password=f"{user}pw")


def test_publish_subscribe_notify_change_refresh_unsubscribe(daemon):
    with ua(daemon, "bob") as bob, ua(daemon, "alice") as alice:
        w = Watcher(alice, f"bob@{DOMAIN}")
        resp = w.subscribe(600)
        assert resp.status == 200 and resp.to.tag and resp.get("Expires") == "600"
        first = w.notify()
        assert first.get("Subscription-State").startswith("active;expires=")
        assert first.get("Event") == "presence" and first.body == b""  # nothing published yet

        resp = publish(bob, pidf("bob", "open", "at my desk"))
        assert resp.status == 200, resp
        etag = resp.get("SIP-ETag")
        assert etag and resp.get("Expires") == "600"
        n = w.notify()
        assert n.get("Content-Type") == "application/pidf+xml"
        assert b"<basic>open</basic>" in n.body and b"at my desk" in n.body

        # modify: new body with SIP-If-Match -> new entity tag, watchers told
        resp = publish(bob, pidf("bob", "closed", "gone home"), etag=etag)
        assert resp.status == 200 and resp.get("SIP-ETag") not in (None, etag)
        etag2 = resp.get("SIP-ETag")
        assert b"closed" in w.notify().body
        # refresh without body: new tag, no NOTIFY
        resp = publish(bob, etag=etag2, expires=300)
        assert resp.status == 200 and resp.get("Expires") == "300"
        etag3 = resp.get("SIP-ETag")
        alice.nothing(0.3)
        # the old tag is gone
        assert publish(bob, etag=etag2).status == 412

        # subscription refresh inside the dialog: 200 + NOTIFY with the current state
        resp = w.subscribe(300)
        assert resp.status == 200 and resp.get("Expires") == "300"
        n = w.notify()
        assert n.get("Subscription-State").startswith("active;expires=") and b"gone home" in n.body

        # removal of the publication: NOTIFY with no body
        resp = publish(bob, etag=etag3, expires=0)
        assert resp.status == 200
        assert w.notify().body == b""

        # unsubscribe
        resp = w.subscribe(0)
        assert resp.status == 200
        n = w.notify()
        assert n.get("Subscription-State") == "terminated;reason=timeout"
        # the dialog is gone
        assert w.subscribe(600).status == 481


def test_two_publications_merged(daemon):
    with ua(daemon, "carol") as carol, ua(daemon, "alice") as alice:
        r1 = publish(carol, pidf("carol", "open", "desk phone", tid="desk"))
        r2 = publish(carol, pidf("carol", "closed", "mobile", tid="mobile"))
        assert r1.status == r2.status == 200
        w = Watcher(alice, f"carol@{DOMAIN}")
        assert w.subscribe().status == 200
        body = w.notify().body
        assert b"desk phone" in body and b"mobile" in body and body.count(b"<tuple") == 2
        for r in (r1, r2):
            assert publish(carol, etag=r.get("SIP-ETag"), expires=0).status == 200
        w.notify_until(lambda n: n.body == b"")
        assert w.subscribe(0).status == 200
        w.notify_until(lambda n: n.get("Subscription-State").startswith("terminated"))


def test_malformed_pidf_is_400_and_watchers_undisturbed(daemon):
    with ua(daemon, "bob") as bob, ua(daemon, "alice") as alice, ua(daemon, "carol") as carol:
        wa, wc = Watcher(alice, f"bob@{DOMAIN}"), Watcher(carol, f"bob@{DOMAIN}")
        assert wa.subscribe().status == 200 and wc.subscribe().status == 200
        wa.notify(), wc.notify()
        good = publish(bob, pidf("bob", "open", "fine"))
        assert good.status == 200
        assert b"fine" in wa.notify().body and b"fine" in wc.notify().body
        for bad in ("<presence><tuple>", "<?xml version='1.0'?><foo xmlns='x'/>",
                    pidf("bob", "maybe"), '<!DOCTYPE x [<!ENTITY a "b">]><x/>'):
            assert publish(bob, bad).status == 400
        assert publish(bob, pidf("bob"), ctype="text/plain").status == 415
        assert publish(bob, pidf("bob"), event="dialog").status == 489
        alice.nothing(0.3)
        carol.nothing(0.1)
        # the watchers still get the next good change
        assert publish(bob, pidf("bob", "closed", "still fine"), etag=good.get("SIP-ETag")).status == 200
        assert b"still fine" in wa.notify().body and b"still fine" in wc.notify().body
        for w in (wa, wc):
            w.subscribe(0)
            w.notify()


def test_policy_and_winfo(daemon):
    with ua(daemon, "bob") as bob, ua(daemon, "alice") as alice:
        stranger = UA(daemon.port, "eve", domain="elsewhere.test")
        try:
            w = Watcher(stranger, f"bob@{DOMAIN}")
            assert w.subscribe().status == 403  # other domain: same-domain policy
        finally:
            stranger.close()
        # bob watches his own watcher list
        wi = Watcher(bob, f"bob@{DOMAIN}", event="presence.winfo")
        assert wi.subscribe().status == 200
        n = wi.notify()
        assert n.get("Content-Type") == "application/watcherinfo+xml"
        assert b"<watcher " not in n.body
        # alice may not see bob's watchers
        assert Watcher(alice, f"bob@{DOMAIN}", event="presence.winfo").subscribe().status == 403
        wa = Watcher(alice, f"bob@{DOMAIN}")
        assert wa.subscribe().status == 200
        wa.notify()
        n = wi.notify()
        assert b"sip:alice@example.test</watcher>" in n.body and b'status="active"' in n.body
        wa.subscribe(0)
        wa.notify()
        assert b"alice" not in wi.notify().body
        wi.subscribe(0)
        wi.notify()


def test_subscription_expires_with_terminated_notify(daemon):
    with ua(daemon, "alice") as alice:
        w = Watcher(alice, f"bob@{DOMAIN}")
        assert w.subscribe(1).status == 200
        assert w.notify().get("Subscription-State").startswith("active;expires=")
        n = w.notify(timeout=4)
        assert n.get("Subscription-State") == "terminated;reason=timeout"


def test_publish_needs_auth_and_own_identity(daemon):
    with UA(daemon.port, "bob", password="wrong") as bob:
        headers = ["Event: presence", "Expires: 60", "Content-Type: application/pidf+xml"]
        bob.send(bob.request("PUBLISH", f"sip:bob@{DOMAIN}", headers=headers, body=pidf("bob")))
        assert bob.expect().status == 407
    with ua(daemon, "alice") as alice:  # alice publishing for bob
        body = pidf("bob")
        alice.send(alice.request("PUBLISH", f"sip:bob@{DOMAIN}", headers=["Event: presence", "Content-Type: application/pidf+xml"],
                                 body=body))
        resp = alice.expect()
        if resp.status == 407:
            auth = alice.authorization(resp, "PUBLISH", f"sip:bob@{DOMAIN}", proxy=True)
            alice.send(alice.request("PUBLISH", f"sip:bob@{DOMAIN}", body=body, call_id=resp.call_id,
                                     headers=["Event: presence", "Content-Type: application/pidf+xml", auth]))
            resp = alice.expect()
        assert resp.status == 403


def test_mi_and_sipctl_listing(daemon):
    with ua(daemon, "bob") as bob, ua(daemon, "alice") as alice:
        resp = publish(bob, pidf("bob", "open", "listed"))
        w = Watcher(alice, f"bob@{DOMAIN}")
        assert w.subscribe().status == 200
        w.notify()
        base = [sys.executable, "-m", "sipctl", "--config", str(daemon.config_path)]
        out = subprocess.run([*base, "presence", "show", f"bob@{DOMAIN}", "--json"], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["Presentity"] == f"bob@{DOMAIN}" and data["Publications"][0]["Basic"] == "open"
        assert "listed" in data["Document"]
        out = subprocess.run([*base, "presence", "watchers", f"bob@{DOMAIN}"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert f"alice@{DOMAIN}" in out.stdout
        out = subprocess.run([*base, "presence", "show", f"nobody@{DOMAIN}"], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "Traceback" not in out.stderr and "nobody" in out.stderr
        publish(bob, etag=resp.get("SIP-ETag"), expires=0)
        w.notify()
        w.subscribe(0)
        w.notify()


def test_state_survives_restart(tmp_path):
    d = live_daemon(tmp_path, {"auth": {"invite": False}})
    d.start()
    try:
        with UA(d.port, "bob") as bob, UA(d.port, "alice") as alice:
            resp = publish(bob, pidf("bob", "open", "before restart"))
            assert resp.status == 200
            etag = resp.get("SIP-ETag")
            w = Watcher(alice, f"bob@{DOMAIN}")
            assert w.subscribe().status == 200
            w.notify()
            time.sleep(0.3)  # the batched database write (FLUSH_DELAY) happens off the event loop
            assert d.stop() == 0
            d.start()
            # the publication is still there: refresh by its entity tag works
            resp = publish(bob, pidf("bob", "closed", "after restart"), etag=etag)
            assert resp.status == 200, resp
            # and the watcher (restored from active_watchers) is told, with a higher CSeq
            n = w.notify()
            assert b"after restart" in n.body
            assert w.subscribe(0).status == 200
            w.notify()
    finally:
        d.stop()
    assert "Traceback" not in d.log_text(), d.log_text()
