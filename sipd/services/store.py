"""The daemon's database I/O: loading caches and persisting location, off the event loop.

All calls run on one dedicated worker thread (SQLite connections belong to their thread; one
thread also keeps writes ordered). Location writes are *batched*: every binding change queued while
a commit is running goes into the next transaction together, and each waiter's future resolves
when its change is committed (write-through: the 200 is sent then).

An AOR is written whole (its rows deleted, its bindings inserted) unless the change is a *refresh*:
the same bindings as the ones the database is known to hold, some of them with new values in
columns no index covers (expiry, CSeq, Call-ID, time, ...). Those are one ``UPDATE`` per binding,
found by its ``ruid``: one table page written instead of the table's and three indexes' pages,
a quarter of the database's work for the REGISTERs an idle server mostly gets. A
refresh whose row is gone (deleted by another process or node) is written whole instead, in the
same transaction.

On SQLite a lone refresh (nothing else queued or being written) is that one UPDATE run at once on
the event loop, on a connection of its own that never waits for a lock: handing a 40 µs statement
to the thread and back costs several times the statement (two thread wake-ups and GIL hand-overs
for each REGISTER of an idle server). Whenever that connection would wait (another writer holds the
lock) or fails, the write takes the thread's way with its retries and error handling. It never
checkpoints the WAL either (a checkpoint may fsync): the thread does, after every
``CHECKPOINT_EVERY`` of these refreshes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..db.base import storable
from ..db.queries import location_ruid
from .dialplan import rule_from_row
from .location import Contact

if TYPE_CHECKING:
    from ..db import Database

logger = logging.getLogger(__name__)

_INSERT_COLUMNS = (
    "username", "domain", "contact", "received", "path", "expires", "q", "callid", "cseq",
    "last_modified", "flags", "cflags", "user_agent", "socket", "methods", "sip_instance",
    "kv_store", "reg_id", "ruid", "node_id",
)


def _insert_sql(columns: tuple[str, ...]) -> str:
    return f"INSERT INTO location ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_INSERT_SQL = _insert_sql(_INSERT_COLUMNS)

#: refreshes written on the event loop between two WAL checkpoints run by the database thread
#: (SQLite's own automatic checkpoint comes every 1000 pages; one refresh writes about one page)
CHECKPOINT_EVERY = 1000

#: the columns a refresh may leave alone and must: the binding's key and the indexed ones (a
#: binding that changes one of them is written whole)
_KEY_COLUMNS = ("username", "domain", "ruid", "node_id")


def _update_sql(columns: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """The refresh ``UPDATE`` over ``columns`` (the ones the table has) and where each of its
    parameters is in a ``contact_row``: the values set, then the ruid."""
    changing = [c for c in columns if c not in _KEY_COLUMNS]
    sql = f"UPDATE location SET {', '.join(f'{c} = ?' for c in changing)} WHERE ruid = ?"
    return sql, tuple(_INSERT_COLUMNS.index(c) for c in (*changing, "ruid"))


def contact_row(aor: str, c: Contact) -> tuple:
    user, _, domain = aor.rpartition("@")
    kv = json.dumps({"temp_gruu": c.temp_gruu}) if c.temp_gruu else None
    return (
        user, domain, c.uri, c.received, c.path, int(c.expires), -1.0 if c.q is None else c.q,
        c.call_id, c.cseq, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.last_modified or time.time())),
        c.flags, c.cflags, c.user_agent, c.socket, c.methods, c.instance, kv, c.reg_id or 0,
        location_ruid(user, domain, c.uri, c.instance, c.reg_id), c.node_id,
    )


def contact_from_row(row: dict[str, Any]) -> tuple[str, Contact]:
    kv: dict[str, Any] = {}
    if row.get("kv_store"):
        try:
            kv = json.loads(row["kv_store"])
        except ValueError:
            kv = {}
    q = row.get("q")
    c = Contact(
        uri=row["contact"], expires=float(row["expires"] or 0), q=None if q is None or q < 0 else float(q),
        call_id=row.get("callid") or "", cseq=int(row.get("cseq") or 0), user_agent=row.get("user_agent") or "",
        received=row.get("received"), path=row.get("path"), socket=row.get("socket") or "",
        flags=int(row.get("flags") or 0), cflags=row.get("cflags") or "", methods=row.get("methods"),
        instance=row.get("sip_instance"), reg_id=int(row["reg_id"]) if row.get("reg_id") else None,
        state="CS_SYNC", temp_gruu=kv.get("temp_gruu"), node_id=row.get("node_id") or None,
    )
    return f"{row['username']}@{(row.get('domain') or '').lower()}", c


class Store:
    """Owns the Database connection on a worker thread."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout
        self.db: Database | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sipd-db")
        #: AOR -> (its full binding list, the bindings a refresh UPDATE writes or None to write the
        #: AOR whole, the futures waiting for it)
        self._queue: dict[str, tuple[list[Contact], list[Contact] | None, list[asyncio.Future]]] = {}
        self._writer: asyncio.Task | None = None
        self.commits = 0
        self.failures = 0
        self.ruid = True  # the location table has its ruid column (written, so each binding is stored once)
        #: the columns of ``location`` this store writes: all of them, but on a MySQL table from
        #: before a column (not migrated yet) the ones it has
        self.columns = _INSERT_COLUMNS
        self._insert = _INSERT_SQL
        self._update, self._update_index = _update_sql(_INSERT_COLUMNS)
        self._inline: sqlite3.Connection | None = None  # SQLite: lone refreshes on the loop
        self._inline_writes = 0

    async def call(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        """Connect and check that this user can write: a database sipd can never write (read-only
        file, SELECT-only user) stops the start with one line. A write that fails later, while the
        daemon runs, is a database that is down for a while: the registrar serves from memory and
        retries (sipd/services/pipeline.py ``_commit``). Raises sipd.db.DbError."""
        from ..db import connect, queries

        self.db = await self.call(lambda: connect(self.url, timeout=self.timeout))
        await self.call(queries.check_writable, self.db)
        await self.call(self._location_columns)
        path = getattr(self.db, "path", ":memory:")
        if self.db.dialect == "sqlite" and path != ":memory:" and self.ruid:
            self._inline = _inline_connection(path)

    def _location_columns(self) -> None:
        """Which location columns get written. SQLite's table gets the newer columns at start
        (sipd creates that schema itself); a MySQL table from before one is written without it,
        with a warning, until ``sipctl db migrate`` adds it."""
        from ..db import galera_ready, migrations, schema

        assert self.db is not None
        tables = self.db.tables()
        if self.db.dialect == "sqlite" and "location" in tables:
            if "version" in tables:
                migrations.migrate(self.db)
            else:
                galera_ready.add_location_ruid(self.db)
        present = schema.table_columns(self.db, "location") if "location" in tables else set()
        if not present:
            return  # no table yet: created whole (SQLite at start, MySQL by sipctl db create)
        if not present.issuperset(_INSERT_COLUMNS):
            self.columns = tuple(c for c in _INSERT_COLUMNS if c in present)
            self._insert = _insert_sql(self.columns)
            self._update, self._update_index = _update_sql(self.columns)
        self.ruid = "ruid" in present
        if not self.ruid:
            logger.warning("the location table has no ruid column: two nodes storing one new binding at once may "
                           "store it twice; run `sipctl db migrate`")
        if "node_id" not in present:
            logger.warning("the location table has no node_id column: a binding over a connection or a NAT "
                           "pinhole of this node cannot be reached from another node; run `sipctl db migrate`")

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self.db is not None:
            db, self.db = self.db, None
            await self.call(db.close)
        self._executor.shutdown(wait=True)

    # -- loading -----------------------------------------------------------------------------------

    async def load_domains(self) -> dict[str, str | None]:
        from ..db import queries

        return {d: None for d in await self.call(queries.load_domains, self.db)}

    async def load_subscribers(self) -> list[tuple[str, str, str, str]]:
        from ..db import queries

        rows = await self.call(queries.load_subscribers, self.db)
        return [(u, d, v.get("ha1") or "", v.get("ha1_sha256") or "") for (u, d), v in rows.items()]

    async def load_subscriber(self, user: str, domain: str) -> dict[str, str] | None:
        from ..db import queries

        return await self.call(queries.load_subscriber, self.db, user, domain)

    async def load_aliases(self) -> dict[tuple[str, str], tuple[str, str]]:
        from ..db import queries

        return await self.call(queries.load_aliases, self.db)

    async def load_dialplan(self) -> list[Any]:
        from ..db import queries

        return [rule_from_row(r) for r in await self.call(queries.load_dialplan, self.db)]

    async def load_locations(self, now: float) -> list[tuple[str, Contact]]:
        from ..db import queries

        rows = await self.call(lambda: queries.load_locations(self.db, now=now))
        return [contact_from_row(r) for r in rows]

    async def load_aor(self, aor: str, now: float) -> list[Contact]:
        user, _, domain = aor.rpartition("@")

        def q() -> list[dict[str, Any]]:
            return self.db.query(  # type: ignore[union-attr]
                "SELECT * FROM location WHERE username = ? AND domain = ? AND (expires = 0 OR expires > ?)"
                " ORDER BY contact_id", (user, domain, int(now)))

        return [contact_from_row(r)[1] for r in await self.call(q)]

    async def load_owned(self, node_id: str, now: float) -> list[tuple[str, list[Contact]]]:
        """The live bindings ``node_id`` owns (its connections and NAT pinholes), by AOR."""

        def q() -> list[dict[str, Any]]:
            return self.db.query(  # type: ignore[union-attr]
                "SELECT * FROM location WHERE node_id = ? AND (expires = 0 OR expires > ?)", (node_id, int(now)))

        by_aor: dict[str, list[Contact]] = {}
        for row in await self.call(q):
            aor, contact = contact_from_row(row)
            by_aor.setdefault(aor, []).append(contact)
        return list(by_aor.items())

    # -- writing (batched) ---------------------------------------------------------------------

    def save_aor(self, aor: str, contacts: list[Contact], before: list[Contact] | None = None) -> asyncio.Future:
        """Queue the full binding list of ``aor``; the future resolves when it is committed.
        ``before``: the list it replaces in memory, when the change may be a refresh (see the
        module docstring); without it the AOR is written whole."""
        fut = asyncio.get_running_loop().create_future()
        entry = self._queue.get(aor)
        if entry is None:
            refreshed = refreshed_bindings(before, contacts) if before is not None and self.ruid else None
            if (refreshed is not None and len(refreshed) == 1 and self._inline is not None
                    and (self._writer is None or self._writer.done()) and self._refresh_inline(aor, refreshed[0])):
                _mark_stored(contacts)
                fut.set_result(True)
                return fut
            self._queue[aor] = (list(contacts), refreshed, [fut])
        else:  # two changes in one commit: the queued one may be a whole write that must not be lost
            self._queue[aor] = (list(contacts), None, entry[2] + [fut])
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return fut

    def _refresh_inline(self, aor: str, contact: Contact) -> bool:
        """The refresh UPDATE on the loop; False: not done, to be written by the thread."""
        assert self._inline is not None
        values = storable(_pick(contact_row(aor, contact), self._update_index))
        try:
            if self._inline.execute(self._update, values).rowcount != 1:
                return False  # the row is gone: the thread writes the AOR whole
        except sqlite3.Error:
            return False  # locked by another writer, or worse: the thread's way says which
        self._inline_writes += 1
        if self._inline_writes >= CHECKPOINT_EVERY:
            self._inline_writes = 0
            self._executor.submit(self._checkpoint)
        return True

    def _checkpoint(self) -> None:
        try:
            self.db.query("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the next one or SQLite's own will do it
            logger.debug("WAL checkpoint failed: %s", exc)

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, {}
            whole = {a: c for a, (c, refreshed, _) in batch.items() if refreshed is None}
            updates = {a: (c, refreshed) for a, (c, refreshed, _) in batch.items() if refreshed is not None}
            try:
                await self.call(self._write_batch, whole, updates)
                self.commits += 1
                _mark_stored(c for contacts, _, _ in batch.values() for c in contacts)
                for _, _, futs in batch.values():
                    for f in futs:
                        if not f.done():
                            f.set_result(True)
            except Exception as exc:  # noqa: BLE001 - the caller decides (500, retry later)
                self.failures += 1
                logger.error("location write failed (%d AORs): %s", len(batch), exc)
                for _, _, futs in batch.values():
                    for f in futs:
                        if not f.done():
                            f.set_exception(exc)

    def _write_batch(self, batch: dict[str, list[Contact]],
                     updates: dict[str, tuple[list[Contact], list[Contact]]] | None = None) -> None:
        """One transaction: the AORs of ``batch`` written whole, and for each AOR of ``updates``
        (its full list, its refreshed bindings) one UPDATE per refreshed binding, or the AOR
        whole when one of its rows is not there."""
        assert self.db is not None
        keep = None
        if self.columns is not _INSERT_COLUMNS:  # an older table: only the columns it has
            keep = [i for i, name in enumerate(_INSERT_COLUMNS) if name in self.columns]
        insert, update, picks = self._insert, self._update, self._update_index

        def rows_of(aor: str, contacts: list[Contact]) -> list[tuple]:
            rows = [contact_row(aor, c) for c in contacts]
            return rows if keep is None else [tuple(row[i] for i in keep) for row in rows]

        whole = {aor: rows_of(aor, contacts) for aor, contacts in batch.items()}
        refreshes = [(aor, contacts, [_pick(contact_row(aor, c), picks) for c in changed])
                     for aor, (contacts, changed) in (updates or {}).items()]

        def write(db: Database) -> None:
            for aor, aor_rows in whole.items():
                _write_whole(db, aor, aor_rows, insert)
            for aor, contacts, params in refreshes:
                for values in params:
                    if db.execute(update, values).rowcount != 1:  # the row is gone: write the AOR whole
                        _write_whole(db, aor, rows_of(aor, contacts), insert)
                        break

        if not whole and len(refreshes) == 1 and len(refreshes[0][2]) == 1:
            # the usual lone refresh: one statement is a transaction of its own (no BEGIN, COMMIT)
            aor, contacts, params = refreshes[0]
            if self.db.execute(update, params[0]).rowcount == 1:
                return
            whole, refreshes = {aor: rows_of(aor, contacts)}, []
        # run again whole if another node's write of the same AOR wins (Galera); SQLite never loses one
        self.db.run_transaction(write)

    async def flush_all(self, items: list[tuple[str, list[Contact]]]) -> None:
        """write-back: persist these AORs (full lists) in one transaction."""
        if items:
            await self.call(self._write_batch, dict(items))
            _mark_stored(c for _, contacts in items for c in contacts)


def _inline_connection(path: str) -> sqlite3.Connection | None:
    """A connection to the SQLite file that fails at once instead of waiting for a lock (timeout
    0) and leaves checkpoints to the database thread (wal_autocheckpoint 0)."""
    try:
        conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn
    except sqlite3.Error as exc:
        logger.debug("no second SQLite connection (%s): every location write goes to the thread", exc)
        return None


def _pick(row: tuple, indexes: tuple[int, ...]) -> tuple:
    return tuple(row[i] for i in indexes)


def _write_whole(db: Database, aor: str, rows: list[tuple], insert: str) -> None:
    user, _, domain = aor.rpartition("@")
    db.execute("DELETE FROM location WHERE username = ? AND domain = ?", (user, domain))
    if rows:
        db.executemany(insert, rows)


def refreshed_bindings(before: list[Contact], after: list[Contact]) -> list[Contact] | None:
    """The bindings of ``after`` that a refresh UPDATE writes (see the module docstring), or None
    when ``after`` is not a refresh of ``before``: a binding added, removed, or not known to be in
    the database (written, or loaded from it: CS_SYNC), or one whose row key or indexed column
    (node_id) changed. The bindings ``after`` shares with ``before`` unchanged need no write."""
    if len(before) != len(after):
        return None
    changed: list[Contact] = []
    matched: set[int] = set()
    for c in after:
        old = next((b for b in before if b is c or b.same_binding(c)), None)
        # the ruid is the instance's when there is one, else the URI's: same_binding's rule
        # unless only one of the two has an instance
        if (old is None or old.state != "CS_SYNC" or id(old) in matched or old.node_id != c.node_id
                or bool(old.instance) != bool(c.instance)):
            return None
        matched.add(id(old))
        if old is not c:
            changed.append(c)
    return changed


def _mark_stored(contacts: Any) -> None:
    """The database has these bindings now: ``ul show`` says CS_SYNC (OpenSIPS's state names; a
    binding kept in memory while the database was away stays CS_NEW/CS_DIRTY until written)."""
    for c in contacts:
        c.state = "CS_SYNC"
