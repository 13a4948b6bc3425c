"""The management server over its three transports: replies, standard errors, limits, lifecycle."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from sipd.mgmt import protocol
from sipd.mgmt.client import MgmtConnectError
from sipd.mgmt.protocol import RpcError
from sipd.mgmt.server import MgmtStartError, start

from .harness import TOKEN, Harness


def raw_unix(path: str, data: bytes, *, timeout: float = 5) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def http_req(h: Harness, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = h.server.http_address  # type: ignore[misc]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("transport", ["socket", "fifo", "http"])
def test_commands_on_every_transport(mgmt: Harness, transport: str) -> None:
    mgmt.register("alice@example.test", 2, user_agent="Polycom RealPresence")
    assert "ul_dump" in mgmt.call("which", transport=transport)
    up = mgmt.call("uptime", transport=transport)
    assert list(up) == ["Now", "Up since", "Up time"] and up["Up time"].endswith("[sec]")
    dump = mgmt.call("ul_dump", transport=transport)
    aor = dump["Domains"][0]["AORs"][0]
    assert aor["AOR"] == "alice@example.test" and len(aor["Contacts"]) == 2
    with pytest.raises(RpcError) as ei:
        mgmt.call("ul_show_contact", ["location", "bob@example.test"], transport=transport)
    assert (ei.value.code, ei.value.message) == (404, "AOR not found")


def test_socket_mode_and_cleanup(tmp_path: Path) -> None:
    h = Harness(tmp_path, socket_mode="0640")
    sock, fifo = Path(h.config.mgmt.socket), Path(h.config.mgmt.fifo)
    try:
        assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o640
        assert stat.S_ISFIFO(fifo.stat().st_mode) and stat.S_IMODE(fifo.stat().st_mode) == 0o660
    finally:
        h.close()
    assert not sock.exists() and not fifo.exists()


def test_stale_socket_replaced_live_socket_refused(tmp_path: Path, mgmt: Harness) -> None:
    # a second server on the same live socket must refuse
    with pytest.raises(MgmtStartError, match="already listening"):
        mgmt.loop.run(start(mgmt.context))
    # a stale socket file (nobody listening) is replaced
    stale = tmp_path / "stale" / "s.sock"
    stale.parent.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    (tmp_path / "two").mkdir()
    h2 = Harness(tmp_path / "two", socket=str(stale), fifo="", http_listen="")
    try:
        assert h2.call("version")["Server"].startswith("sipd ")
    finally:
        h2.close()


def test_not_a_socket_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "sipd.sock").write_text("x")
    with pytest.raises(MgmtStartError, match="not a socket"):
        Harness(tmp_path)


@pytest.mark.parametrize("raw, code", [
    (b"this is not json\n", protocol.PARSE_ERROR),
    (b'{"jsonrpc":"2.0","id":7}\n', protocol.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":7,"method":"no_such"}\n', protocol.METHOD_NOT_FOUND),
    (b'{"jsonrpc":"2.0","id":7,"method":"ul_rm","params":["location"]}\n', protocol.INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":7,"method":"ul_dump","params":{"bogus":1}}\n', protocol.INVALID_PARAMS),
])
def test_standard_errors(mgmt: Harness, raw: bytes, code: int) -> None:
    reply = json.loads(raw_unix(mgmt.config.mgmt.socket, raw))
    assert reply["error"]["code"] == code
    assert reply["error"]["message"] == protocol.MESSAGES[code]
    if code != protocol.PARSE_ERROR:
        assert reply["id"] == 7


def test_module_errors(mgmt: Harness) -> None:
    cases = [
        ("ul_show_contact", ["location", "nodomain"], 400, "Domain missing in AOR"),
        ("ul_show_contact", ["other", "a@b"], 404, "Table not found"),
        ("ul_rm_contact", ["location", "a@b", "sip:x"], 404, "AOR not found"),
        ("get_statistics", ["nothing:here"], 404, "Statistics Not Found"),
        ("reset_statistics", [["nothing:"]], 404, "Statistics Not Found"),
        ("which", ["nope"], 404, "unknown MI command"),
        ("log_level", ["loud"], 400, "unknown log level 'loud'; one of trace, debug, info, warning, error, critical"),
        ("ul_dump", {"limit": 0}, 400, "limit must be between 1 and 100000"),
    ]
    for method, params, code, message in cases:
        with pytest.raises(RpcError) as ei:
            mgmt.call(method, params)
        assert (ei.value.code, ei.value.message) == (code, message), method


def test_request_too_large(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_request_size=1024)
    try:
        big = b'{"jsonrpc":"2.0","id":1,"method":"which","params":["' + b"x" * 5000 + b'"]}\n'
        reply = json.loads(raw_unix(h.config.mgmt.socket, big))
        assert reply["error"]["code"] == protocol.INVALID_REQUEST
        assert "larger than 1024" in reply["error"]["data"]
        status, body = http_req(h, "POST", "/mi", big)
        assert status == 413
        # a huge line on the FIFO is dropped and the FIFO keeps working
        fd = os.open(h.config.mgmt.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b":r:" + b"y" * 3000)
            os.write(fd, b"y" * 3000 + b"\n")
        finally:
            os.close(fd)
        assert h.call("version", transport="fifo")["Server"].startswith("sipd")
    finally:
        h.close()


def test_never_ending_line_times_out(tmp_path: Path) -> None:
    h = Harness(tmp_path, read_timeout=0.3)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(h.config.mgmt.socket)
            s.sendall(b'{"jsonrpc":"2.0","method":"which"')  # and never the end
            t0 = time.monotonic()
            assert s.recv(100) == b""  # the server hangs up
            assert time.monotonic() - t0 < 3
        status, _ = http_req(h, "GET", "/metrics")  # still serving
        assert status == 200
    finally:
        h.close()


def test_idle_connections_are_evicted_for_the_operator(tmp_path: Path) -> None:
    """40 connections that send nothing on 8 slots: the oldest are told "busy" and closed, a
    request (socket or HTTP) is served at once, and the loop is never held up."""
    h = Harness(tmp_path, max_connections=8, read_timeout=30)
    idle: list[socket.socket] = []
    try:
        for _ in range(40):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(h.config.mgmt.socket)
            idle.append(s)
        # the event loop (where SIP runs) is not held up by them
        t0 = time.monotonic()
        h.loop.run(asyncio.sleep(0))
        assert time.monotonic() - t0 < 0.5
        assert h.call("uptime")["Up time"].endswith("[sec]")
        status, _ = http_req(h, "GET", "/metrics")
        assert status == 200
        assert h.call("uptime", transport="fifo")  # the FIFO has its own budget
        idle[0].settimeout(5)
        evicted = idle[0].recv(4096)
        assert b"Server busy" in evicted  # told, not left hanging
        assert len(h.server.slots) <= 8 and h.server.slots.evicted >= 32
    finally:
        for s in idle:
            s.close()
        h.close()


def test_dump_does_not_block_the_loop(mgmt: Harness) -> None:
    """While a 20,000-contact dump is produced, the event loop keeps running other work.

    Checked by progress, not by wall-clock thresholds: a ticker task counts its turns on the loop;
    a dump that held the loop from start to end would let it advance by at most a turn or two.
    """
    from sipd.services.location import Contact

    now = time.time()

    async def fill() -> None:
        for i in range(20_000):
            aor = f"u{i}@example.test"
            mgmt.state.location.replace(aor, [Contact(uri=f"sip:u{i}@10.0.0.1:5060", expires=now + 600,
                                                       call_id=f"c{i}", cseq=1)])
    asyncio.run_coroutine_threadsafe(fill(), mgmt.loop.loop).result(timeout=60)
    ticks = [0]

    async def ticker() -> None:
        for _ in range(1_000_000):
            await asyncio.sleep(0)
            ticks[0] += 1
    fut = asyncio.run_coroutine_threadsafe(ticker(), mgmt.loop.loop)
    try:
        before = ticks[0]
        dump = mgmt.call("ul_dump", timeout=60)
        during = ticks[0] - before
    finally:
        fut.cancel()
    assert len(dump["Domains"][0]["AORs"]) == 20_000
    assert during >= 20, f"the loop made only {during} other turns while dumping"


def test_paging(mgmt: Harness) -> None:
    for i in range(25):
        mgmt.register(f"user{i:02d}@example.test")
    seen, after, pages = [], None, 0
    while True:
        page = mgmt.call("ul_dump", {"brief": "1", "limit": 10, **({"after": after} if after else {})})
        seen += [a["AOR"] for a in page["Domains"][0]["AORs"]]
        pages += 1
        after = page.get("Next")
        if not after:
            break
        assert pages < 10
    assert pages == 3 and seen == sorted(f"user{i:02d}@example.test" for i in range(25))


def test_http_auth_and_routes(mgmt: Harness) -> None:
    mgmt.state.stats.counter("core:rcv_requests").inc(3)
    body = protocol.encode_request("get_statistics", ["core:"])
    assert http_req(mgmt, "POST", "/mi", body, token=None)[0] == 401
    assert http_req(mgmt, "POST", "/mi", body, token="wrong")[0] == 401
    status, out = http_req(mgmt, "POST", "/mi", body)
    assert status == 200 and json.loads(out)["result"] == {"core:rcv_requests": 3}
    status, out = http_req(mgmt, "GET", "/metrics")
    assert status == 200 and b"sipd_core_rcv_requests 3\n" in out
    assert http_req(mgmt, "GET", "/metrics", token=None)[0] == 401
    assert http_req(mgmt, "GET", "/mi")[0] == 405
    assert http_req(mgmt, "POST", "/metrics", b"")[0] == 405
    assert http_req(mgmt, "GET", "/other")[0] == 404
    import copy

    from sipd.mgmt import client

    conf = copy.deepcopy(mgmt.config)
    conf.mgmt.http_token = "bad"
    with pytest.raises(MgmtConnectError) as ei:
        client.call(conf, "uptime", transport="http")
    assert ei.value.kind == "permission"


def test_fifo_refuses_unsafe_reply_targets(mgmt: Harness, tmp_path: Path) -> None:
    reply_dir = Path(mgmt.config.mgmt.fifo_reply_dir)
    target = tmp_path / "victim"
    target.write_text("keep")
    (reply_dir / "link").symlink_to(target)
    (reply_dir / "plain").write_text("")
    req = protocol.encode_request("uptime")
    fd = os.open(mgmt.config.mgmt.fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        for name in (b"link", b"plain", b"../victim", b""):
            os.write(fd, b":" + name + b":" + req + b"\n")
        os.write(fd, b"no prefix at all\n")
    finally:
        os.close(fd)
    assert mgmt.call("uptime", transport="fifo")  # processed after the bad ones
    assert target.read_text() == "keep" and (reply_dir / "plain").read_text() == ""


def test_client_errors(tmp_path: Path, mgmt: Harness) -> None:
    import copy

    from sipd.mgmt import client

    conf = copy.deepcopy(mgmt.config)
    conf.mgmt.socket = str(tmp_path / "absent.sock")
    with pytest.raises(MgmtConnectError) as ei:
        client.call(conf, "uptime")
    assert ei.value.kind == "missing"
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    conf.mgmt.socket = str(stale)
    with pytest.raises(MgmtConnectError) as ei:
        client.call(conf, "uptime")
    assert ei.value.kind == "refused"
    # a socket that accepts but never answers -> timeout
    slow = tmp_path / "slow.sock"
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(slow))
        srv.listen()
        conf.mgmt.socket = str(slow)
        with pytest.raises(MgmtConnectError) as ei:
            client.call(conf, "uptime", timeout=0.2)
        assert ei.value.kind == "timeout"
    # FIFO with no reader -> refused (sipd not running)
    dead = tmp_path / "dead_fifo"
    os.mkfifo(dead)
    conf.mgmt.fifo = str(dead)
    with pytest.raises(MgmtConnectError) as ei:
        client.call(conf, "uptime", transport="fifo")
    assert ei.value.kind == "refused"
    conf.mgmt.fifo = str(tmp_path / "nofifo")
    with pytest.raises(MgmtConnectError) as ei:
        client.call(conf, "uptime", transport="fifo")
    assert ei.value.kind == "missing"
