"""The routing hook: API object, loading, error handling (rate-limited log, 500), reload."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from sipd.services import hook as hook_mod
from sipd.services.hook import HookError, HookRequest, RoutingHook
from sipd.services.pipeline import Drop, Reply

from _residential import Endpoint, ctx, req, state

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, body: str, name: str = "h.py") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


def loaded(path: Path, clock=None) -> RoutingHook:
    h = RoutingHook(str(path), error_log_interval=60.0, **({"clock": clock} if clock else {}))
    h.load()
    return h


def test_api_reads_the_request():
    st = state()
    c = ctx(st, req("INVITE", "sip:0046123@192.0.2.10:5060", frm="sip:x@outside.example",
                    extra=("User-Agent: friendly-scanner",)))
    api = HookRequest(c)
    assert (api.method, api.ruri_user, api.ruri_host, api.ruri_port) == ("INVITE", "0046123", "192.0.2.10", 5060)
    assert (api.from_user, api.from_host, api.to_user) == ("x", "outside.example", "0046123")
    assert api.header("user-agent") == "friendly-scanner" and api.headers("Via")[0].startswith("SIP/2.0/UDP")
    assert (api.source_ip, api.source_port, api.transport) == ("203.0.113.7", 40000, "udp")
    assert api.is_own_address("192.0.2.10") and not api.is_own_address("192.0.2.11")
    assert api.is_local_domain("example.test") and not api.is_local_domain("outside.example")
    assert api.call_id == "c1@test" and api.body == b""


def test_api_actions():
    st = state()
    c = ctx(st, req())
    api = HookRequest(c)
    api.set_ruri("sip:reception@example.test")
    assert str(c.request.uri) == "sip:reception@example.test"
    api.set_ruri_user("desk")
    assert c.request.uri.user == "desk"
    with pytest.raises(ValueError):
        api.set_ruri("not a uri")
    api.add_header("X-Tenant", "blue")
    assert c.request.get("X-Tenant") == "blue"
    api.set_destination("sip:10.1.1.1:5080")
    api.set_acc_flag("missed")
    assert api._decision() is None
    assert c.extra["hook_destination"] == "sip:10.1.1.1:5080" and c.extra["acc_flags"] == {"missed"}
    api.reply(486, "Busy Here")
    api.drop()  # the first action wins
    d = api._decision()
    assert isinstance(d, Reply) and d.status == 486
    with pytest.raises(ValueError):
        HookRequest(c).reply(200)


def test_spam_rule_example(tmp_path):
    st = state()
    h = loaded(REPO / "examples" / "hooks" / "spam_rule.py")
    spam = ctx(st, req("INVITE", "sip:0046812345678@192.0.2.10", frm="sip:x@outside.example"))
    assert isinstance(h.run(spam), Drop)
    regular = ctx(st, req("INVITE", "sip:bob@example.test"))
    assert h.run(regular) is None
    register = ctx(st, req("REGISTER", "sip:192.0.2.10", to="sip:1234@192.0.2.10"))
    assert h.run(register) is None


def test_raising_hook_gives_500_and_logs_once_per_interval(tmp_path, caplog):
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()
    st = state()
    h = loaded(write(tmp_path, "def route(request):\n    raise KeyError('oops')\n"), clock)
    with caplog.at_level(logging.ERROR, logger="sipd.hook"):
        for _ in range(3):
            d = h.run(ctx(st, req()))
            assert isinstance(d, Reply) and d.status == 500
        clock.now = 61.0
        h.run(ctx(st, req()))
    records = [r for r in caplog.records if r.name == "sipd.hook"]
    assert len(records) == 2 and all(r.exc_info for r in records)
    assert "2 more failures" in records[1].getMessage()
    assert h.errors == 4 and st.stats.get("hook:errors") == {"hook:errors": 4}


def test_load_errors(tmp_path):
    with pytest.raises(HookError, match="syntax error"):
        loaded(write(tmp_path, "def route(request:\n"))
    with pytest.raises(HookError, match="no route"):
        loaded(write(tmp_path, "x = 1\n"))
    with pytest.raises(HookError, match="ZeroDivisionError"):
        loaded(write(tmp_path, "def route(r): pass\n1/0\n"))
    with pytest.raises(HookError, match="cannot read"):
        loaded(tmp_path / "missing.py")
    with pytest.raises(HookError, match="not found"):
        RoutingHook("no_such_module_sipd_test").load()


def test_reload_keeps_old_hook_on_failure(tmp_path):
    p = write(tmp_path, "def route(request):\n    request.reply(404)\n")
    h = loaded(p)
    st = state()
    assert h.run(ctx(st, req())).status == 404
    p.write_text("def route(request):\n    request.reply(410)\n")
    h.reload()
    assert h.run(ctx(st, req())).status == 410
    p.write_text("def route(request:\n")
    with pytest.raises(HookError):
        h.reload()
    assert h.run(ctx(st, req())).status == 410


def test_stage_only_for_initial_requests(tmp_path):
    st = state(routing={"hook": str(write(tmp_path, "def route(request):\n    request.drop()\n"))})
    stages = hook_mod.stages(st)
    assert stages == [hook_mod.hook_stage] and len(hook_mod.route_stages(st, Endpoint())) == 1
    assert isinstance(hook_mod.hook_stage(ctx(st, req())), Drop)
    assert hook_mod.hook_stage(ctx(st, req(to_tag="x"))) is None  # in-dialog
    assert hook_mod.hook_stage(ctx(st, req("ACK"))) is None
    assert hook_mod.stages(state()) == [] and hook_mod.route_stages(state(), Endpoint()) == []  # no hook: nothing


def test_destination_stage_forwards_to_numeric_destination():
    st = state()
    c = ctx(st, req())
    c.extra["hook_destination"] = "sip:10.1.1.1:5080;transport=tcp"
    d = hook_mod.destination_stage(Endpoint())(c)
    branch = d.groups[0][0]
    assert branch.dest == ("tcp", "10.1.1.1", 5080, None) and str(branch.ruri) == "sip:bob@example.test"


def test_config_validation(tmp_path):
    from sipd import config as cfg
    from sipd.services import hook

    bad = write(tmp_path, "def route(request:\n")
    _, problems = cfg.from_dict({"routing": {"hook": str(bad)}})
    conf, _ = cfg.from_dict({"routing": {"hook": str(bad)}})
    assert any(p.key == "routing.hook" and "syntax error" in p.message for p in hook.validate(conf))
