"""Binding JSON-RPC params to declared command params (OpenSIPS MI rules)."""

from __future__ import annotations

import pytest

from sipd.mgmt import protocol
from sipd.mgmt.protocol import RpcError
from sipd.mgmt.registry import Command, Param, bind, load_commands


async def _f(state, **kw):  # pragma: no cover - never run
    return kw


CMD = Command("t", _f, [Param("a"), Param("n", required=False, type="int"),
                        Param("rest", required=False, type="array")])


def test_positional_named_and_array_tail() -> None:
    assert bind(CMD, ["x"]) == {"a": "x"}
    assert bind(CMD, ["x", "3"]) == {"a": "x", "n": 3}
    assert bind(CMD, ["x", 3, "p", "q"]) == {"a": "x", "n": 3, "rest": ["p", "q"]}
    assert bind(CMD, {"a": "x", "rest": "one"}) == {"a": "x", "rest": ["one"]}
    assert bind(CMD, {"a": 5}) == {"a": "5"}


@pytest.mark.parametrize("params, data", [
    ([], "Too few or too many parameters"),
    ({"n": 1}, "Too few or too many parameters"),
    ({"a": "x", "zz": 1}, "Named parameters do not match"),
    (["x", "not-int"], "n must be an integer"),
    ({"a": {"x": 1}}, "a must be a string"),
    ({"a": "x", "rest": [{"no": 1}]}, "rest must be a list of strings"),
])
def test_bad_params(params, data) -> None:
    with pytest.raises(RpcError) as ei:
        bind(CMD, params)
    assert ei.value.code == protocol.INVALID_PARAMS and ei.value.data == data


def test_named_only_and_recipes() -> None:
    cmd = Command("dlg", _f, [Param("callid", required=False)], named_only=True)
    with pytest.raises(RpcError, match="named"):
        bind(cmd, ["x"])
    assert CMD.recipes() == [["a"], ["a", "n"], ["a", "n", "rest"]]


def test_every_command_documented() -> None:
    cmds = load_commands()
    for name in ("which", "uptime", "version", "ps", "log_level", "get_statistics", "list_statistics",
                 "reset_statistics", "ul_dump", "ul_show_contact", "ul_rm", "ul_rm_contact",
                 "domain_reload", "domain_dump", "dp_reload", "dp_translate", "subscriber_reload", "reload"):
        assert name in cmds and cmds[name].help, name


@pytest.mark.parametrize("raw, code", [
    (b"{not json", protocol.PARSE_ERROR),
    (b"[1,2]", protocol.INVALID_REQUEST),
    (b'{"jsonrpc":"1.0","method":"x"}', protocol.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","method":""}', protocol.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","method":"x","params":5}', protocol.INVALID_REQUEST),
    (b"\xff\xfe", protocol.PARSE_ERROR),
])
def test_decode_request_errors(raw, code) -> None:
    with pytest.raises(RpcError) as ei:
        protocol.decode_request(raw)
    assert ei.value.code == code
