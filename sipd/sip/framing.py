"""Framing SIP messages out of a TCP/TLS byte stream (RFC 3261 §18.3, RFC 5626 §3.5.1).

No I/O: bytes in, parsed messages out. Limits come from parser.py (MAX_MESSAGE_SIZE,
MAX_STREAM_BUFFER) so datagrams and streams share one policy.
"""

from __future__ import annotations

import re

from .errors import RemoteProtocolError
from .headers import parse_uint
from .message import Request, Response
from .parser import MAX_MESSAGE_SIZE, MAX_STREAM_BUFFER, parse_message

_CL_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I)
# Content-Length values as they usually appear (no leading zeros) -> int, read off the raw bytes.
_SMALL_UINTS_B = {str(i).encode(): i for i in range(2048)}


class StreamParser:
    """Frames SIP messages out of a TCP/TLS byte stream (RFC 3261 §18.3, RFC 5626 §3.5.1).

    Content-Length is mandatory on streams (absent = 0). A double CRLF between messages is a
    keep-alive ping (answer with one CRLF: ``pop_keepalive()``); a single CRLF is a pong, ignored.
    Any framing error raises RemoteProtocolError: the caller should close the connection.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._search_from = 0
        self._keepalives = 0
        self._error: RemoteProtocolError | None = None

    @property
    def keepalive_pending(self) -> bool:
        return self._keepalives > 0

    def pop_keepalive(self) -> bool:
        if self._keepalives:
            self._keepalives -= 1
            return True
        return False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request | Response]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        if len(buf) > MAX_STREAM_BUFFER:
            raise RemoteProtocolError("stream buffer overflow", None)
        out: list[Request | Response] = []
        while buf:
            if buf[:2] == b"\r\n":
                if buf[:4] == b"\r\n\r\n":
                    self._keepalives += 1
                    del buf[:4]
                    continue
                if len(buf) < 4 and buf == b"\r\n\r\n"[: len(buf)]:
                    break  # maybe the start of a ping: wait for more
                del buf[:2]  # a pong (or stray CRLF before a start line)
                self._search_from = 0
                continue
            end = buf.find(b"\r\n\r\n", self._search_from)
            if end < 0:
                if len(buf) > MAX_MESSAGE_SIZE:
                    raise RemoteProtocolError("header block too large", None)
                self._search_from = max(0, len(buf) - 3)
                break
            head = bytes(buf[: end + 2])
            lengths = {m.group(1).strip() for m in _CL_RE.finditer(head)}
            if len(lengths) > 1:
                raise RemoteProtocolError("conflicting Content-Length headers", None)
            n = 0
            if lengths:
                v = lengths.pop()
                n = _SMALL_UINTS_B.get(v)  # type: ignore[assignment]
                if n is None:
                    n = parse_uint(v.decode("latin-1"), MAX_MESSAGE_SIZE, "Content-Length")
            total = end + 4 + n
            if total > MAX_MESSAGE_SIZE:
                raise RemoteProtocolError("message too large", None)
            if len(buf) < total:
                self._search_from = end  # header block already found
                break
            chunk = bytes(buf[:total])
            del buf[:total]
            self._search_from = 0
            try:
                out.append(parse_message(chunk))
            except RemoteProtocolError as e:
                if not out:
                    raise
                self._error = e
                break
        return out
