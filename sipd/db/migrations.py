"""Forward migrations: bring a database written by an older sipd to the current schema, keeping
its rows.

``MIGRATIONS[table]`` is a list of ``Migration(table, from_version, to_version, statements)``;
``migrate()`` applies the ones that lead from the stored version (the ``version`` table) to
``Table.version`` in sipd/db/schema.py, then makes the tables Galera-ready (sipd/db/galera_ready.py:
the location ruid key, InnoDB, primary keys). MySQL commits each ALTER on its own, so every step
checks what is there first: a migration cut short is simply run again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import DbSchemaError, DbSchemaMissing
from .galera_ready import add_location_ruid, make_galera_ready
from .schema import BY_NAME, create_all, status, table_columns, table_indexes

if TYPE_CHECKING:
    from .base import Database


@dataclass(frozen=True)
class Migration:
    """Statements taking ``table`` from ``from_version`` to ``to_version``.

    ``statements`` maps a dialect ("sqlite", "mysql") to SQL strings, or is a callable
    ``fn(db)`` for changes that need data rewriting.
    """

    table: str
    from_version: int
    to_version: int
    statements: dict[str, Sequence[str]] | Callable[[Database], None] = field(default_factory=dict)

    def apply(self, db: Database) -> None:
        if callable(self.statements):
            self.statements(db)
            return
        for sql in self.statements.get(db.dialect, ()):
            db.execute(sql)


def add_index(db: Database, table: str, name: str) -> None:
    """Create the index ``name`` of ``table`` as declared in TABLES, unless it exists."""
    ix = next(i for i in BY_NAME[table].indexes if i.name == name)
    full = f"{table}_{name}" if db.dialect == "sqlite" else name
    if full in table_indexes(db, table):
        return
    cols = ", ".join(f"`{c}`" for c in ix.columns)
    kind = "UNIQUE " if ix.unique else ""
    if db.dialect == "sqlite":
        db.execute(f"CREATE {kind}INDEX IF NOT EXISTS `{full}` ON `{table}` ({cols})")
    else:
        db.execute(f"ALTER TABLE `{table}` ADD {kind}KEY `{full}` ({cols})")


def add_column(db: Database, table: str, name: str) -> None:
    """Add the column ``name`` of ``table`` as declared in TABLES, unless it is there. Each step
    checks first because MySQL commits every ALTER on its own: a migration cut short is run again."""
    if name not in table_columns(db, table):
        column = next(c for c in BY_NAME[table].columns if c.name == name)
        db.execute(f"ALTER TABLE `{table}` ADD COLUMN {column.ddl(db.dialect)}")


def _dialog_owner(db: Database) -> None:
    """dialog 12 -> 13: the owner column ('' for the rows there: the calls of the one node that
    ran before there was a cluster; a node of a cluster takes them over as a dead node's), and
    the Call-ID index a node looks a BYE's call up by when it does not hold it."""
    add_column(db, "dialog", "owner")
    add_index(db, "dialog", "owner_idx")
    add_index(db, "dialog", "callid_idx")


def _cdrs_unique(db: Database) -> None:
    """cdrs 1 -> 2: the unique key on the dialog's identity. Of CDRs stored twice for one dialog
    (a batch written again after a crash) the first is kept."""
    db.execute("DELETE FROM cdrs WHERE id NOT IN (SELECT id FROM (SELECT MIN(id) AS id FROM cdrs "
               "GROUP BY callid, from_tag, to_tag) AS kept)")
    add_index(db, "cdrs", "dialog_idx")


def _location_node_id(db: Database) -> None:
    """location 1013 -> 1014: ``node_id``, the node that holds a binding's connection or NAT
    pinhole. The rows there get NULL: a binding stored before it is reached directly, as it was."""
    add_column(db, "location", "node_id")
    add_index(db, "location", "node_idx")


def _record_id(table: str) -> Callable[[Database], None]:
    """acc 7 -> 8, missed_calls 5 -> 6: the record_id column (NULL for the rows there) and its
    unique key."""

    def step(db: Database) -> None:
        add_column(db, table, "record_id")
        add_index(db, table, "record_idx")

    return step


#: Forward migrations, per table, in order.
MIGRATIONS: dict[str, list[Migration]] = {
    "dialog": [Migration("dialog", 12, 13, _dialog_owner)],
    "cdrs": [Migration("cdrs", 1, 2, _cdrs_unique)],
    "acc": [Migration("acc", 7, 8, _record_id("acc"))],
    "missed_calls": [Migration("missed_calls", 5, 6, _record_id("missed_calls"))],
    "location": [Migration("location", 1013, 1014, _location_node_id)],
}


def migrate(db: Database, migrations: dict[str, list[Migration]] | None = None) -> list[tuple[str, str]]:
    """Bring every table to its expected version: create missing ones, apply forward migrations.

    Returns:
        ``(table, what was done)`` for each table that changed; empty when already current.

    Raises:
        DbSchemaMissing: the version table does not exist (nothing created yet).
        DbSchemaError: a table is newer than this program, or no migration path exists.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    present = db.tables()
    if "version" not in present:
        raise DbSchemaMissing("version", "the database has no tables yet")
    done: list[tuple[str, str]] = []
    for st in status(db):
        table = BY_NAME[st.name]
        if not st.present:
            create_all(db, [table])
            done.append((st.name, f"created at version {table.version}"))
            continue
        if st.name == "version":
            continue
        version = st.version if st.version is not None else table.version
        if st.version is None:
            db.execute("INSERT INTO version (table_name, table_version) VALUES (?, ?)",
                       (st.name, table.version))
            done.append((st.name, f"version row added ({table.version})"))
            continue
        if version > table.version:
            raise DbSchemaError(
                f"table {st.name} is at version {version}, newer than this sipd knows ({table.version})",
                hint="upgrade sipd/sipctl to the release that created this database")
        start = version
        while version < table.version:
            step = next((m for m in migrations.get(st.name, []) if m.from_version == version), None)
            if step is None:
                raise DbSchemaError(f"no migration for table {st.name} from version {version}",
                                    hint="recreate the table, or upgrade through intermediate releases")
            with db.transaction():
                step.apply(db)
                db.execute("UPDATE version SET table_version = ? WHERE table_name = ?",
                           (step.to_version, st.name))
            version = step.to_version
        if start != version:
            done.append((st.name, f"migrated {start} -> {version}"))
    return done + add_location_ruid(db) + make_galera_ready(db)
