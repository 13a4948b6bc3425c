"""SQLite backend (stdlib ``sqlite3``): the embedded default, zero set-up.

The file and its parent directory are created on first use; the journal is WAL so the daemon and
sipctl can read and write the same file at the same time.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from .base import Database, ExecResult, Params
from .errors import DbAccessDenied, DbError, DbIntegrityError, DbSchemaMissing, DbUnavailable

_NO_TABLE = re.compile(r"no such table: (?:\w+\.)?(\w+)")


class SqliteDatabase(Database):
    dialect = "sqlite"
    placeholder = "?"

    def __init__(self, path: str, *, url_masked: str, timeout: float = 5.0):
        super().__init__(url_masked, timeout)
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._connect()

    def _connect(self) -> None:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DbUnavailable(self.url_masked, f"cannot create directory {Path(self.path).parent}: "
                                    f"{exc.strerror or exc}") from None
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._translate(exc) from None
        try:
            conn.row_factory = sqlite3.Row
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            conn.close()
            raise self._translate(exc) from None
        self._conn = conn

    def _run(self, sql: str, params: Params, *, fetch: bool) -> ExecResult | list[dict[str, Any]]:
        if self._conn is None:
            self._connect()
        assert self._conn is not None
        try:
            cur = self._conn.execute(sql, tuple(params or ()))
            try:
                if fetch:
                    return [dict(row) for row in cur.fetchall()]
                return ExecResult(cur.rowcount, cur.lastrowid)
            finally:
                cur.close()
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    def _begin(self) -> None:
        # IMMEDIATE takes the write lock now, so two writers never deadlock on a lock upgrade.
        self._run("BEGIN IMMEDIATE", None, fetch=False)

    def _commit(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            try:
                self._conn.commit()
            except sqlite3.Error as exc:
                raise self._translate(exc) from None

    def _rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            try:
                self._conn.rollback()
            except sqlite3.Error:
                pass  # the original error is what matters

    def tables(self) -> set[str]:
        rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r["name"] for r in rows if not r["name"].startswith("sqlite_")}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _translate(self, exc: sqlite3.Error) -> DbError:
        text = str(exc)
        if isinstance(exc, sqlite3.IntegrityError):
            return DbIntegrityError(text, hint="")
        m = _NO_TABLE.search(text)
        if m:
            return DbSchemaMissing(m.group(1))
        if "unable to open database file" in text:
            return DbUnavailable(self.url_masked, f"unable to open {self.path}",
                                 hint="check the path and permissions in database.url")
        if "readonly database" in text:
            return DbAccessDenied(f"database file {self.path} is read-only for this user",
                                  hint="run as the user owning the file, or fix its permissions")
        if "file is not a database" in text:
            return DbUnavailable(self.url_masked, f"{self.path} is not an SQLite database",
                                 hint="point database.url at an SQLite file")
        if "database is locked" in text:
            return DbError(f"database {self.path} is locked by another process",
                           hint="retry; a long-running writer holds the lock")
        return DbError(f"database error: {text}")
