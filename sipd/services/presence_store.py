"""Presence persistence: the ``presentity``, ``active_watchers`` and ``watchers`` tables.

Blocking functions over a ``sipd.db.Database``; the daemon runs them on the store's worker thread
(``Store.call``), never on the event loop. Writes are batched: the glue collects the keys that
changed and ``flush`` rewrites exactly those rows (delete, then insert when the entry still
exists) in one transaction. Expired rows are deleted at load time and as entries expire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .presence_state import EVENT_PRESENCE, Publication, Subscription

if TYPE_CHECKING:
    from ..db import Database

_PUB_COLS = ("username", "domain", "event", "etag", "expires", "received_time", "body", "extra_hdrs", "sender", "priority")
_SUB_COLS = (
    "presentity_uri", "to_user", "to_domain", "watcher_username", "watcher_domain", "event", "event_id", "to_tag",
    "from_tag", "callid", "local_cseq", "remote_cseq", "contact", "record_route", "expires", "status", "reason",
    "version", "socket_info", "local_contact", "sharing_tag",
)
_WATCHER_COLS = ("presentity_uri", "watcher_username", "watcher_domain", "event", "status", "reason", "inserted_time")
_ROUTE_SEP = "\n"  # record_route column: the route set, one entry per line


def _insert(table: str, cols: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def pub_row(p: Publication) -> tuple:
    user, _, domain = p.aor.rpartition("@")
    return (user, domain, p.event, p.etag, int(p.expires), int(p.received), p.body, None, p.sender, 0)


def pub_from_row(r: dict[str, Any]) -> Publication:
    body = r["body"]
    if isinstance(body, str):
        body = body.encode()
    return Publication(aor=f"{r['username']}@{r['domain'].lower()}", etag=r["etag"], expires=float(r["expires"]),
                       body=bytes(body or b""), sender=r.get("sender") or "", received=float(r["received_time"] or 0),
                       event=r["event"])


def sub_row(s: Subscription) -> tuple:
    puser, _, pdom = s.presentity.rpartition("@")
    wuser, _, wdom = s.watcher.rpartition("@")
    return (s.local_uri, puser, pdom, wuser, wdom, s.event, s.event_id, s.to_tag, s.from_tag, s.call_id,
            s.local_cseq, s.remote_cseq, s.contact, _ROUTE_SEP.join(s.route_set) or None, int(s.expires), 1, None,
            s.version, s.socket, s.local_contact, None)


def sub_from_row(r: dict[str, Any]) -> Subscription:
    rr = r.get("record_route") or ""
    return Subscription(
        presentity=f"{r['to_user']}@{r['to_domain'].lower()}", event=r["event"],
        watcher=f"{r['watcher_username']}@{r['watcher_domain'].lower()}", call_id=r["callid"], to_tag=r["to_tag"],
        from_tag=r["from_tag"], remote_uri=f"sip:{r['watcher_username']}@{r['watcher_domain']}",
        local_uri=r["presentity_uri"], contact=r["contact"], route_set=[x for x in rr.split(_ROUTE_SEP) if x],
        local_contact=r["local_contact"], expires=float(r["expires"]), remote_cseq=int(r["remote_cseq"]),
        local_cseq=int(r["local_cseq"]), version=int(r["version"] or 0), event_id=r.get("event_id"),
        socket=r.get("socket_info") or "", created=float(r["expires"]),
    )


def load(db: Database, now: float) -> tuple[list[Publication], list[Subscription], int]:
    """Delete expired rows, then return the live publications and subscriptions and how many
    rows were deleted."""

    def delete_expired(db: Database) -> int:
        gone = db.execute("DELETE FROM presentity WHERE expires <= ?", (int(now),)).rowcount
        return gone + db.execute("DELETE FROM active_watchers WHERE expires <= ?", (int(now),)).rowcount

    gone = db.run_transaction(delete_expired)  # run again whole if another node's write wins (Galera)
    pubs = [pub_from_row(r) for r in db.query("SELECT * FROM presentity WHERE event = ?", (EVENT_PRESENCE,))]
    subs = [sub_from_row(r) for r in db.query("SELECT * FROM active_watchers")]
    return pubs, subs, gone


def flush(db: Database, pubs: list[tuple[tuple[str, str], Publication | None]],
          subs: list[tuple[tuple[str, str], Subscription | None]], watchers: list[Subscription], now: float) -> None:
    """Rewrite the given rows in one transaction: ``None`` deletes, an entry replaces its row."""

    def rewrite(db: Database) -> None:
        if pubs:
            db.executemany("DELETE FROM presentity WHERE username = ? AND domain = ? AND event = ? AND etag = ?",
                           [(*aor.rpartition("@")[::2], EVENT_PRESENCE, etag) for (aor, etag), _ in pubs])
            rows = [pub_row(p) for _, p in pubs if p is not None]
            if rows:
                db.executemany(_insert("presentity", _PUB_COLS), rows)
        if subs:
            db.executemany("DELETE FROM active_watchers WHERE callid = ? AND to_tag = ?", [k for k, _ in subs])
            rows = [sub_row(s) for _, s in subs if s is not None]
            if rows:
                db.executemany(_insert("active_watchers", _SUB_COLS), rows)
        if watchers:
            keys = {}
            for s in watchers:
                wuser, _, wdom = s.watcher.rpartition("@")
                keys[(s.local_uri, wuser, wdom, s.event)] = None
            db.executemany("DELETE FROM watchers WHERE presentity_uri = ? AND watcher_username = ? AND watcher_domain = ?"
                           " AND event = ?", list(keys))
            db.executemany(_insert("watchers", _WATCHER_COLS), [(*k, 1, None, int(now)) for k in keys])

    db.run_transaction(rewrite)  # run again whole if another node's write wins (Galera)
