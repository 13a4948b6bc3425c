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

    def frames(self, data: bytes) -> list[bytes]:
        """The whole messages ``data`` completes, as bytes (not parsed: a receiver may route a
        message by its bytes, and only the process that serves it parses it). Raises
        RemoteProtocolError when framing is lost (the caller closes the connection)."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        if buf:  # the start of a message came in an earlier read
            buf += data
            if len(buf) > MAX_STREAM_BUFFER:
                raise RemoteProtocolError("stream buffer overflow", None)
            data = bytes(buf)
            buf.clear()
        elif len(data) > MAX_STREAM_BUFFER:
            raise RemoteProtocolError("stream buffer overflow", None)
        out: list[bytes] = []
        pos, n = 0, len(data)
        search_from = self._search_from  # where the end of the header block may be (no rescans)
        while pos < n:
            if data.startswith(b"\r\n", pos):
                if data.startswith(b"\r\n\r\n", pos):
                    self._keepalives += 1
                    pos += 4
                    continue
                if n - pos < 4 and b"\r\n\r\n".startswith(data[pos:]):
                    break  # maybe the start of a ping: wait for more
                pos += 2  # a pong (or stray CRLF before a start line)
                search_from = pos
                continue
            end = data.find(b"\r\n\r\n", max(pos, search_from))
            if end < 0:
                if n - pos > MAX_MESSAGE_SIZE:
                    raise RemoteProtocolError("header block too large", None)
                search_from = max(pos, n - 3)
                break
            lengths = {m.group(1).strip() for m in _CL_RE.finditer(data, pos, end + 2)}
            length = 0
            if lengths:
                if len(lengths) > 1:
                    raise RemoteProtocolError("conflicting Content-Length headers", None)
                v = lengths.pop()
                length = _SMALL_UINTS_B.get(v)  # type: ignore[assignment]
                if length is None:
                    length = parse_uint(v.decode("latin-1"), MAX_MESSAGE_SIZE, "Content-Length")
            total = end + 4 + length - pos
            if total > MAX_MESSAGE_SIZE:
                raise RemoteProtocolError("message too large", None)
            if n - pos < total:
                search_from = end  # header block already found
                break
            out.append(data if total == n else data[pos:pos + total])
            pos += total
            search_from = pos
        if pos < n:
            buf += data[pos:] if pos else data
        self._search_from = max(0, search_from - pos)
        return out

    def feed(self, data: bytes) -> list[Request | Response]:
        """The whole messages ``data`` completes, parsed. A message that does not parse raises
        RemoteProtocolError (after the ones before it, at the next call)."""
        out: list[Request | Response] = []
        for chunk in self.frames(data):
            try:
                out.append(parse_message(chunk))
            except RemoteProtocolError as e:
                if not out:
                    raise
                self._error = e
                break
        return out
