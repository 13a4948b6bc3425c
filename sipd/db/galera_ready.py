"""What makes sipd's schema safe for several nodes on a Galera cluster: checked, and made so.

Galera replicates InnoDB tables only, and certifies and applies each row change by its primary
key (a table without one is replicated unreliably, a DELETE on it not at all). Two nodes storing
the same new registration at once must also meet on a unique key, or both rows stay: that is the
``location.ruid`` column. ``galera_problems`` says what stands in the way (``sipctl db status``);
``add_location_ruid`` and ``make_galera_ready`` fix sipd's own tables, keeping every row (both are
part of ``migrations.migrate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .schema import BY_NAME, Table, table_columns, table_indexes

if TYPE_CHECKING:
    from .base import Database


def _location_has(db: Database) -> tuple[bool, bool]:
    """Whether ``location`` has the ruid column, and its unique index."""
    index = "location_ruid_idx" if db.dialect == "sqlite" else "ruid_idx"
    return "ruid" in table_columns(db, "location"), index in table_indexes(db, "location")


def has_location_ruid(db: Database) -> bool:
    """``location`` has its ruid column (the daemon then writes it); True without the table."""
    return "location" not in db.tables() or _location_has(db)[0]


def add_location_ruid(db: Database) -> list[tuple[str, str]]:
    """Give a ``location`` table from before it the ruid column and its unique key, keeping the
    data: every row gets its ruid, and of rows with the same one (a binding stored twice) only
    the newest is kept. Part of ``migrate``; does nothing when both are there. Safe to run again
    after an interruption (MySQL commits each ALTER on its own)."""
    from .queries import location_ruid

    if "location" not in db.tables():
        return []
    has_column, has_index = _location_has(db)
    if has_column and has_index:
        return []
    if not has_column:
        ruid = next(c for c in BY_NAME["location"].columns if c.name == "ruid")
        db.execute(f"ALTER TABLE location ADD COLUMN {ruid.ddl(db.dialect)}")
    rows = db.query("SELECT contact_id, username, domain, contact, sip_instance, reg_id FROM location "
                    "ORDER BY contact_id DESC")
    keep: dict[str, int] = {}
    older: list[tuple[int]] = []
    for r in rows:
        ruid = location_ruid(r["username"], r["domain"], r["contact"], r["sip_instance"], r["reg_id"])
        if ruid in keep:
            older.append((r["contact_id"],))
        else:
            keep[ruid] = r["contact_id"]

    def fill(db: Database) -> None:
        if older:
            db.executemany("DELETE FROM location WHERE contact_id = ?", older)
        db.executemany("UPDATE location SET ruid = ? WHERE contact_id = ?", list(keep.items()))

    db.run_transaction(fill)
    if db.dialect == "sqlite":
        db.execute("CREATE UNIQUE INDEX IF NOT EXISTS `location_ruid_idx` ON `location` (`ruid`)")
    else:
        db.execute("ALTER TABLE location ADD UNIQUE KEY `ruid_idx` (`ruid`)")
    return [("location", "ruid unique key added" + (f", {len(older)} duplicate rows removed" if older else ""))]


@dataclass(frozen=True)
class GaleraProblem:
    table: str
    kind: str      # "engine" | "primary key"
    detail: str    # one line for the operator

    def as_dict(self) -> dict[str, str]:
        return {"table": self.table, "kind": self.kind, "problem": self.detail}


def galera_problems(db: Database) -> list[GaleraProblem]:
    """What keeps the tables of this MySQL/MariaDB database (sipd's and any other) from
    replicating safely on a Galera cluster; empty when nothing does, and on SQLite."""
    if db.dialect != "mysql":
        return []
    rows = db.query(
        "SELECT t.table_name AS name, t.engine AS engine, COUNT(c.constraint_name) AS pk "
        "FROM information_schema.tables t LEFT JOIN information_schema.table_constraints c "
        "ON c.table_schema = t.table_schema AND c.table_name = t.table_name "
        "AND c.constraint_type = 'PRIMARY KEY' "
        "WHERE t.table_schema = DATABASE() AND t.table_type = 'BASE TABLE' "
        "GROUP BY t.table_name, t.engine ORDER BY t.table_name")
    problems = []
    for r in rows:
        if str(r["engine"]).lower() != "innodb":
            problems.append(GaleraProblem(r["name"], "engine", f"engine {r['engine']}, not InnoDB"))
        if not int(r["pk"]):
            problems.append(GaleraProblem(r["name"], "primary key", "no primary key"))
    if any(r["name"] == "location" for r in rows) and not all(_location_has(db)):
        problems.append(GaleraProblem("location", "unique key",
                                      "no ruid unique key (two nodes may store one registration twice)"))
    return problems


def primary_key(table: Table) -> tuple[str, ...]:
    return table.primary_key or tuple(c.name for c in table.columns if c.type in ("serial", "bigserial"))


def make_galera_ready(db: Database) -> list[tuple[str, str]]:
    """Convert sipd's tables to InnoDB and add their missing primary keys, keeping every row
    (part of ``migrate``). Other tables in the database are left to the operator."""
    done = []
    for problem in galera_problems(db):
        table = BY_NAME.get(problem.table)
        if table is None:
            continue
        if problem.kind == "engine":
            db.execute(f"ALTER TABLE `{table.name}` ENGINE=InnoDB")
            done.append((table.name, "converted to InnoDB"))
        elif problem.kind == "primary key" and primary_key(table):  # the ruid key: add_location_ruid
            cols = ", ".join(f"`{c}`" for c in primary_key(table))
            db.execute(f"ALTER TABLE `{table.name}` ADD PRIMARY KEY ({cols})")
            done.append((table.name, f"primary key added ({', '.join(primary_key(table))})"))
    return done
