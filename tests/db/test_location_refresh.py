"""A refresh REGISTER's write: the bindings the database holds, with new values in unindexed
columns, are UPDATEd in place (the row keeps its contact_id); anything else writes the AOR whole
(its rows deleted and inserted again: new contact_ids). SQLite and MariaDB, with the daemon's Store."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time

from dbfixtures import backend, db_url, empty_db_url, mysql_scratch  # noqa: F401

from sipd.db import connect
from sipd.services.location import Contact
from sipd.services.store import Store, refreshed_bindings

AOR = "alice@example.test"


def flow(n: int, **kw) -> Contact:  # type: ignore[no-untyped-def]
    """An RFC 5626 binding as a TLS endpoint registers it."""
    now = time.time()
    values = dict(uri=f"sip:alice@192.0.2.{n}:5061;transport=tls;ob", expires=now + 600, call_id=f"reg-{n}", cseq=1,
                  instance=f"<urn:uuid:00000000-0000-4000-8000-00000000000{n}>", reg_id=1, last_modified=now)
    values.update(kw)
    return Contact(**values)  # type: ignore[arg-type]


def refresh(c: Contact, seconds: float = 900) -> Contact:
    """What the registrar makes of a refresh REGISTER: a new binding, CSeq and expiry moved on."""
    now = time.time()
    return dataclasses.replace(c, expires=now + seconds, cseq=c.cseq + 1, last_modified=now, state="CS_DIRTY")


def rows(url: str) -> list[dict]:
    with connect(url) as db:
        return db.query("SELECT contact_id, contact, expires, cseq, callid FROM location ORDER BY contact_id")


def with_store(url: str, fn) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        store = Store(url)
        await store.open()
        try:
            await fn(store)
        finally:
            await store.close()

    asyncio.run(run())


def test_a_refresh_updates_the_row_in_place(db_url, backend):
    first, other = flow(1), flow(2)
    later = refresh(first)

    async def go(store: Store) -> None:
        await store.save_aor(AOR, [first, other])
        assert first.state == other.state == "CS_SYNC"
        stored = rows(db_url)
        written = store.save_aor(AOR, [later, other], [first, other])
        # SQLite: written at once on the loop; MySQL: by the database thread
        assert written.done() == (backend == "sqlite")
        await written
        assert later.state == "CS_SYNC"
        now = rows(db_url)
        assert [r["contact_id"] for r in now] == [r["contact_id"] for r in stored]  # updated, not re-inserted
        assert [(r["expires"], r["cseq"]) for r in now] == [(int(later.expires), 2), (int(other.expires), 1)]
        # the same change without the binding list it replaces is written whole: new rows
        again = refresh(later)
        await store.save_aor(AOR, [again, other])
        assert {r["contact_id"] for r in rows(db_url)}.isdisjoint(r["contact_id"] for r in now)
        assert [r["cseq"] for r in rows(db_url)] == [3, 1]

    with_store(db_url, go)


def test_a_refresh_whose_row_is_gone_is_written_whole(db_url):
    first, other = flow(1), flow(2)
    later = refresh(first)

    async def go(store: Store) -> None:
        await store.save_aor(AOR, [first, other])
        with connect(db_url) as db:  # another process removed one binding meanwhile
            db.execute("DELETE FROM location WHERE contact = ?", (first.uri,))
        await store.save_aor(AOR, [later, other], [first, other])
        assert sorted((r["contact"], r["cseq"]) for r in rows(db_url)) == [(first.uri, 2), (other.uri, 1)]
        # refreshes of two AORs in one commit (one transaction), one of them with its row gone
        bob, bob_aor = flow(3, uri="sip:bob@192.0.2.3;ob"), "bob@example.test"
        await store.save_aor(bob_aor, [bob])
        with connect(db_url) as db:
            db.execute("DELETE FROM location WHERE contact = ?", (other.uri,))
        bob2, later2, other2 = refresh(bob), refresh(later), refresh(other)
        await asyncio.gather(store.save_aor(bob_aor, [bob2], [bob]),
                             store.save_aor(AOR, [later2, other2], [later, other]))
        assert sorted((r["contact"], r["cseq"]) for r in rows(db_url)) == [
            (first.uri, 3), (other.uri, 2), (bob.uri, 2)]

    with_store(db_url, go)


def test_a_refresh_while_another_writer_holds_the_lock_waits_for_it(tmp_path):
    """SQLite: the refresh the loop cannot write at once (another process's write lock) goes to the
    database thread, which waits for the lock (its busy timeout) and writes it."""
    url = f"sqlite:///{tmp_path}/sipd.db"
    with connect(url) as db:
        from sipd.db import schema

        schema.create_all(db)
    first = flow(1)
    later = refresh(first)

    async def go(store: Store) -> None:
        await store.save_aor(AOR, [first])
        other = sqlite3.connect(str(tmp_path / "sipd.db"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        written = store.save_aor(AOR, [later], [first])
        assert not written.done()
        await asyncio.sleep(0.3)
        assert not written.done()
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(written, 5)
        assert [r["cseq"] for r in rows(url)] == [2]

    with_store(url, go)


def test_refreshes_on_the_loop_leave_the_checkpoints_to_the_thread(tmp_path, monkeypatch):
    """SQLite: the loop's connection never checkpoints the WAL; the thread does, every
    CHECKPOINT_EVERY refreshes, so the WAL does not grow with them."""
    from sipd.services import store as store_mod

    monkeypatch.setattr(store_mod, "CHECKPOINT_EVERY", 20)
    url = f"sqlite:///{tmp_path}/sipd.db"
    wal = tmp_path / "sipd.db-wal"
    with connect(url) as db:
        from sipd.db import schema

        schema.create_all(db)
    current = [flow(1)]

    async def go(store: Store) -> None:
        await store.save_aor(AOR, current)
        sizes = []
        for _ in range(400):
            later = refresh(current[0])
            written = store.save_aor(AOR, [later], current)
            assert written.done()
            current[:] = [later]
            await store.call(lambda: None)  # the thread's checkpoint, when one was asked, is done
            sizes.append(wal.stat().st_size)
        assert max(sizes) < 60 * 4096, sizes[-1]  # not 400 frames
        assert [r["cseq"] for r in rows(url)] == [401]

    with_store(url, go)


def test_a_whole_write_queued_is_not_replaced_by_a_refresh(db_url):
    """Expiry drops a binding (a whole write, queued), and a refresh of the other arrives before
    the commit: the two are one whole write, so the dropped binding's row goes too."""
    first, gone = flow(1), flow(2)
    later = refresh(first)

    async def go(store: Store) -> None:
        await store.save_aor(AOR, [first, gone])
        one = store.save_aor(AOR, [first])
        two = store.save_aor(AOR, [later], [first])
        await asyncio.gather(one, two)
        assert [(r["contact"], r["cseq"]) for r in rows(db_url)] == [(first.uri, 2)]

    with_store(db_url, go)


def test_a_lost_write_is_not_taken_for_stored():
    """A binding whose write failed (the database down) is not CS_SYNC: its refresh is written
    whole, which also stores what the failed write could not."""
    first = flow(1)
    assert refreshed_bindings([first], [refresh(first)]) is None  # CS_NEW: never stored
    first.state = "CS_SYNC"
    assert refreshed_bindings([first], [refresh(first)]) is not None


def test_what_is_a_refresh():
    a, b = flow(1, state="CS_SYNC"), flow(2, state="CS_SYNC")
    a2 = refresh(a)
    assert refreshed_bindings([a, b], [a2, b]) == [a2]
    assert refreshed_bindings([a, b], [b, a2]) == [a2]  # the order q sorting gives does not matter
    assert refreshed_bindings([a, b], [a, b]) == []  # nothing new: nothing to write
    assert refreshed_bindings([a, b], [a2]) is None  # a binding removed
    assert refreshed_bindings([a], [a2, b]) is None  # a binding added
    assert refreshed_bindings([a, b], [a2, a2]) is None  # one row cannot take two bindings
    assert refreshed_bindings([a], [dataclasses.replace(a2, node_id="n2")]) is None  # an indexed column
    # the row key: a binding's +sip.instance when it has one, else its URI
    assert refreshed_bindings([a], [dataclasses.replace(a2, uri="sip:alice@198.51.100.1;ob")]) == [
        dataclasses.replace(a2, uri="sip:alice@198.51.100.1;ob")]
    plain = flow(3, instance=None, reg_id=None, state="CS_SYNC")
    assert refreshed_bindings([plain], [refresh(plain)]) is not None
    assert refreshed_bindings([plain], [dataclasses.replace(refresh(plain), instance="<urn:uuid:9>")]) is None
    assert refreshed_bindings([plain], [dataclasses.replace(refresh(plain), uri="sip:alice@198.51.100.1")]) is None
