"""Database errors as typed exceptions, each with one readable line and a hint.

Backends translate their driver's exceptions into these; nothing above ``sipd/db`` sees a
``sqlite3`` or ``pymysql`` exception. Messages never contain a password (URLs are masked).
"""

from __future__ import annotations


class DbError(Exception):
    """Base class: ``message`` is one line, ``hint`` says what to do (may be empty)."""

    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint


class DbUnavailable(DbError):
    """The server cannot be reached or the file cannot be opened."""

    def __init__(self, url_masked: str, reason: str, *, hint: str | None = None):
        self.url_masked = url_masked
        super().__init__(
            f"cannot connect to database {url_masked} (config key database.url): {reason}",
            hint=hint if hint is not None else
            "check that the database server is running and database.url in sipd.toml (or --db-url)",
        )


class DbAccessDenied(DbError):
    default_hint = "check the user and password in database.url, and the grants (sipctl db create --admin-url ...)"


class DbSchemaMissing(DbError):
    """A table (or the whole database) does not exist."""

    default_hint = "run sipctl db create"

    def __init__(self, table: str, message: str | None = None, *, hint: str | None = None):
        self.table = table
        super().__init__(message or f"table {table!r} does not exist", hint=hint)


class DbIntegrityError(DbError):
    """A unique key or constraint was violated (e.g. a duplicate row)."""


class DbConflict(DbError):
    """The transaction was rolled back because another one changed the same rows first: a
    deadlock or lock wait timeout on one server, or a Galera certification failure (another node
    committed a write to the same row). Running the whole transaction again is safe and usually
    succeeds; ``Database.run_transaction`` does so a bounded number of times."""

    default_hint = "retry; another writer changed the same rows at the same time"


class DbSchemaError(DbError):
    """The schema is older or newer than this program expects."""

    default_hint = "run sipctl db migrate"
