"""sipctl changes against a running sipd (real daemon, real sipctl, real sockets): what an operator
adds or removes takes effect at once, in every worker process, and sipctl says what sipd did."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from helpers.sipd_proc import SipdProcess
from sipd.daemon.workers.affinity import owner_of_aor
from tests.daemon.harness import UA

DOMAIN = "example.test"
REPORT_RULE = ["--pr", "5", "--match-op", "1",
               "--match-exp", "sip:979[0-9]+(@example.test){0,1}",
               "--subst-exp", "sip:979([0-9]+)(@example.test){0,1}",
               "--repl-exp", "sip:979\\1@vc.dfn.de"]


def start(tmp_path: Path, overrides: dict | None = None, **kw) -> SipdProcess:
    conf = {"antiflood": {"enabled": False}, **(overrides or {})}
    proc = SipdProcess(tmp_path, conf, domains=kw.pop("domains", [DOMAIN]),
                       users=kw.pop("users", [(f"alice@{DOMAIN}", "alicepw"), (f"bob@{DOMAIN}", "bobpw")]), **kw)
    proc.start()
    return proc


@pytest.fixture
def live(tmp_path: Path):
    proc = start(tmp_path)
    try:
        yield proc
    finally:
        proc.close()


def invite_reaches(caller: UA, callee: UA, uri: str) -> bool:
    """An INVITE from ``caller`` to ``uri`` (answering the 407) reaches ``callee``, who answers 486.
    Each ACK repeats its INVITE's Via branch, so no final response is retransmitted into the next call."""
    call_id = f"{uri}-{time.monotonic_ns()}"

    def invite(headers: list[str]) -> str:
        via = caller.via()
        caller.send(caller.request("INVITE", uri, to=f"<{uri}>", call_id=call_id, via=via, headers=headers))
        return via

    def ack(via: str, resp) -> None:
        caller.send(caller.request("ACK", uri, to=resp.get("To"), cseq=caller.cseq, call_id=call_id, via=via))

    via = invite([])
    resp = caller.expect(407, 404, 403, 480)
    ack(via, resp)
    if resp.status != 407:
        return False
    via = invite([caller.authorization(resp, "INVITE", uri, proxy=True)])
    try:
        request = callee.expect_request("INVITE", timeout=5)
    except (TimeoutError, AssertionError):
        return False
    callee.respond(request, 486, "Busy Here")
    ack(via, caller.expect(486, timeout=5))
    return True


