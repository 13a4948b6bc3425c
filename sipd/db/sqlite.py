"""SQLite backend (stdlib ``sqlite3``): the embedded default, zero set-up.

The file is created by the daemon's first start and ``sipctl db create`` only (``create=True``);
a missing directory is reported, not created (except the built-in default data directory). The
journal is WAL so the daemon and sipctl can read and write the same file at the same time.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .base import Database, ExecResult, Params
from .errors import DbAccessDenied, DbError, DbIntegrityError, DbSchemaMissing, DbUnavailable
from .url import SQLITE_URL_RULES, default_db_url, parse_url

_NO_TABLE = re.compile(r"no such table: (?:\w+\.)?(\w+)")


class SqliteDatabase(Database):
    dialect = "sqlite"
    placeholder = "?"

    def __init__(self, path: str, *, url_masked: str, timeout: float = 5.0, create: bool = True):
        super().__init__(url_masked, timeout)
        self.path = path
        self.create = create
        self._conn: sqlite3.Connection | None = None
        self._connect()

    def _check_path(self) -> None:
        """Say what is wrong with the path before SQLite says "unable to open" or creates a file."""
        file, parent = Path(self.path), Path(self.path).parent
        if not parent.is_dir():
            if self.create and self.path == parse_url(default_db_url()).path:
                try:  # the built-in default (~/.local/share/sipd): made on first use, like any XDG dir
                    parent.mkdir(parents=True, exist_ok=True)
                    return
                except OSError as exc:
                    raise DbUnavailable(self.url_masked, f"cannot create directory {parent}: "
                                        f"{exc.strerror or exc}") from None
            raise DbUnavailable(self.url_masked, f"directory {parent} does not exist",
                                hint=f"create it (mkdir -p {parent}) or fix database.url; {SQLITE_URL_RULES}")
        if not self.create and not file.exists():
            relative = not self.url_masked.startswith("sqlite:////")  # the slip the rules explain
            raise DbUnavailable(self.url_masked, f"database file {file} does not exist",
                                hint="run sipctl db create" + (f" (note: {SQLITE_URL_RULES})" if relative else ""))

    def _connect(self) -> None:
        target = self.path
        if self.path != ":memory:":
            self._check_path()
            if not self.create:  # never leave an empty file behind (the file may vanish meanwhile)
                target = "file:" + quote(self.path) + "?mode=rw"
        try:
            conn = sqlite3.connect(target, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False, uri=target.startswith("file:"))
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
