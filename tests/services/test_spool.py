"""The accounting spool file: append (fsync), ordered replay in chunks, position, torn lines."""

from __future__ import annotations

from sipd.services.cdr import Record
from sipd.services.spool import Spool


def recs(n: int, start: int = 0) -> list[Record]:
    return [Record("insert", "acc", {"callid": f"c{i}", "method": "INVITE"}) for i in range(start, start + n)]


def test_append_replay_in_order_and_clear(tmp_path):
    sp = Spool(tmp_path / "sub" / "acc.spool")
    assert not sp.pending() and list(sp.chunks()) == []
    sp.append(recs(5))
    sp.append(recs(3, 5))
    assert sp.pending() and sp.count() == 8
    chunks = list(sp.chunks(size=3))
    assert [len(c) for c, _ in chunks] == [3, 3, 2]
    assert [r.row["callid"] for c, _ in chunks for r in c] == [f"c{i}" for i in range(8)]
    # commit the first chunk only: a restart resumes after it
    sp.commit(chunks[0][1])
    again = Spool(tmp_path / "sub" / "acc.spool")
    assert [r.row["callid"] for c, _ in again.chunks() for r in c] == [f"c{i}" for i in range(3, 8)]
    again.clear()
    assert not again.pending() and not again.pos_path.exists()


def test_torn_last_line_and_garbage_are_skipped(tmp_path):
    sp = Spool(tmp_path / "acc.spool")
    sp.append(recs(2))
    with open(sp.path, "ab") as f:
        f.write(b"not json\n")
        f.write(b'["insert","acc",{"callid":"torn"')  # crash in the middle of an append
    got = [r.row["callid"] for c, _ in sp.chunks() for r in c]
    assert got == ["c0", "c1"]
    sp.append(recs(1, 7))  # the next append starts on a fresh line
    got = [r.row["callid"] for c, _ in sp.chunks() for r in c]
    assert got == ["c0", "c1", "c7"]
