"""Who is online, as the panel's Users page asks it (sipctl/lib/mgmt.online_aors + directory), in each
location mode of a live sipd: the answer comes from the running registrar, so it is right when
locations live only in memory, where a search joined with the location table finds nobody."""

from __future__ import annotations

import pytest

from sipctl.lib import directory, mgmt
from sipd.config import load
from sipd.db import connect
from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon


@pytest.mark.parametrize("mode", ["memory", "write-back", "db-only", "write-through"])
def test_online_users_in_every_location_mode(tmp_path, mode):
    d = live_daemon(tmp_path, {"location": {"mode": mode}})
    for user in ("alice", "bob", "carol"):
        add_subscriber(d.db_url, user, f"{user}-pw")
    try:
        d.start()
        config = load(d.config_path, validators=())
        with UA(d.port, "alice", password="alice-pw") as alice, UA(d.port, "carol", password="carol-pw") as carol:
            assert alice.register(300).status == 200 and carol.register(300).status == 200
            assert carol.register(0).status == 200  # carol left again
            online = mgmt.online_aors(config)
            with connect(d.db_url) as db:
                found = directory.search_users(db, online=online)
                stored = db.query("SELECT username FROM location")
    finally:
        d.stop()
    assert "Traceback" not in d.log_text(), d.log_text()
    assert online == {f"alice@{DOMAIN}"}
    assert [(r["user"], r["domain"]) for r in found["rows"]] == [("alice", DOMAIN)] and found["total"] == 1
    if mode == "memory":
        assert stored == []  # the location table knows nobody: joining it would show no one online
