"""ban_list / ban_add / ban_rm over a real management socket, and `sipctl ban` on top of them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from sipctl.context import Env
from sipctl.errors import NotFoundError, UsageError
from sipd.mgmt.protocol import RpcError
from sipd.services.antiflood import Antiflood, AntifloodSettings
from tests.mgmt.harness import Harness


@pytest.fixture
def mgmt(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    h.state.bans = Antiflood(AntifloodSettings(trusted=()))
    try:
        yield h
    finally:
        h.close()


def test_ban_add_list_rm(mgmt):
    added = mgmt.call("ban_add", ["203.0.113.7", 60])
    assert added["ip"] == "203.0.113.7" and added["reason"] == "manual" and added["expires_in"] == 60
    mgmt.call("ban_add", {"ip": "198.51.100.0/24"})
    bans = mgmt.call("ban_list")["Bans"]
    assert [(b["ip"], b["expires_in"]) for b in bans] == [("203.0.113.7", 60), ("198.51.100.0/24", None)]
    assert mgmt.call("pike_list") == {"Bans": bans}
    loop_now = mgmt.loop.call_soon(lambda: mgmt.loop.loop.time())
    assert mgmt.state.bans.is_banned("198.51.100.9", loop_now)
    assert mgmt.call("ban_rm", ["203.0.113.7"]) == "OK"
    with pytest.raises(RpcError) as err:
        mgmt.call("ban_rm", ["203.0.113.7"])
    assert err.value.code == 404
    with pytest.raises(RpcError) as err:
        mgmt.call("ban_add", ["not-an-ip"])
    assert err.value.code == 400


def test_automatic_bans_are_listed(mgmt):
    def flood():
        now = mgmt.loop.loop.time()
        for _ in range(1000):
            mgmt.state.bans.check_packet("192.0.2.99", now)
    mgmt.loop.call_soon(flood)
    (ban,) = mgmt.call("ban_list")["Bans"]
    assert ban["ip"] == "192.0.2.99" and ban["reason"] == "flood" and ban["hits"] > 0


def test_without_antiflood_the_commands_say_so(tmp_path):
    h = Harness(tmp_path)
    try:
        with pytest.raises(RpcError) as err:
            h.call("ban_list")
        assert err.value.code == 500 and "not activated" in err.value.message
    finally:
        h.close()


def _sipctl(mgmt: Harness, *args: str):
    from sipctl.commands.ban import app

    return CliRunner().invoke(app, list(args), obj=Env(_config=mgmt.config))


def test_sipctl_ban_commands(mgmt):
    r = _sipctl(mgmt, "add", "[2001:db8::7]", "--seconds", "120")
    assert r.exit_code == 0, r.output
    assert "banned 2001:db8::7 (120s)" in r.output
    r = _sipctl(mgmt, "list", "--json")
    assert r.exit_code == 0, r.output
    assert '"ip": "2001:db8::7"' in r.output and '"reason": "manual"' in r.output
    r = _sipctl(mgmt, "list")
    assert "2001:db8::7" in r.output and "manual" in r.output
    r = _sipctl(mgmt, "rm", "2001:db8::7")
    assert r.exit_code == 0 and "ban of 2001:db8::7 removed" in r.output
    r = _sipctl(mgmt, "rm", "2001:db8::7")
    assert isinstance(r.exception, NotFoundError)
    r = _sipctl(mgmt, "add", "example.com")
    assert isinstance(r.exception, UsageError)


def test_sipctl_ban_without_daemon(tmp_path):
    from sipctl.errors import MgmtUnavailable
    from sipd import config as cfg
    from sipctl.lib import ban

    conf = cfg.Config()
    conf.mgmt.socket = str(tmp_path / "nothing.sock")
    with pytest.raises(MgmtUnavailable):
        ban.list_bans(conf)
