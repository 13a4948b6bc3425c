"""JSON-RPC 2.0 as the management interface speaks it (shared by the daemon and sipctl).

One request per connection (Unix socket), per line (FIFO) or per POST (HTTP). Error codes are the
JSON-RPC standard ones plus OpenSIPS's HTTP-like module errors (404/400/500 with free text).
No I/O here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000

MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    SERVER_ERROR: "Server error",
}

#: Largest request accepted by the daemon by default (a request is a command name and a few
#: parameters; OpenSIPS's datagram MI used 64 KB).
DEFAULT_MAX_REQUEST = 64 * 1024


@dataclass
class RpcError(Exception):
    """A JSON-RPC error object (also raised by the client when the reply carries one)."""

    code: int
    message: str
    data: Any = None

    def __str__(self) -> str:
        extra = f" ({self.data})" if self.data not in (None, "") else ""
        return f"{self.code}: {self.message}{extra}"

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


@dataclass(frozen=True)
class Request:
    method: str
    params: list[Any] | dict[str, Any]
    id: Any


def encode_request(method: str, params: list[Any] | dict[str, Any] | None = None, id: Any = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id, "method": method,
                       "params": params if params is not None else {}}).encode()


def decode_request(data: bytes | str) -> Request:
    """Parse and validate one request.

    Raises:
        RpcError: PARSE_ERROR for bad JSON, INVALID_REQUEST for a wrong envelope.
    """
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RpcError(PARSE_ERROR, MESSAGES[PARSE_ERROR]) from None
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, MESSAGES[INVALID_REQUEST], "expected an object with jsonrpc \"2.0\"")
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, MESSAGES[INVALID_REQUEST], "method must be a non-empty string")
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, (list, dict)):
        raise RpcError(INVALID_REQUEST, MESSAGES[INVALID_REQUEST], "params must be an array or an object")
    return Request(method, params, obj.get("id"))


def request_id(data: bytes | str) -> Any:
    """Best-effort id of a request that failed validation (null when unknown)."""
    try:
        obj = json.loads(data)
        return obj.get("id") if isinstance(obj, dict) else None
    except (ValueError, UnicodeDecodeError):
        return None


def encode_error(err: RpcError, id: Any = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "error": err.to_json(), "id": id}).encode()


def result_prefix(id: Any) -> str:
    """Text before the result value; the reply is ``prefix + <result json> + suffix``."""
    return '{"jsonrpc":"2.0","result":'


def result_suffix(id: Any) -> str:
    return ',"id":' + json.dumps(id) + "}"


def decode_response(data: bytes | str) -> Any:
    """The result of a reply.

    Raises:
        RpcError: the reply carries an error, or is not a JSON-RPC reply at all.
    """
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RpcError(PARSE_ERROR, "reply is not JSON") from None
    if not isinstance(obj, dict):
        raise RpcError(PARSE_ERROR, "reply is not a JSON-RPC object")
    if "error" in obj:
        e = obj["error"] or {}
        raise RpcError(int(e.get("code", SERVER_ERROR)), str(e.get("message", "")), e.get("data"))
    if "result" not in obj:
        raise RpcError(PARSE_ERROR, "reply has neither result nor error")
    return obj["result"]
