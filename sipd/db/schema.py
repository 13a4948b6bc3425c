"""The one schema, rendered as DDL for SQLite and MySQL; create, status, migrate, drop.

Table and column names follow OpenSIPS 3.x (reference/opensips.md §4) so that an operator can move
data over with plain SQL, and so OpenSIPS's tools recognise the tables. Each table has a row in
``version`` (``table_name``, ``table_version``) carrying the OpenSIPS version number where the table
comes from OpenSIPS; our own tables (``cdrs``, ``stats_history``) start at 1.

Deliberate differences from OpenSIPS, each for a reason:
- ``dialplan.match_exp``/``subst_exp``/``repl_exp`` are CHAR(255), not 64/64/32: real rules with a
  domain in them do not fit in 32 characters (the report's repl_exp is 19, its match_exp 49).
- ``location.reg_id`` (RFC 5626 outbound) is kept as a column instead of inside ``kv_store``.
- ``location`` is at version 1014, one past OpenSIPS's 1013: ``node_id`` names the sipd node that
  holds the binding's connection or NAT pinhole (several nodes, docs/several-nodes.md).
- ``location.ruid`` is a digest of the binding (OpenSIPS 2.2's unique key of that name, absent from
  3.x), unique; nullable, so rows written without it (by other tools) never collide. A database from
  before it gets it from ``migrate`` (``add_location_ruid``) with the table version kept.
- ``acc``/``missed_calls`` carry ``caller``/``callee`` URIs, which OpenSIPS operators always add by
  hand (``extra_fields``).
- ``dialog.owner`` names the node that holds the call (several nodes on one database), which
  OpenSIPS keeps in its clusterer instead; the table is at version 13, one past OpenSIPS's 12.
- ``acc``/``missed_calls`` carry ``record_id`` (unique) so that a record written twice is stored
  once; they are at versions 8 and 6, one past OpenSIPS's.

Forward migrations from older versions, keeping the rows, are in sipd/db/migrations.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Database

_AUTO = object()  # default: '' for strings, 0 for numbers when NOT NULL; none when nullable
DATETIME_DEFAULT = "1900-01-01 00:00:01"


@dataclass(frozen=True)
class Column:
    name: str
    type: str                 # serial | bigserial | int | uint | bigint | float | char(N) | text | datetime | blob
    nullable: bool = False
    default: Any = _AUTO      # None = no DEFAULT clause

    def ddl(self, dialect: str) -> str:
        t = self.type
        if t in ("serial", "bigserial"):
            if dialect == "sqlite":
                return f"`{self.name}` INTEGER PRIMARY KEY AUTOINCREMENT"
            base = "INT" if t == "serial" else "BIGINT"
            return f"`{self.name}` {base} UNSIGNED AUTO_INCREMENT PRIMARY KEY"
        sql_type = _type(t, dialect)
        parts = [f"`{self.name}`", sql_type]
        parts.append("NULL" if self.nullable else "NOT NULL")
        default = self.default
        if default is _AUTO:
            if self.nullable:
                default = None
            elif t.startswith("char"):
                default = ""
            elif t in ("int", "uint", "bigint", "float"):
                default = 0
            elif t == "datetime":
                default = DATETIME_DEFAULT
            else:
                default = None  # TEXT/BLOB cannot have a DEFAULT in older MySQL
        if default is not None:
            parts.append("DEFAULT " + (f"'{default}'" if isinstance(default, str) else repr(default)))
        return " ".join(parts)


def _type(t: str, dialect: str) -> str:
    if dialect == "sqlite":
        if t in ("int", "uint", "bigint"):
            return "INTEGER"
        if t == "float":
            return "REAL"
        if t.startswith("char"):
            return "VARCHAR" + t[4:]
        return {"text": "TEXT", "datetime": "TEXT", "blob": "BLOB"}[t]
    if t.startswith("char"):
        return "VARCHAR" + t[4:]
    return {"int": "INT", "uint": "INT UNSIGNED", "bigint": "BIGINT", "float": "FLOAT",
            "text": "TEXT", "datetime": "DATETIME", "blob": "BLOB"}[t]


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    version: int
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...] = ()
    primary_key: tuple[str, ...] = ()   # for tables without a serial column (dialog)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self, dialect: str) -> list[str]:
        """CREATE statements (idempotent: IF NOT EXISTS) for this table in ``dialect``."""
        cols = [c.ddl(dialect) for c in self.columns]
        if self.primary_key:
            cols.append("PRIMARY KEY (" + ", ".join(f"`{c}`" for c in self.primary_key) + ")")
        if dialect == "mysql":
            for ix in self.indexes:
                kind = "UNIQUE KEY" if ix.unique else "KEY"
                cols.append(f"{kind} `{ix.name}` (" + ", ".join(f"`{c}`" for c in ix.columns) + ")")
            return [f"CREATE TABLE IF NOT EXISTS `{self.name}` (\n  " + ",\n  ".join(cols)
                    + "\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"]
        stmts = [f"CREATE TABLE IF NOT EXISTS `{self.name}` (\n  " + ",\n  ".join(cols) + "\n)"]
        for ix in self.indexes:
            kind = "UNIQUE INDEX" if ix.unique else "INDEX"
            stmts.append(f"CREATE {kind} IF NOT EXISTS `{self.name}_{ix.name}` ON `{self.name}` ("
                         + ", ".join(f"`{c}`" for c in ix.columns) + ")")
        return stmts


def C(name: str, type: str, nullable: bool = False, default: Any = _AUTO) -> Column:  # noqa: N802
    return Column(name, type, nullable, default)


def _acc_columns(with_duration: bool) -> tuple[Column, ...]:
    cols = [
        C("id", "serial"), C("method", "char(16)"), C("from_tag", "char(64)"), C("to_tag", "char(64)"),
        C("callid", "char(255)"), C("sip_code", "char(3)"), C("sip_reason", "char(128)"),
        C("time", "datetime", default=None),
    ]
    if with_duration:
        cols += [C("duration", "uint"), C("ms_duration", "uint")]
    cols += [C("setuptime", "uint"), C("created", "datetime", nullable=True),
             C("caller", "char(255)"), C("callee", "char(255)"),
             # the record's own name, node/start/number (acc_writer: stored once however often a
             # batch is written again); NULL in rows other programs write
             C("record_id", "char(64)", nullable=True)]
    return tuple(cols)


# OpenSIPS gives this table no primary key (only the unique t_name_idx); Galera needs one on
# every table, so table_name is also the primary key (migrate() adds it to an older database).
VERSION_TABLE = Table("version", 1, (
    C("table_name", "char(32)", default=None), C("table_version", "uint"),
), (Index("t_name_idx", ("table_name",), unique=True),), primary_key=("table_name",))

TABLES: tuple[Table, ...] = (
    VERSION_TABLE,
    Table("subscriber", 8, (
        C("id", "serial"), C("username", "char(64)"), C("domain", "char(64)"),
        C("password", "char(64)"),  # plaintext only with --store-plaintext, else ''
        C("email_address", "char(128)"), C("ha1", "char(64)"), C("ha1_sha256", "char(64)"),
        C("ha1_sha512t256", "char(64)"), C("rpid", "char(128)", nullable=True),
    ), (Index("account_idx", ("username", "domain"), unique=True), Index("username_idx", ("username",)))),
    Table("dbaliases", 2, (
        C("id", "serial"), C("alias_username", "char(64)"), C("alias_domain", "char(64)"),
        C("username", "char(64)"), C("domain", "char(64)"),
    ), (Index("alias_idx", ("alias_username", "alias_domain"), unique=True),
        Index("target_idx", ("username", "domain")))),
    Table("domain", 4, (
        C("id", "serial"), C("domain", "char(64)"), C("attrs", "char(255)", nullable=True),
        C("accept_subdomain", "uint"), C("last_modified", "datetime"),
    ), (Index("domain_idx", ("domain",), unique=True),)),
    Table("location", 1014, (
        C("contact_id", "bigserial"), C("username", "char(64)"), C("domain", "char(64)", nullable=True),
        C("contact", "text"), C("received", "char(255)", nullable=True),
        C("path", "char(255)", nullable=True),
        C("expires", "uint"),  # unix time; 0 = permanent
        C("q", "float", default=1.0), C("callid", "char(255)", default="Default-Call-ID"),
        C("cseq", "int", default=13), C("last_modified", "datetime"), C("flags", "int"),
        C("cflags", "char(255)", nullable=True), C("user_agent", "char(255)"),
        C("socket", "char(64)", nullable=True), C("methods", "int", nullable=True),
        C("sip_instance", "char(255)", nullable=True), C("kv_store", "text", nullable=True),
        C("attr", "char(255)", nullable=True), C("reg_id", "uint"),
        # the binding's key (queries.location_ruid: a digest of its AOR and contact, or of its
        # +sip.instance and reg-id), unique so that two nodes storing the same new binding at
        # once store one row: the second to commit loses and is run again (OpenSIPS 2.2's ruid)
        C("ruid", "char(64)", nullable=True),
        # the sipd node that holds the binding's TCP/TLS connection or NAT pinhole, which only
        # it can reach ([cluster] node_id); NULL when any node can send to the contact itself
        C("node_id", "char(64)", nullable=True),
    ), (Index("account_idx", ("username", "domain")), Index("ruid_idx", ("ruid",), unique=True),
        Index("node_idx", ("node_id",)))),
    Table("dialplan", 5, (
        C("id", "serial"), C("dpid", "int", default=None), C("pr", "int"),
        C("match_op", "int", default=None), C("match_exp", "char(255)", default=None),
        C("match_flags", "int"), C("subst_exp", "char(255)", nullable=True),
        C("repl_exp", "char(255)", nullable=True), C("timerec", "char(255)", nullable=True),
        C("disabled", "int"), C("attrs", "char(255)", nullable=True),
    ), (Index("dpid_idx", ("dpid",)),)),
    Table("acc", 8, _acc_columns(True), (Index("callid_idx", ("callid",)),
                                          Index("record_idx", ("record_id",), unique=True))),
    Table("missed_calls", 6, _acc_columns(False), (Index("callid_idx", ("callid",)),
                                                   Index("record_idx", ("record_id",), unique=True))),
    Table("dialog", 13, (
        C("dlg_id", "bigint", default=None), C("callid", "char(255)"), C("from_uri", "char(255)"),
        C("from_tag", "char(64)"), C("to_uri", "char(255)"), C("to_tag", "char(64)"),
        C("mangled_from_uri", "char(255)", nullable=True), C("mangled_to_uri", "char(255)", nullable=True),
        C("caller_cseq", "char(11)"), C("callee_cseq", "char(11)"),
        C("caller_ping_cseq", "uint"), C("callee_ping_cseq", "uint"),
        C("caller_route_set", "text", nullable=True), C("callee_route_set", "text", nullable=True),
        C("caller_contact", "char(255)", nullable=True), C("callee_contact", "char(255)", nullable=True),
        C("caller_sock", "char(64)"), C("callee_sock", "char(64)"),
        C("state", "uint"), C("start_time", "uint"), C("timeout", "uint"),
        C("vars", "blob", nullable=True), C("profiles", "text", nullable=True),
        C("script_flags", "char(255)", nullable=True), C("module_flags", "uint"), C("flags", "uint"),
        C("rt_on_answer", "char(64)", nullable=True), C("rt_on_timeout", "char(64)", nullable=True),
        C("rt_on_hangup", "char(64)", nullable=True),
        # the [cluster] node_id of the node that holds the call ('' without a cluster): only it fires
        # the call's timers, and a node that finds the owner dead takes the row over
        C("owner", "char(64)"),
    ), (Index("owner_idx", ("owner",)), Index("callid_idx", ("callid",))), primary_key=("dlg_id",)),
    Table("cdrs", 2, (
        C("id", "bigserial"), C("callid", "char(255)"), C("from_tag", "char(64)"),
        C("to_tag", "char(64)"), C("caller", "char(255)"), C("callee", "char(255)"),
        C("start_time", "datetime"), C("answer_time", "datetime", nullable=True),
        C("end_time", "datetime", nullable=True),
        C("setup_time", "uint"),   # seconds from INVITE to the final response
        C("duration", "uint"),     # seconds from answer to end (0 when not answered)
        C("ms_duration", "uint"),
        C("sip_code", "char(3)"), C("sip_reason", "char(128)"),
        C("status", "char(16)"),      # answered | missed | failed | cancelled
        C("end_reason", "char(32)"),  # caller-bye | callee-bye | timeout | ...
    ), (Index("callid_idx", ("callid",)), Index("start_idx", ("start_time",)),
        # one CDR per dialog (RFC 3261 §12: Call-ID and both tags), whichever node ends the call
        # and however often a batch is written again: the second insert finds the key and stores
        # nothing (sipd/services/acc_writer.py)
        Index("dialog_idx", ("callid", "from_tag", "to_tag"), unique=True))),
    Table("stats_history", 1, (
        C("id", "bigserial"), C("time", "uint"),  # unix time of the sample
        C("name", "char(64)"), C("value", "bigint"),
        C("box", "char(64)"),  # which sipd node sampled it ('' = this one); contract §5
    ), (Index("name_time_idx", ("name", "time")),)),
    Table("presentity", 5, (
        C("id", "serial"), C("username", "char(64)"), C("domain", "char(64)"),
        C("event", "char(64)"), C("etag", "char(64)"), C("expires", "int"),
        C("received_time", "int"), C("body", "blob", nullable=True),
        C("extra_hdrs", "blob", nullable=True), C("sender", "char(255)", nullable=True),
        C("priority", "int"),
    ), (Index("presentity_idx", ("username", "domain", "event", "etag"), unique=True),)),
    Table("active_watchers", 12, (
        C("id", "serial"), C("presentity_uri", "char(255)"), C("to_user", "char(64)"),
        C("to_domain", "char(64)"), C("watcher_username", "char(64)"),
        C("watcher_domain", "char(64)"), C("event", "char(64)", default="presence"),
        C("event_id", "char(64)", nullable=True), C("to_tag", "char(64)"), C("from_tag", "char(64)"),
        C("callid", "char(255)"), C("local_cseq", "int"), C("remote_cseq", "int"),
        C("contact", "char(255)"), C("record_route", "text", nullable=True), C("expires", "int"),
        C("status", "int", default=2), C("reason", "char(64)", nullable=True), C("version", "int"),
        C("socket_info", "char(64)"), C("local_contact", "char(255)"),
        C("sharing_tag", "char(32)", nullable=True),
    ), (Index("active_watchers_idx", ("presentity_uri", "callid", "to_tag", "from_tag"), unique=True),)),
    Table("watchers", 4, (
        C("id", "serial"), C("presentity_uri", "char(255)"), C("watcher_username", "char(64)"),
        C("watcher_domain", "char(64)"), C("event", "char(64)", default="presence"),
        C("status", "int"), C("reason", "char(64)", nullable=True), C("inserted_time", "int"),
    ), (Index("watcher_idx", ("presentity_uri", "watcher_username", "watcher_domain", "event"),
              unique=True),)),
    # Accounts of the control panel (sipctl web). Our own table: OpenSIPS CP keeps an unsalted
    # md5 in ocp_admin_privileges; here password is a scrypt string "scrypt$n$r$p$salt$hash".
    # failures/locked_until hold the login lockout in the database, so it holds across panel
    # restarts and across several panel processes.
    Table("web_admin", 1, (
        C("id", "serial"), C("username", "char(64)"), C("password", "char(255)"),
        C("role", "char(16)"),  # read-write | read-only
        C("failures", "uint"), C("locked_until", "uint"),  # unix time; 0 = not locked
        C("created", "datetime"), C("last_login", "datetime", nullable=True),
    ), (Index("username_idx", ("username",), unique=True),)),
    # Who changed what, from where, when, with the value before and after (JSON text), for changes
    # made through the panel and sipctl. Our own table: neither OpenSIPS nor Kamailio keeps one.
    Table("audit", 1, (
        C("id", "bigserial"), C("time", "datetime"),
        C("origin", "char(16)"),   # panel | sipctl | fifo | http
        C("actor", "char(64)"),    # the panel admin, the Unix user running sipctl or owning a FIFO reply pipe
        C("source", "char(128)"),  # the browser's address, or host and terminal of sipctl
        C("action", "char(32)"),   # "domain add", "user rm", "mi ul_rm", ...
        C("object", "char(255)"),  # what it acted on: a domain, user@domain, rule 7, ...
        C("value_before", "text", nullable=True), C("value_after", "text", nullable=True),  # JSON
    ), (Index("time_idx", ("time",)),)),
    # The sipd nodes sharing this database (our own table): each node writes its row at start and
    # its heartbeat while it runs; `sipctl cluster status` calls a node dead when its heartbeat is
    # older than the timeout. Times are unix seconds, comparable across nodes in any time zone.
    Table("cluster_node", 1, (
        C("node_id", "char(64)", default=None),  # [cluster] node_id: a short name, unique per node
        C("address", "char(255)"),               # where the other nodes reach it (host:port)
        C("started", "uint"), C("last_heartbeat", "uint"),
    ), primary_key=("node_id",)),
    # Bans shared by the nodes of a cluster (our own table): the node that bans an address writes
    # its row, the others read the rows changed since their last look (sipd/services/cluster_bans.py).
    # A lifted ban keeps its row with ``lifted`` set, so a node that missed the unban still learns
    # it; rows long expired or lifted are deleted. Unix seconds; expires 0 = until removed.
    Table("cluster_ban", 1, (
        C("target", "char(64)", default=None),   # an address, or a network in CIDR notation
        C("reason", "char(16)"),                 # flood | auth | scanner | manual
        C("node_id", "char(64)"),                # the node that banned it (or lifted it last)
        C("since", "uint"), C("expires", "uint"), C("lifted", "uint"),
        C("changed", "uint"),                    # when the row was last written: what nodes poll by
    ), (Index("changed_idx", ("changed",)),), primary_key=("target",)),
    # Each node's statistics as of its last heartbeat (JSON object name -> value), which `sipctl
    # stats --node`/`--all` read without reaching the nodes' management sockets.
    Table("cluster_stats", 1, (
        C("node_id", "char(64)", default=None), C("time", "uint"), C("stats", "text"),
    ), primary_key=("node_id",)),
)

BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}


def _names(db: Database, table: str, pragma: str, view: str, column: str) -> set[str]:
    if db.dialect == "sqlite":
        return {r["name"] for r in db.query(f"PRAGMA {pragma}(`{table}`)")}
    return {r["name"] for r in db.query(
        f"SELECT {column} AS name FROM information_schema.{view} "
        "WHERE table_schema = DATABASE() AND table_name = ?", (table,))}


def table_columns(db: Database, table: str) -> set[str]:
    """The columns ``table`` has in the database."""
    return _names(db, table, "table_info", "columns", "column_name")


def table_indexes(db: Database, table: str) -> set[str]:
    """The index names of ``table`` as ``Table.ddl`` writes them (SQLite's carry the table's name)."""
    return _names(db, table, "index_list", "statistics", "index_name")


# ---------------------------------------------------------------------------------------------
# Operations

@dataclass(frozen=True)
class TableStatus:
    name: str
    expected: int
    present: bool
    version: int | None

    @property
    def state(self) -> str:
        if not self.present:
            return "missing"
        if self.name == "version":
            return "ok"
        if self.version is None:
            return "no version row"
        if self.version < self.expected:
            return "outdated"
        if self.version > self.expected:
            return "newer"
        return "ok"


def _versions(db: Database, present: set[str]) -> dict[str, int]:
    if "version" not in present:
        return {}
    return {r["table_name"]: int(r["table_version"])
            for r in db.query("SELECT table_name, table_version FROM version")}


def status(db: Database) -> list[TableStatus]:
    """One TableStatus per table in TABLES (present, stored version, expected version)."""
    present = db.tables()
    versions = _versions(db, present)
    return [TableStatus(t.name, t.version, t.name in present,
                        1 if t.name == "version" and t.name in present else versions.get(t.name))
            for t in TABLES]


def create_all(db: Database, tables: Sequence[Table] = TABLES) -> list[tuple[str, str]]:
    """Create every missing table and its version row. Idempotent.

    Returns:
        ``(table, "created" | "exists")`` for each table; existing tables are not touched
        (a missing version row of an existing table is added).
    """
    present = db.tables()
    result: list[tuple[str, str]] = []
    with db.transaction():
        for table in tables:
            if table.name in present:
                result.append((table.name, "exists"))
            else:
                for stmt in table.ddl(db.dialect):
                    db.execute(stmt)
                result.append((table.name, "created"))
        versions = _versions(db, db.tables())
        for table in tables:
            if table.name != "version" and table.name not in versions:
                db.execute("INSERT INTO version (table_name, table_version) VALUES (?, ?)",
                           (table.name, table.version))
    return result


def drop_all(db: Database) -> list[str]:
    """Drop every table of the schema that exists. Returns the names dropped."""
    present = db.tables()
    dropped = []
    for table in reversed(TABLES):
        if table.name in present:
            db.execute(f"DROP TABLE IF EXISTS `{table.name}`")
            dropped.append(table.name)
    return dropped
