"""Database access for the daemon and sipctl: one schema, two backends (SQLite and MySQL/MariaDB).

    db = connect("sqlite:////var/lib/sipd/sipd.db")     # or "mysql://user:pw@host:3306/sipd"
    rows = db.query("SELECT domain FROM domain WHERE domain = ?", ("example.test",))

Blocking API. The daemon calls it through ``asyncio.to_thread`` (in ``*/store.py`` modules only);
``sipd.db.queries`` holds the functions it needs. PyMySQL is imported only for mysql:// URLs.
"""

from __future__ import annotations

from .base import Database, ExecResult
from .errors import (
    DbAccessDenied,
    DbError,
    DbIntegrityError,
    DbSchemaError,
    DbSchemaMissing,
    DbUnavailable,
)
from .sqlite import SqliteDatabase
from .url import SQLITE_URL_RULES, DbUrl, mask_url, parse_url

__all__ = [
    "Database", "ExecResult", "DbError", "DbUnavailable", "DbAccessDenied", "DbSchemaMissing",
    "DbIntegrityError", "DbSchemaError", "connect", "parse_url", "DbUrl", "mask_url", "SQLITE_URL_RULES",
]


def connect(url: str, *, timeout: float = 5, create: bool = True) -> Database:
    """Open a database from its URL.

    Args:
        url: ``sqlite:///PATH`` (see ``parse_url``) or ``mysql://user:pw@host:port/db`` (an empty
            db name connects to the server only).
        timeout: seconds to wait for the connection (SQLite: for a lock).
        create: SQLite: create the file when it does not exist (the daemon's first start, ``sipctl
            db create``); False for everything that only reads or changes rows, so a mistyped URL
            is reported instead of leaving an empty file behind. A directory is never created,
            except the built-in default data directory (``sipd.db.url.default_db_url``).

    Raises:
        DbUnavailable, DbAccessDenied, DbSchemaMissing (MySQL database absent).
    """
    u = parse_url(url)
    masked = mask_url(url)
    if u.scheme == "sqlite":
        return SqliteDatabase(u.path, url_masked=masked, timeout=timeout, create=create)
    from .mysql import MysqlDatabase  # here, so that PyMySQL is loaded only for a MySQL URL

    return MysqlDatabase(host=u.host, port=u.port, user=u.user, password=u.password,
                         database=u.database or None, url_masked=masked, timeout=timeout)
