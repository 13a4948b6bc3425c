"""The challenge answered from raw bytes (services/challenge.py) against the general path: the
daemon's own parts in this process (App, endpoint, layer, pipeline) with a UDP listener whose
socket is a list, every datagram fed once with the raw path on and once with it off. The bytes
sent, the counters and the log lines must be the same; only where the raw path answered is it
allowed to have done so."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
from pathlib import Path

import pytest

from sipd import logging as sipd_logging
from sipd.config import dump
from sipd.daemon import endpoint as endpoint_module
from sipd.daemon.app import App, load_config
from sipd.services import challenge as challenge_module
from sipd.stats import Counter
from sipd.transport.base import Listener
from sipd.transport.manager import Transports
from tests.sip.test_raw_challenge import NOT_PLAIN, PLAIN, TORTURE, register

DOMAIN = "example.test"


class CapturedUdp(Listener):
    proto = "udp"

    def __init__(self, out: list):
        super().__init__("127.0.0.1", 5060)
        self.out = out

    def sendto(self, data: bytes, host: str, port: int) -> None:
        self.out.append((data, host, port))

    def close(self) -> None:
        pass


class CapturedConnection:
    """A TCP connection in the transports' table whose writes are kept."""

    closed = False

    def __init__(self, out: list, port: int):
        self.out, self.port = out, port

    def write(self, data: bytes) -> None:
        self.out.append((data, "127.0.0.1", self.port))

    def close(self) -> None:
        self.closed = True


class FixedWall:
    @staticmethod
    def time() -> float:
        return 1_800_000_000.0


class Server:
    """One process's receive and send path; ``raw`` says whether the raw challenge is on."""

    def __init__(self, tmp: Path, raw: bool, overrides: dict):
        conf = {"server": {"listen": ["udp:127.0.0.1:5060"], "domains": [DOMAIN, "example.com", "example.net", "example.org"], "server_header": "sipd-test"},
                "database": {"url": f"sqlite:///{tmp}/sipd.db"}, "log": {"level": "info"},
                "location": {"mode": "memory"}, "antiflood": {"enabled": False}, **overrides}
        (tmp / "sipd.toml").write_text(dump(conf))
        self.config = load_config(str(tmp / "sipd.toml"))
        sipd_logging.configure(self.config, stream=io.StringIO())
        self.loop = asyncio.new_event_loop()
        self.app = App(self.config)
        self.endpoint = self.app.endpoint
        self.out: list = []
        self.loop.run_until_complete(self._start())
        self.endpoint.mark = self.endpoint.layer.config.stateless_prefix = "5eed0001"  # in stateless To tags
        auth = self.endpoint.authenticator
        auth.secret = b"k" * 32
        counter = itertools.count(1)
        auth.rand = lambda n: next(counter).to_bytes(n, "big")
        self.challenger = self.endpoint.layer.config.answer_raw
        if not raw:
            self.endpoint.layer.config.answer_raw = None

    async def _start(self) -> None:
        await self.app.start_core(self.loop)
        self.app.build_pipeline()
        transports = Transports(self.endpoint, self.config.limits)
        listener = CapturedUdp(self.out)
        transports.listeners.append(listener)
        transports.udp4 = listener  # type: ignore[assignment]
        self.endpoint.attach(transports)
        self.endpoint.note_self_address(listener)

    def feed(self, data: bytes, port: int, transport: str = "udp") -> list:
        if transport == "udp":
            self.endpoint.datagram_received(data, ("udp", "127.0.0.1", port, None))
        else:  # framed on a connection (a connection of its own, id = port)
            self.endpoint.transports.conns[port] = CapturedConnection(self.out, port)
            self.endpoint.stream_received(data, (transport, "127.0.0.1", port, port))
        out, self.out[:] = list(self.out), []
        return out

    def counters(self) -> dict:
        stats = self.app.state.stats
        return {name: stats._stats[name].value for name in stats.names() if isinstance(stats._stats[name], Counter)}

    def close(self) -> None:
        self.loop.run_until_complete(self.app.close())
        self.loop.close()


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def datagrams() -> list[bytes]:
    out = [*PLAIN.values(), *NOT_PLAIN.values()]
    out += [register(to="To: <sip:alice@elsewhere.example>"),  # a foreign domain: 403
            register("User-Agent: friendly-scanner"),  # the spam check's scanner
            register(uri="sip:example.test;transport=udp")]
    for path in TORTURE:  # each torture request made a REGISTER (nothing is forwarded, nor resolved) ...
        if path.name == "wsinv.dat":
            continue  # ... but this one: its To tag makes it in-dialog, forwarded to a name to resolve
        data = path.read_bytes()
        method, sp, _ = data.partition(b" ")
        if sp and not data.startswith(b"SIP/"):
            out.append((b"REGISTER " + data[len(method) + 1:]).replace(b" " + method + b"\r\n", b" REGISTER\r\n"))
    out.append(PLAIN["usual"])  # a retransmission: the cached answer again
    return out


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("overrides", [{}, {"spam": {"enabled": False}}, {"auth": {"register": False}}],
                         ids=["defaults", "spam off", "REGISTER not challenged"])
def test_same_answers_with_and_without_the_raw_path(tmp_path, monkeypatch, overrides, transport):
    """Over UDP, and framed on TCP connections (no answer kept there: a repeated request is
    answered again, by either path alike)."""
    monkeypatch.setattr(endpoint_module, "time", FixedWall)
    monkeypatch.setattr(challenge_module, "time", FixedWall)
    runs = []
    for raw in (True, False):
        work = tmp_path / str(raw)
        work.mkdir()
        server = Server(work, raw, overrides)
        handler = Lines()
        logging.getLogger("sipd").addHandler(handler)
        answered = []
        if raw and server.challenger is not None:
            real = server.challenger

            def counting(data, addr, real=real):
                got = real(data, addr)
                answered.append(got is not None)
                return got

            server.endpoint.layer.config.answer_raw = counting
        try:
            sent = [server.feed(d, 20000 + i, transport) for i, d in enumerate(datagrams())]
            runs.append((sent, server.counters(), handler.lines, answered))
        finally:
            logging.getLogger("sipd").removeHandler(handler)
            server.close()
    (sent_raw, counters_raw, log_raw, answered), (sent, counters, log, _) = runs
    assert sent_raw == sent
    assert counters_raw == counters
    assert log_raw == log
    if overrides.get("auth", {}).get("register") is False:
        assert not any(answered)
    else:
        assert sum(answered) >= len(PLAIN)  # every plain REGISTER (a retransmission is the cache's)
        assert all(out and out[0][0].startswith(b"SIP/2.0 401 ") for out in sent[:len(PLAIN)])