def test_mi_dp_translate_of_the_report_rule(live: SipdProcess) -> None:
    """The report's rule, written with the numeric operator its table uses, translates in the daemon."""
    out = live.sipctl("dp", "add", "0", *REPORT_RULE).stdout
    assert "sipd reloaded dialplan" in out
    out = json.loads(live.sipctl("mi", "dp_translate", "0", "sip:97924988@example.test").stdout)
    assert out["Output"] == "sip:97924988@vc.dfn.de"
    res = live.sipctl("mi", "dp_translate", "7", "sip:97924988@example.test", check=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr + res.stdout
    assert "No information available for dpid" in res.stderr + res.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_domain_and_user_changes_apply_at_once(tmp_path: Path, workers: int) -> None:
    """domain add -> REGISTER accepted; passwd -> old password refused; user rm -> cannot register.
    Single-domain mode (the default): the users of example.test answer at the new domain too.
    With workers the REGISTERs of some AORs are answered by a worker process: it reloads too."""
    proc = start(tmp_path, {"server": {"workers": workers}})
    try:
        # one AOR answered by main and one by the worker process (when there is one)
        names = [next(f"u{i}" for i in range(100) if owner_of_aor(f"u{i}@{DOMAIN}", 2) == k) for k in (0, 1)]
        uas = [UA(proc.udp_port, n, password="pw1", domain="new.test") for n in names]
        assert uas[0].register().status == 403  # not a local domain yet
        out = proc.sipctl("domain", "add", "new.test").stdout
        assert "domain new.test added; sipd reloaded domains" in out
        assert f"user@new.test is the same user as user@{DOMAIN}" in out
        for n in names:
            assert "sipd reloaded subscribers" in proc.sipctl("user", "add", f"{n}@{DOMAIN}", "pw1").stdout
        assert [ua.register().status for ua in uas] == [200] * len(uas)
        for n in names:
            proc.sipctl("user", "passwd", f"{n}@{DOMAIN}", "pw2")
        assert [ua.register().status for ua in uas] == [401] * len(uas)  # the old password is refused
        assert [ua.register(password="pw2").status for ua in uas] == [200] * len(uas)
        for n in names:
            out = proc.sipctl("user", "rm", f"{n}@{DOMAIN}").stdout
            assert "sipd reloaded subscribers, aliases" in out
        assert [ua.register(password="pw2").status for ua in uas] == [401] * len(uas)
        assert "reloaded domains" in proc.log_text()  # sipd logs what it reloaded
        reloaded = json.loads(proc.sipctl("mi", "reload", "tables=aliases").stdout)["Reloaded"]
        assert reloaded == ["aliases"] + (["workers (1)"] if workers == 2 else [])  # the worker confirmed it
        for ua in uas:
            ua.close()
    finally:
        proc.close()


def test_user_of_another_domain_in_multidomain_mode(tmp_path: Path) -> None:
    """multidomain = true: a domain added live has users of its own."""
    proc = start(tmp_path, {"server": {"multidomain": True}})
    try:
        with UA(proc.udp_port, "erin", password="erinpw", domain="new.test") as erin:
            proc.sipctl("domain", "add", "new.test")
            out = proc.sipctl("user", "add", "erin@new.test", "erinpw")
            assert "can register with this password" in out.stdout and not out.stderr
            assert erin.register().status == 200
    finally:
        proc.close()


def test_user_outside_the_single_user_space_is_flagged(tmp_path: Path) -> None:
    proc = start(tmp_path)
    try:
        proc.sipctl("domain", "add", "127.0.0.3")
        res = proc.sipctl("user", "add", "erin@127.0.0.3", "erinpw")
        assert f"realm {DOMAIN} only" in res.stderr and f"add erin@{DOMAIN} instead" in res.stderr
        with UA(proc.udp_port, "erin", password="erinpw", domain="127.0.0.3") as erin:
            assert erin.register().status == 401  # as the warning said
    finally:
        proc.close()


def test_alias_and_dialplan_rule_apply_to_the_next_call(tmp_path: Path) -> None:
    proc = start(tmp_path, {"proxy": {"dialplan": True}})
    try:
        with UA(proc.udp_port, "alice", password="alicepw") as alice, UA(proc.udp_port, "bob", password="bobpw") as bob:
            assert alice.register().status == 200
            out = proc.sipctl("alias", "add", "1247@example.test", "alice@example.test").stdout
            assert "sipd reloaded aliases" in out and "calls to 1247@example.test reach alice" in out
            assert invite_reaches(bob, alice, "sip:1247@example.test")
            out = proc.sipctl("dp", "add", "0", "--match-op", "0", "--match-exp", "sip:5555@example.test",
                              "--repl-exp", "sip:alice@example.test").stdout
            assert "sipd reloaded dialplan" in out and "applies it to the next call" in out
            assert invite_reaches(bob, alice, "sip:5555@example.test")
            proc.sipctl("alias", "rm", "1247@example.test")
            assert not invite_reaches(bob, alice, "sip:1247@example.test")
    finally:
        proc.close()


def test_changes_made_without_sipctl(tmp_path: Path) -> None:
    """SQL straight into the database: `sipctl reload` reloads every table, aliases included; the
    poll ([database] reload_interval) picks up the rest without anyone asking."""
    proc = start(tmp_path, {"database": {"reload_interval": 1.0}})
    db_file = proc.db_url[len("sqlite:///"):]
    try:
        with UA(proc.udp_port, "alice", password="alicepw") as alice, UA(proc.udp_port, "bob", password="bobpw") as bob:
            assert alice.register().status == 200
            with sqlite3.connect(db_file) as con:
                con.execute("INSERT INTO dbaliases (alias_username, alias_domain, username, domain) "
                            "VALUES ('2000', 'example.test', 'alice', 'example.test')")
            out = proc.sipctl("reload").stdout
            assert "aliases" in out
            assert invite_reaches(bob, alice, "sip:2000@example.test")
            with sqlite3.connect(db_file) as con:
                con.execute("INSERT INTO domain (domain, accept_subdomain, last_modified) "
                            "VALUES ('polled.test', 0, '2026-01-01 00:00:00')")
            deadline = time.monotonic() + 20
            while "periodic reload" not in proc.log_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "periodic reload: the database changed" in proc.log_text()
            domains = json.loads(proc.sipctl("mi", "domain_dump").stdout)["Domains"]
            assert "polled.test" in [d["name"] for d in domains]
    finally:
        proc.close()


def test_no_daemon_says_the_change_applies_at_start(tmp_path: Path) -> None:
    proc = SipdProcess(tmp_path, domains=[DOMAIN])
    proc.provision([DOMAIN], [])
    res = proc.sipctl("domain", "add", "other.test", "--json")
    data = json.loads(res.stdout)
    assert data["sipd"]["status"] == "not running" and "applies when it starts" in data["message"]


def test_ip_domain_spam_rule_is_the_same_from_config_and_database(tmp_path: Path) -> None:
    """An IP address that is a local domain takes registrations; calls to number@IP are dropped as
    spam whether the IP came from [server] domains or from sipctl domain add."""
    proc = start(tmp_path, {"server": {"domains": [DOMAIN, "127.0.0.2"]}, "auth": {"register": False}})
    try:
        with UA(proc.udp_port, "carol", domain="127.0.0.2") as carol:
            assert carol.register().status == 200
        out = proc.sipctl("domain", "add", "127.0.0.3").stdout
        assert "dropped as spam ([spam] calls_to_own_ip = true" in out
        with UA(proc.udp_port, "dave", domain="127.0.0.3") as dave:
            assert dave.register().status == 200
        with UA(proc.udp_port, "bob", password="bobpw") as bob:
            for ip in ("127.0.0.2", "127.0.0.3"):
                uri = f"sip:97924988@{ip}"
                bob.send(bob.request("INVITE", uri, to=f"<{uri}>"))
                bob.nothing(timeout=1.0)
                assert f"Dropped Spam-Call to {uri}" in proc.log_text()
    finally:
        proc.close()


def test_calls_to_own_ip_off_routes_ip_domain_calls(tmp_path: Path) -> None:
    proc = start(tmp_path, {"spam": {"calls_to_own_ip": False}})
    try:
        out = proc.sipctl("domain", "add", "127.0.0.3").stdout
        assert "routed like calls to a domain name" in out
        with UA(proc.udp_port, "bob", password="bobpw") as bob:
            uri = "sip:97924988@127.0.0.3"
            bob.send(bob.request("INVITE", uri, to=f"<{uri}>"))
            assert bob.expect(407, 404).status in (407, 404)  # answered: a call, not spam
        assert "Dropped Spam-Call" not in proc.log_text()
    finally:
        proc.close()


def test_every_command_and_doctor_say_what_sipd_does(tmp_path: Path) -> None:
    """With aliases off and the dialplan off (its default): the commands and doctor say the alias and
    the rule never apply, and name the key; doctor lists what the running sipd actually serves."""
    proc = start(tmp_path, {"proxy": {"aliases": False}})
    try:
        res = proc.sipctl("alias", "add", "1247@example.test", "alice@example.test")
        assert "[proxy] aliases = false" in res.stderr and "Warning" in res.stderr
        res = proc.sipctl("dp", "add", "0", *REPORT_RULE)
        assert "[proxy] dialplan = false" in res.stderr
        res = proc.sipctl("dp", "test", "0", "sip:97924988@example.test")
        assert "sip:97924988@vc.dfn.de" in res.stdout and "never applies to a call" in res.stderr
        proc.sipctl("domain", "add", "127.0.0.3")
        with sqlite3.connect(proc.db_url[len("sqlite:///"):]) as con:
            con.execute("INSERT INTO domain (domain, accept_subdomain, last_modified) "
                        "VALUES ('late.test', 0, '2026-01-01 00:00:00')")
        data = json.loads(proc.sipctl("doctor", "--json", "--no-dns", check=False).stdout)
        found = {(f["area"], f["verdict"]): f for f in data["findings"]}
        assert "[proxy] aliases = false" in found[("aliases", "warn")]["detail"]
        assert "[proxy] dialplan = false" in found[("dialplan", "warn")]["detail"]
        assert "late.test" in found[("domains", "warn")]["detail"] and found[("domains", "warn")]["hint"] == "sipctl reload"
        ip = next(f for f in data["findings"] if f["subject"] == "127.0.0.3")
        assert "dropped as spam ([spam] calls_to_own_ip = true)" in ip["detail"]
        proc.sipctl("reload")
        data = json.loads(proc.sipctl("doctor", "--json", "--no-dns", check=False).stdout)
        assert not [f for f in data["findings"] if f["area"] == "domains" and f["verdict"] == "warn"]
    finally:
        proc.close()


def test_subscriber_change_reloads_only_that_user(live: SipdProcess) -> None:
    """A password change makes sipd forget that one user (read again on use), not the whole table."""
    with UA(live.udp_port, "alice", password="alicepw") as alice, UA(live.udp_port, "bob", password="bobpw") as bob:
        assert alice.register().status == 200 and bob.register().status == 200
        reloaded = json.loads(live.sipctl("mi", "reload", "tables=subscribers", "users=alice@example.test").stdout)
        assert reloaded == {"Reloaded": ["subscribers"]}
        db_file = live.db_url[len("sqlite:///"):]
        with sqlite3.connect(db_file) as con:  # both rows change behind sipd's back
            con.execute("UPDATE subscriber SET ha1 = 'x', ha1_sha256 = 'x'")
        live.sipctl("mi", "reload", "tables=subscribers", "users=alice@example.test")
        assert alice.register().status == 401  # re-read: its new (broken) HA1 applies
        assert bob.register().status == 200  # not re-read: still the cached one
