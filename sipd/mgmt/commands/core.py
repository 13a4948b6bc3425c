"""Core commands: which, help, uptime, version, ps, log_level, reload."""

from __future__ import annotations

import logging
import os
import platform
import signal
import sys
import time
from typing import Any

from ... import __version__
from ... import config as cfg
from ...corebuild import describe
from ...reloading import TABLES, check_tables, reload_tables, reload_workers
from ...services.hook import HookError
from ...validation import VALIDATORS
from ..context import MgmtContext
from ..registry import COMMANDS, MgmtError, Param, command, load_commands, maybe_await

logger = logging.getLogger(__name__)

TRACE = 5
LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}


@command("which", params=[Param("command", required=False, help="command name")],
         help="List the management commands, or the parameter recipes of one command.")
async def which(ctx: MgmtContext, command: str | None = None) -> Any:
    load_commands()
    if command is None:
        return sorted(COMMANDS)
    cmd = COMMANDS.get(command)
    if cmd is None:
        raise MgmtError(404, "unknown MI command")
    return cmd.recipes()


@command("help", params=[Param("mi_cmd", required=False, help="command name")],
         help="Describe one command and its parameters.")
async def help_(ctx: MgmtContext, mi_cmd: str | None = None) -> Any:
    load_commands()
    if mi_cmd is None:
        return {"Commands": [{"name": c.name, "help": c.help} for c in sorted(COMMANDS.values(), key=lambda c: c.name)]}
    cmd = COMMANDS.get(mi_cmd)
    if cmd is None:
        raise MgmtError(404, "unknown MI command")
    return {"Help": cmd.help, "Params": [{"name": p.name, "required": p.required, "type": p.type,
                                          "help": p.help} for p in cmd.params]}


@command("uptime", help="Current time, start time and seconds up.")
async def uptime(ctx: MgmtContext) -> Any:
    now = time.time()
    started = float(ctx.state.started_at or now)
    return {"Now": time.ctime(now), "Up since": time.ctime(started), "Up time": f"{int(now - started)} [sec]"}


@command("version", help="Server name and version.")
async def version(ctx: MgmtContext) -> Any:
    return {"Server": f"sipd {__version__} ({platform.machine()}/{sys.platform})",
            "Python": platform.python_version(), "Core": describe()}


@command("ps", help="The processes of the server.")
async def ps(ctx: MgmtContext) -> Any:
    main = ctx.connections() if ctx.connections is not None else {}
    procs = [{"ID": 0, "PID": os.getpid(), "Type": "sipd (asyncio: SIP + management)", "Connections": _conns(main)}]
    pool = ctx.workers
    facts = await pool.probe() if pool is not None else {}
    for w in pool.describe() if pool is not None else ():
        kind = "worker (REGISTERs of its AORs, calls by Call-ID, TCP/TLS connections)" if w.get("calls") else \
            "registrar worker (REGISTERs of its AORs, TCP/TLS connections)"
        if not w["active"]:
            kind += ", starting"
        elif w["passthrough"]:
            kind += ", passing REGISTERs (and copies of what it sends) to main while traced"
        procs.append({"ID": w["index"], "PID": w["pid"], "Type": kind,
                      "Connections": _conns(facts.get(w["index"], {}))})
    return {"Processes": procs}


def _conns(counts: dict[str, Any]) -> str:
    """``tcp 3, tls 12``: the connections one process holds."""
    return ", ".join(f"{proto} {counts.get(proto, 0)}" for proto in ("tcp", "tls"))


def _level_name(level: int) -> str:
    for name, value in LEVELS.items():
        if value == level:
            return name
    return logging.getLevelName(level).lower()


@command("log_level", params=[Param("level", required=False, help="trace|debug|info|warning|error|critical")],
         help="Show or set the log level of the daemon.")
async def log_level(ctx: MgmtContext, level: str | None = None) -> Any:
    log = logging.getLogger("sipd")
    if level is None:
        return {"Processes": [{"PID": os.getpid(), "Log level": _level_name(log.getEffectiveLevel())}]}
    name = level.strip().lower()
    if name not in LEVELS:
        raise MgmtError(400, f"unknown log level {level!r}; one of {', '.join(LEVELS)}")
    setter = getattr(ctx.state, "set_log_level", None)
    if callable(setter):
        await maybe_await(setter(name))
    else:
        log.setLevel(LEVELS[name])
    pool = ctx.workers
    if pool is not None:
        pool.set_log_level(name)
    logger.info("log level set to %s through the management interface", name)
    return {"New global log level": name}


@command("reload", params=[Param("tables", required=False, type="array",
                                 help="only these of domains, subscribers, aliases, dialplan"),
                           Param("users", required=False, type="array",
                                 help="with subscribers: only these user@domain entries")],
         help="Re-read what can change without a restart: the domains, subscribers, aliases and dialplan "
              "tables, TLS certificates, routing hook, log level (also on SIGHUP); with tables, only those.")
async def reload(ctx: MgmtContext, tables: Any = None, users: Any = None) -> Any:
    try:
        wanted = check_tables([tables] if isinstance(tables, str) else tables) if tables else list(TABLES)
    except ValueError as exc:
        raise MgmtError(400, str(exc)) from None
    users = ([users] if isinstance(users, str) else [str(u) for u in users or ()]) if tables else []
    try:
        done = await reload_tables(ctx.state, wanted, users)
    except Exception as exc:
        logger.warning("reload of %s failed: %s", ", ".join(wanted), exc, exc_info=True)
        raise MgmtError(500, f"reload of {', '.join(wanted)} failed (previous contents kept): {exc}") from None
    if tables:  # what sipctl changed: the workers read those tables too, nothing else is touched
        workers = await reload_workers(ctx.workers, done, users)
        if workers:
            done.append(workers)
        logger.info("reloaded %s", ", ".join(done) or "nothing")
        return {"Reloaded": done}
    tls = ctx.tls
    if tls is not None and hasattr(tls, "reload"):
        failed = [r for r in tls.reload() if r.get("error")]
        done.append("tls" if not failed else f"tls ({len(failed)} domain(s) kept their old certificate)")
    hook = ctx.state.routing_hook
    if hook is not None:
        try:
            hook.reload()
            done.append("routing_hook")
        except HookError as exc:
            logger.error("routing hook not reloaded, the previous one stays active: %s", exc)
            done.append("routing_hook (failed, previous one kept)")
    source = ctx.state.config.source
    if source is not None:
        try:
            fresh = cfg.load(source, validators=VALIDATORS)
        except cfg.ConfigError as exc:
            raise MgmtError(400, f"configuration not reloaded: {exc.problems[0]}") from None
        await log_level(ctx, fresh.log.level)
        done.append("log_level")
    pool = ctx.workers
    if pool is not None:
        pool.signal(signal.SIGHUP)  # each worker reloads its own caches the same way
        done.append(f"workers ({len(pool.workers)})")
    logger.info("reloaded %s", ", ".join(done) or "nothing")
    return {"Reloaded": done}
