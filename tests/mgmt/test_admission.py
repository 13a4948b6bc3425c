"""The management slot table (sipd/mgmt/admission.py) as pure code: who waits, who is evicted."""

from __future__ import annotations

from sipd.mgmt.admission import Admission


class Writer:
    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True


def test_waiting_connections_are_evicted_oldest_first_and_never_fill_the_table():
    slots = Admission(4)
    conns = [(object(), Writer()) for _ in range(10)]
    for task, writer in conns:
        assert slots.admit(task, writer, b"busy")  # type: ignore[arg-type]
        assert len(slots) <= 3  # one slot always left for the operator
    evicted = [w for _, w in conns if w.closed]
    assert evicted == [w for _, w in conns[:7]] and all(w.data == b"busy" for w in evicted)
    assert slots.evicted == 7
    assert not slots.serving(conns[0][0])  # type: ignore[arg-type] # evicted: what it sent is dropped
    assert slots.serving(conns[9][0])  # type: ignore[arg-type]


def test_busy_only_when_every_slot_serves_a_request():
    slots = Admission(3)
    serving = [object() for _ in range(3)]
    for task in serving:
        assert slots.admit(task, Writer(), b"busy")  # type: ignore[arg-type]
        assert slots.serving(task)  # type: ignore[arg-type]
    late = Writer()
    assert not slots.admit(object(), late, b"busy")  # type: ignore[arg-type]
    assert not late.closed and slots.evicted == 0  # refused by the caller, nobody evicted
    slots.release(serving[0])  # type: ignore[arg-type]
    assert slots.admit(object(), Writer(), b"busy")  # type: ignore[arg-type]
