"""Registrar decisions as pure functions: REGISTER bytes in, Outcome out."""

from __future__ import annotations

import pytest

from sipd.config import RegistrarSection
from sipd.services.location import Contact, Location, refresh_only
from sipd.services.registrar import register
from sipd.sip.parser import parse_message

NOW = 1_700_000_000.0


def reg(contacts: list[str], *, expires: str | None = None, call_id: str = "c1", cseq: int = 1, extra: str = "") -> object:
    lines = [
        "REGISTER sip:example.test SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
        "Max-Forwards: 70",
        "From: <sip:alice@example.test>;tag=a",
        "To: <sip:alice@example.test>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    lines += ["Content-Length: 0", "", ""]
    return parse_message("\r\n".join(lines).encode())


def run(request, current=None, **cfg):
    return register(request, current or [], RegistrarSection(**cfg), NOW, received="udp:192.0.2.1:5060",
                    socket="udp:127.0.0.1:5060", conn_id=None, token="tok")


def test_new_binding_listed_with_expires():
    out = run(reg(["<sip:alice@192.0.2.1:5060>"], expires="600"))
    assert out.status == 200 and out.changed
    assert out.aor == "alice@example.test"
    assert out.headers == [("Contact", "<sip:alice@192.0.2.1:5060>;expires=600")]
    assert out.contacts[0].received == "udp:192.0.2.1:5060"


def test_default_expires_and_clamps():
    assert run(reg(["<sip:a@h>"])).contacts[0].expires == NOW + 3600
    assert run(reg(["<sip:a@h>"], expires="5")).contacts[0].expires == NOW + 60
    assert run(reg(["<sip:a@h>"], expires="999999")).contacts[0].expires == NOW + 86400


def test_423_in_reject_mode():
    out = run(reg(["<sip:a@h>"], expires="5"), min_expires_mode="reject")
    assert out.status == 423 and ("Min-Expires", "60") in out.headers


def test_contact_param_expires_wins_and_zero_removes():
    first = run(reg(["<sip:a@h>;expires=300", "<sip:b@h>"], expires="100"))
    assert [c.expires - NOW for c in first.contacts] == [300, 100]
    second = run(reg(["<sip:a@h>;expires=0"], call_id="c1", cseq=2), current=first.contacts)
    assert [c.uri for c in second.contacts] == ["sip:b@h"]


def test_star_removes_all_and_needs_expires_zero():
    first = run(reg(["<sip:a@h>", "<sip:b@h>"]))
    assert run(reg(["*"], expires="0", cseq=2), current=first.contacts).contacts == []
    assert run(reg(["*"], cseq=2), current=first.contacts).status == 400


def test_q_values_ordered_and_checked():
    out = run(reg(["<sip:a@h>;q=0.5", "<sip:b@h>;q=1.0", "<sip:c@h>"]))
    assert [c.uri for c in out.contacts] == ["sip:b@h", "sip:a@h", "sip:c@h"]
    assert run(reg(["<sip:a@h>;q=2"])).status == 400
    assert run(reg(["<sip:a@h>;q=x"])).status == 400


def test_max_contacts_503():
    out = run(reg(["<sip:a@h>", "<sip:b@h>", "<sip:c@h>"]), max_contacts=2)
    assert out.status == 503  # one REGISTER asking for more than the limit
    first = run(reg(["<sip:a@h>"], call_id="old"), max_contacts=2).contacts
    second = run(reg(["<sip:b@h>"], call_id="older"), first, max_contacts=2).contacts
    assert run(reg(["<sip:c@h>"], call_id="new"), second, max_contacts=2, max_contacts_mode="reject").status == 503


def test_max_contacts_the_oldest_binding_makes_room():
    import dataclasses

    old = run(reg(["<sip:a@h>"], call_id="phone-before-reinstall"), max_contacts=2).contacts
    old = [dataclasses.replace(c, last_modified=NOW - 500) for c in old]
    two = run(reg(["<sip:b@h>"], call_id="other-phone"), old, max_contacts=2).contacts
    out = run(reg(["<sip:c@h>"], call_id="reinstalled"), two, max_contacts=2)
    assert out.status == 200 and sorted(c.uri for c in out.contacts) == ["sip:b@h", "sip:c@h"]


def test_lower_cseq_same_call_id_rejected():
    first = run(reg(["<sip:a@h>"], cseq=5))
    assert run(reg(["<sip:a@h>"], cseq=4), current=first.contacts).status == 400
    assert run(reg(["<sip:a@h>"], cseq=6), current=first.contacts).status == 200


def test_instance_reg_id_and_gruu():
    out = run(reg(['<sip:a@192.0.2.1>;+sip.instance="<urn:uuid:1234>";reg-id=1'], extra="Supported: gruu, path"))
    c = out.contacts[0]
    assert c.instance == "<urn:uuid:1234>" and c.reg_id == 1 and c.temp_gruu == "tok"
    value = out.headers[0][1]
    assert 'pub-gruu="sip:alice@example.test;gr=urn:uuid:1234"' in value
    assert 'temp-gruu="sip:tgruu.tok@example.test;gr"' in value
    # same instance, new URI: replaces the binding (RFC 5626)
    again = run(reg(['<sip:a@192.0.2.9>;+sip.instance="<urn:uuid:1234>";reg-id=1'], cseq=2), current=out.contacts)
    assert [x.uri for x in again.contacts] == ["sip:a@192.0.2.9"]


def test_path_stored():
    out = run(reg(["<sip:a@h>"], extra="Path: <sip:edge.example.test;lr>"))
    assert out.contacts[0].path == "<sip:edge.example.test;lr>"


def test_non_sip_aor_400():
    req = parse_message(
        b"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\r\nFrom: <http://x>;tag=1\r\n"
        b"To: <isbn:2983792873>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@h>\r\nContent-Length: 0\r\n\r\n"
    )
    assert run(req).status == 400


def test_location_expire_and_index():
    loc = Location()
    loc.replace("a@x", [Contact("sip:a@1", NOW + 10), Contact("sip:a@2", NOW + 100, q=0.5)])
    assert [c.uri for c in loc.lookup("a@x", NOW)] == ["sip:a@2", "sip:a@1"]
    removed = loc.expire(NOW + 50)
    assert [c.uri for _, c in removed] == ["sip:a@1"]
    assert loc.count_contacts() == 1
    assert loc.remove("a@x") == 1 and "a@x" not in loc


@pytest.mark.parametrize("q,expected", [("0.5", 0.5), (None, None)])
def test_q_param(q, expected):
    contact = "<sip:a@h>" + (f";q={q}" if q else "")
    assert run(reg([contact])).contacts[0].q == expected


@pytest.mark.parametrize("huge", ["4294967296", "9" * 30, "9" * 5000, "0" * 300 + "600"])
def test_expires_past_32_bits_reads_as_absent_however_long(huge):
    """RFC 4475 §3.1.2.4: an Expires or expires param over 2**32-1 is the default; 5000 digits too."""
    expected = 600 if huge.endswith("600") and huge.startswith("0") else 3600
    assert run(reg(["<sip:a@h>"], expires=huge)).contacts[0].expires == NOW + expected
    assert run(reg([f"<sip:a@h>;expires={huge}"])).contacts[0].expires == NOW + expected


def test_location_expire_compacts_refreshes_without_walking_the_table_every_time(monkeypatch):
    """Each refresh leaves a stale entry in the expiry heap; expire() rebuilds the heap once they
    outnumber the contacts four to one, and while there are fewer than four per AOR it does not
    count the contacts (a walk over every AOR, once a second in the daemon)."""
    loc = Location()
    aors = [f"u{i}@x" for i in range(2000)]
    for refresh in range(2):
        for a in aors:
            loc.replace(a, [Contact(f"sip:{a}", NOW + 100 + refresh)])
    counted = []
    real_count = loc.count_contacts
    monkeypatch.setattr(loc, "count_contacts", lambda: counted.append(1) or real_count())
    assert loc.expire(NOW) == [] and counted == [] and len(loc._heap) == 4000
    for refresh in range(2, 5):
        for a in aors:
            loc.replace(a, [Contact(f"sip:{a}", NOW + 100 + refresh)])
    assert loc.expire(NOW) == [] and counted and len(loc._heap) == 2000
    assert len(loc.expire(NOW + 105)) == 2000 and len(loc) == 0


def test_a_refresh_is_told_from_every_other_change():
    """refresh_only: what a worker may send main late (a later expiry, a higher CSeq) against what
    it must send before its 200 (anything main routes or shows by)."""
    first = run(reg(["<sip:alice@192.0.2.1:5060>"], expires="600", cseq=1)).contacts
    refreshed = run(reg(["<sip:alice@192.0.2.1:5060>"], expires="600", cseq=2), list(first)).contacts
    horizon = NOW + 10
    assert refresh_only(first, refreshed, horizon)
    assert refreshed[0].cseq == 2 and refreshed[0].expires == first[0].expires  # same instant: same expiry
    later = run(reg(["<sip:alice@192.0.2.1:5060>"], expires="900", cseq=3), list(first)).contacts
    assert refresh_only(first, later, horizon)
    # another Call-ID alone (a UA that restarted, or never keeps it): a refresh too
    rebooted = run(reg(["<sip:alice@192.0.2.1:5060>"], expires="600", call_id="c2"), list(first)).contacts
    assert refresh_only(first, rebooted, horizon) and rebooted[0].call_id == "c2"
    # an earlier expiry, a new binding, one removed, another User-Agent or source: at once
    shorter = run(reg(["<sip:alice@192.0.2.1:5060>"], expires="300", cseq=3), list(first)).contacts
    assert not refresh_only(first, shorter, horizon)
    added = run(reg(["<sip:alice@192.0.2.9:5060>"], expires="600", cseq=3), list(first)).contacts
    assert len(added) == 2 and not refresh_only(first, added, horizon)
    assert run(reg(["<sip:alice@192.0.2.1:5060>"], expires="0", cseq=3), list(first)).contacts == []
    assert not refresh_only(first, [], horizon)
    other_ua = run(reg(["<sip:alice@192.0.2.1:5060>"], expires="600", cseq=3, extra="User-Agent: b"),
                   list(first)).contacts
    assert not refresh_only(first, other_ua, horizon)
    moved = register(reg(["<sip:alice@192.0.2.1:5060>"], expires="600", cseq=3), list(first), RegistrarSection(),
                     NOW, received="udp:198.51.100.7:5060", socket="udp:127.0.0.1:5060", conn_id=None,
                     token="tok").contacts
    assert not refresh_only(first, moved, horizon)
    # nothing held before, or a binding main holds that ends within the horizon: at once
    assert not refresh_only([], refreshed, horizon)
    assert not refresh_only(first, refreshed, NOW + 600)
