"""The management server: JSON-RPC 2.0 over a Unix socket, an OpenSIPS-style FIFO and loopback HTTP.

Lifecycle: ``mgmt = await start(context)`` binds what ``[mgmt]`` configures;
``await mgmt.close()`` stops listening, cancels requests in flight and removes the socket and FIFO.

Theory of operation:
- Every request runs as its own task on the daemon's event loop; commands only read or change
  in-memory state, and the big one (``ul_dump``) yields every few hundred AORs.
- Replies are encoded as they are written (``rpc.encode_chunks``), so a 100,000-contact dump never
  sits in memory whole, and backpressure from a slow reader just pauses that one task.
- Limits against a slow or hostile client: ``max_request_size``, ``read_timeout`` (to send the request;
  each reply write), ``max_connections`` (admission.py: silent clients evicted first, operator's slot kept).
- Unix socket: created with ``socket_mode`` and ``socket_owner``/``socket_group``, parent
  directory created; a stale socket file is replaced, a live one means another sipd: refuse.
- FIFO: lines ``:<reply_fifo>:<json>``; the reply goes to ``<fifo_reply_dir>/<reply_fifo>``, which
  must already exist as a FIFO (opened with O_NOFOLLOW and without O_CREAT, so a symlink or a
  regular file planted in /tmp is never written to, and fs.protected_fifos does not apply).
- HTTP: ``POST /mi`` (JSON-RPC) and ``GET /metrics`` (Prometheus text), each needing
  ``Authorization: Bearer <http_token>``; one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import hmac
import logging
import os
import pwd
import socket
import stat
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..stats import prometheus_text
from . import audit, protocol
from .admission import Admission
from .protocol import RpcError
from .registry import load_commands
from .rpc import process

if TYPE_CHECKING:
    from .context import MgmtContext

logger = logging.getLogger(__name__)

#: HTTP request head limit (request line + headers).
MAX_HTTP_HEAD = 8192
#: Seconds the FIFO server keeps retrying to open a reply FIFO whose reader is not there yet.
FIFO_REPLY_OPEN_WAIT = 2.0


class MgmtStartError(Exception):
    """The management interface could not be set up (message says what and how to fix it)."""


def _busy(id: Any = None) -> bytes:
    return protocol.encode_error(RpcError(protocol.SERVER_ERROR, "Server busy",
                                          "too many management connections; try again"), id)


def _too_large(limit: int) -> bytes:
    return protocol.encode_error(RpcError(protocol.INVALID_REQUEST, "Invalid Request", f"request larger than {limit} bytes"))


# ---------------------------------------------------------------------------------------------
# The server


class MgmtServer:
    """What ``start()`` returns. ``close()`` undoes everything it set up."""

    def __init__(self, context: MgmtContext):
        self.context = context
        self.state = state = context.state
        mgmt = state.config.mgmt
        self.max_request = int(mgmt.max_request_size)
        self.read_timeout = float(mgmt.read_timeout)
        self.max_connections = int(mgmt.max_connections)
        self.socket_path: Path | None = None
        self.fifo_path: Path | None = None
        self.http_address: tuple[str, int] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.slots = Admission(self.max_connections)
        self._fifo_fd: int | None = None
        self._fifo_buf = bytearray()
        self._fifo_discarding = False
        self._fifo_inflight = 0
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def _start(self) -> None:
        mgmt = self.state.config.mgmt
        load_commands()
        if mgmt.socket:
            await self._start_unix(Path(mgmt.socket))
        if mgmt.fifo:
            self._start_fifo(Path(mgmt.fifo))
        if mgmt.http_listen:
            await self._start_http(mgmt.http_listen)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for srv in self._servers:
            srv.close()
        if self._fifo_fd is not None:
            asyncio.get_running_loop().remove_reader(self._fifo_fd)
            os.close(self._fifo_fd)
            self._fifo_fd = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1.0)
        for path in (self.socket_path, self.fifo_path):
            if path is not None:
                with contextlib.suppress(OSError):  # gone, or not ours to remove after a privilege drop
                    path.unlink()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- Unix socket --------------------------------------------------------------------------

    async def _start_unix(self, path: Path) -> None:
        mgmt = self.state.config.mgmt
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as exc:
            raise MgmtStartError(f"cannot create directory {path.parent} for the management socket: "
                                 f"{exc.strerror}") from None
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise MgmtStartError(f"{path} exists and is not a socket; remove it or change [mgmt] socket")
            if _socket_alive(path):
                raise MgmtStartError(f"another sipd is already listening on {path}")
            path.unlink()
        old_umask = os.umask(0o177)  # never world-accessible, not even between bind and chmod
        try:
            server = await asyncio.start_unix_server(self._on_unix_client, path=str(path),
                                                     limit=self.max_request + 2)
        except OSError as exc:
            raise MgmtStartError(f"cannot bind management socket {path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        self._servers.append(server)
        self.socket_path = path
        os.chmod(path, int(mgmt.socket_mode, 8))
        _chown(path, mgmt.socket_owner, mgmt.socket_group)
        logger.info("management socket %s (mode %s)", path, mgmt.socket_mode)

    async def _on_unix_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not self.slots.admit(task, writer, _busy() + b"\n"):  # type: ignore[arg-type]
            await self._send_and_close(writer, _busy() + b"\n")
            return
        try:
            raw = await self._read_line(reader)
            if raw is None:
                await self._send_and_close(writer, _too_large(self.max_request) + b"\n")
                return
            if not raw.strip() or not self.slots.serving(task):  # type: ignore[arg-type] # evicted: told busy
                return
            reply = await process(self.context, raw)
            async for chunk in reply.chunks():
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), self.read_timeout)
            writer.write(b"\n")
            await asyncio.wait_for(writer.drain(), self.read_timeout)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.slots.release(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request: up to a newline or EOF, within read_timeout. None = too large."""
        try:
            async with asyncio.timeout(self.read_timeout):
                return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if len(exc.partial) > self.max_request:
                return None
            return exc.partial  # client half-closed without a newline
        except asyncio.LimitOverrunError:
            return None
        except ValueError:
            return None

    async def _send_and_close(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), 1.0)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    # -- FIFO ---------------------------------------------------------------------------------

    def _start_fifo(self, path: Path) -> None:
        mgmt = self.state.config.mgmt
        mode = int(mgmt.fifo_mode, 8)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            if path.exists() or path.is_symlink():
                if not stat.S_ISFIFO(path.lstat().st_mode):
                    raise MgmtStartError(f"{path} exists and is not a FIFO; remove it or change [mgmt] fifo")
            else:
                old_umask = os.umask(0o177)
                try:
                    os.mkfifo(path, 0o600)
                finally:
                    os.umask(old_umask)
            os.chmod(path, mode)
            _chown(path, mgmt.socket_owner, mgmt.socket_group)
            # O_RDWR keeps a writer open ourselves, so the FIFO never reports EOF between clients.
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as exc:
            raise MgmtStartError(f"cannot set up management FIFO {path}: {exc.strerror}") from None
        self._fifo_fd = fd
        self.fifo_path = path
        asyncio.get_running_loop().add_reader(fd, self._on_fifo_readable)
        logger.info("management FIFO %s (mode %s)", path, mgmt.fifo_mode)

    def _on_fifo_readable(self) -> None:
        assert self._fifo_fd is not None
        try:
            data = os.read(self._fifo_fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            logger.warning("reading the management FIFO failed: %s", exc)
            return
        buf = self._fifo_buf
        buf += data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self.max_request:
                    logger.warning("management FIFO: request longer than %d bytes dropped", self.max_request)
                    buf.clear()
                    self._fifo_discarding = True
                return
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            if self._fifo_discarding:  # the tail of an oversized line
                self._fifo_discarding = False
                continue
            if line.strip():
                self._fifo_request(line)

    def _fifo_request(self, line: bytes) -> None:
        if not line.startswith(b":"):
            logger.warning("management FIFO: request without :reply_fifo: prefix ignored")
            return
        end = line.find(b":", 1)
        name = line[1:end].decode("utf-8", "replace") if end > 0 else ""
        if not name or "/" in name or name in (".", "..") or len(name) > 255 or "\0" in name:
            logger.warning("management FIFO: bad reply FIFO name %r ignored", name)
            return
        if self._fifo_inflight >= self.max_connections:
            logger.warning("management FIFO: too many requests in flight; %r dropped", name)
            return
        reply_path = Path(self.state.config.mgmt.fifo_reply_dir) / name
        self._spawn(self._fifo_handle(line[end + 1:], reply_path))

    async def _fifo_handle(self, raw: bytes, reply_path: Path) -> None:
        self._fifo_inflight += 1
        try:
            reply = await process(self.context, raw)
            audit.record_fifo(self.state, raw, reply.body, reply_path)  # sipctl and the panel record their own
            fd = await self._open_reply_fifo(reply_path)
            if fd is None:
                return
            loop = asyncio.get_running_loop()
            sink = _PipeSink()
            transport, _ = await loop.connect_write_pipe(lambda: sink, os.fdopen(fd, "wb", buffering=0))
            try:
                async for chunk in reply.chunks():
                    transport.write(chunk)
                    await sink.drain(self.read_timeout)
                transport.write(b"\n")
                await sink.drain(self.read_timeout)
            except (TimeoutError, ConnectionError):
                logger.warning("management FIFO: client at %s stopped reading", reply_path)
            finally:
                transport.close()
        finally:
            self._fifo_inflight -= 1

    async def _open_reply_fifo(self, path: Path) -> int | None:
        deadline = asyncio.get_running_loop().time() + FIFO_REPLY_OPEN_WAIT
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ENXIO and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.01)  # the client has not opened its end yet
                    continue
                logger.warning("management FIFO: cannot open reply FIFO %s: %s", path, exc.strerror)
                return None
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.close(fd)
                logger.warning("management FIFO: %s is not a FIFO; reply not written", path)
                return None
            return fd

    # -- HTTP ---------------------------------------------------------------------------------

    async def _start_http(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        try:
            server = await asyncio.start_server(self._on_http_client, host=host, port=int(port),
                                                limit=MAX_HTTP_HEAD + 2, reuse_address=True)
        except (OSError, ValueError) as exc:
            raise MgmtStartError(f"cannot listen for HTTP management on {listen}: {exc}") from None
        self._servers.append(server)
        sockname = server.sockets[0].getsockname()
        self.http_address = (sockname[0], sockname[1])
        logger.info("management HTTP on %s:%d", *self.http_address)

    async def _on_http_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not self.slots.admit(task, writer, busy := _http(503, b"too many management connections\n")):  # type: ignore[arg-type]
            await self._send_and_close(writer, busy)
            return
        try:
            await self._http_exchange(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.slots.release(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _http_exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(data: bytes) -> None:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.read_timeout)

        try:
            async with asyncio.timeout(self.read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.LimitOverrunError, ValueError):
            await send(_http(431, b"request head too large\n"))
            return
        except TimeoutError:
            await send(_http(408, b"request timeout\n"))
            return
        if not self.slots.serving(asyncio.current_task()):  # type: ignore[arg-type] # evicted: told 503
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            await send(_http(400, b"bad request line\n"))
            return
        method, target, _version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        path = target.split("?", 1)[0]
        if path not in ("/mi", "/metrics"):
            await send(_http(404, b"not found: use POST /mi or GET /metrics\n"))
            return
        token = self.state.config.mgmt.http_token
        auth = headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            await send(_http(401, b"missing or wrong bearer token\n",
                             extra=b"WWW-Authenticate: Bearer realm=\"sipd\"\r\n"))
            return
        if path == "/metrics":
            if method != "GET":
                await send(_http(405, b"use GET\n", extra=b"Allow: GET\r\n"))
                return
            body = prometheus_text(self.state.stats).encode()
            await send(_http(200, body, ctype=b"text/plain; version=0.0.4; charset=utf-8"))
            return
        if method != "POST":
            await send(_http(405, b"use POST\n", extra=b"Allow: POST\r\n"))
            return
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            await send(_http(411, b"Content-Length required\n"))
            return
        if length < 0 or length > self.max_request:
            await send(_http(413, f"request larger than {self.max_request} bytes\n".encode()))
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                raw = await reader.readexactly(length)
        except TimeoutError:
            await send(_http(408, b"request timeout\n"))
            return
        reply = await process(self.context, raw)
        audit.record_http(self.state, raw, reply.body, writer)
        if reply.body is not None:
            await send(_http(200, reply.body, ctype=b"application/json"))
            return
        # Streamed: no Content-Length, the body ends when the connection closes (RFC 9112 §6.3).
        await send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        async for chunk in reply.chunks():
            await send(chunk)


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def _http(status: int, body: bytes, *, ctype: bytes = b"text/plain; charset=utf-8", extra: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n".encode() + b"Content-Type: " + ctype
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n" + extra
            + b"\r\n" + body)


class _PipeSink(asyncio.Protocol):
    """Flow control for a write pipe: ``drain()`` waits while the kernel buffer is full."""

    def __init__(self) -> None:
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._lost = False

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._can_write.set()

    async def drain(self, timeout: float) -> None:
        if self._lost:
            raise ConnectionResetError("reader went away")
        await asyncio.wait_for(self._can_write.wait(), timeout)
        if self._lost:
            raise ConnectionResetError("reader went away")


def _socket_alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _chown(path: Path, owner: str, group: str) -> None:
    if not owner and not group:
        return
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
    except KeyError:
        raise MgmtStartError(f"[mgmt] socket_owner: no user {owner!r}") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        raise MgmtStartError(f"[mgmt] socket_group: no group {group!r}") from None
    try:
        os.chown(path, uid, gid)
    except PermissionError:
        raise MgmtStartError(f"cannot give {path} to {owner or '-'}:{group or '-'}: not permitted "
                             "(start sipd as root, or be a member of that group)") from None


def _register_usrloc_gauges(state: Any) -> None:
    stats, location = getattr(state, "stats", None), getattr(state, "location", None)
    if stats is None or location is None:
        return
    if "usrloc:registered_users" not in stats:
        stats.gauge("usrloc:registered_users", lambda: len(location))
    if "usrloc:location-users" not in stats:
        stats.gauge("usrloc:location-users", lambda: len(location))
    if "usrloc:location-contacts" not in stats:
        count = getattr(location, "count_contacts", None)
        if count is not None:
            stats.gauge("usrloc:location-contacts", count)


async def start(context: MgmtContext) -> MgmtServer:
    """Bind the Unix socket (+ FIFO, HTTP if configured) and serve commands with ``context``.

    Raises:
        MgmtStartError: a path or address could not be set up (the message says why).
    """
    _register_usrloc_gauges(context.state)
    server = MgmtServer(context)
    try:
        await server._start()
    except BaseException:
        await server.close()
        raise
    return server

