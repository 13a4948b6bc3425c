"""TCP and TLS served by every process with ``[server] workers = 2`` (sipd/daemon/workers/).

Main accepts and hands the sockets in turn to itself and the worker; each connection has one owner
(its id says which). A real sipd with one worker, real sockets: which process holds a connection
is read from ``sipctl ps`` (each process says how many it holds) as each one opens. The tests
prove that a REGISTER read on one process's connection for an AOR another process owns is
answered on that connection, that calls between TCP and between TLS endpoints whose connections
landed on different processes complete whichever process owns the Call-ID, that the limit per
source counts the connections of every process, and that ``tls list`` and ``tls reload`` reach
the worker.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from sipd.daemon.workers.affinity import owner_of_call
from sipd.transport.stream import CONN_OWNERS, conn_owner
from tests.conftest import free_port
from tests.daemon.harness import DOMAIN, UA, add_subscriber, live_daemon
from tests.daemon.test_worker_calls import _call as call
from tests.daemon.test_workers import MAIN_USERS, READY, USERS, WORKER_USERS, wait_for, workers
from tests.helpers.sipd_proc import SipdProcess

NO_CALL_STATE = {"acc": {"enabled": False}, "dialog": {"enabled": False}, "presence": {"enabled": False}}


def test_a_connection_id_names_its_owner():
    ids = [seq * CONN_OWNERS + index for seq in (1, 2, 977) for index in (0, 1, 63)]
    assert [conn_owner(i) for i in ids] == [0, 1, 63] * 3


# -- live -----------------------------------------------------------------------------------------


def held(d: SipdProcess) -> dict[int, tuple[int, int]]:
    """Process index -> (TCP, TLS) connections it holds, as ``sipctl ps`` tells."""
    out = {}
    for p in d.mi("ps")["Processes"]:
        counts = dict(part.split(" ") for part in p["Connections"].split(", "))
        out[p["ID"]] = (int(counts["tcp"]), int(counts["tls"]))
    return out


def landed(d: SipdProcess, before: dict[int, tuple[int, int]]) -> int:
    """The process that took the one connection opened since ``before``."""
    found: list[int] = []

    def grew() -> bool:
        now = held(d)
        found[:] = [k for k in now if sum(now[k]) > sum(before.get(k, (0, 0)))]
        return len(found) == 1
    wait_for(grew, "the new connection to be held by a process", 10)
    return found[0]


def start(tmp_path: Path, tls: dict | None = None, **overrides) -> SipdProcess:
    d = live_daemon(tmp_path, {"server": {"workers": 2}, **NO_CALL_STATE, **overrides})
    if tls is not None:
        d.tls_port = free_port("tcp")
        d.config["server"]["listen"].append(f"tls:127.0.0.1:{d.tls_port}")
        d.config["tls"] = tls
        d.write_config()
    for u in USERS:
        add_subscriber(d.db_url, u, f"pw-{u}")
    d.start()
    wait_for(lambda: workers(d) and all(w["Type"].endswith(READY) for w in workers(d)), "the worker to be ready")
    return d


def spread(d: SipdProcess, make, users: list[str], want: int = 2) -> dict[tuple[str, int], UA]:
    """Open a connection per user (users of both AOR owners, in turn) until, for each AOR owner,
    ``want`` connections landed on each process; (user, process) -> its UA."""
    uas: dict[tuple[str, int], UA] = {}
    extra = []
    for user in users:
        before = held(d)
        ua = make(user)
        k = landed(d, before)
        if (user, k) in uas or sum(1 for (u, p) in uas if p == k and (u in MAIN_USERS) == (user in MAIN_USERS)) >= want:
            extra.append(ua)
            continue
        uas[(user, k)] = ua
        if len(uas) == 4 * want:
            break
    for ua in extra:
        ua.close()
    return uas


def interleave(count: int) -> list[str]:
    """Two users of main's AORs, two of the worker's, and so on: main and the worker take
    connections in turn, so each pair lands on both."""
    return [u for i in range(0, count, 2) for u in (*MAIN_USERS[i:i + 2], *WORKER_USERS[i:i + 2])]


def calls_between(uas: dict[tuple[str, int], UA], tag: str) -> int:
    """Calls between the connections, one for each combination of the caller's connection owner,
    the callee's and the Call-ID's owner; how many."""
    combos: set[tuple[int, int, int]] = set()
    for caller_key in uas:
        for callee_key in uas:
            for owner in (0, 1):
                combo = (caller_key[1], callee_key[1], owner)
                if caller_key[0] == callee_key[0] or combo in combos:
                    continue
                combos.add(combo)
                name = f"{tag}-{caller_key[1]}{callee_key[1]}{owner}"
                cid = next(f"{name}-{i}" for i in range(1000) if owner_of_call(f"{name}-{i}".encode(), 2) == owner)
                call(uas[caller_key], uas[callee_key], cid)
    assert combos == {(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)}
    return len(combos)


def test_tcp_endpoints_on_both_processes_register_and_call(tmp_path):
    d = start(tmp_path)
    try:
        uas = spread(d, lambda u: UA(d.port, u, transport="tcp", password=f"pw-{u}"), interleave(12), want=1)
        try:
            # for each AOR owner, a connection on main and one on the worker: two of the four
            # REGISTERs are answered by one process on the other's connection
            assert {(u in WORKER_USERS, k) for u, k in uas} == {(a, b) for a in (False, True) for b in (0, 1)}
            for ua in uas.values():  # a CRLF keep-alive is answered by the connection's owner (RFC 5626)
                ua.sock.sendall(b"\r\n\r\n")
                assert ua.sock.recv(16) == b"\r\n"
            for ua in uas.values():
                ok = ua.register(600)
                assert ok.status == 200, ok
                assert f"{ua.port};transport=tcp" in ok.get("Contact")
            assert calls_between(uas, "tcp") == 8
        finally:
            for ua in uas.values():
                ua.close()
        assert d.mi("get_statistics", ["workers:handed_to_main"])["workers:handed_to_main"] == 0  # nothing pinned
        assert d.running()
        assert "Traceback" not in d.log_text()
    finally:
        d.stop()


def refused(port: int) -> bool:
    """Whether a new connection is closed (reset) at once instead of served."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            return s.recv(10) == b""
    except ConnectionResetError:
        return True


