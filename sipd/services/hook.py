"""The Python routing hook: an operator's ``route(request)`` called for each initial request.

OpenSIPS is adapted through its script language; sipd's residential policy is built in and an
operator who needs more writes a Python function instead (docs/routing-hook.md). This module owns:

* ``HookRequest``: the small, stable API object the hook receives. Reading (method, URIs, headers,
  source) and actions (rewrite the R-URI, reply, drop, choose a destination, add/remove headers,
  set accounting flags, log). Only what is documented in docs/routing-hook.md is API.
* ``RoutingHook``: loads the module (a file path or an importable module name), reloads it on
  demand (MI ``hook_reload``, or ``reload``/SIGHUP with everything else), and runs it safely: a hook that raises costs the request a
  500, its traceback is logged at most once per ``[routing] error_log_interval``, the server goes on.
* The pipeline stages: ``hook_stage`` right after ``max_forwards`` (before
  the local-domain and auth checks, like the top of an OpenSIPS route block) and ``destination_stage``
  after the dialplan, which forwards to a destination the hook chose.

Cost: with no hook configured no stage is inserted; with one, one Python call and one small object
per initial request (bench/bench_hook.py measures it).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..errors import StartupError
from ..problem import Problem
from .hook_check import is_path, signature_problem
from .pipeline import Branch, Defer, Drop, Forward, Reply, dest_of

if TYPE_CHECKING:
    from ..state import ServerState
    from .pipeline import Context, Decision, Stage
    from .ports import Destinations

logger = logging.getLogger("sipd.hook")
hook_log = logging.getLogger("sipd.hook.user")  # what the hook writes with request.log()

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class HookError(Exception):
    """The hook could not be loaded (missing file, syntax error, no ``route`` function)."""


def check_spec(spec: str) -> str | None:
    """Why ``[routing] hook`` is unusable, or None. Compiles a file without running it (run at
    every configuration load); ``hook_check.probe`` imports it."""
    if not spec:
        return None
    if is_path(spec):
        path = Path(spec)
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            return f"cannot read {spec}: {exc.strerror or exc}"
        try:
            compile(source, str(path), "exec")
        except SyntaxError as exc:
            return f"{spec}:{exc.lineno}: syntax error: {exc.msg}"
        return None  # route itself is checked by importing: at start, and in a child by --check-config
    if importlib.util.find_spec(spec) is None:
        return f"module {spec!r} not found on the Python path"
    return None


# -- the API object -----------------------------------------------------------------------------


class HookRequest:
    """What ``route(request)`` receives. Stable API: see docs/routing-hook.md.

    Read-only properties describe the request as received (after our Route entries were popped);
    the action methods record what the hook wants. The first of ``reply``/``drop`` wins; the
    request is then answered or dropped and nothing else runs. Otherwise the built-in residential
    policy continues with whatever the hook changed (R-URI, headers, destination).
    """

    __slots__ = ("_ctx", "_req", "_reply", "_drop", "_destination", "acc_flags")

    def __init__(self, ctx: Context):
        self._ctx = ctx
        self._req = ctx.request
        self._reply: Reply | None = None
        self._drop: str | None = None
        self._destination: str | None = None
        #: Accounting flags set by the hook (``set_acc_flag``); kept in ``ctx.extra["acc_flags"]``.
        self.acc_flags: set[str] = set()

    # -- reading ---------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self._req.method

    @property
    def ruri(self) -> str:
        return str(self._req.uri)

    @property
    def ruri_user(self) -> str:
        return self._req.uri.user or ""

    @property
    def ruri_host(self) -> str:
        return self._req.uri.host or ""

    @property
    def ruri_port(self) -> int | None:
        return self._req.uri.port

    @property
    def from_uri(self) -> str:
        return str(self._req.from_.uri)

    @property
    def from_user(self) -> str:
        return self._req.from_.uri.user or ""

    @property
    def from_host(self) -> str:
        return self._req.from_.uri.host or ""

    @property
    def to_uri(self) -> str:
        return str(self._req.to.uri)

    @property
    def to_user(self) -> str:
        return self._req.to.uri.user or ""

    @property
    def to_host(self) -> str:
        return self._req.to.uri.host or ""

    @property
    def call_id(self) -> str:
        return self._req.call_id

    @property
    def user_agent(self) -> str:
        return self._req.get("User-Agent") or ""

    @property
    def body(self) -> bytes:
        return self._req.body

    @property
    def source_ip(self) -> str:
        return self._ctx.source[1]

    @property
    def source_port(self) -> int:
        return self._ctx.source[2]

    @property
    def transport(self) -> str:
        return self._ctx.source[0]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (compact forms accepted), or None."""
        return self._req.get(name)

    def headers(self, name: str) -> list[str]:
        """Every value of header ``name`` (comma-separated lists split)."""
        return self._req.get_all(name)

    def is_local_domain(self, host: str) -> bool:
        """True when ``host`` is one of the domains this server serves."""
        return host in self._ctx.state.domains

    def is_own_address(self, host: str) -> bool:
        """True when ``host`` is one of this server's own addresses (listen or advertised)."""
        return self._ctx.state.myself.is_own_host(host)

    # -- actions ---------------------------------------------------------------------------------
    def set_ruri(self, uri: str) -> None:
        """Replace the Request-URI (e.g. ``"sip:reception@example.com"``). Raises ValueError if invalid."""
        from ..sip.uri import parse_uri

        try:
            self._req.uri = parse_uri(uri)
        except Exception as exc:  # noqa: BLE001 - RemoteProtocolError for bad text
            raise ValueError(f"invalid URI {uri!r}: {exc}") from None

    def set_ruri_user(self, user: str) -> None:
        """Replace only the user part of the Request-URI."""
        self._req.uri = self._req.uri.replace(user=user)

    def set_destination(self, uri: str) -> None:
        """Send the request to ``uri`` (next hop, e.g. ``"sip:10.0.0.5:5080"``) keeping the R-URI;
        the registrar/location lookup is skipped. Local-domain and auth checks still apply."""
        from ..sip.uri import parse_uri

        try:
            parse_uri(uri)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"invalid destination {uri!r}: {exc}") from None
        self._destination = uri

    def add_header(self, name: str, value: str) -> None:
        """Append a header to the request (it is forwarded with it)."""
        self._req.append(name, value)

    def remove_header(self, name: str) -> None:
        """Remove every occurrence of a header."""
        self._req.remove(name)

    def reply(self, code: int, reason: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Answer the request with ``code`` (300-699) and stop."""
        if not 300 <= int(code) <= 699:
            raise ValueError(f"reply code must be 300..699, not {code}")
        if self._reply is None and self._drop is None:
            self._reply = Reply(int(code), reason, list((headers or {}).items()), why="routing hook")

    def drop(self, reason: str = "") -> None:
        """Drop the request silently (no answer) and stop."""
        if self._reply is None and self._drop is None:
            self._drop = reason or "dropped by the routing hook"

    def set_acc_flag(self, name: str) -> None:
        """Mark the request for accounting (e.g. ``"missed"``, ``"no_acc"``)."""
        self.acc_flags.add(name)

    def log(self, message: str, level: str = "info") -> None:
        """Write ``message`` to the sipd log (logger ``sipd.hook.user``)."""
        hook_log.log(_LEVELS.get(level, logging.INFO), "%s", message)

    # -- result ------------------------------------------------------------------------------------
    def _decision(self) -> Decision | None:
        if self._drop is not None:
            return Drop(self._drop)
        if self._reply is not None:
            return self._reply
        if self.acc_flags:
            self._ctx.extra["acc_flags"] = set(self.acc_flags)
        if self._destination is not None:
            self._ctx.extra["hook_destination"] = self._destination
        return None


# -- loading and running ------------------------------------------------------------------------


class RoutingHook:
    """The loaded hook (``state.routing_hook``). ``fn`` is None when no hook is configured."""

    def __init__(self, spec: str, *, error_log_interval: float = 60.0, clock: Any = time.monotonic):
        self.spec = spec
        self.fn: Any = None
        self.module: Any = None
        self.error_log_interval = error_log_interval
        self.clock = clock
        self.errors = 0  # calls that raised, in total
        self.suppressed = 0  # errors not logged since the last logged one
        self.last_logged: float | None = None
        self.loads = 0

    def load(self) -> None:
        """(Re)load the module and pick up ``route``. On failure the previous hook stays active.

        Raises:
            HookError: one line saying what is wrong.
        """
        spec = self.spec
        if not spec:
            self.fn = None
            return
        problem = check_spec(spec)
        if problem:
            raise HookError(problem)
        try:
            if is_path(spec):
                name = f"sipd_routing_hook_{self.loads}"
                mspec = importlib.util.spec_from_file_location(name, spec)
                if mspec is None or mspec.loader is None:
                    raise HookError(f"cannot load {spec}")
                module = importlib.util.module_from_spec(mspec)
                mspec.loader.exec_module(module)
            elif spec in sys.modules and self.module is not None:
                module = importlib.reload(sys.modules[spec])
            else:
                module = importlib.import_module(spec)
        except HookError:
            raise
        except Exception as exc:  # noqa: BLE001 - any error in the operator's module
            raise HookError(f"loading {spec} failed: {type(exc).__name__}: {exc}") from None
        fn = getattr(module, "route", None)
        if fn is None:
            raise HookError(f"{spec} has no route(request) function")
        problem = signature_problem(spec, fn)
        if problem:
            raise HookError(problem)
        self.module, self.fn = module, fn
        self.loads += 1

    def reload(self) -> str:
        """Reload from the same file/module; returns a one-line status. Raises HookError."""
        self.load()
        logger.info("routing hook %s reloaded (load #%d)", self.spec, self.loads)
        return f"routing hook {self.spec} reloaded"

    def failed(self, request: Any) -> None:
        """Log the current exception with its traceback, at most once per interval."""
        self.errors += 1
        now = self.clock()
        if self.last_logged is not None and now - self.last_logged < self.error_log_interval:
            self.suppressed += 1
            return
        extra = f" ({self.suppressed} more failures since the last report)" if self.suppressed else ""
        self.suppressed = 0
        self.last_logged = now
        logger.error("routing hook %s failed on %s %s -> 500%s; next report in %gs at the earliest",
                     self.spec, request.method, request.uri_text, extra, self.error_log_interval, exc_info=True)

    def run(self, ctx: Context) -> Decision | None:
        api = HookRequest(ctx)
        try:
            self.fn(api)
        except Exception:  # noqa: BLE001 - the operator's bug must never stop the server
            self.failed(ctx.request)
            ctx.state.stats.counter("hook:errors").inc()
            return Reply(500, "Server Internal Error", why="routing hook failed")
        return api._decision()


def setup(state: ServerState) -> RoutingHook | None:
    """Create and load ``state.routing_hook`` from ``[routing]``; None when no hook is configured.

    Raises:
        StartupError: the configured hook cannot be loaded (the daemon refuses to start).
    """
    cfg = state.config.routing
    if state.routing_hook is not None:
        return state.routing_hook
    if not cfg.hook:
        return None
    hook = RoutingHook(cfg.hook, error_log_interval=cfg.error_log_interval)
    try:
        hook.load()
    except HookError as exc:
        raise StartupError(f"routing hook: {exc} — see [routing] hook; check with sipd --check-config") from None
    state.routing_hook = hook
    state.stats.counter("hook:errors")
    logger.info("routing hook %s loaded", cfg.hook)
    return hook


# -- pipeline stages ----------------------------------------------------------------------------


def hook_stage(ctx: Context) -> Decision | None:
    """Call the hook for an initial request (no To-tag; not ACK/CANCEL)."""
    req = ctx.request
    if req.method in ("ACK", "CANCEL") or req.to.tag is not None:
        return None
    hook = ctx.state.routing_hook
    if hook is None or hook.fn is None:
        return None
    return hook.run(ctx)


def destination_stage(destinations: Destinations) -> Stage:
    """Forward to the destination the hook chose (skips location)."""

    def hook_destination(ctx: Context) -> Decision | None:
        dest_text = ctx.extra.get("hook_destination")
        if dest_text is None:
            return None
        from ..sip.uri import parse_uri

        uri = parse_uri(dest_text)
        req = ctx.request
        dest = dest_of(uri)
        why = f"routing hook destination {dest_text}"
        if dest is not None:
            dest = destinations.reuse_connection(dest)
            return Forward([[Branch(req.uri, dest, label=dest_text)]], why=why)
        return Defer(_resolve(destinations, ctx, uri, why))

    return hook_destination


async def _resolve(destinations: Destinations, ctx: Context, uri: Any, why: str) -> Decision:
    targets = await destinations.resolve(uri)
    if not targets:
        return Reply(503, "Service Unavailable", why=f"{why}: cannot resolve")
    t = targets[0]
    return Forward([[Branch(ctx.request.uri, (t.transport, t.host, t.port, None), label=str(uri))]], why=why)


def stages(state: ServerState) -> list[Stage]:
    """The early stage (before local_domain); empty when no hook is configured."""
    return [hook_stage] if setup(state) is not None else []


def route_stages(state: ServerState, destinations: Destinations) -> list[Stage]:
    """The late stage (after the dialplan, before aliases/location)."""
    return [destination_stage(destinations)] if state.routing_hook is not None else []


def validate(config: Config) -> list[Problem]:
    """Problems in [routing] (one of sipd.validation.VALIDATORS)."""
    out: list[Problem] = []
    problem = check_spec(config.routing.hook)
    if problem:
        out.append(Problem("routing.hook", problem, "fix the file or point hook at another one (docs/routing-hook.md)"))
    if config.routing.error_log_interval < 0:
        out.append(Problem("routing.error_log_interval", "must not be negative", "e.g. 60"))
    return out
