"""Run the PROTOS c07-style mutation fuzzer at full size against parser, stream framer and layer.

Usage: .venv/bin/python bench/fuzz_protos.py [--extra N]   (default: >= 100,000 cases in total)
Prints the number of cases and of unexpected exceptions (must be 0); exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipd.sip.errors import ProtocolError  # noqa: E402
from sipd.sip.layer import LayerConfig, TransactionLayer  # noqa: E402
from sipd.sip.framing import StreamParser  # noqa: E402
from sipd.sip.parser import parse_message  # noqa: E402
from tests.sip.fuzz import cases, count_cases  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--extra", type=int, default=100_000 - count_cases(0) + 1000)
    args = ap.parse_args()
    layer = TransactionLayer(LayerConfig(branch_factory=lambda: "z9hG4bKf", tag_factory=lambda: "t"))
    addr = ("udp", "192.0.2.1", 5060, None)
    n = parsed = bad = 0
    t0 = time.perf_counter()
    for desc, data in cases(extra=args.extra):
        n += 1
        try:
            try:
                m = parse_message(data)
                m.to_bytes()
                parsed += 1
            except ProtocolError:
                pass
            try:
                StreamParser().feed(data)
            except ProtocolError:
                pass
            layer.receive_datagram(data, addr, float(n))
            layer.handle_timer(float(n))
            layer.messages_to_send(float(n))
            while layer.next_event():
                pass
        except Exception:  # noqa: BLE001 - that is what we are looking for
            bad += 1
            if bad <= 10:
                print(f"UNEXPECTED in {desc}:", file=sys.stderr)
                traceback.print_exc()
    dt = time.perf_counter() - t0
    print(f"{n} cases ({parsed} accepted, {n - parsed} rejected with ProtocolError), "
          f"{bad} unexpected exceptions, {dt:.1f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
