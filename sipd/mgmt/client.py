"""Blocking management client (used by sipctl): one JSON-RPC call over the socket, FIFO or HTTP.

Failures to reach the daemon raise ``MgmtConnectError`` with a ``kind`` sipctl turns into a
message, a hint and an exit code: ``missing`` (no socket/FIFO file), ``refused`` (file there,
nobody listening: sipd not running), ``permission`` (mode/group), ``timeout``, ``protocol``.
Errors returned by the daemon raise ``protocol.RpcError``.
"""

from __future__ import annotations

import errno
import grp
import http.client
import os
import pwd
import secrets
import select
import socket
import stat
import time
from pathlib import Path
from typing import Any

from . import protocol


class MgmtConnectError(Exception):
    def __init__(self, kind: str, message: str, hint: str = ""):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint


def _describe_owner(path: Path) -> tuple[str, str, str]:
    st = path.stat()
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return owner, group, oct(stat.S_IMODE(st.st_mode))[2:].rjust(4, "0")


def _permission_error(path: Path, what: str) -> MgmtConnectError:
    try:
        owner, group, mode = _describe_owner(path)
        hint = (f"{path} is mode {mode} owner {owner} group {group}: run as {owner} or add your user to "
                f"group {group} (usermod -aG {group} $USER, then log in again)")
    except OSError:
        hint = f"check the permissions of {path.parent}"
    return MgmtConnectError("permission", f"permission denied on the management {what} {path}", hint)


def call(config: Any, method: str, params: list[Any] | dict[str, Any] | None = None,
         timeout: float | None = None, *, transport: str = "socket") -> Any:
    """Run one management command and return its result.

    Args:
        config: a ``sipd.config.Config`` (its ``[mgmt]`` section says where the daemon listens).
        transport: ``socket`` (default), ``fifo`` or ``http``.

    Raises:
        MgmtConnectError: the daemon could not be reached or the reply was cut.
        protocol.RpcError: the daemon answered with an error.
    """
    mgmt = config.mgmt
    timeout = mgmt.timeout if timeout is None else timeout
    request = protocol.encode_request(method, params, id=secrets.randbelow(32768))
    if transport == "socket":
        raw = _call_socket(Path(mgmt.socket), request, timeout)
    elif transport == "fifo":
        if not mgmt.fifo:
            raise MgmtConnectError("missing", "no FIFO configured", "set [mgmt] fifo in sipd.toml")
        raw = _call_fifo(Path(mgmt.fifo), Path(mgmt.fifo_reply_dir), request, timeout)
    elif transport == "http":
        if not mgmt.http_listen:
            raise MgmtConnectError("missing", "no HTTP management configured", "set [mgmt] http_listen")
        raw = _call_http(mgmt.http_listen, mgmt.http_token, request, timeout)
    else:
        raise ValueError(f"unknown transport {transport!r}")
    if not raw.strip():
        raise MgmtConnectError("protocol", "sipd closed the connection without a reply",
                               "look at the sipd log")
    try:
        return protocol.decode_response(raw)
    except protocol.RpcError as err:
        if err.code == protocol.PARSE_ERROR and err.message.startswith("reply"):
            raise MgmtConnectError("protocol", f"unreadable reply from sipd ({err.message})",
                                   "is the reply cut? raise [mgmt] timeout") from None
        raise


