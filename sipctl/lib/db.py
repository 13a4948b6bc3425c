"""Database set-up for sipctl: sessions with friendly errors, create/status/migrate/drop.

No Typer or rich here: functions return plain data and raise ``SipctlError`` subclasses.
``sipd.db`` (and with it PyMySQL) is imported inside functions so ``sipctl --help`` stays fast.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DbError, ExistsError, ExitStatus, SipctlError, UsageError

if TYPE_CHECKING:
    from sipd.db import Database

_IDENT = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


def friendly(exc: Exception) -> SipctlError:
    """Turn a ``sipd.db`` error into the sipctl error (message, hint, exit code) for it."""
    from sipd.db import errors as e

    if isinstance(exc, e.DbIntegrityError):
        return ExistsError(f"already exists: {exc.message}", hint=exc.hint)
    if isinstance(exc, e.DbError):
        return DbError(exc.message, hint=exc.hint)
    return SipctlError(str(exc))


@contextmanager
def session(url: str, timeout: float = 5.0, *, create: bool = False) -> Iterator[Database]:
    """Open the database for one command; database errors become one-line sipctl errors.

    Only ``db create`` passes ``create``: every other command reports a missing SQLite file (a
    typo in the URL, a database not created yet) instead of leaving an empty one behind."""
    from sipd.db import DbError as Err
    from sipd.db import connect

    try:
        db = connect(url, timeout=timeout, create=create)
    except Err as exc:
        raise friendly(exc) from None
    try:
        yield db
    except Err as exc:
        raise friendly(exc) from None
    finally:
        db.close()


def env_session(env: Any) -> Any:
    """``session`` for the configured database (``env.config.database``)."""
    conf = env.config.database
    return session(conf.url, conf.connect_timeout)


# ---------------------------------------------------------------------------------------------

@dataclass
class CreateReport:
    url: str
    backend: str
    items: list[dict[str, str]] = field(default_factory=list)   # {"kind", "name", "state"}
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, name: str, state: str) -> None:
        self.items.append({"kind": kind, "name": name, "state": state})

    @property
    def changed(self) -> bool:
        return any(i["state"] not in ("exists", "skipped") for i in self.items)

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "backend": self.backend, "changed": self.changed,
                "items": self.items, "notes": self.notes}


def create(url: str, *, admin_url: str | None = None, ro_user: str | None = None,
           ro_password: str | None = None, ro_url: str = "", timeout: float = 5.0) -> CreateReport:
    """Create the database (MySQL with an admin URL: database, users, grants) and all tables.

    Idempotent: what exists is reported as such and left untouched.
    """
    from sipd.db import mask_url, parse_url, schema
    from sipd.db import DbError as Err

    try:
        target = parse_url(url)
    except Err as exc:
        raise friendly(exc) from None
    report = CreateReport(mask_url(url), target.scheme)
    if target.scheme == "sqlite":
        if admin_url:
            report.notes.append("--admin-url is ignored for SQLite")
        import os

        existed = target.path == ":memory:" or os.path.exists(target.path)
        report.add("file", target.path, "exists" if existed else "created")
    elif admin_url:
        _create_mysql_server_side(target, admin_url, ro_user, ro_password, ro_url, timeout, report)
    elif not target.database:
        raise UsageError(f"database.url {mask_url(url)} names no database",
                         hint="write mysql://user:pw@host:3306/sipd")
    with session(url, timeout, create=True) as db:
        for name, state in schema.create_all(db):
            report.add("table", name, state)
    return report


def _create_mysql_server_side(target: Any, admin_url: str, ro_user: str | None, ro_password: str | None,
                              ro_url: str, timeout: float, report: CreateReport) -> None:
    from sipd.db import DbError as Err
    from sipd.db import parse_url

    try:
        admin = parse_url(admin_url)
    except Err as exc:
        raise friendly(exc) from None
    if admin.scheme != "mysql":
        raise UsageError("--admin-url must be a mysql:// URL", hint="e.g. --admin-url mysql://root@localhost")
    dbname = target.database
    if not dbname or not _IDENT.match(dbname):
        raise UsageError(f"database name {dbname!r} in database.url is empty or not a plain identifier",
                         hint="use letters, digits and _ (e.g. mysql://sipd:pw@host/sipd)")
    if ro_url and not ro_user:
        ro = parse_url(ro_url)
        ro_user, ro_password = ro.user, ro_password or ro.password
    ro_user = ro_user or f"{dbname}_ro"
    for name in (target.user, ro_user):
        if not name or len(name) > 80 or "'" in name or "\\" in name:
            raise UsageError(f"invalid MySQL user name {name!r}", hint="use letters, digits and _")
    generated = False
    if ro_password is None:
        ro_password = secrets.token_urlsafe(12)
        generated = True

    server = admin.with_database("")
    with session(server, timeout) as adb:
        row = adb.query_one("SELECT DEFAULT_CHARACTER_SET_NAME AS cs FROM information_schema.SCHEMATA "
                            "WHERE SCHEMA_NAME = ?", (dbname,))
        if row is None:
            adb.execute(f"CREATE DATABASE `{dbname}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            report.add("database", dbname, "created")
        else:
            report.add("database", dbname, "exists")
            if row["cs"] != "utf8mb4":
                report.notes.append(f"database {dbname} uses charset {row['cs']}, not utf8mb4")
        users = [(target.user, target.password, "ALL PRIVILEGES", "read-write"),
                 (ro_user, ro_password, "SELECT", "read-only")]
        for user, password, privilege, role in users:
            if user == admin.user:
                report.add(f"user ({role})", user, "skipped")
                report.notes.append(f"{role} user {user} is the admin user; not created or granted")
                continue
            created_any = False
            for host in ("%", "localhost"):
                who = f"'{user}'@'{host}'"
                exists = adb.query_one("SELECT 1 AS x FROM mysql.user WHERE User = ? AND Host = ?", (user, host))
                if exists:
                    report.add(f"user ({role})", who, "exists")
                else:
                    adb.execute("CREATE USER ?@? IDENTIFIED BY ?", (user, host, password or ""))
                    report.add(f"user ({role})", who, "created")
                    created_any = True
                grants = adb.query("SHOW GRANTS FOR ?@?", (user, host))
                on_db = [g for g in grants for v in g.values() if f"ON `{dbname}`.*" in str(v)]
                if on_db:
                    report.add("grant", f"{privilege} on {dbname} to {who}", "exists")
                else:
                    adb.execute(f"GRANT {privilege} ON `{dbname}`.* TO ?@?", (user, host))
                    report.add("grant", f"{privilege} on {dbname} to {who}", "granted")
            if role == "read-only" and created_any and generated:
                report.notes.append(
                    f"read-only user {ro_user} password: {ro_password} "
                    f"(put it in database.ro_url; it is not stored anywhere)")
            if role == "read-write" and created_any and not password:
                report.notes.append(f"read-write user {user} has no password; set one in database.url")


def status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """Tables, stored and expected versions, and what is missing; on MySQL/MariaDB whether the
    tables are ready for a Galera cluster (``galera_ready``, ``galera_problems``), and on a
    Galera node the cluster's state as that node sees it (``galera``, else None)."""
    import os

    from sipd.db import DbError as Err
    from sipd.db import cluster, galera_ready, mask_url, parse_url, schema

    try:
        target = parse_url(url)
    except Err as exc:
        raise friendly(exc) from None
    if target.scheme == "sqlite" and target.path != ":memory:" and not os.path.exists(target.path):
        # not created yet: every table is missing (said without leaving an empty file behind)
        rows, backend = [schema.TableStatus(t.name, t.version, False, None) for t in schema.TABLES], "sqlite"
        problems, galera = [], None
        if not os.path.isdir(os.path.dirname(target.path)):
            with session(url, timeout):  # raises the "directory does not exist" error with its hint
                pass
    else:
        with session(url, timeout) as db:
            galera = cluster.galera_status(db)
            if galera is not None and not galera["ready"]:  # it answers SHOW only: say what it sees
                return {"url": mask_url(url), "backend": db.dialect, "tables": [], "missing": [],
                        "galera_ready": None, "galera_problems": [], "galera": galera, "ok": False}
            rows = schema.status(db)
            backend = db.dialect
            problems = galera_ready.galera_problems(db)
    tables = [{"name": s.name, "expected": s.expected, "version": s.version, "state": s.state} for s in rows]
    missing = [t["name"] for t in tables if t["state"] == "missing"]
    ours = [p for p in problems if p.table in schema.BY_NAME]  # what sipctl db migrate fixes
    return {"url": mask_url(url), "backend": backend, "tables": tables, "missing": missing,
            "galera_ready": None if backend == "sqlite" else not problems,
            "galera_problems": [p.as_dict() for p in problems], "galera": galera,
            "ok": all(t["state"] == "ok" for t in tables) and not ours}


