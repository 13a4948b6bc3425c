"""A live sipd: OPTIONS, REGISTER with digest auth over UDP and TCP, registrar rules end to end."""

from __future__ import annotations

import pytest

from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reg")
    d = live_daemon(tmp, {"registrar": {"max_contacts": 3}})
    add_subscriber(d.db_url, "alice", "secret")
    add_subscriber(d.db_url, "bob", "hunter2")
    d.start()
    yield d
    assert d.running(), d.log_text()
    assert d.stop() == 0
    assert "Traceback" not in d.log_text(), d.log_text()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_to_server(daemon, transport):
    with UA(daemon.port, "probe", transport=transport) as ua:
        ua.send(ua.request("OPTIONS", f"sip:127.0.0.1:{daemon.port}", to=f"<sip:127.0.0.1:{daemon.port}>"))
        resp = ua.expect(200)
        assert "REGISTER" in resp.get("Allow")


def test_other_methods_for_the_server_itself(daemon):
    """405 for a method we know that the server's own URI does not take (PUBLISH, RFC 3903), 501 for
    one we do not know; both with an Allow that the OPTIONS answer lists too."""
    uri = f"sip:127.0.0.1:{daemon.port}"
    with UA(daemon.port, "probe") as ua:
        ua.send(ua.request("OPTIONS", uri, to=f"<{uri}>"))
        advertised = {m.strip() for m in ua.expect(200).get("Allow").split(",")}
        for method, status in (("PUBLISH", 405), ("FOO", 501)):
            ua.send(ua.request(method, uri, to=f"<{uri}>"))
            allow = {m.strip() for m in ua.expect(status).get("Allow").split(",")}
            assert method not in allow and allow <= advertised, (method, allow)


def test_a_register_requiring_an_extension_we_lack_is_420_before_any_challenge(daemon):
    """The registrar is the UAS (RFC 3261 §8.2.2.3): 420 with the tags in Unsupported, and what we
    support (path) is accepted."""
    with UA(daemon.port, "alice", password="secret") as ua:
        ua.send(ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 60", "Require: path, sec-agree"]))
        assert ua.expect(420).get("Unsupported") == "sec-agree"
        ua.send(ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 60", "Require: path"]))
        ua.expect(401)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register_with_digest(daemon, transport):
    with UA(daemon.port, "alice", transport=transport, password="secret") as ua:
        resp = ua.register(300)
        assert resp.status == 200
        contacts = resp.get_all("Contact")
        assert any(f":{ua.port}" in c and "expires=300" in c for c in contacts)
        assert ua.register(0).status == 200
    assert "REGISTER alice@example.test from" in daemon.log_text()


def test_first_register_is_challenged_with_md5_realm_domain(daemon):
    with UA(daemon.port, "alice", password="secret") as ua:
        ua.send(ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 60"]))
        resp = ua.expect(401)
        challenge = resp.get("WWW-Authenticate")
        assert f'realm="{DOMAIN}"' in challenge and "algorithm=MD5" in challenge


def test_wrong_password_and_unknown_user_look_the_same(daemon):
    with UA(daemon.port, "alice", password="wrong") as ua:
        wrong = ua.register(60)
    with UA(daemon.port, "nobody", password="whatever") as ua:
        unknown = ua.register(60)
    assert wrong.status == unknown.status == 401
    assert wrong.reason == unknown.reason


def test_register_foreign_domain_refused(daemon):
    with UA(daemon.port, "alice", password="secret", domain="elsewhere.test") as ua:
        assert ua.register(60).status == 403


def test_star_removes_all_bindings(daemon):
    with UA(daemon.port, "bob", password="hunter2") as ua:
        assert ua.register(300).status == 200
        assert ua.register(300, contact="<sip:bob@127.0.0.1:9>").status == 200
        resp = ua.register(0, contact="*")
        assert resp.status == 200 and resp.get_all("Contact") == []


def test_max_contacts(daemon):
    with UA(daemon.port, "bob", password="hunter2") as ua:
        for i in range(3):
            assert ua.register(300, contact=f"<sip:bob@127.0.0.1:{10 + i}>").status == 200
        # a fourth binding replaces the oldest (a phone re-installed without unregistering gets in)
        resp = ua.register(300, contact="<sip:bob@127.0.0.1:20>")
        assert resp.status == 200
        assert sorted(c.uri.port for c in resp.contacts) == [11, 12, 20]
        many = ", ".join(f"<sip:bob@127.0.0.1:{30 + i}>" for i in range(4))
        assert ua.register(300, contact=many).status == 503  # one REGISTER over the limit
        assert ua.register(0, contact="*").status == 200


def test_gruu_and_instance(daemon):
    with UA(daemon.port, "alice", password="secret") as ua:
        contact = f'{ua.contact};+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1'
        resp = ua.register(300, contact=contact, extra=["Supported: gruu, outbound"])
        value = resp.get("Contact")
        assert "pub-gruu=" in value and "temp-gruu=" in value and "reg-id=1" in value
        assert ua.register(0).status == 200
