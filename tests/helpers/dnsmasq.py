"""A real DNS server for tests: dnsmasq serving only the zone lines given, on a free loopback port.

    with Dnsmasq(tmp_path, GOOD_ZONE) as ns:
        resolver.nameservers = [f"127.0.0.1:{ns.port}"]

dnsmasq runs with ``no-resolv`` and ``no-hosts`` (never forwards, never reads /etc/hosts) and
``local=/DOMAIN/`` for every domain served, so names not in the data get NXDOMAIN. Startup waits
(bounded) until the server answers a query; the process is ended by its PID in ``stop()``, on
``__exit__`` and by a ``weakref.finalize`` safety net.

GOOD_ZONE is an example.test zone as a SIP domain should publish it (NAPTR and SRV for UDP, TCP and
TLS, A records with their PTRs); BROKEN_ZONE holds the mistakes ``sipctl dns check`` must name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

READY_TIMEOUT = 5.0   # seconds until dnsmasq must answer
STOP_TIMEOUT = 5.0    # seconds after SIGTERM before SIGKILL
BIND_ATTEMPTS = 3     # another process may grab the free port between choosing and binding

#: Correct example.test: sip (127.0.0.2) and sip2 (127.0.0.3) with PTRs; SRV for UDP, TCP and TLS;
#: NAPTR for all three. No A for the bare domain (a second name on 127.0.0.2 would make its PTR
#: ambiguous).
GOOD_ZONE: tuple[str, ...] = (
    "local=/example.test/",
    "local=/0.0.127.in-addr.arpa/",
    # host-record makes the A and the matching PTR
    "host-record=ns.example.test,127.0.0.1",
    "host-record=sip.example.test,127.0.0.2",
    "host-record=sip2.example.test,127.0.0.3",
    # srv-host=name,target,port,priority,weight
    "srv-host=_sip._udp.example.test,sip.example.test,5060,10,60",
    "srv-host=_sip._udp.example.test,sip2.example.test,5060,20,40",
    "srv-host=_sip._tcp.example.test,sip.example.test,5060,10,100",
    "srv-host=_sips._tcp.example.test,sip.example.test,5061,10,100",
    # naptr-record=name,order,preference,flags,service,regexp,replacement
    "naptr-record=example.test,10,10,s,SIPS+D2T,,_sips._tcp.example.test",
    "naptr-record=example.test,20,10,s,SIP+D2T,,_sip._tcp.example.test",
    "naptr-record=example.test,30,10,s,SIP+D2U,,_sip._udp.example.test",
)

#: Deliberately broken example.test. Faults a checker must report:
#:   1. _sip._udp SRV target nohost.example.test has no A/AAAA (NXDOMAIN)
#:   2. _sips._tcp SRV is missing although a NAPTR points to it
#:   3. PTR of 127.0.0.2 (sip.example.test) is other.example.test, which has no A
#:   4. _sip._tcp SRV target alias.example.test is a CNAME (RFC 2782 forbids it)
#:   5. sip2.example.test's 127.0.0.3 has no PTR at all
BROKEN_ZONE: tuple[str, ...] = (
    "local=/example.test/",
    "local=/0.0.127.in-addr.arpa/",
    "host-record=ns.example.test,127.0.0.1",
    # A records via dns-rr (type 1, hex 7F000002 = 127.0.0.2): no automatic PTR
    "dns-rr=sip.example.test,1,7F000002",
    "dns-rr=sip2.example.test,1,7F000003",
    "ptr-record=2.0.0.127.in-addr.arpa,other.example.test",
    "cname=alias.example.test,sip.example.test",
    "srv-host=_sip._udp.example.test,nohost.example.test,5060,10,100",
    "srv-host=_sip._tcp.example.test,alias.example.test,5060,10,100",
    "srv-host=_sip._tcp.example.test,sip2.example.test,5060,20,100",
    "naptr-record=example.test,10,10,s,SIPS+D2T,,_sips._tcp.example.test",
    "naptr-record=example.test,30,10,s,SIP+D2U,,_sip._udp.example.test",
)


def dnsmasq_path() -> str | None:
    return shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)


def _free_port() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from conftest import free_port  # tests/conftest.py
    finally:
        sys.path.pop(0)
    return free_port("udp", "127.0.0.1")


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM this PID, bounded wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


class Dnsmasq:
    """dnsmasq serving ``zone_lines`` (dnsmasq.conf syntax) on 127.0.0.1:``port`` (UDP and TCP).

    Args:
        tmp_path: directory for the configuration and the log.
        zone_lines: dnsmasq options, e.g. GOOD_ZONE; include ``local=/DOMAIN/`` for each domain.
        ttl: TTL of the local records, seconds.
        start: start at once (default); else call ``start()``.

    Raises:
        RuntimeError: dnsmasq is not installed, rejects the configuration, or does not answer.
    """

    def __init__(self, tmp_path: Path, zone_lines: Sequence[str], *, ttl: int = 300, start: bool = True):
        self.dir = Path(tmp_path)
        self.conf = self.dir / f"dnsmasq-{id(self):x}.conf"
        self.log = self.conf.with_suffix(".log")
        self.zone_lines = list(zone_lines)
        self.ttl = ttl
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        if start:
            self.start()

    @property
    def nameserver(self) -> str:
        """``127.0.0.1:PORT``, the form ``[dns] nameservers`` and ``--nameserver`` take."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = dnsmasq_path()
        if exe is None:
            raise RuntimeError("dnsmasq not installed")
        lines = ["no-resolv", "no-hosts", "no-poll", "bind-interfaces", "listen-address=127.0.0.1",
                 f"local-ttl={self.ttl}", "log-queries", *self.zone_lines]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        test = subprocess.run([exe, "--test", f"--conf-file={self.conf}"], capture_output=True, timeout=10)
        if test.returncode != 0:
            raise RuntimeError(f"dnsmasq rejects the configuration: {test.stderr.decode(errors='replace')}")
        for _ in range(BIND_ATTEMPTS):
            self.port = _free_port()
            args = [exe, f"--conf-file={self.conf}", f"--port={self.port}", "--keep-in-foreground",
                    "--log-facility=-", "--pid-file="]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                args.append("--user=nobody")
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            self._finalizer = weakref.finalize(self, _end, self.proc)
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"dnsmasq did not come up; log:\n{self.log_text()}")

    def _wait_ready(self) -> bool:
        import dns.exception
        import dns.message
        import dns.query

        assert self.proc is not None
        probe = dns.message.make_query("ready.invalid.", "A")
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(200):  # bounded in count and time
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            try:
                dns.query.udp(probe, "127.0.0.1", port=self.port, timeout=0.1)
                return True  # any answer (REFUSED here) means it listens
            except (dns.exception.Timeout, OSError):
                continue
        return False

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # ends the PID once
            self._finalizer = None

    def __enter__(self) -> Dnsmasq:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
