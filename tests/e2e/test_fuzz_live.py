"""Hostile bytes against a live sipd: 20,000 mutated messages over UDP and TCP must not stop it.

sipd runs with its defaults (accounting, dialogs and presence on; loopback is a trusted network);
tests/helpers/live_fuzz.py sends mutated valid requests and RFC 4475/5118 torture messages, plays a
callee answering with mutated responses (the fuzzer ACKs and hangs up what is answered), and places
clean calls in between. Afterwards sipd answers, a REGISTER and a call work, its log holds no
traceback, every completed call (clean or fuzzed) has its CDR,
no accounting record was lost and no edge of the event loop caught an exception.

The seed is fixed and printed; ``SIPD_FUZZ_SEED=N`` runs another one (a failure names its seed).
The long run (a million datagrams) is bench/fuzz_live.py.
"""

from __future__ import annotations

import os

from tests.daemon.harness import UA, add_subscriber, live_daemon
from tests.helpers.live_fuzz import FUZZEE, CleanCalls, LiveFuzzer, answers, cdrs_missing, fuzz_config

SEED = int(os.environ.get("SIPD_FUZZ_SEED", "4475"))
UDP_MESSAGES = 16_000
TCP_MESSAGES = 4_000
TIME_LIMIT = 75.0  # seconds per part; the run takes about 10 s on an idle 2-core machine


def test_mutated_sip_over_udp_and_tcp_does_not_stop_sipd(tmp_path):
    print(f"live fuzz seed {SEED} (rerun with SIPD_FUZZ_SEED={SEED})")
    d = live_daemon(tmp_path, fuzz_config(tmp_path))
    for user, pw in ((FUZZEE, "fuzzpw"), ("alice", "alicepw"), ("carol", "carolpw"), ("dave", "davepw")):
        add_subscriber(d.db_url, user, pw)
    d.start()
    try:
        calls = CleanCalls("127.0.0.1", d.port, ("alice", "alicepw"), ("carol", "carolpw"))
        reports = []
        for count, tcp_share, seed in ((UDP_MESSAGES, 0.0, SEED), (TCP_MESSAGES, 1.0, SEED + 1)):
            fz = LiveFuzzer("127.0.0.1", d.port, seed, fuzzee_password="fuzzpw", tcp_share=tcp_share)
            fz.register_fuzzee()
            reports.append(fz.run(count, time_limit=TIME_LIMIT, clean_call=calls, clean_every=1000,
                                  check_every=4000))
        udp, tcp = reports
        assert d.running(), d.log_text()[-3000:]
        assert udp.udp_sent >= UDP_MESSAGES * 0.9 and tcp.tcp_sent >= TCP_MESSAGES * 0.5, (udp.line(), tcp.line())
        assert udp.forwarded_to_fuzzee > 0, "no mutated request reached the proxy's forwarding"
        assert not udp.stalls and not tcp.stalls, "sipd stopped answering OPTIONS during the run"
        assert answers("127.0.0.1", d.port, 10)

        # a REGISTER and a call work at once
        with UA(d.port, "dave", password="davepw") as dave:
            assert dave.register(300).status == 200
        assert calls(f"after-fuzz-{SEED}"), "a clean call after the fuzz run failed"
        completed = [c for r in reports for c in r.clean_calls] + [f"after-fuzz-{SEED}"]
        failed = [c for r in reports for c in r.failed_clean_calls]
        assert not failed, f"clean calls failed during the run: {failed}"
        assert len(completed) >= 15
        fuzzed = [c for r in reports for c in r.completed_calls]
        assert len(fuzzed) >= 20, "too few fuzzed calls were answered and hung up"
        assert cdrs_missing(d.db_url, completed + fuzzed) == []

        stats = d.mi("get_statistics", ["errors:", "acc:"])
        assert {k: v for k, v in stats.items() if k.startswith("errors:") and v} == {}, stats
        assert stats.get("acc:lost_records", 0) == 0, stats
        calls.close()
    finally:
        rc = d.stop()
    log = d.log_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 500:][:4000]
    assert rc == 0, log[-2000:]