def _call_socket(path: Path, request: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except FileNotFoundError:
            raise MgmtConnectError("missing", f"management socket {path} does not exist",
                                   "is sipd running? (systemctl status sipd) — or check [mgmt] socket") from None
        except PermissionError:
            raise _permission_error(path, "socket") from None
        except ConnectionRefusedError:
            raise MgmtConnectError("refused", f"nobody is listening on {path}",
                                   "sipd is not running (a stale socket was left); start it") from None
        except (TimeoutError, socket.timeout):
            raise MgmtConnectError("timeout", f"timed out connecting to {path}", "sipd is overloaded or hung") from None
        except OSError as exc:
            raise MgmtConnectError("refused", f"cannot connect to {path}: {exc.strerror}",
                                   "check [mgmt] socket") from None
        try:
            s.sendall(request + b"\n")
            chunks: list[bytes] = []
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                s.settimeout(left)
                data = s.recv(1 << 20)
                if not data:
                    break
                chunks.append(data)
        except (TimeoutError, socket.timeout):
            raise MgmtConnectError("timeout", f"no reply from sipd within {timeout:g} s",
                                   "sipd may be overloaded; retry or raise [mgmt] timeout") from None
        except ConnectionError as exc:
            raise MgmtConnectError("protocol", f"connection to sipd lost: {exc}", "look at the sipd log") from None
        return b"".join(chunks)


def _call_fifo(path: Path, reply_dir: Path, request: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    name = f"sipctl_reply_{os.getpid()}_{secrets.token_hex(4)}"
    reply_path = reply_dir / name
    try:
        os.mkfifo(reply_path, 0o600)
        # The daemon may run as another user: it needs write access to our reply FIFO.
        os.chmod(reply_path, 0o622)
    except OSError as exc:
        raise MgmtConnectError("permission", f"cannot create reply FIFO {reply_path}: {exc.strerror}",
                               f"[mgmt] fifo_reply_dir must be writable by you ({reply_dir})") from None
    rfd = -1
    try:
        rfd = os.open(reply_path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise MgmtConnectError("missing", f"management FIFO {path} does not exist",
                                   "is sipd running? — or check [mgmt] fifo") from None
        except PermissionError:
            err = _permission_error(path, "FIFO")
            parent = path.parent.stat()
            if parent.st_mode & stat.S_ISVTX and parent.st_mode & 0o002:
                err.hint += (f"; note {path.parent} is sticky and world-writable: with "
                             "fs.protected_fifos=1 (Linux >= 4.19) opening a FIFO there with O_CREAT "
                             "(e.g. `echo > fifo`) is refused for non-owners — put the FIFO in /run/sipd")
            raise err from None
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise MgmtConnectError("refused", f"nobody reads the management FIFO {path}",
                                       "sipd is not running (a stale FIFO was left); start it") from None
            raise MgmtConnectError("refused", f"cannot open {path}: {exc.strerror}", "check [mgmt] fifo") from None
        try:
            os.write(wfd, b":" + name.encode() + b":" + request + b"\n")
        finally:
            os.close(wfd)
        poller = select.poll()
        poller.register(rfd, select.POLLIN | select.POLLHUP)
        chunks: list[bytes] = []
        got_data = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MgmtConnectError("timeout", f"no reply from sipd within {timeout:g} s",
                                       "sipd may be overloaded; retry or raise [mgmt] timeout")
            events = poller.poll(left * 1000)
            if not events:
                continue
            try:
                data = os.read(rfd, 1 << 20)
            except BlockingIOError:
                continue
            if data:
                chunks.append(data)
                got_data = True
                if data.endswith(b"\n"):
                    break
            elif got_data:
                break  # writer closed
            else:
                time.sleep(0.005)  # POLLHUP before any writer: not yet opened by sipd
        return b"".join(chunks)
    finally:
        if rfd >= 0:
            os.close(rfd)
        try:
            reply_path.unlink()
        except FileNotFoundError:
            pass


def _call_http(listen: str, token: str, request: bytes, timeout: float) -> bytes:
    host, _, port = listen.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("POST", "/mi", body=request,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read()
    except ConnectionRefusedError:
        raise MgmtConnectError("refused", f"nothing listens on http://{listen}/mi",
                               "is sipd running with [mgmt] http_listen set?") from None
    except (TimeoutError, socket.timeout):
        raise MgmtConnectError("timeout", f"no reply from http://{listen}/mi within {timeout:g} s",
                               "sipd may be overloaded") from None
    except (OSError, http.client.HTTPException) as exc:
        raise MgmtConnectError("protocol", f"HTTP management failed: {exc}", "look at the sipd log") from None
    finally:
        conn.close()
    if resp.status == 401:
        raise MgmtConnectError("permission", "the HTTP management interface refused the token",
                               "set [mgmt] http_token to the daemon's value")
    if resp.status != 200:
        raise MgmtConnectError("protocol", f"HTTP management answered {resp.status} {resp.reason}",
                               body.decode("utf-8", "replace").strip())
    return body
