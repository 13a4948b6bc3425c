"""``[server] workers = 2``: a registrar worker process next to main (sipd/daemon/workers/).

The ownership rule is checked as pure code (the raw-To owner agrees with the parsed AOR's); the
rest runs a real sipd with its worker and proves each rule by observing processes: a stopped
worker (SIGSTOP) holds exactly the REGISTERs of its AORs, a killed one is restarted with its
AORs, main's table routes calls to AORs the worker registered, bans and ``ul rm`` reach it, and it
ends with main.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from sipd.services.location import aor_key
from sipd.sip.parser import parse_message
from sipd.daemon.workers.affinity import _TO, needs_owner, owner_of_aor, owner_of_datagram
from tests.daemon.test_persistence import mysql_db  # noqa: F401 - fixture
from tests.helpers.sipd_proc import _end_pid
from tests.conftest import free_port
from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon, message_reaches
from tests.helpers.sipd_proc import SipdProcess

TESTDATA = Path(__file__).resolve().parents[2] / "tests" / "sip" / "data"


def _register(to: str) -> bytes:
    return (f"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=1\r\n{to}\r\nCall-ID: c1\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5062>\r\nContent-Length: 0\r\n\r\n").encode()


TO_FORMS = [
    "To: <sip:alice@example.test>",
    "To: <sip:alice@EXAMPLE.Test>",
    "to: sip:alice@example.test",
    "t: <sip:alice@example.test;transport=tcp>",
    'To: "Alice sip:bob@x.test" <sip:alice@example.test>',
    "To: Alice Liddell <SIP:alice@example.test:5060>",
    "To: <sips:alice@example.test>",
    "To: <sip:Alice@example.test>",
    "To: <sip:12345@example.test;user=phone>",
    "To: <sip:example.test>",
]


@pytest.mark.parametrize("to", TO_FORMS)
def test_owner_from_raw_bytes_is_the_owner_of_the_parsed_aor(to):
    data = _register(to)
    req = parse_message(data)
    aor = aor_key(req.to.uri.user, req.to.uri.host)
    for n in (2, 3, 4, 7):
        assert owner_of_datagram(data, n) == owner_of_aor(aor, n), (to, n, aor)


def test_owner_agrees_on_every_parsable_register_of_the_torture_corpus():
    checked = 0
    for path in sorted(TESTDATA.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if not data.startswith(b"REGISTER "):
            continue
        try:
            req = parse_message(data)
            aor = aor_key(req.to.uri.user, req.to.uri.host)
        except Exception:  # noqa: BLE001 - malformed on purpose: main answers those (owner 0 or any)
            continue
        if _TO.search(data) is not None:
            assert owner_of_datagram(data, 3) == owner_of_aor(aor, 3), path.name
            checked += 1
    assert checked >= 1


def test_only_registers_with_credentials_need_their_owner():
    plain = _register("To: <sip:alice@example.test>")
    with_creds = plain.replace(b"Content-Length", b'authorization: Digest username="alice"\r\nContent-Length')
    assert not needs_owner(plain, True)
    assert needs_owner(with_creds, True)
    assert needs_owner(plain, False)  # no challenge: the REGISTER binds at once


# -- live -----------------------------------------------------------------------------------------

USERS = [f"u{i:02d}" for i in range(24)]


def owner(user: str) -> int:
    return owner_of_aor(aor_key(user, DOMAIN), 2)


WORKER_USERS = [u for u in USERS if owner(u) == 1]
READY = "TCP/TLS connections)"  # `sipctl ps` of a ready worker (not "starting", not passing through)
MAIN_USERS = [u for u in USERS if owner(u) == 0]


def start(tmp_path: Path, db_url: str | None = None, **overrides) -> SipdProcess:
    d = live_daemon(tmp_path, {"server": {"workers": 2}, **overrides}, db_url=db_url)
    for u in USERS:
        add_subscriber(d.db_url, u, f"pw-{u}")
    d.start()
    wait_for(lambda: all(w["Type"].endswith(READY) for w in workers(d)) and workers(d),
             "the worker to be ready")
    return d


def workers(d: SipdProcess) -> list[dict]:
    return [p for p in d.mi("ps")["Processes"] if p["ID"] != 0]


def wait_for(cond, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def aors(d: SipdProcess) -> dict[str, list[str]]:
    dump = d.mi("ul_dump")["Domains"][0]["AORs"]
    return {a["AOR"]: [c["Contact"] for c in a["Contacts"]] for a in dump}


def test_worker_answers_its_aors_and_main_routes_to_them(tmp_path):
    assert len(WORKER_USERS) >= 6 and len(MAIN_USERS) >= 2
    d = start(tmp_path)
    try:
        [w] = workers(d)
        assert w["PID"] != d.proc.pid and Path(f"/proc/{w['PID']}").exists()
        assert f"PPid:\t{d.proc.pid}" in Path(f"/proc/{w['PID']}/status").read_text()
        uas = [UA(d.port, u, password=f"pw-{u}") for u in USERS]
        try:
            for ua in uas:
                assert ua.register(600).status == 200, ua.user
            table = aors(d)
            assert {f"{u}@{DOMAIN}" for u in USERS} <= set(table)  # main holds every AOR, the worker's too
            wait_for(lambda: d.mi("get_statistics", ["registrar:accepted_regs"]).get("registrar:accepted_regs") == len(USERS),
                     "the worker's counters to reach main")

            # A call from a main-owned user to a worker-owned one is routed by main's copy.
            caller = next(ua for ua in uas if ua.user in MAIN_USERS)
            callee = next(ua for ua in uas if ua.user in WORKER_USERS)
            assert message_reaches(caller, callee)

            # Stopped, the worker holds exactly the REGISTERs of its AORs (main hands them over; those
            # read by its own socket wait there): with credentials, not one of six is answered ...
            os.kill(w["PID"], signal.SIGSTOP)
            try:
                held = [ua for ua in uas if ua.user in WORKER_USERS][:6]
                for ua in held:
                    ua.send(ua.request("REGISTER", f"sip:{DOMAIN}", headers=[
                        "Expires: 600", f'Authorization: Digest username="{ua.user}", realm="{DOMAIN}", nonce="x", '
                        f'uri="sip:{DOMAIN}", response="00000000000000000000000000000000"']))
                for ua in held:
                    ua.nothing(0.4)
                # ... while everything that is not a REGISTER goes to main's socket: calls work
                assert message_reaches(caller, callee)
            finally:
                os.kill(w["PID"], signal.SIGCONT)
            for ua in held:  # ... and once it runs again it answers them (a fresh challenge: bad nonce)
                assert ua.expect(401).status == 401
        finally:
            for ua in uas:
                ua.close()
        assert d.running()
    finally:
        d.stop()


def test_a_killed_worker_is_restarted_with_its_aors(tmp_path):
    d = start(tmp_path, location={"mode": "memory"})  # nothing in the database: the AORs come from main
    try:
        user = WORKER_USERS[0]
        with UA(d.port, user, password=f"pw-{user}") as phone, UA(d.port, user, password=f"pw-{user}") as laptop:
            assert phone.register(600).status == 200
            [w] = workers(d)
            os.kill(w["PID"], signal.SIGKILL)
            wait_for(lambda: "main reads its sockets" in d.log_text(), "main to notice", 5)
            time.sleep(0.2)
            if workers(d)[0]["PID"] == w["PID"]:  # not restarted yet: main answers what its socket gets
                others = [UA(d.port, u, password="x") for u in MAIN_USERS[:8]]
                try:
                    for ua in others:
                        ua.send(ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 600"]))
                    for ua in others:
                        assert ua.expect(401, timeout=1.0).status == 401
                finally:
                    for ua in others:
                        ua.close()
            wait_for(lambda: workers(d) and workers(d)[0]["PID"] != w["PID"]
                     and workers(d)[0]["Type"].endswith(READY), "the worker's restart", 20)
            assert f"worker 1 (pid {w['PID']}) exited with status -9; main reads its sockets" in d.log_text()
            assert laptop.register(600).status == 200  # answered by the new worker ...
            contacts = aors(d)[f"{user}@{DOMAIN}"]
            assert sorted(contacts) == sorted([phone.contact.strip("<>"), laptop.contact.strip("<>")])  # ... which knew the phone
    finally:
        d.stop()


def test_bans_and_ul_rm_reach_the_worker(tmp_path):
    d = start(tmp_path)
    try:
        d.mi("ban_add", ["127.0.0.2"])
        time.sleep(0.3)
        banned = [UA(d.port, u, password=f"pw-{u}", host="127.0.0.2") for u in WORKER_USERS[:6]]
        for ua in banned:
            ua.server = ("127.0.0.1", d.port)  # from 127.0.0.2, to the daemon
        try:
            for ua in banned:  # whichever process reads them, all are dropped
                ua.send(ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 600"]))
            for ua in banned:
                ua.nothing(0.3)
            hits = d.mi("ban_list")["Bans"][0]["hits"]
            d.mi("ban_rm", ["127.0.0.2"])
            time.sleep(0.3)
            for ua in banned:  # the same requests once the ban is lifted: answered (a challenge)
                ua.send(ua.request("REGISTER", f"sip:{DOMAIN}", headers=["Expires: 600"]))
            for ua in banned:
                assert ua.expect(401).status == 401
            assert hits < len(banned)  # main dropped its share; the worker dropped the rest itself
        finally:
            for ua in banned:
                ua.close()

        user = WORKER_USERS[1]
        aor = f"{user}@{DOMAIN}"
        with UA(d.port, user, password=f"pw-{user}") as a, UA(d.port, user, password=f"pw-{user}") as b:
            assert a.register(600).status == 200 and b.register(600).status == 200
            assert len(aors(d)[aor]) == 2
            d.mi("ul_rm_contact", ["location", aor, a.contact.strip("<>")])
            time.sleep(0.2)
            assert b.register(600).status == 200  # the worker refreshes b without bringing a back
            assert aors(d)[aor] == [b.contact.strip("<>")]
    finally:
        d.stop()


@pytest.mark.parametrize(("backend", "mode", "stop"), [
    ("sqlite", "write-through", "kill9"), ("sqlite", "db-only", "kill9"), ("sqlite", "write-back", "term"),
    ("mysql", "write-through", "kill9"),
])
def test_worker_registrations_persist_and_it_ends_with_main(tmp_path, request, backend, mode, stop):
    """The worker commits its AORs itself (write-through, db-only) or flushes them when main stops
    it (write-back); killed with main (kill -9), it does not outlive it."""
    db_url = request.getfixturevalue("mysql_db") if backend == "mysql" else None
    d = start(tmp_path, db_url, location={"mode": mode})
    user = WORKER_USERS[2]
    try:
        with UA(d.port, user, password=f"pw-{user}") as ua:
            assert ua.register(600).status == 200
        [w] = workers(d)
        if stop == "kill9":
            d.kill9()
        else:
            assert d.stop() == 0
        wait_for(lambda: not Path(f"/proc/{w['PID']}").exists() or "zombie" in Path(f"/proc/{w['PID']}/status").read_text(),
                 "the worker to end with main", 5)
        d.start()
        assert "1 AOR registered" in d.ready_line
        assert f"{user}@{DOMAIN}" in aors(d)
    finally:
        d.stop()
    assert "Traceback" not in d.log_text(), d.log_text()


def test_trace_sees_the_workers_registers(tmp_path):
    """While sipctl trace watches, the worker passes everything to main, which traces it; after the
    trace, what main registered for the worker's AOR is the worker's too."""
    import subprocess
    import sys

    d = start(tmp_path)
    user = WORKER_USERS[3]
    try:
        cmd = [sys.executable, "-m", "sipctl", "--config", str(d.config_path), "trace", "--user", user, "--count", "12",
               "--duration", "20"]
        tracer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: workers(d)[0]["Type"].endswith("while traced"), "passthrough")
            with UA(d.port, user, password=f"pw-{user}") as phone:
                for _ in range(3):  # 6 datagrams: each read by main's or the worker's socket at random
                    assert phone.register(600).status == 200
                out, err = tracer.communicate(timeout=25)
        finally:
            _end_pid(tracer, 2)
        assert tracer.returncode == 0, err
        firsts = [ln.split("  ", 1)[1].split()[:2] for ln in out.splitlines() if "<-" in ln or "->" in ln]
        assert [f[0] if f[0] != "SIP/2.0" else f[1] for f in firsts] == ["REGISTER", "401", "REGISTER", "200"] * 3, out
        wait_for(lambda: workers(d)[0]["Type"].endswith(READY), "the end of passthrough")
        with UA(d.port, user, password=f"pw-{user}") as laptop:
            assert laptop.register(600).status == 200  # the worker answers again, and knows the phone
            assert sorted(aors(d)[f"{user}@{DOMAIN}"]) == sorted([phone.contact.strip("<>"), laptop.contact.strip("<>")])
    finally:
        d.stop()


def test_workers_need_a_udp_listener(tmp_path):
    d = live_daemon(tmp_path, {"server": {"workers": 2, "listen": [f"tcp:127.0.0.1:{free_port()}"]}})
    with d:
        assert "workers = 2 ignored: the workers read UDP listeners and there is none" in d.log_text()
        assert workers(d) == []


def test_a_call_right_after_the_200_finds_the_binding(tmp_path):
    """The worker sends the AOR to main before its 200: a request that follows at once is routed."""
    d = start(tmp_path)
    try:
        caller_name = MAIN_USERS[0]
        with UA(d.port, caller_name, password=f"pw-{caller_name}") as caller:
            for user in WORKER_USERS[:5]:
                with UA(d.port, user, password=f"pw-{user}") as callee:
                    assert callee.register(600).status == 200
                    assert message_reaches(caller, callee), user
    finally:
        d.stop()


def test_reload_while_the_worker_starts_does_not_end_it(tmp_path):
    """sipctl reload right after sipd is ready (the worker still importing, no SIGHUP handler yet):
    the worker gets its SIGHUP once it is ready instead of dying from it."""
    d = live_daemon(tmp_path, {"server": {"workers": 2}})
    add_subscriber(d.db_url, WORKER_USERS[0], "pw")
    with d:
        assert "workers (1)" in d.mi("reload")["Reloaded"]
        wait_for(lambda: "worker 1 ready" in d.log_text(), "the worker")
        time.sleep(1.2)  # a housekeeping tick: a dead worker would be reported
        assert "exited with status" not in d.log_text(), d.log_text()
        with UA(d.port, WORKER_USERS[0], password="pw") as ua:
            assert ua.register(600).status == 200


def test_log_level_and_table_reloads_reach_the_worker(tmp_path):
    """Main passes a new log level and a reload of some tables to its worker, which reads them
    again and answers: its debug line appears only once the level is debug."""
    d = start(tmp_path)
    try:
        assert d.mi("reload", ["domains"])["Reloaded"] == ["domains", "workers (1)"]
        d.mi("log_level", ["debug"])
        assert d.mi("reload", ["aliases"])["Reloaded"] == ["aliases", "workers (1)"]
        wait_for(lambda: "worker reloaded aliases" in d.log_text(), "the worker's debug line")
        assert "worker reloaded domains" not in d.log_text()  # at info, before the new level reached it
    finally:
        d.stop()


def test_main_gets_a_workers_refreshes_in_a_batch_and_every_other_change_before_the_200(tmp_path):
    """A refresh (same binding, later expiry, higher CSeq) reaches main's table within a second or
    so, in one write with the others; a new contact or an unregistration before the worker's 200."""
    d = start(tmp_path)
    user = WORKER_USERS[0]
    aor = f"{user}@{DOMAIN}"

    def main_row() -> dict | None:
        dump = d.mi("ul_dump")["Domains"][0]["AORs"]
        rows = [c for a in dump if a["AOR"] == aor for c in a["Contacts"]]
        return rows[0] if len(rows) == 1 else None

    try:
        with UA(d.port, user, password=f"pw-{user}") as ua:
            assert ua.register(600).status == 200
            first = main_row()
            assert first is not None and first["Contact"] == ua.contact.strip("<>")
            assert ua.register(900).status == 200
            wait_for(lambda: (main_row() or {}).get("Cseq", 0) > first["Cseq"], "the refresh to reach main", 5.0)
            assert main_row()["Expires"] > 600
            moved = f"<sip:{user}@127.0.0.1:9>"
            assert ua.register(600, contact=moved).status == 200
            assert sorted(aors(d)[aor]) == sorted([ua.contact.strip("<>"), moved.strip("<>")])  # no wait
            assert ua.register(0, contact="*").status == 200
            assert aor not in aors(d)
    finally:
        d.stop()
