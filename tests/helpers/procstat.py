"""What /proc says about processes the tests and benchmarks started (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path


def _sum_kib(pids: list[int], file: str, field: str) -> int:
    """``field`` (a "Name:" line in KiB) of /proc/PID/``file`` added up over ``pids``; a process
    that has ended counts 0."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/{file}").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total


def rss_kib(pids: list[int]) -> int:
    """The resident sets of ``pids`` added up, KiB; a process that has ended counts 0."""
    return _sum_kib(pids, "status", "VmRSS:")


def pss_kib(pids: list[int]) -> int:
    """The proportional set sizes of ``pids`` added up, KiB: pages a forked worker still shares
    with its parent count once in total, not once per process as in ``rss_kib``."""
    return _sum_kib(pids, "smaps_rollup", "Pss:")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (sipd's workers and writer, Kamailio's children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(int(st[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (a process that has ended counts 0)."""
    ticks = 0
    for p in pids:
        st = _stat(p)
        if st is not None:
            ticks += int(st[11]) + int(st[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds of every thread of ``pids``, by ``pid`` for a process's first thread (an event
    loop) and ``pid/tid name`` for the others (a database or log writer thread): which part of a
    process spent it."""
    out: dict[str, float] = {}
    for p in pids:
        try:
            tids = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for t in tids:
            try:
                comm = (t / "comm").read_text().strip()
                st = (t / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            key = str(p) if t.name == str(p) else f"{p}/{t.name} {comm}"
            out[key] = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
    return out
