"""A real management server on a tmp Unix socket (+ FIFO, loopback HTTP) over a real ServerState,
running its own event loop in a background thread so tests can use the blocking client."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from sipd import config as cfg
from sipd.mgmt import client
from sipd.mgmt.context import MgmtContext
from sipd.mgmt.server import MgmtServer, start
from sipd.services.location import Contact

from sipd.state import ServerState
from tests.conftest import free_port

TOKEN = "s3cret-token-for-tests"


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Any, *args: Any) -> Any:
        async def wrap() -> Any:
            return fn(*args)
        return self.run(wrap())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Harness:
    def __init__(self, tmp: Path, **mgmt: Any):
        self.tmp = tmp
        conf = cfg.Config()
        conf.mgmt.socket = str(tmp / "run" / "sipd.sock")
        conf.mgmt.fifo = str(tmp / "run" / "sipd_fifo")
        reply_dir = tmp / "replies"
        reply_dir.mkdir()
        conf.mgmt.fifo_reply_dir = str(reply_dir)
        conf.mgmt.http_listen = f"127.0.0.1:{free_port('tcp')}"
        conf.mgmt.http_token = TOKEN
        conf.mgmt.timeout = 5.0
        conf.database.url = f"sqlite:///{tmp}/sipd.db"
        for k, v in mgmt.items():
            setattr(conf.mgmt, k, v)
        self.config = conf
        self.state = ServerState(config=conf)
        self.loop = LoopThread()
        self.context = MgmtContext(self.state)
        self.server: MgmtServer = self.loop.run(start(self.context))

    def call(self, method: str, params: Any = None, transport: str = "socket", timeout: float | None = None) -> Any:
        return client.call(self.config, method, params, timeout, transport=transport)

    def register(self, aor: str, n: int = 1, *, expires_in: float = 3600, **fields: Any) -> None:
        now = time.time()
        contacts = [Contact(uri=f"sip:{aor.split('@')[0]}@192.0.2.{i + 1}:5060", expires=now + expires_in,
                            call_id=f"cid-{aor}-{i}", cseq=i + 1, socket="udp:127.0.0.1:5060", **fields)
                    for i in range(n)]
        self.loop.call_soon(self.state.location.replace, aor, contacts)

    def close(self) -> None:
        try:
            self.loop.run(self.server.close())
        finally:
            self.loop.stop()


def write_config(h: Harness) -> Path:
    """A sipd.toml with the harness's [mgmt] and [database] for sipctl --config."""
    m = h.config.mgmt
    path = h.tmp / "sipd.toml"
    path.write_text(
        "[mgmt]\n"
        f'socket = "{m.socket}"\nfifo = "{m.fifo}"\nfifo_reply_dir = "{m.fifo_reply_dir}"\n'
        f'http_listen = "{m.http_listen}"\nhttp_token = "{m.http_token}"\ntimeout = {m.timeout}\n'
        "[database]\n"
        f'url = "{h.config.database.url}"\n')
    return path


def run_cli(config: Path, *args: str, capsys: Any) -> tuple[int, str, str]:
    from sipctl.app import main

    capsys.readouterr()
    code = main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err