def test_the_limit_per_source_counts_every_process(tmp_path):
    d = start(tmp_path, limits={"tcp_max_per_source": 3})
    try:
        opened = []
        for _ in range(3):
            before = held(d)
            opened.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
            landed(d, before)
        assert all(tcp >= 1 for tcp, _ in held(d).values())  # both processes hold some
        assert refused(d.port)  # a fourth, whichever process's turn it is
        opened.pop().close()
        wait_for(lambda: sum(tcp for tcp, _ in held(d).values()) == 2, "the closed connection to be released")
        with UA(d.port, MAIN_USERS[0], transport="tcp", password=f"pw-{MAIN_USERS[0]}") as ua:
            assert ua.register(60).status == 200  # room again
        for s in opened:
            s.close()
        assert "too many from this address" in d.log_text()
        assert "Traceback" not in d.log_text()
    finally:
        d.stop()


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sipctl.lib import cert as lib

    d = tmp_path_factory.mktemp("workers-pki")
    lib.ca_init(d / "root", "Workers Root", key_type="ec:p256")
    lib.ca_issue(d / "root", "sip.example.test", ["example.test", "127.0.0.1"], cert_out=d / "srv.pem",
                 key_out=d / "srv.key", key_type="ec:p256")
    lib.ca_issue(d / "root", "renewed.example.test", ["example.test", "127.0.0.1"], cert_out=d / "new.pem",
                 key_out=d / "new.key", key_type="ec:p256")
    return d


class TlsUA(UA):
    """The harness's stream UA over TLS."""

    def __init__(self, port: int, user: str, ctx: ssl.SSLContext):
        super().__init__(port, user, transport="tls", password=f"pw-{user}")
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.subject = dict(x[0] for x in self.sock.getpeercert()["subject"])["commonName"]


