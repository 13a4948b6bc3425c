"""Spam policy (calls to user@<our IP>) and scanner User-Agent filter: pure decisions."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from sipd import config as cfg
from sipd.services.spam import SpamPolicy, SpamSettings, canonical_ip

OURS = ("141.30.67.218", "2001:db8::10")


def policy(**kw) -> SpamPolicy:
    kw.setdefault("own_addresses", OURS)
    return SpamPolicy(SpamSettings(**kw))


def check(p: SpamPolicy, to: str = "vcc-c40@141.30.67.218", ruri: str | None = None, *, method="INVITE",
          ua=None, to_tag=None):
    to_user, to_host = to.split("@") if "@" in to else (None, to)
    ruri = ruri or to
    r_user, r_host = ruri.split("@") if "@" in ruri else (None, ruri)
    return p.check(method=method, ruri_user=r_user, ruri_host=r_host, to_user=to_user, to_host=to_host,
                   to_tag=to_tag, user_agent=ua)


def test_canonical_ip():
    assert canonical_ip("141.30.67.218") == "141.30.67.218"
    assert canonical_ip("[2001:DB8:0::10]") == "2001:db8::10"
    assert canonical_ip("::ffff:10.0.0.1") == "10.0.0.1"
    assert canonical_ip("example.com") is None
    assert canonical_ip("1example.com") is None
    assert canonical_ip("") is None


def test_call_to_our_ip_is_spam_and_dropped_silently():
    v = check(policy())
    assert v is not None and v.kind == "spam" and v.status is None


def test_call_by_name_at_domain_is_not_spam():
    p = policy()
    assert check(p, "vcc-c40@video.example.org") is None
    assert check(p, "vcc-c40@video.example.org", "vcc-c40@10.9.9.9") is None  # contact IP, not ours


def test_request_uri_host_alone_also_counts():
    assert check(policy(), "vcc-c40@video.example.org", "vcc-c40@141.30.67.218").kind == "spam"


def test_ipv6_own_address():
    assert check(policy(), "100@[2001:db8:0:0::10]").kind == "spam"


@pytest.mark.parametrize("action,status", [("403", 403), ("404", 404), ("drop", None)])
def test_configurable_answer(action, status):
    assert check(policy(action=action)).status == status


def test_unknown_action_rejected():
    with pytest.raises(ValueError):
        policy(action="reject")


def test_register_options_and_in_dialog_requests_unaffected():
    p = policy()
    assert check(p, method="REGISTER") is None
    assert check(p, method="OPTIONS") is None
    assert check(p, to_tag="abc") is None
    assert check(p, method="MESSAGE").kind == "spam"


def test_numeric_users_at_foreign_ip_only_when_enabled():
    assert check(policy(), "0049301234@203.0.113.1") is None
    p = policy(numeric_ip_users=True)
    assert check(p, "0049301234@203.0.113.1").kind == "spam"
    assert check(p, "+49301234@203.0.113.1").kind == "spam"
    assert check(p, "alice@203.0.113.1") is None
    assert check(p, "0049301234@example.com") is None


def test_ip_domain_is_ours_wherever_it_was_listed():
    """An IP address that is a local domain is one of ours, from the config or the domain table alike."""
    p = policy(own_addresses=())
    assert check(p, "97924988@192.0.2.7") is None
    p.set_domains(["example.test", "192.0.2.7", "[2001:db8::7]"])
    assert check(p, "97924988@192.0.2.7").kind == "spam"
    assert check(p, "x@[2001:db8::7]").kind == "spam"
    assert check(p, "97924988@192.0.2.7", method="REGISTER") is None  # registrations to it work
    assert check(p, "alice@example.test") is None
    p.set_domains(["example.test"])  # removed from the domain table
    assert check(p, "97924988@192.0.2.7") is None


def test_calls_to_own_ip_off_lets_ip_domain_calls_through():
    p = policy(calls_to_own_ip=False)
    p.set_domains(["141.30.67.218"])
    assert check(p) is None
    assert check(p, "alice@example.com", ua="friendly-scanner").kind == "scanner"  # scanners still dropped


def test_from_config_counts_configured_ip_domains_as_ours():
    conf, problems = cfg.from_dict({"server": {"listen": ["udp:127.0.0.1:5060"], "domains": ["example.test", "192.0.2.7"]}})
    assert not problems
    p = SpamPolicy.from_config(conf)
    assert check(p, "97924988@192.0.2.7").kind == "spam"
    assert check(p, "97924988@127.0.0.1").kind == "spam"
    conf.spam.calls_to_own_ip = False
    assert check(SpamPolicy.from_config(conf), "97924988@192.0.2.7") is None


def test_disabled_policy_catches_nothing():
    assert check(policy(enabled=False), ua="friendly-scanner") is None


@pytest.mark.parametrize("ua", ["friendly-scanner", "sipvicious 0.3.4", "SIPCLI/v1.8", "VaxSIPUserAgent/3.1",
                                "sundayddr", "iWar", "sip-scan", "Friendly-Scanner"])
def test_scanner_user_agents_dropped_silently(ua):
    p = policy()
    v = check(p, "alice@example.com", method="OPTIONS", ua=ua)
    assert v is not None and v.kind == "scanner" and v.status is None
    assert p.scanners_dropped == 1


@pytest.mark.parametrize("ua", [None, "", "baresip v1.0.0 (x86_64/linux)", "Linphone/5.1", "TANDBERG/529",
                                "sipsak 0.9.8.1"])
def test_real_user_agents_pass(ua):
    assert check(policy(), "alice@example.com", ua=ua) is None


def test_scanner_list_configurable():
    p = policy(scanner_user_agents=("evilbot",))
    assert check(p, "a@example.com", ua="EvilBot/2").kind == "scanner"
    assert check(p, "a@example.com", ua="friendly-scanner") is None
    assert check(policy(scanner_user_agents=()), "a@example.com", ua="friendly-scanner") is None


def _request(to_uri: str, ruri: str, method="INVITE", ua=None, to_tag=None):
    def uri(text):
        user, host = text.removeprefix("sip:").split("@")
        return SimpleNamespace(user=user, host=host, __str__=lambda: text, text=text)

    class U(SimpleNamespace):
        def __str__(self):
            return self.text

    def mk(text):
        user, host = text.removeprefix("sip:").split("@")
        return U(user=user, host=host, text=text)

    headers = {"User-Agent": ua}
    return SimpleNamespace(method=method, uri=mk(ruri), to=SimpleNamespace(uri=mk(to_uri), tag=to_tag),
                           get=headers.get)


def test_check_request_logs_the_report_line(caplog):
    p = policy()
    req = _request("sip:vcc-c40@141.30.67.218", "sip:vcc-c40@141.30.67.218")
    with caplog.at_level(logging.INFO, logger="sipd.security"):
        v = p.check_request(req, "203.0.113.66", 5060)
        assert p.check_request(_request("sip:vcc-c40@example.org", "sip:vcc-c40@example.org"), "203.0.113.66", 5060) is None
    assert v.kind == "spam"
    assert caplog.messages == ["Dropped Spam-Call to sip:vcc-c40@141.30.67.218 from 203.0.113.66:5060"]
    assert p.stats() == {"spam:dropped_calls": 1, "spam:dropped_scanners": 0}


def test_from_config_collects_listen_and_advertised_addresses():
    conf, problems = cfg.from_dict({
        "server": {"listen": ["udp:192.0.2.10:5060", "tcp:[2001:db8::10]:5060", "udp:0.0.0.0:5070"],
                   "advertised_address": "198.51.100.1", "domains": ["video.example.org"]},
        "spam": {"own_addresses": ["203.0.113.1"]},
    })
    assert not problems
    p = SpamPolicy.from_config(conf, extra_addresses=["10.1.1.1"])
    assert p.own_ips == {"192.0.2.10", "2001:db8::10", "198.51.100.1", "203.0.113.1", "10.1.1.1"}