def not_serving(st: dict[str, Any]) -> tuple[str, str] | None:
    """(message, hint) when ``status`` found a Galera node that does not serve queries (it lost
    its quorum, or is still joining), else None."""
    g = st["galera"]
    if g is None or g["ready"]:
        return None
    return (f"this Galera node does not serve queries ({g['cluster_status']}, {g['local_state']})",
            "point database.url at a Synced node of the primary component, or restore the cluster's quorum")


def check_writable(url: str, timeout: float = 5.0) -> None:
    """Take the write lock once, changing nothing (what sipd checks at start). Raises DbError."""
    from sipd.db import queries

    with session(url, timeout) as db:
        queries.check_writable(db)


def migrate(url: str, timeout: float = 5.0) -> list[tuple[str, str]]:
    from sipd.db import migrations

    with session(url, timeout) as db:
        return migrations.migrate(db)


def drop(url: str, *, admin_url: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Drop all tables; with an admin URL on MySQL, drop the whole database."""
    from sipd.db import mask_url, parse_url, schema

    target = parse_url(url)
    if admin_url and target.scheme == "mysql":
        if not _IDENT.match(target.database or ""):
            raise UsageError("no database name in database.url")
        admin = parse_url(admin_url)
        with session(admin.with_database(""), timeout) as adb:
            exists = adb.query_one("SELECT 1 AS x FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                                   (target.database,))
            if exists:
                adb.execute(f"DROP DATABASE `{target.database}`")
        return {"url": mask_url(url), "dropped_database": target.database if exists else None, "tables": []}
    with session(url, timeout) as db:
        dropped = schema.drop_all(db)
    return {"url": mask_url(url), "dropped_database": None, "tables": dropped}


__all__ = ["session", "env_session", "friendly", "create", "status", "not_serving", "migrate", "drop",
           "ExitStatus"]
