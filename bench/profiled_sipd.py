#!/usr/bin/env python3
"""Run ``python -m sipd ARGS`` under cProfile with a CPU-time clock (not wall time), so that a
sendto that gets the process descheduled does not show up as 100 us of "work".

    bench/profiled_sipd.py OUTFILE --config sipd.toml
"""

import cProfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

out = sys.argv[1]
sys.argv = ["sipd", *sys.argv[2:]]
from sipd.__main__ import main  # noqa: E402

prof = cProfile.Profile(time.process_time)
try:
    prof.runcall(main)
except SystemExit:
    pass
finally:
    prof.dump_stats(out)
