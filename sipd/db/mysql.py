"""MySQL/MariaDB backend (PyMySQL): utf8mb4, autocommit off, reconnect on a dropped connection.

A dropped connection (server restart, wait_timeout) is re-opened and the statement retried once,
but only outside a transaction: inside one, the work done so far is lost, so the error is raised.
A deadlock, a lock wait timeout and a Galera certification failure become ``DbConflict``, which the
common code answers by running the statement or transaction again (``sipd.db.base``).
"""

from __future__ import annotations

import re
from typing import Any

import pymysql
import pymysql.cursors
from pymysql.constants import CLIENT

from .base import Database, ExecResult, Params, to_format_style
from .errors import (
    DbAccessDenied, DbConflict, DbError, DbIntegrityError, DbSchemaMissing, DbUnavailable,
)

#: Client errors meaning "the connection is gone" (CR_SERVER_GONE_ERROR, CR_SERVER_LOST, ...).
_GONE = {2006, 2013, 2055, 0}
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 2055}
_DENIED = {1044, 1045, 1142, 1143, 1227, 1370, 1698}
#: ER_LOCK_DEADLOCK (also what a Galera node answers when another node committed the same row
#: first: a certification failure, or a local transaction aborted by a replicated one) and
#: ER_LOCK_WAIT_TIMEOUT. The server has rolled the statement or transaction back.
_CONFLICT = {1213, 1205}
#: ER_UNKNOWN_COM_ERROR, which a Galera node outside the primary component answers to everything
#: ("WSREP has not yet prepared node for application use"): this node cannot serve, another may.
_NOT_PRIMARY = 1047
_NO_TABLE = re.compile(r"Table '(?:[^.']+\.)?([^']+)' doesn't exist")


class MysqlDatabase(Database):
    dialect = "mysql"
    placeholder = "%s"

    def __init__(self, *, host: str, port: int, user: str, password: str, database: str | None,
                 url_masked: str, timeout: float = 5.0):
        super().__init__(url_masked, timeout)
        self.host, self.port, self.user, self.database = host, port, user, database
        self._password = password
        self._conn: pymysql.connections.Connection[Any] | None = None
        self._connect()

    def _connect(self) -> None:
        try:
            self._conn = pymysql.connect(
                host=self.host, port=self.port, user=self.user, password=self._password,
                database=self.database or None, charset="utf8mb4", autocommit=False,
                connect_timeout=max(1, int(self.timeout)), read_timeout=max(30, int(self.timeout)),
                write_timeout=max(30, int(self.timeout)), client_flag=CLIENT.FOUND_ROWS,
                cursorclass=pymysql.cursors.DictCursor,
            )
        except pymysql.Error as exc:
            self._conn = None
            raise self._translate(exc) from None
        self._causal_reads()

    def _causal_reads(self) -> None:
        """On a Galera node, make each read wait until this node has applied every write the
        cluster committed before it (``wsrep_sync_wait = 1``). Galera certifies a commit on every
        node at once but applies it a moment later, so without this a registration committed at
        one sipd node could be missing from a lookup at another right after its 200 OK. Nothing
        changes on a server that is not a Galera node (MySQL has no such variable)."""
        assert self._conn is not None
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT @@wsrep_on AS wsrep_on")
                row = cur.fetchone()
                if row and str(row["wsrep_on"]).upper() in ("1", "ON"):
                    cur.execute("SET SESSION wsrep_sync_wait = 1")
            self._conn.commit()
        except pymysql.Error:
            pass  # MySQL, or a server without wsrep: reads are local anyway

    def _run(self, sql: str, params: Params, *, fetch: bool) -> ExecResult | list[dict[str, Any]]:
        stmt = to_format_style(sql)
        args = tuple(params or ())
        for attempt in (1, 2):
            if self._conn is None:
                self._connect()
            assert self._conn is not None
            try:
                with self._conn.cursor() as cur:
                    cur.execute(stmt, args)
                    if fetch:
                        return list(cur.fetchall())
                    return ExecResult(cur.rowcount, cur.lastrowid)
            except (pymysql.OperationalError, pymysql.InterfaceError) as exc:
                code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
                if code in _GONE and attempt == 1 and self._depth == 0:
                    self._drop()
                    continue
                if code in _GONE:
                    self._drop()
                raise self._translate(exc) from None
            except pymysql.Error as exc:
                raise self._translate(exc) from None
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pymysql.Error:
                pass
            self._conn = None

    def _begin(self) -> None:
        if self._conn is None:
            self._connect()
        assert self._conn is not None
        try:
            self._conn.ping(reconnect=False)
        except pymysql.Error:
            self._drop()
            self._connect()
        try:
            self._conn.begin()  # type: ignore[union-attr]
        except pymysql.Error as exc:
            raise self._translate(exc) from None

    def _commit(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.commit()
        except pymysql.Error as exc:
            error = self._translate(exc)
            if isinstance(error, DbConflict):
                self._rollback()  # the connection is sound, and keeps its session settings
            else:
                self._drop()
            raise error from None

    def _rollback(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.rollback()
        except pymysql.Error:
            self._drop()

    def tables(self) -> set[str]:
        rows = self.query("SELECT table_name AS name FROM information_schema.tables "
                          "WHERE table_schema = DATABASE()")
        return {r["name"] for r in rows}

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _translate(self, exc: pymysql.Error) -> DbError:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if isinstance(exc, pymysql.IntegrityError):
            return DbIntegrityError(text, hint="")
        if code in _DENIED:
            return DbAccessDenied(f"access denied on {self.url_masked}: {text}")
        if code == 1049:
            return DbSchemaMissing(
                self.database or "", f"database {self.database!r} does not exist on {self.url_masked}",
                hint="run sipctl db create --admin-url mysql://root@HOST to create it")
        if code == 1146:
            m = _NO_TABLE.search(text)
            return DbSchemaMissing(m.group(1) if m else "?")
        if code in _CONFLICT:
            return DbConflict(f"database error {code}: {text}")
        if code == _NOT_PRIMARY:
            return DbUnavailable(self.url_masked, f"this Galera node is not serving: {text}",
                                 hint="check the cluster (sipctl db status) or point database.url at another node")
        if code in _UNREACHABLE or isinstance(exc, pymysql.InterfaceError):
            return DbUnavailable(self.url_masked, text)
        return DbError(f"database error {code}: {text}")
