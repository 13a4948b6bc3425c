"""One realm and one user space in single-domain mode; a realm per domain with multidomain."""

from __future__ import annotations

from sipd import config as cfg
from sipd.services.realm import local_aor, realm_for, single_realm, user_domain
from sipd.state import ServerState


def state(server=None, auth=None, table=()):
    conf, problems = cfg.from_dict({"server": server or {}, "auth": auth or {}})
    assert not problems, problems
    st = ServerState(config=conf)
    st.domains.set({d: None for d in table})
    return st


def test_single_domain_mode_has_one_realm_and_one_user_space():
    st = state({"domains": ["Example.test", "192.0.2.10"], "multidomain": False})
    assert single_realm(st) == "example.test"
    assert realm_for(st, "192.0.2.10") == "example.test"
    assert local_aor(st, "alice", "192.0.2.10") == local_aor(st, "alice", "example.test") == "alice@example.test"
    assert user_domain(st, "other.test") == "other.test"  # not local: left alone


def test_explicit_realm_and_the_domain_table():
    assert single_realm(state({"domains": ["example.test"]}, {"realm": "corp.test"})) == "corp.test"
    # no [server] domains: the first domain NAME of the table, whatever the order of the addresses
    assert single_realm(state({}, table=["192.0.2.10", "b.test", "a.test"])) == "a.test"
    assert single_realm(state({})) is None


def test_the_realm_from_the_table_follows_its_reloads():
    """The first name is found once per change of the table (not per request), so a reload that
    adds a name, removes it or brings only addresses must be seen at once."""
    st = state({}, table=["192.0.2.10", "[2001:db8::1]"])
    assert single_realm(st) is None  # addresses only: the domain of each request is its realm
    assert realm_for(st, "192.0.2.10") == "192.0.2.10"
    st.domains.set({"z.test": None, "192.0.2.10": None})
    assert single_realm(st) == "z.test"
    st.domains.set({"m.test": None, "z.test": None})
    assert single_realm(st) == "m.test"
    st.domains.set({})
    assert single_realm(st) is None


def test_multidomain_each_domain_is_its_own_realm():
    st = state({"domains": ["a.test", "b.test"], "multidomain": True})
    assert single_realm(st) is None
    assert realm_for(st, "b.test") == "b.test"
    assert local_aor(st, "alice", "B.test") == "alice@b.test"
