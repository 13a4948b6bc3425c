"""TLS transport on loopback: handshakes, versions, mutual TLS, stalled handshakes, reload, identity."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from sipd.config import LimitsSection, TlsSection
from sipd.sip.parser import parse_message
from sipd.tlsconf import TlsManager
from sipd.transport.manager import Transports
from sipd.transport.tls import TlsListener, connect

OPTIONS = (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-1\r\n"
           b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
           b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[Any, tuple]] = []
        self.failed: list[tuple] = []
        self.event = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # pragma: no cover
        pass

    def stream_received(self, data: bytes, addr: tuple) -> None:
        self.messages.append((parse_message(data), addr))
        self.event.set()

    def stream_rejected(self, addr: tuple, exc: Exception) -> None:  # pragma: no cover
        pass

    def connect_failed(self, addr: tuple) -> None:
        self.failed.append(addr)
        self.event.set()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sipctl.lib import cert as lib

    d = tmp_path_factory.mktemp("pki")
    lib.ca_init(d / "root", "T Root", key_type="ec:p256")
    lib.ca_init(d / "int", "T Int", key_type="ec:p256", parent=d / "root")
    lib.ca_issue(d / "int", "sip.example.test", ["example.test", "127.0.0.1"], cert_out=d / "srv.pem",
                 key_out=d / "srv.key", key_type="ec:p256")
    lib.ca_issue(d / "root", "new.example.test", ["127.0.0.1"], cert_out=d / "new.pem", key_out=d / "new.key",
                 key_type="ec:p256")
    lib.ca_issue(d / "root", "other.example.test", ["other.example.test"], cert_out=d / "other.pem",
                 key_out=d / "other.key", key_type="ec:p256")
    lib.ca_issue(d / "root", "alice", [], client=True, cert_out=d / "alice.pem", key_out=d / "alice.key",
                 key_type="ec:p256")
    return d


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Any:
    """Runs a coroutine on the standard loop and on uvloop (what the daemon uses when installed)."""
    if request.param == "asyncio":
        return asyncio.run
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        pytest.skip("uvloop not installed")
    return uvloop.run


def section(pki: Path, **kw: Any) -> TlsSection:
    base = dict(certificate=str(pki / "srv.pem"), private_key=str(pki / "srv.key"),
                ca_file=str(pki / "root" / "root.pem"), handshake_timeout=2.0, reload_interval=0.0)
    base.update(kw)
    return TlsSection(**base)


class Server:
    def __init__(self, sec: TlsSection):
        self.sec = sec

    async def __aenter__(self) -> Server:
        self.sink = Sink()
        self.transports = Transports(self.sink, LimitsSection())
        self.tls = TlsManager(self.sec, ["tls:127.0.0.1:0"])
        self.listener = await TlsListener.bind("127.0.0.1", 0, self.transports, self.tls)
        self.transports.listeners.append(self.listener)
        self.port = self.listener.port
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.transports.close()
        self.tls.close()
        await asyncio.sleep(0)


def client_ctx(pki: Path, *, cert: str | None = None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "root" / "root.pem"))
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


async def tls_exchange(port: int, ctx: ssl.SSLContext, data: bytes = OPTIONS) -> tuple[dict, str]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5)
    try:
        cert = writer.get_extra_info("peercert")
        version = writer.get_extra_info("ssl_object").version()
        writer.write(data)
        await writer.drain()
        return cert, version
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def wait_for(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_handshake_through_intermediate_delivers_messages(pki: Path, run: Any) -> None:
    async def main() -> None:
        async with Server(section(pki)) as srv:
            cert, version = await tls_exchange(srv.port, client_ctx(pki))
            assert dict(x[0] for x in cert["subject"])["commonName"] == "sip.example.test"
            assert version == "TLSv1.3"
            await wait_for(lambda: srv.sink.messages)
            msg, addr = srv.sink.messages[0]
            assert addr[0] == "tls" and addr[1] == "127.0.0.1" and addr[3] is not None
            assert msg.method == "OPTIONS"
    run(main())


def test_version_cap_and_old_versions_refused(pki: Path, run: Any) -> None:
    async def main() -> None:
        async with Server(section(pki, max_version="1.2")) as srv:
            _, version = await tls_exchange(srv.port, client_ctx(pki))
            assert version == "TLSv1.2"
        async with Server(section(pki)) as srv:
            ctx = client_ctx(pki)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await tls_exchange(srv.port, ctx)
            await wait_for(lambda: srv.listener.failed == 1)
    run(main())


def test_mutual_tls_require_cert(pki: Path, run: Any) -> None:
    async def main() -> None:
        async with Server(section(pki, server_domains={"tls:127.0.0.1:0": {"require_cert": True}})) as srv:
            assert srv.listener.domain.require_cert
            with pytest.raises((ssl.SSLError, ConnectionError)):
                # TLS 1.3: the refusal arrives after the client's Finished; reading surfaces it
                reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=client_ctx(pki))
                try:
                    writer.write(OPTIONS)
                    await writer.drain()
                    await asyncio.wait_for(reader.read(100), 5)
                    raise ConnectionResetError("closed without a certificate")
                finally:
                    writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=client_ctx(pki, cert="alice"))
            try:
                writer.write(OPTIONS)
                await wait_for(lambda: srv.sink.messages)
                conn = srv.transports.connection(srv.sink.messages[0][1][3])
                assert conn is not None and dict(x[0] for x in conn.peercert["subject"])["commonName"] == "alice"
            finally:
                writer.close()
                await writer.wait_closed()
    run(main())


def test_stalled_handshakes_do_not_block_others(pki: Path, run: Any) -> None:
    async def main() -> None:
        async with Server(section(pki, handshake_timeout=30.0)) as srv:
            stalled = []
            try:
                loop = asyncio.get_running_loop()
                for _ in range(200):
                    s = socket.socket()
                    s.setblocking(False)
                    stalled.append(s)
                    await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", srv.port)), 5)
                    s.send(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
                await wait_for(lambda: srv.listener.pending >= 150)
                t0 = time.monotonic()
                await tls_exchange(srv.port, client_ctx(pki))
                await wait_for(lambda: srv.sink.messages)
                assert time.monotonic() - t0 < 1.0
            finally:
                for s in stalled:
                    s.close()
    run(main())


def test_pending_handshake_limit_and_timeout(pki: Path, run: Any) -> None:
    async def main() -> None:
        async with Server(section(pki, handshake_timeout=0.3, max_pending_handshakes=5)) as srv:
            loop = asyncio.get_running_loop()
            socks = []
            try:
                for _ in range(8):
                    s = socket.socket()
                    s.setblocking(False)
                    socks.append(s)
                    try:
                        await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", srv.port)), 5)
                    except ConnectionResetError:  # refused beyond the cap (RST right after accept)
                        pass
                await wait_for(lambda: srv.listener.refused >= 3)
                assert srv.listener.pending <= 5
                await wait_for(lambda: srv.listener.pending == 0)  # the 0.3 s timeout freed them
                await tls_exchange(srv.port, client_ctx(pki))
            finally:
                for s in socks:
                    s.close()
    run(main())


def test_reload_switches_new_connections_and_keeps_old_on_broken_files(pki: Path, tmp_path: Path, run: Any) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes((pki / "srv.pem").read_bytes())
    key.write_bytes((pki / "srv.key").read_bytes())

    async def main() -> None:
        async with Server(section(pki, certificate=str(cert), private_key=str(key))) as srv:
            c1, _ = await tls_exchange(srv.port, client_ctx(pki))
            assert dict(x[0] for x in c1["subject"])["commonName"] == "sip.example.test"
            # broken: new certificate with the old key -> kept old, error reported
            cert.write_bytes((pki / "new.pem").read_bytes())
            report = srv.tls.reload(only_changed=True)
            assert report and report[0]["error"] and not report[0]["reloaded"]
            c2, _ = await tls_exchange(srv.port, client_ctx(pki))
            assert dict(x[0] for x in c2["subject"])["commonName"] == "sip.example.test"
            # now the matching key lands: the next poll picks both up
            key.write_bytes((pki / "new.key").read_bytes())
            os.utime(key, (time.time() + 5, time.time() + 5))
            report = srv.tls.reload(only_changed=True)
            assert any(r["reloaded"] for r in report)
            c3, _ = await tls_exchange(srv.port, client_ctx(pki))
            assert dict(x[0] for x in c3["subject"])["commonName"] == "new.example.test"
            assert srv.tls.describe()[0]["subject"] == "CN=new.example.test"
    run(main())


def test_outgoing_tls_verifies_identity(pki: Path, run: Any) -> None:
    async def main() -> None:
        async with Server(section(pki)) as srv:
            async with Server(section(pki, certificate=str(pki / "other.pem"), private_key=str(pki / "other.key"))) as bad:
                client_sink = Sink()
                transports = Transports(client_sink, LimitsSection())
                tls = TlsManager(section(pki, certificate="", private_key=""), [])
                try:
                    conn = connect(transports, tls, "127.0.0.1", srv.port)
                    conn.write(OPTIONS)
                    await wait_for(lambda: srv.sink.messages)
                    assert conn.version in ("TLSv1.3", "TLSv1.2") and conn.transport is not None
                    connect(transports, tls, "127.0.0.1", bad.port).write(OPTIONS)
                    await wait_for(lambda: client_sink.failed)
                    assert client_sink.failed[0][:3] == ("tls", "127.0.0.1", bad.port)
                    assert not bad.sink.messages
                finally:
                    transports.close()
    run(main())


def test_accept_failure_backs_off_instead_of_spinning(pki: Path, run: Any) -> None:
    """EMFILE on accept: the listener stops watching its socket for a second, then accepts again."""
    async def main() -> None:
        async with Server(section(pki)) as srv:
            real_sock = srv.listener.sock
            assert real_sock is not None

            class Failing:
                def __init__(self) -> None:
                    self.calls = 0

                def accept(self) -> Any:
                    self.calls += 1
                    raise OSError(24, "Too many open files")

                def fileno(self) -> int:
                    return real_sock.fileno()

            failing = Failing()
            srv.listener.sock = failing  # type: ignore[assignment]
            with socket.create_connection(("127.0.0.1", srv.port)):
                await asyncio.sleep(0.3)
                assert failing.calls == 1  # not called again while the socket stays readable
                srv.listener.sock = real_sock
                await wait_for(lambda: srv.listener.accepted == 1, 3.0)
    run(main())


def options(call_id: str, body: bytes = b"") -> bytes:
    return OPTIONS.replace(b"Call-ID: c1", b"Call-ID: " + call_id.encode()).replace(
        b"Content-Length: 0\r\n\r\n", b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def test_connections_reading_at_once_each_get_their_own_bytes(pki: Path, run: Any) -> None:
    """Every connection of a process reads into one receive buffer: three connections writing at
    once, in pieces cut anywhere, pipelined messages filling the buffer several times over and one
    of nearly the largest size, all arrive whole, in order, on their own connection; a CRLF ping
    on each is answered."""
    import random

    rnd = random.Random(7)
    big = bytes(rnd.choice(b"abcdefghij") for _ in range(60000))

    async def main() -> None:
        async with Server(section(pki)) as srv:
            conns = [await asyncio.wait_for(asyncio.open_connection("127.0.0.1", srv.port, ssl=client_ctx(pki)), 5)
                     for _ in range(3)]
            streams = [b"".join(options(f"c{n}-{i}", big if i == 150 else b"") for i in range(300)) + b"\r\n\r\n"
                       for n in range(3)]
            offsets = [0, 0, 0]
            while any(off < len(s) for off, s in zip(offsets, streams)):
                for n, (_, writer) in enumerate(conns):
                    cut = offsets[n] + rnd.randint(1, 9000)
                    writer.write(streams[n][offsets[n]:cut])
                    offsets[n] = min(cut, len(streams[n]))
                await asyncio.sleep(0)
            for reader, _ in conns:
                assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
            await wait_for(lambda: len(srv.sink.messages) == 900)
            for n in range(3):
                got = [(m, a) for m, a in srv.sink.messages if m.call_id.startswith(f"c{n}-")]
                assert [m.call_id for m, _ in got] == [f"c{n}-{i}" for i in range(300)]
                assert len({a[3] for _, a in got}) == 1  # one connection id: the one they came on
                assert got[150][0].body == big and all(not m.body for m, _ in got[:150])
            for _, writer in conns:
                writer.close()
    run(main())
