"""The database interface both backends implement (blocking; the daemon calls it via to_thread).

SQL is written once, with ``?`` placeholders, and each backend translates it (MySQL: ``%s``).
Outside ``transaction()`` every statement is committed on its own; inside, all statements commit
together or not at all. One connection per ``Database``, guarded by a re-entrant lock, so the
object may be shared between threads (the daemon's ``asyncio.to_thread`` workers).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

Params = Sequence[Any] | None


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
            result = self._run(sql, storable(params), fetch=False)
            if self._depth == 0:
                self._commit()
            assert isinstance(result, ExecResult)
            return result

    def query(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts keyed by column name."""
        with self._lock:
            rows = self._run(sql, storable(params), fetch=True)
            if self._depth == 0:
                self._commit()  # end the implicit read transaction (MySQL REPEATABLE READ snapshot)
            assert isinstance(rows, list)
            return rows

    def query_one(self, sql: str, params: Params = None) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> int:
        """Run one statement for each parameter tuple, atomically. Returns the total rowcount."""
        total = 0
        with self.transaction():
            for params in seq:
                total += self._run(sql, storable(params), fetch=False).rowcount  # type: ignore[union-attr]
        return total

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

    # -- backend hooks ----------------------------------------------------------------------
    def _run(self, sql: str, params: Params, *, fetch: bool) -> ExecResult | list[dict[str, Any]]:
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError


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
