"""What /proc says about processes the tests and benchmarks started (Linux only)."""

from __future__ import annotations

from pathlib import Path


def rss_kib(pids: list[int]) -> int:
    """The resident sets of ``pids`` added up, KiB; a process that has ended counts 0."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total
