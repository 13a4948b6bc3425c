"""Database access for the daemon and sipctl: one schema, two backends (SQLite and MySQL/MariaDB).

    db = connect("sqlite:////var/lib/sipd/sipd.db")     # or "mysql://user:pw@host:3306/sipd"
    rows = db.query("SELECT domain FROM domain WHERE domain = ?", ("example.test",))

Blocking API. The daemon calls it through ``asyncio.to_thread`` (in ``*/store.py`` modules only);
``sipd.db.queries`` holds the functions it needs. PyMySQL is imported only for mysql:// URLs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .base import Database, ExecResult
from .errors import (
    DbAccessDenied,
    DbError,
    DbIntegrityError,
    DbSchemaError,
    DbSchemaMissing,
    DbUnavailable,
)

__all__ = [
    "Database", "ExecResult", "DbError", "DbUnavailable", "DbAccessDenied", "DbSchemaMissing",
    "DbIntegrityError", "DbSchemaError", "connect", "parse_url", "DbUrl", "mask_url", "SQLITE_URL_RULES",
]


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    from sipd.config import mask_url as _mask

    return _mask(url)


@dataclass(frozen=True)
class DbUrl:
    scheme: str           # "sqlite" | "mysql"
    path: str = ""        # sqlite file (or ":memory:")
    host: str = ""
    port: int = 3306
    user: str = ""
    password: str = ""
    database: str = ""

    def with_database(self, name: str) -> str:
        """A mysql:// URL text for the same server and user but another database."""
        return build_mysql_url(self.user, self.password, self.host, self.port, name)


def build_mysql_url(user: str, password: str, host: str, port: int, database: str) -> str:
    from urllib.parse import quote

    cred = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    h = f"[{host}]" if ":" in host else host
    return f"mysql://{cred}@{h}:{port}/{database}"


#: How an SQLite URL names its file (SQLAlchemy's rules, so URLs copied from its documentation
#: or from other tools mean the same file here): after ``sqlite://`` comes ``/`` and the path, so
#: three slashes start a relative path (from the current directory) and four an absolute one.
SQLITE_URL_RULES = ("sqlite:///relative/path.db is relative to the current directory; "
                    "an absolute path takes four slashes: sqlite:////var/lib/sipd/sipd.db")


def parse_url(url: str) -> DbUrl:
    """Split a database URL. Raises DbUnavailable for an unsupported or malformed URL.

    SQLite: ``sqlite:///relative.db`` (from the current directory), ``sqlite:////abs/path.db``,
    ``sqlite://`` or ``sqlite:///:memory:`` for a database in memory. ``path`` is made absolute.
    """
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        if rest in ("//", "//:memory:", "///:memory:"):
            return DbUrl("sqlite", path=":memory:")
        if not rest.startswith("///") or len(rest) < 4:
            raise DbUnavailable(url, "an SQLite URL is sqlite:/// followed by the file's path",
                                hint=SQLITE_URL_RULES)
        return DbUrl("sqlite", path=os.path.abspath(unquote(rest[3:])))
    if url.startswith("mysql://"):
        parts = urlsplit(url)
        try:
            port = parts.port or 3306
        except ValueError:
            raise DbUnavailable(mask_url(url), "bad port in URL",
                                hint="write mysql://user:pw@host:3306/dbname") from None
        if not parts.hostname:
            raise DbUnavailable(mask_url(url), "no host in URL",
                                hint="write mysql://user:pw@host:3306/dbname")
        return DbUrl(
            "mysql", host=parts.hostname, port=port, user=unquote(parts.username or ""),
            password=unquote(parts.password or ""), database=unquote(parts.path.lstrip("/")),
        )
    raise DbUnavailable(mask_url(url), "unsupported URL scheme",
                        hint="use sqlite:////abs/path/file.db or mysql://user:pw@host:3306/db")


def connect(url: str, *, timeout: float = 5, create: bool = True) -> Database:
    """Open a database from its URL.

    Args:
        url: ``sqlite:///PATH`` (see ``parse_url``) or ``mysql://user:pw@host:port/db`` (an empty
            db name connects to the server only).
        timeout: seconds to wait for the connection (SQLite: for a lock).
        create: SQLite: create the file when it does not exist (the daemon's first start, ``sipctl
            db create``); False for everything that only reads or changes rows, so a mistyped URL
            is reported instead of leaving an empty file behind. A directory is never created,
            except the built-in default data directory (``sipd.config.default_db_url``).

    Raises:
        DbUnavailable, DbAccessDenied, DbSchemaMissing (MySQL database absent).
    """
    u = parse_url(url)
    masked = mask_url(url)
    if u.scheme == "sqlite":
        from .sqlite import SqliteDatabase

        return SqliteDatabase(u.path, url_masked=masked, timeout=timeout, create=create)
    from .mysql import MysqlDatabase

    return MysqlDatabase(host=u.host, port=u.port, user=u.user, password=u.password,
                         database=u.database or None, url_masked=masked, timeout=timeout)
