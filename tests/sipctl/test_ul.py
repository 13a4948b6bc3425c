"""sipctl ul show|rm and online against a real management server."""

from __future__ import annotations

from mgmtfixtures import daemon, sipctl  # noqa: F401

from sipctl.errors import ExitStatus


def test_ul_show_one_and_all(daemon, sipctl):
    daemon.register("alice@example.test", 2, user_agent="TANDBERG/529", received="udp:198.51.100.7:5060",
                    instance="<urn:uuid:0001>", q=0.5, path="<sip:edge.example.test;lr>")
    daemon.register("bob@example.test", 1)
    r = sipctl("ul", "show", "alice@example.test")
    assert r.code == 0
    for field in ("Contact", "Expires", "Callid", "Cseq", "User-agent", "State", "Flags", "Cflags", "Socket",
                  "Methods", "SIP_instance", "Received", "Path", "Q"):
        assert field in r.out, field
    assert "TANDBERG/529" in r.out and "udp:198.51.100.7:5060" in r.out and "<urn:uuid:0001>" in r.out
    r = sipctl("ul", "show", "sip:alice@EXAMPLE.test", "--json")
    rec = r.json
    assert rec["AOR"] == "alice@example.test" and len(rec["Contacts"]) == 2
    c = rec["Contacts"][0]
    assert list(c)[:5] == ["Contact", "Expires", "Q", "Callid", "Cseq"]
    assert c["Q"] == "0.5" and c["State"] == "CS_NEW" and c["Methods"] == 4294967295
    assert 3590 < c["Expires"] <= 3600
    dump = sipctl("ul", "show", "--json").json
    assert [a["AOR"] for a in dump["Domains"][0]["AORs"]] == ["alice@example.test", "bob@example.test"]
    r = sipctl("ul", "show", "--brief")
    assert r.out.split() == ["alice@example.test", "bob@example.test"]
    r = sipctl("ul", "show")
    assert "AOR alice@example.test" in r.out and "AOR bob@example.test" in r.out


def test_ul_rm(daemon, sipctl):
    daemon.register("alice@example.test", 2)
    r = sipctl("ul", "rm", "alice@example.test", "sip:alice@192.0.2.1:5060")
    assert r.code == 0 and "removed contact" in r.out
    assert len(sipctl("ul", "show", "alice@example.test", "--json").json["Contacts"]) == 1
    r = sipctl("ul", "rm", "alice@example.test", "sip:nobody@192.0.2.9")
    assert r.code == ExitStatus.NOT_FOUND and "Contact not found" in r.err
    assert sipctl("ul", "rm", "alice@example.test").code == 0
    r = sipctl("ul", "show", "alice@example.test")
    assert r.code == ExitStatus.NOT_FOUND and r.err.startswith("Error: AOR not found")
    r = sipctl("ul", "show", "no-domain")
    assert r.code == ExitStatus.USAGE and "Domain missing in AOR" in r.err


def test_online(daemon, sipctl):
    daemon.register("carol@example.test", 1)
    daemon.register("alice@example.test", 1)
    daemon.register("gone@example.test", 1, expires_in=-5)  # expired, not yet purged
    assert sipctl("online").out.split() == ["alice@example.test", "carol@example.test"]
    assert sipctl("online", "--json").json == ["alice@example.test", "carol@example.test"]


def test_many_aors_are_paged(daemon, sipctl):
    import time

    from sipd.services.location import Contact

    now = time.time()

    def fill():
        for i in range(12_000):
            daemon.state.location.replace(f"u{i:05d}@example.test",
                                          [Contact(uri=f"sip:u{i}@10.0.0.1", expires=now + 600, call_id="c", cseq=1)])
    daemon.loop.call_soon(fill)
    aors = sipctl("online", "--json").json
    assert len(aors) == 12_000 and aors[0] == "u00000@example.test"
