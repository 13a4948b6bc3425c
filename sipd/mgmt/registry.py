"""The one table of management commands, and how a JSON-RPC request is bound to one.

A command is an ``async def f(ctx, **params)`` (``ctx``: the ``MgmtContext``) decorated with ``@command(name, params=[...])``.
Each ``Param`` says whether it is required and its type, so ``which`` (OpenSIPS: the list of
parameter-name recipes), ``help`` and sipctl's completion are all derived from the declaration.

Binding follows OpenSIPS MI: params may be positional (an array, matched in declaration order) or
named (an object). An ``array`` param also accepts a single string, and when it is the last
declared param it swallows the remaining positional values (``get_statistics core: tm:``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .protocol import INVALID_PARAMS, MESSAGES, METHOD_NOT_FOUND, Request, RpcError


class MgmtError(Exception):
    """A module error: OpenSIPS-style HTTP-like code (404, 400, 500) and a message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def need(state: Any, attr: str, what: str) -> Any:
    """``state.<attr>`` or a 500 "command not activated" (OpenSIPS wording) when absent."""
    obj = getattr(state, attr, None)
    if obj is None:
        raise MgmtError(500, f"command not activated ({what} not enabled in this sipd)")
    return obj


async def maybe_await(value: Any) -> Any:
    """Caches may expose reload() as a plain or an async function."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass(frozen=True)
class Param:
    name: str
    required: bool = True
    type: str = "str"  # "str" | "int" | "array"
    help: str = ""


@dataclass
class Command:
    name: str
    func: Callable[..., Awaitable[Any]]
    params: list[Param]
    help: str = ""
    named_only: bool = False

    def recipes(self) -> list[list[str]]:
        """Accepted parameter-name lists, shortest first (OpenSIPS ``which command``)."""
        required = [p.name for p in self.params if p.required]
        optional = [p.name for p in self.params if not p.required]
        return [required + optional[:i] for i in range(len(optional) + 1)]


class LazyList:
    """A result array produced on demand and streamed to the client (e.g. 100,000 AORs).

    ``source`` is an async iterable of JSON-serialisable items; the server encodes them one by one,
    so neither side of the daemon holds the whole reply at once and the event loop keeps running.
    """

    def __init__(self, source: AsyncIterable[Any]):
        self.source = source


COMMANDS: dict[str, Command] = {}


def command(name: str, *, params: list[Param] | None = None, help: str = "",
            named_only: bool = False) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Register ``func`` as management command ``name``."""

    def deco(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if name in COMMANDS and COMMANDS[name].func is not func:
            raise RuntimeError(f"management command {name} registered twice")
        doc = help or (inspect.getdoc(func) or "").split("\n", 1)[0]
        COMMANDS[name] = Command(name, func, list(params or []), doc, named_only)
        return func

    return deco


_loaded = False


def load_commands() -> dict[str, Command]:
    """Import every module in ``sipd.mgmt.commands`` (each registers its commands)."""
    global _loaded
    if not _loaded:
        from . import commands as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
        _loaded = True
    return COMMANDS


def _convert(cmd: Command, param: Param, value: Any) -> Any:
    if param.type == "array":
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
            return [str(v) for v in value]
        raise RpcError(INVALID_PARAMS, MESSAGES[INVALID_PARAMS], f"{param.name} must be a list of strings")
    if param.type == "int":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise RpcError(INVALID_PARAMS, MESSAGES[INVALID_PARAMS], f"{param.name} must be an integer")
    if isinstance(value, (dict, list)):
        raise RpcError(INVALID_PARAMS, MESSAGES[INVALID_PARAMS], f"{param.name} must be a string")
    return value if isinstance(value, str) else str(value)


def bind(cmd: Command, params: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """Map request params onto the command's declared params.

    Raises:
        RpcError: INVALID_PARAMS with OpenSIPS's data texts.
    """
    declared = cmd.params
    kwargs: dict[str, Any] = {}
    if isinstance(params, list):
        if params and cmd.named_only:
            raise RpcError(INVALID_PARAMS, MESSAGES[INVALID_PARAMS], "Command only supports named parameters")
        values = list(params)
        if declared and declared[-1].type == "array" and len(values) > len(declared):
            k = len(declared) - 1
            values = values[:k] + [[v for v in values[k:]]]
        if len(values) > len(declared):
            raise RpcError(INVALID_PARAMS, MESSAGES[INVALID_PARAMS], "Too few or too many parameters")
        for p, v in zip(declared, values):
            kwargs[p.name] = _convert(cmd, p, v)
    else:
        names = {p.name: p for p in declared}
        for key, v in params.items():
            if key not in names:
                raise RpcError(INVALID_PARAMS, MESSAGES[INVALID_PARAMS], "Named parameters do not match")
            kwargs[key] = _convert(cmd, names[key], v)
    missing = [p.name for p in declared if p.required and p.name not in kwargs]
    if missing:
        raise RpcError(INVALID_PARAMS, MESSAGES[INVALID_PARAMS], "Too few or too many parameters")
    return kwargs


async def dispatch(ctx: Any, request: Request) -> Any:
    """Run one request. Returns the result (maybe containing ``LazyList``).

    Raises:
        RpcError: unknown method, bad params, or a module error (code 404/400/500).
    """
    commands = load_commands()
    cmd = commands.get(request.method)
    if cmd is None:
        raise RpcError(METHOD_NOT_FOUND, MESSAGES[METHOD_NOT_FOUND])
    kwargs = bind(cmd, request.params)
    try:
        return await cmd.func(ctx, **kwargs)
    except MgmtError as exc:
        raise RpcError(exc.code, exc.message) from None

