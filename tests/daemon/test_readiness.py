"""Start-up readiness: "sipd ready" is logged once every listener answers, TLS included; the first
TLS request right after it is answered. A listener that does not answer is named."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from types import SimpleNamespace

from sipd.readiness import probe
from tests.conftest import free_port
from tests.daemon.harness import live_daemon
from tests.e2e.test_interop_matrix import make_ca


def tls_options(port: int, timeout: float = 10.0) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, ctx.wrap_socket(raw) as s:
        here = s.getsockname()[1]
        s.sendall((f"OPTIONS sip:127.0.0.1:{port};transport=tls SIP/2.0\r\n"
                   f"Via: SIP/2.0/TLS 127.0.0.1:{here};branch=z9hG4bKready{here}\r\nMax-Forwards: 70\r\n"
                   "From: <sip:probe@example.test>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
                   f"Call-ID: ready-{here}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode())
        return s.recv(4096)


def test_first_tls_request_right_after_ready_is_answered(tmp_path):
    ca, cert, key = make_ca(tmp_path / "pki", "Readiness CA")
    for attempt in range(3):
        port, tls_port = free_port(), free_port("tcp")
        (tmp_path / f"run{attempt}").mkdir()
        d = live_daemon(tmp_path / f"run{attempt}", {
            "server": {"listen": [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}", f"tls:127.0.0.1:{tls_port}"]},
            "tls": {"certificate": str(cert), "private_key": str(key), "ca_file": str(ca), "verify_cert": False}},
            port=port)
        with d:
            t0 = time.monotonic()
            reply = tls_options(tls_port)
            assert reply.startswith(b"SIP/2.0 200 "), (reply, d.log_text())
            assert time.monotonic() - t0 < 10
        assert "Traceback" not in d.log_text()


def test_a_listener_that_does_not_answer_is_named():
    async def run() -> tuple[str | None, str | None, str | None]:
        silent = socket.socket()  # accepts (the kernel does) but never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        closed = socket.socket()  # bound, not listening: connection refused
        closed.bind(("127.0.0.1", 0))
        try:
            tls = SimpleNamespace(proto="tls", host="127.0.0.1", port=silent.getsockname()[1], name="tls:silent")
            tcp = SimpleNamespace(proto="tcp", host="127.0.0.1", port=closed.getsockname()[1], name="tcp:closed")
            udp = SimpleNamespace(proto="udp", host="127.0.0.1", port=9, name="udp:any")
            return await probe(tls, 0.5), await probe(tcp, 0.5), await probe(udp, 0.5)
        finally:
            silent.close()
            closed.close()

    tls, tcp, udp = asyncio.run(run())
    assert tls == "tls:silent did not complete a TLS handshake within 0.5 s"
    assert tcp is not None and tcp.startswith("tcp:closed does not answer")
    assert udp is None