def test_tls_endpoints_on_both_processes_call_and_tls_list_and_reload_reach_the_worker(tmp_path, pki):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes((pki / "srv.pem").read_bytes())
    key.write_bytes((pki / "srv.key").read_bytes())
    d = start(tmp_path, tls={"certificate": str(cert), "private_key": str(key)})
    ctx = ssl.create_default_context(cafile=str(pki / "root" / "root.pem"))
    try:
        uas = spread(d, lambda u: TlsUA(d.tls_port, u, ctx), interleave(12), want=1)
        try:
            assert {(u in WORKER_USERS, k) for u, k in uas} == {(a, b) for a in (False, True) for b in (0, 1)}
            for ua in uas.values():
                assert ua.register(600).status == 200
            assert calls_between(uas, "tls") == 8

            listed = d.mi("tls_list")
            by_process = {p["process"]: p["connections"] for p in listed["processes"]}
            assert by_process[0] >= 2 and by_process[1] >= 2, listed  # each process's own TLS connections
            [listener] = listed["listeners"]
            assert listener["accepted"] >= 4  # handshakes of both processes, summed

            # a reload reaches the worker: new connections on either process get the new certificate
            cert.write_bytes((pki / "new.pem").read_bytes())
            key.write_bytes((pki / "new.key").read_bytes())
            assert d.mi("tls_reload")["failed"] == 0
            seen: set[int] = set()  # the processes seen serving the new certificate
            deadline = time.monotonic() + 20
            while seen != {0, 1} and time.monotonic() < deadline:
                before = held(d)
                with TlsUA(d.tls_port, MAIN_USERS[0], ctx) as probe:
                    k = landed(d, before)
                    if probe.subject == "renewed.example.test":  # (the worker reloads when main's word reaches it)
                        seen.add(k)
                wait_for(lambda: sum(tls for _, tls in held(d).values()) == len(uas), "the probe to close")
            assert seen == {0, 1}
        finally:
            for ua in uas.values():
                ua.close()
        assert d.running()
        assert "Traceback" not in d.log_text()
    finally:
        d.stop()


# -- messages routed by their bytes ---------------------------------------------------------------


def one_on_each(d: SipdProcess, make) -> dict[int, UA]:
    """A connection held by main and one held by the worker (process index -> its UA)."""
    uas: dict[int, UA] = {}
    for user in interleave(12):
        before = held(d)
        ua = make(user)
        k = landed(d, before)
        if k in uas:
            ua.close()
            continue
        uas[k] = ua
        if len(uas) == 2:
            return uas
    raise AssertionError(f"connections landed on {sorted(uas)} only")


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_what_either_process_reads_reaches_its_process_malformed_or_not(tmp_path, pki, transport):
    """Each message framed on a connection is routed by its bytes before anything parses it: on a
    connection of main and one of the worker, a CRLF keep-alive is answered, a call request whose
    Call-ID does not parse gets its 400 from the process owning that raw Call-ID (either one), bytes
    that are no SIP message and a response to no transaction are dropped, and the connection then
    still carries a REGISTER of an AOR of either process."""
    d = start(tmp_path, tls={"certificate": str(pki / "srv.pem"), "private_key": str(pki / "srv.key")})
    ctx = ssl.create_default_context(cafile=str(pki / "root" / "root.pem"))
    try:
        if transport == "tls":
            uas = one_on_each(d, lambda u: TlsUA(d.tls_port, u, ctx))
        else:
            uas = one_on_each(d, lambda u: UA(d.port, u, transport="tcp", password=f"pw-{u}"))
    except BaseException:
        d.stop()
        raise
    to = f"sip:{WORKER_USERS[0]}@{DOMAIN}"
    try:
        for k, ua in uas.items():
            ua.sock.sendall(b"\r\n\r\n")  # a keep-alive ping (RFC 5626 §3.5.1): its owner answers
            assert ua.sock.recv(16) == b"\r\n"
            for owner, call_id in enumerate(("two words again", "two words")):
                assert owner_of_call(call_id.encode(), 2) == owner
                ua.send(ua.request("INVITE", to, to=f"<{to}>", call_id=call_id, cseq=1))
                answer = ua.recv_raw()
                assert answer.startswith(b"SIP/2.0 400 ") and f"Call-ID: {call_id}".encode() in answer, (k, answer)
            ua.send(b"HELLO there\r\nContent-Length: 3\r\n\r\nabc")  # no start line: nothing to answer
            stray = ua.request("INVITE", to, to=f"<{to}>", cseq=1).replace(f"INVITE {to} SIP/2.0", "SIP/2.0 180 Ringing")
            ua.send(stray)  # a response of no transaction of ours (its top Via is the UA's): dropped
            for user in (MAIN_USERS[1], WORKER_USERS[1]):  # an AOR of main, one of the worker
                ua.user, ua.password = user, f"pw-{user}"
                ok = ua.register(60)
                assert ok.status == 200 and f"{ua.port};transport={transport}>" in ok.to_bytes().decode(), (k, ok)
        assert d.running()
        assert "Traceback" not in d.log_text()
    finally:
        for ua in uas.values():
            ua.close()
        d.stop()
