"""Reloading the provisioning tables into a running sipd, in every process.

sipd serves from memory what the operator provisions in the database (the ``domain``,
``subscriber``, ``dbaliases`` and ``dialplan`` tables), so a change in the database reaches calls
only when the cache is read again. Three things read it again:

* ``sipctl`` after each change it makes (management command ``reload`` with the tables it
  touched), and ``sipctl reload`` / SIGHUP for everything;
* the poll every ``[database] reload_interval`` seconds (0, the default, turns it off), for
  changes made to the database by other means (SQL, another tool, another node);
* a start, which loads everything.

With ``[server] workers`` > 1 each worker process holds its own copy of the caches: main reloads
its own, then sends the workers one frame naming the tables, and each worker reads them from the
database itself and answers when done. ``sipctl`` gets its reply once every worker has answered
(or after ``WORKER_WAIT`` seconds, saying which did not), so the next request finds the change in
whichever process reads it. A reload that fails keeps the previous contents (each cache swaps in a
complete new table or nothing).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .services.ports import Scheduler

logger = logging.getLogger("sipd.reload")

#: The tables an operator provisions, by the name of their cache on ``ServerState``.
TABLES = ("domains", "subscribers", "aliases", "dialplan")
WORKER_WAIT = 10.0  # seconds main waits for its workers' answers before replying without them

_seq = itertools.count(1)
#: main: seq -> (indexes of the workers still reloading, future set when none is left)
_waiting: dict[int, tuple[set[int], asyncio.Future]] = {}


def check_tables(names: Iterable[str]) -> list[str]:
    """The names, in table order, without repeats; ValueError naming an unknown one."""
    wanted = [str(n).strip().lower() for n in names]
    unknown = [n for n in wanted if n not in TABLES]
    if unknown:
        raise ValueError(f"unknown table {unknown[0]!r} (one of {', '.join(TABLES)})")
    return [t for t in TABLES if t in wanted]


async def reload_tables(state: Any, tables: Iterable[str], users: Iterable[str] = ()) -> list[str]:
    """Read ``tables`` from the database into this process's caches; the names reloaded.

    ``users`` (``user@domain``) narrows a subscriber reload to those entries: they are forgotten and
    read again on their next use, instead of reading the whole table (100,000 rows take seconds).
    Raises whatever the database raised (the caches that were not reached keep their contents).
    """
    done = []
    users = list(users)
    for name in tables:
        cache = getattr(state, name, None)
        if cache is None or not hasattr(cache, "reload"):
            continue
        if name == "subscribers" and users and hasattr(cache, "forget"):
            for aor in users:
                user, _, domain = aor.rpartition("@")
                cache.forget(user, domain)
            done.append(name)
            continue
        result = cache.reload()
        if asyncio.iscoroutine(result):
            await result
        done.append(name)
    spam = getattr(state, "spam", None)
    if "domains" in done and spam is not None and hasattr(spam, "set_domains"):
        spam.set_domains(state.domains)  # an IP address added as a domain is one of ours
    return done


def tell_workers(pool: Any, tables: Iterable[str]) -> list[int]:
    """Ask main's worker processes (``pool``, None without workers) to reload ``tables`` too; the
    indexes of the workers asked."""
    return _send(pool, list(tables), (), 0)


def _send(pool: Any, names: list[str], users: Iterable[str], seq: int) -> list[int]:
    if pool is None or not names:
        return []
    return pool.ask_reload(seq, names, list(users))


async def reload_workers(pool: Any, tables: Iterable[str], users: Iterable[str] = ()) -> str:
    """``tell_workers`` and wait (bounded) until each has reloaded; what to report ("" = no workers)."""
    seq = next(_seq)
    asked = _send(pool, list(tables), users, seq)
    if not asked:
        return ""
    done: asyncio.Future = asyncio.get_running_loop().create_future()
    pending = set(asked)
    _waiting[seq] = (pending, done)
    try:
        await asyncio.wait_for(asyncio.shield(done), WORKER_WAIT)
    except asyncio.TimeoutError:
        pass
    finally:
        _waiting.pop(seq, None)
    if pending:
        late = ", ".join(str(i) for i in sorted(pending))
        logger.warning("worker(s) %s did not confirm the reload within %.0f s", late, WORKER_WAIT)
        return f"workers ({len(asked) - len(pending)} of {len(asked)}; not yet: {late})"
    return f"workers ({len(asked)})"


def reloaded(index: int, seq: int) -> None:
    """Main side: worker ``index`` has reloaded what ``reload_workers`` asked (``seq``)."""
    entry = _waiting.get(seq)
    if entry is not None:
        entry[0].discard(index)
        if not entry[0] and not entry[1].done():
            entry[1].set_result(None)


async def reload_in_worker(state: Any, tables: Iterable[str], users: Iterable[str]) -> None:
    """Worker side of ``tell_workers``: reload the named tables from the database. A failure is
    logged here and not raised: the worker answers main either way (main must not wait in vain)."""
    names = list(tables)
    try:
        done = await reload_tables(state, check_tables(names), users)
        logger.debug("worker reloaded %s", ", ".join(done) or "nothing")
    except Exception as exc:  # noqa: BLE001 - keep the old tables and the worker alive
        logger.error("worker: reload of %s failed, previous contents kept: %s", ",".join(names), exc)


def _snapshot(state: Any) -> tuple[Any, ...]:
    """What the caches hold, to tell whether a poll found a change (for the log line)."""
    domains = getattr(state.domains, "from_db", None)
    aliases = getattr(state.aliases, "table", None)
    engine = getattr(state.dialplan, "engine", None)
    subscribers = getattr(state.subscribers, "_entries", None)
    return (dict(domains or {}), dict(aliases or {}), list(getattr(engine, "rules", []) or []),
            dict(subscribers or {}))


def start_polling(state: Any, scheduler: Scheduler, pool: Any) -> None:
    """Main process: reload every table every ``[database] reload_interval`` seconds (0 = never),
    and tell the workers of ``pool`` (None without workers) what changed.

    A timer, not a task, so shutdown does not wait for it; each poll runs as a tracked task.
    """
    interval = float(getattr(state.config.database, "reload_interval", 0) or 0)
    if interval <= 0 or state.db is None:
        return
    failing = [False]  # log a database outage once, not at every tick

    async def poll() -> None:
        before = _snapshot(state)
        try:
            done = await reload_tables(state, TABLES)
        except Exception as exc:  # noqa: BLE001 - the database may be away; try at the next tick
            if not failing[0]:
                logger.warning("periodic reload failed, previous contents kept (retried every %g s): %s",
                               interval, exc)
            failing[0] = True
            return
        if failing[0]:
            logger.info("periodic reload works again")
            failing[0] = False
        if _snapshot(state) != before:
            logger.info("periodic reload: the database changed; reloaded %s", ", ".join(done))
            tell_workers(pool, done)

    def tick() -> None:
        if scheduler.stopping:
            return
        scheduler.spawn(poll())
        scheduler.call_later(interval, tick)

    scheduler.call_later(interval, tick)
