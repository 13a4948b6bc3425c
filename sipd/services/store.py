"""The daemon's database I/O: loading caches and persisting location, off the event loop.

All calls run on one dedicated worker thread (SQLite connections belong to their thread; one
thread also keeps writes ordered). Location writes are *batched*: every binding change queued while
a commit is running goes into the next transaction together, and each waiter's future resolves
when its change is committed (write-through: the 200 is sent then).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

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
        self._queue: dict[str, tuple[list[Contact], list[asyncio.Future]]] = {}
        self._writer: asyncio.Task | None = None
        self.commits = 0
        self.failures = 0
        self.ruid = True  # the location table has its ruid column (written, so each binding is stored once)
        #: the columns of ``location`` this store writes: all of them, but on a MySQL table from
        #: before a column (not migrated yet) the ones it has
        self.columns = _INSERT_COLUMNS
        self._insert = _INSERT_SQL

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

    def save_aor(self, aor: str, contacts: list[Contact]) -> asyncio.Future:
        """Queue the full binding list of ``aor``; the future resolves when it is committed."""
        fut = asyncio.get_running_loop().create_future()
        entry = self._queue.get(aor)
        if entry is None:
            self._queue[aor] = (list(contacts), [fut])
        else:
            self._queue[aor] = (list(contacts), entry[1] + [fut])
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, {}
            try:
                await self.call(self._write_batch, {a: c for a, (c, _) in batch.items()})
                self.commits += 1
                _mark_stored(c for contacts, _ in batch.values() for c in contacts)
                for _, futs in batch.values():
                    for f in futs:
                        if not f.done():
                            f.set_result(True)
            except Exception as exc:  # noqa: BLE001 - the caller decides (500, retry later)
                self.failures += 1
                logger.error("location write failed (%d AORs): %s", len(batch), exc)
                for _, futs in batch.values():
                    for f in futs:
                        if not f.done():
                            f.set_exception(exc)

    def _write_batch(self, batch: dict[str, list[Contact]]) -> None:
        assert self.db is not None
        rows = {aor: [contact_row(aor, c) for c in contacts] for aor, contacts in batch.items()}
        insert = self._insert
        if self.columns is not _INSERT_COLUMNS:  # an older table: only the columns it has
            keep = [i for i, name in enumerate(_INSERT_COLUMNS) if name in self.columns]
            rows = {aor: [tuple(row[i] for i in keep) for row in aor_rows] for aor, aor_rows in rows.items()}

        def write(db: Database) -> None:
            for aor, aor_rows in rows.items():
                user, _, domain = aor.rpartition("@")
                db.execute("DELETE FROM location WHERE username = ? AND domain = ?", (user, domain))
                if aor_rows:
                    db.executemany(insert, aor_rows)

        # run again whole if another node's write of the same AOR wins (Galera); SQLite never loses one
        self.db.run_transaction(write)

    async def flush_all(self, items: list[tuple[str, list[Contact]]]) -> None:
        """write-back: persist these AORs (full lists) in one transaction."""
        if items:
            await self.call(self._write_batch, dict(items))
            _mark_stored(c for _, contacts in items for c in contacts)


def _mark_stored(contacts: Any) -> None:
    """The database has these bindings now: ``ul show`` says CS_SYNC (OpenSIPS's state names; a
    binding kept in memory while the database was away stays CS_NEW/CS_DIRTY until written)."""
    for c in contacts:
        c.state = "CS_SYNC"
