"""The accounting spool: an append-only local file holding records the database could not take.

One JSON document per line (``Record.to_json()``), appended and fsync'd before the writer moves
on, so a record that reached the spool survives a crash or kill -9. Replay reads the lines in
order; after each chunk is committed to the database its end offset is written (and fsync'd) to
``<path>.pos``, so a crash during replay repeats at most one chunk. When everything is replayed
the file is truncated and the position file removed.

Blocking file I/O: used only from the accounting writer thread. Where the spool is by default
(``default_spool_path``): beside an SQLite database, else in the service's state directory.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..db import DbError, parse_url
from .cdr import Record

logger = logging.getLogger("sipd.acc")


class Spool:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.pos_path = self.path.with_name(self.path.name + ".pos")

    # -- writing ------------------------------------------------------------------------------

    def append(self, records: list[Record]) -> None:
        """Append and fsync. Raises OSError when the file cannot be written."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # ASCII JSON: text that came off the wire as bytes that are not UTF-8 (lone surrogates
        # after surrogateescape) is kept as \udcHH escapes and read back as it was
        data = "".join(json.dumps(r.to_json(), separators=(",", ":")) + "\n" for r in records)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = "\n" + data  # a torn line from a crash: never glue a record onto it
            os.write(fd, data.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ------------------------------------------------------------------------------

    def pending(self) -> bool:
        """True when the spool holds records not yet replayed."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return False
        return size > self._position()

    def _position(self) -> int:
        try:
            return int(self.pos_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def chunks(self, size: int = 500) -> Iterator[tuple[list[Record], int]]:
        """(records, end offset) chunks from the replay position on; bad lines are skipped."""
        start = self._position()
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below (generator)
        except FileNotFoundError:
            return
        try:
            f.seek(start)
            batch: list[Record] = []
            offset = start
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn last line (crash while appending): not committed to the spool
                offset += len(line)
                try:
                    batch.append(Record.from_json(json.loads(line)))
                except (ValueError, TypeError):
                    logger.error("accounting spool %s: skipping an unreadable line at offset %d",
                                 self.path, offset - len(line))
                if len(batch) >= size:
                    yield batch, offset
                    batch = []
            if batch or offset != start:
                yield batch, offset
        finally:
            f.close()

    def commit(self, offset: int) -> None:
        """Records up to ``offset`` are in the database: remember it (fsync'd)."""
        tmp = self.pos_path.with_name(self.pos_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, str(offset).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.pos_path)

    def clear(self) -> None:
        """Everything was replayed: empty the spool."""
        try:
            with open(self.path, "r+b") as f:
                f.truncate(0)
                f.flush()
                os.fsync(f.fileno())
        except FileNotFoundError:
            pass
        try:
            self.pos_path.unlink()
        except FileNotFoundError:
            pass

    def count(self) -> int:
        """Lines waiting for replay (for stats and logs; reads the file)."""
        return sum(len(batch) for batch, _ in self.chunks())


def default_spool_path(db_url: str, node_id: str = "") -> str:
    """Beside the SQLite file; else the service's state directory. A node of a cluster has a spool
    of its own (``acc-NODE.spool``): nodes sharing a machine must not wait for each other's lock."""
    name = f"acc-{node_id}.spool" if node_id else "acc.spool"
    sqlite = sqlite_file(db_url)
    if sqlite:
        return str(Path(sqlite).parent / name)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return f"/var/spool/sipd/{name}"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return f"{base}/sipd/{name}"


def spool_path(cfg: Any) -> str:
    """``[acc] spool``, else the default for this node's database."""
    return cfg.acc.spool or default_spool_path(cfg.acc.db_url or cfg.database.url, cfg.cluster.node_id)


def sqlite_file(url: str) -> str:
    """The SQLite file of ``url`` (absolute), or "" for MySQL, memory or a URL that does not parse."""
    try:
        u = parse_url(url)
    except DbError:
        return ""
    return u.path if u.scheme == "sqlite" and u.path != ":memory:" else ""
