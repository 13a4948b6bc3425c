"""One management request, start to end: decode, run the command, encode the reply.

``process`` never raises: a bad request, an unknown command, a module error or a bug in a command
becomes a JSON-RPC error reply. Replies are encoded as they are written (``encode_chunks``), so a
100,000-contact dump never sits in memory whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from . import protocol
from .protocol import RpcError
from .registry import LazyList, dispatch

if TYPE_CHECKING:
    from .context import MgmtContext

logger = logging.getLogger("sipd.mgmt.server")  # the name its log lines always had

#: Flush the reply to the transport whenever this much is buffered.
CHUNK = 64 * 1024


async def encode_chunks(value: Any) -> AsyncIterator[str]:
    """JSON text of ``value`` in pieces; ``LazyList`` items are pulled one at a time."""
    if isinstance(value, LazyList):
        yield "["
        first = True
        async for item in value.source:
            yield ("" if first else ",") + json.dumps(item, ensure_ascii=False)
            first = False
        yield "]"
    elif isinstance(value, dict):
        yield "{"
        for i, (k, v) in enumerate(value.items()):
            yield ("," if i else "") + json.dumps(str(k)) + ":"
            async for piece in encode_chunks(v):
                yield piece
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for i, v in enumerate(value):
            if i:
                yield ","
            async for piece in encode_chunks(v):
                yield piece
        yield "]"
    else:
        yield json.dumps(value, ensure_ascii=False)


def _has_lazy(value: Any) -> bool:
    if isinstance(value, LazyList):
        return True
    if isinstance(value, dict):
        return any(_has_lazy(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_lazy(v) for v in value)
    return False


class Reply:
    """A reply: either ``body`` (complete) or ``stream`` (chunks of bytes)."""

    def __init__(self, body: bytes | None = None, stream: AsyncIterator[bytes] | None = None):
        self.body = body
        self.stream = stream

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.body is not None:
            yield self.body
            return
        assert self.stream is not None
        async for c in self.stream:
            yield c


async def _stream_result(result: Any, id: Any) -> AsyncIterator[bytes]:
    buf: list[str] = [protocol.result_prefix(id)]
    size = 0
    async for piece in encode_chunks(result):
        buf.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield "".join(buf).encode()
            buf, size = [], 0
    buf.append(protocol.result_suffix(id))
    yield "".join(buf).encode()


async def process(ctx: MgmtContext, raw: bytes) -> Reply:
    """Decode, dispatch and encode one request. Never raises (errors become error replies)."""
    try:
        req = protocol.decode_request(raw)
    except RpcError as err:
        return Reply(protocol.encode_error(err, protocol.request_id(raw)))
    try:
        result = await dispatch(ctx, req)
    except RpcError as err:
        return Reply(protocol.encode_error(err, req.id))
    except Exception:
        logger.exception("management command %s failed", req.method)
        return _internal_error(req.id)
    if _has_lazy(result):
        return Reply(stream=_stream_result(result, req.id))
    try:
        text = json.dumps(result, ensure_ascii=False)
    except (TypeError, ValueError):
        logger.exception("management command %s returned a value that is not JSON", req.method)
        return _internal_error(req.id)
    return Reply((protocol.result_prefix(req.id) + text + protocol.result_suffix(req.id)).encode())


def _internal_error(id: Any) -> Reply:
    """A bug in a command: the client learns only that (the traceback went to the log)."""
    return Reply(protocol.encode_error(RpcError(protocol.SERVER_ERROR, "Server error",
                                                "internal error; see the sipd log"), id))
