"""The database interface both backends implement (blocking; the daemon calls it via to_thread).

SQL is written once, with ``?`` placeholders, and each backend translates it (MySQL: ``%s``).
Outside ``transaction()`` every statement is committed on its own; inside, all statements commit
together or not at all. One connection per ``Database``, guarded by a re-entrant lock, so the
object may be shared between threads (the daemon's ``asyncio.to_thread`` workers).

A write that loses to a concurrent one (``DbConflict``: a deadlock, a lock wait timeout, or on a
Galera cluster another node committing the same row first) was rolled back whole by the server, so
running it again cannot store anything twice. A statement outside a transaction, ``executemany``
and ``run_transaction(fn)`` are run again up to ``CONFLICT_ATTEMPTS`` times; a ``with
transaction():`` block cannot be replayed, so its caller sees the DbConflict.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import DbConflict

Params = Sequence[Any] | None
T = TypeVar("T")

#: Runs in all of a write that keeps losing to concurrent ones before its DbConflict is raised, and
#: the first pause between runs (doubled each time, with jitter so that two losers do not meet
#: again): 5 runs wait about 0.15 s in all, far less than a SIP transaction's timers.
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF = 0.01


@dataclass(frozen=True, slots=True)
class ExecResult:
    rowcount: int
    lastrowid: int | None


class Database:
    """Common behaviour; subclasses provide ``_open``, ``_run`` and the transaction verbs."""

    dialect = ""
    placeholder = "?"

    def __init__(self, url_masked: str, timeout: float):
        self.url_masked = url_masked
        self.timeout = timeout
        self._lock = threading.RLock()
        self._depth = 0  # transaction nesting depth (only the outermost commits)

    # -- public API -------------------------------------------------------------------------
    def execute(self, sql: str, params: Params = None) -> ExecResult:
        """Run one statement (INSERT/UPDATE/DELETE/DDL); commits unless inside transaction()."""
        with self._lock:
            result = self._statement(sql, storable(params), fetch=False)
            assert isinstance(result, ExecResult)
            return result

    def query(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts keyed by column name."""
        with self._lock:
            rows = self._statement(sql, storable(params), fetch=True)
            assert isinstance(rows, list)
            return rows

    def show(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """A read of the server's own state (``SHOW ...``) that ends with a rollback instead of a
        commit, so it also answers where the server refuses every commit: a Galera node outside
        the primary component, which can still say what it sees of the cluster."""
        with self._lock:
            try:
                return self._run(sql, storable(params), fetch=True)  # type: ignore[return-value]
            finally:
                if not self._depth:
                    self._rollback()

    def query_one(self, sql: str, params: Params = None) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> int:
        """Run one statement for each parameter tuple, atomically. Returns the total rowcount."""
        rows = [storable(params) for params in seq]  # a list: a rerun after a conflict needs them again

        def run(db: Database) -> int:
            return sum(db._run(sql, params, fetch=False).rowcount for params in rows)  # type: ignore[union-attr]

        return self.run_transaction(run)

    def run_transaction(self, fn: Callable[[Database], T]) -> T:
        """``fn(self)`` in one transaction, run again from the start (a bounded number of times)
        when it loses to a concurrent write. ``fn`` must do nothing but database work, since it
        may run more than once. Inside another transaction it simply runs: the outermost decides.

        Raises:
            DbConflict: still losing after ``CONFLICT_ATTEMPTS`` runs.
        """
        with self._lock:
            if self._depth:
                return fn(self)

            def once() -> T:
                with self.transaction():
                    return fn(self)

            return _until_it_wins(once)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """All statements in the block commit together; an exception rolls them all back."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._begin()
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outer:
                    self._rollback()
                raise
            self._depth -= 1
            if outer:
                self._commit()

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def tables(self) -> set[str]:
        """Names of the tables that exist."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url_masked}>"

    def _statement(self, sql: str, params: Params, *, fetch: bool) -> ExecResult | list[dict[str, Any]]:
        """One statement; outside a transaction committed on its own (which also ends MySQL's
        REPEATABLE READ snapshot of a read) and run again when it loses to a concurrent write."""
        if self._depth:
            return self._run(sql, params, fetch=fetch)

        def once() -> ExecResult | list[dict[str, Any]]:
            try:
                result = self._run(sql, params, fetch=fetch)
                self._commit()
                return result
            except DbConflict:
                self._rollback()
                raise

        return _until_it_wins(once)

    # -- backend hooks ----------------------------------------------------------------------
    def _run(self, sql: str, params: Params, *, fetch: bool) -> ExecResult | list[dict[str, Any]]:
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError


def _until_it_wins(run: Callable[[], T]) -> T:
    """``run()``, again after a growing pause each time it raises DbConflict, at most
    ``CONFLICT_ATTEMPTS`` times in all (then its DbConflict is raised)."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return run()
        except DbConflict:
            if attempt == CONFLICT_ATTEMPTS:
                raise
            time.sleep(CONFLICT_BACKOFF * 2 ** (attempt - 1) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def storable(params: Params) -> Params:
    """``params`` with every text that is not valid Unicode made storable (see ``storable_text``).

    SIP text comes off the wire decoded as UTF-8 with ``surrogateescape``, so bytes that are not
    UTF-8 (a hostile or a Latin-1 display name, user part, User-Agent) reach here as lone
    surrogates, which neither SQLite nor MySQL can encode. The usual statement has ASCII text only
    and is passed through untouched."""
    if not params:
        return params
    for v in params:
        if type(v) is str and not v.isascii():
            break
    else:
        return params
    return [storable_text(v) if type(v) is str and not v.isascii() else v for v in params]


def storable_text(text: str) -> str:
    """``text`` itself when it encodes as UTF-8; else each byte that was not UTF-8 on the wire is
    written ``\\xHH`` (a surrogate not from the wire ``\\udcHH``): lossless and readable."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def to_format_style(sql: str) -> str:
    """Translate ``?`` placeholders to ``%s`` (and escape literal ``%``), skipping quoted text."""
    if "%" not in sql and "'" not in sql and '"' not in sql and "`" not in sql:
        return sql.replace("?", "%s")  # the usual statement: no quoting to respect
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
            out.append("%%" if ch == "%" else ch)
            continue
        if ch in ("'", '"', "`"):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)
