"""Check the DNS of a SIP domain: NAPTR, SRV, target addresses, PTR, RFC 3263 result, live probes.

Library for ``sipctl dns check`` (and ``sipctl doctor``): :func:`check_domain` returns a
:class:`Report` of :class:`Check` rows, each a verdict (pass / fail / warn) with a detail and, for
anything not passing, a hint saying what to change. DNS failures (timeouts, SERVFAIL, NXDOMAIN, an
unreachable name server) are rows, never exceptions; only unusable input raises ``UsageError``.

The lookups and the RFC 3263 resolution are the daemon's own (:mod:`sipd.services.resolve`), so
what this reports is what ``sipd`` will do when it routes to the domain.

What is checked, in order:

1. NAPTR of the domain (RFC 3263 §4.1): SIP services ``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``, flag
   ``s``, and that each replacement is an SRV name that exists.
2. SRV ``_sip._udp``, ``_sip._tcp``, ``_sips._tcp``, the legacy ``_sip._tls`` when present, and any
   other NAPTR replacement: records, and ports that fit the service (5061 for TLS, 5060 else).
   A name with several servers (the nodes of a cluster): the share of the traffic each gets by
   priority and weight, which priority is the failover, weights of 0 beside weighted servers.
3. Every SRV target: has A and/or AAAA and is not a CNAME (RFC 2782).
4. A/AAAA of the domain itself (needed by clients that do not use SRV).
5. Every address found: has a PTR, and the PTR name resolves back to it (forward-confirmed).
6. The RFC 3263 result for ``sip:DOMAIN`` and ``sips:DOMAIN``.
7. ``expect_hosts`` / ``expect_addresses``: the records point at this server; with several
   hosts (the nodes of a cluster), every SRV name points at each of them.
8. With ``probe``: OPTIONS to every resolved target over its transport, with status and RTT; for
   TLS, whether the certificate covers the domain (RFC 5922 §7.2).
"""

from __future__ import annotations

import enum
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dns.resolver
import dns.reversename

from sipd.services import resolve as R

from ..errors import ExitStatus, UsageError
from .sipprobe import hostport, probe_options

SRV_SERVICES = ("_sip._udp", "_sip._tcp", "_sips._tcp")
LEGACY_TLS = "_sip._tls"


class Verdict(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"


@dataclass(kw_only=True)
class Check:
    """One line of the report."""

    section: str        # nameserver, naptr, srv, spread, target, address, ptr, resolve, expect, probe, tls
    subject: str        # what was checked, e.g. "_sip._udp.example.test" or "udp 127.0.0.2:5060"
    verdict: Verdict
    detail: str
    hint: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Report:
    domain: str
    nameservers: list[str]
    checks: list[Check] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for c in self.checks if c.verdict is verdict)

    @property
    def ok(self) -> bool:
        return self.count(Verdict.FAIL) == 0

    @property
    def exit_code(self) -> ExitStatus:
        return ExitStatus.OK if self.ok else ExitStatus.ERROR

    def summary(self) -> str:
        p, f, w = self.count(Verdict.PASS), self.count(Verdict.FAIL), self.count(Verdict.WARN)
        state = "all checks passed" if f == 0 else f"{f} problem{'s' if f != 1 else ''} found"
        return f"{self.domain}: {state} ({p} passed, {f} failed, {w} warning{'s' if w != 1 else ''})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "nameservers": self.nameservers,
            "ok": self.ok,
            "summary": {"passed": self.count(Verdict.PASS), "failed": self.count(Verdict.FAIL),
                        "warnings": self.count(Verdict.WARN)},
            "checks": [{**asdict(c), "verdict": c.verdict.value} for c in self.checks],
        }


# ---------------------------------------------------------------------------------------------
# Entry point


def check_domain(
    domain: str,
    *,
    nameservers: Sequence[str] = (),
    timeout: float = 2.0,
    probe: bool = False,
    expect_hosts: Sequence[str] = (),
    expect_addresses: Sequence[str] = (),
) -> Report:
    """Run every check for ``domain`` and return the report.

    Args:
        domain: the SIP domain (not an address).
        nameservers: ``IP`` or ``IP:PORT`` to ask; empty uses the system's (/etc/resolv.conf).
        timeout: seconds per DNS lookup and per probe.
        probe: send OPTIONS to each target (UDP, TCP, TLS) and look at TLS certificates.
        expect_hosts / expect_addresses: names and IPs the records must point at.

    Raises:
        UsageError: the domain, a name server or an expected address is not usable.
    """
    domain = _check_domain_name(domain)
    if timeout <= 0:
        raise UsageError("--timeout must be positive", hint="e.g. --timeout 2")
    for ip in expect_addresses:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise UsageError(f"--expect-address {ip!r} is not an IP address") from None
    try:
        resolver = R.make_resolver(list(nameservers), timeout)
    except ValueError as exc:
        raise UsageError(str(exc), hint="write --nameserver IP or IP:PORT, e.g. 127.0.0.1:5353") from None
    except dns.resolver.NoResolverConfiguration:
        raise UsageError("no name server configured on this system",
                         hint="pass --nameserver IP[:PORT] or set [dns] nameservers") from None
    shown = [str(n) for n in resolver.nameservers]
    report = Report(domain=domain, nameservers=list(nameservers) or shown)
    _Checker(domain, resolver, timeout, report).run(probe, [h.lower().rstrip(".") for h in expect_hosts],
                                                    list(expect_addresses))
    return report


def _check_domain_name(domain: str) -> str:
    d = domain.strip().lower().rstrip(".")
    if not d or R.is_numeric(d):
        raise UsageError(f"{domain!r} is not a domain name", hint="give the SIP domain, e.g. example.test")
    labels = d.split(".")
    if any(not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label) for label in labels):
        raise UsageError(f"{domain!r} is not a valid domain name", hint="e.g. example.test")
    return d


def _tls_name(name: str) -> bool:
    return name.startswith("_sips._") or name.startswith(LEGACY_TLS + ".")


class _Checker:
    def __init__(self, domain: str, resolver: dns.resolver.Resolver, timeout: float, report: Report):
        self.domain = domain
        self.resolver = resolver
        self.timeout = timeout
        self.report = report
        self.cache = R.Cache()  # one run asks each (name, type) once
        self.addresses: dict[str, set[str]] = {}  # ip -> forward names that led to it
        self.srv_targets: set[str] = set()
        self.naptr_targets: set[str] = set()  # SRV names some NAPTR points to
        self.srv_sets: dict[str, set[str]] = {}  # SRV name -> its targets (the nodes it can reach)

    def q(self, name: str, rdtype: str) -> R.Answer:
        return R.lookup_sync(self.resolver, R.Query(name, rdtype), self.cache)

    def add(self, section: str, subject: str, verdict: Verdict, detail: str, hint: str = "", **data: Any) -> None:
        self.report.checks.append(Check(section=section, subject=subject, verdict=verdict, detail=detail,
                                        hint=hint, data=data))

    def lookup_failed(self, section: str, subject: str, answer: R.Answer) -> None:
        self.add(section, subject, Verdict.FAIL,
                 f"{answer.query.rdtype} lookup of {answer.query.name} failed: {answer.status.value} ({answer.error})",
                 "the name server did not give an answer; check that it serves the zone and retry")

    # -- the sequence ---------------------------------------------------------------------------

    def run(self, probe: bool, expect_hosts: list[str], expect_addresses: list[str]) -> None:
        naptr = self.q(self.domain, "NAPTR")
        if naptr.status in (R.Status.TIMEOUT, R.Status.SERVFAIL, R.Status.ERROR):
            self.nameserver_failed(naptr)
            return
        srv_names = self.check_naptr(naptr)
        found_srv = self.check_srv(srv_names)
        self.check_targets()
        has_a = self.check_domain_addresses(found_srv)
        if not found_srv:
            verdict = Verdict.WARN if has_a else Verdict.FAIL
            self.add("srv", self.domain, verdict, "no SIP SRV records at all",
                     f"add e.g. _sip._udp.{self.domain} SRV 10 100 5060 sip.{self.domain} (RFC 3263 §4.2)")
        self.check_ptr()
        targets = self.check_resolution()
        self.check_expectations(expect_hosts, expect_addresses)
        if probe:
            self.check_probes(targets)

    def nameserver_failed(self, answer: R.Answer) -> None:
        servers = ", ".join(self.report.nameservers)
        if answer.status is R.Status.TIMEOUT:
            detail = f"no answer from {servers} ({answer.error}); further checks skipped"
            hint = "is the name server running and reachable? point --nameserver at it (IP[:PORT])"
        elif answer.status is R.Status.SERVFAIL:
            detail = f"{servers} failed to answer NAPTR {self.domain}: {answer.error}; further checks skipped"
            hint = f"the server answers SERVFAIL/REFUSED: does it serve (or forward) {self.domain}?"
        else:
            detail = f"lookup failed: {answer.error}; further checks skipped"
            hint = "check --nameserver and the domain name"
        self.add("nameserver", servers, Verdict.FAIL, detail, hint, status=answer.status.value)

    def check_naptr(self, naptr: R.Answer) -> list[str]:
        """NAPTR rows; returns the SRV names to check (standard ones plus replacements)."""
        srv_names = [f"{s}.{self.domain}" for s in SRV_SERVICES]
        if not naptr.ok:
            self.add("naptr", self.domain, Verdict.WARN, f"no NAPTR records ({naptr.status.value})",
                     "optional: without NAPTR, clients try SRV _sips._tcp, _sip._tcp, _sip._udp (RFC 3263 §4.1)")
            return srv_names
        sip = [r for r in naptr.records if r.service.upper() in R.NAPTR_SERVICES]
        if not sip:
            self.add("naptr", self.domain, Verdict.WARN, "NAPTR records exist but none for SIP",
                     "add NAPTR records with services SIP+D2U, SIP+D2T or SIPS+D2T")
        for r in sorted(sip, key=lambda r: (r.order, r.preference)):
            transport = R.NAPTR_SERVICES[r.service.upper()]
            subject = f"{r.service} → {r.replacement or '.'}"
            detail = f"order {r.order} preference {r.preference} flags {r.flags!r}"
            if r.flags.lower() != "s":
                self.add("naptr", subject, Verdict.FAIL, f"{detail}: SIP NAPTR records need flag 's'",
                         "set the flags field to \"s\" (RFC 3263 §4.1)")
                continue
            if not r.replacement:
                self.add("naptr", subject, Verdict.FAIL, f"{detail}: no replacement", "the replacement must be an SRV name")
                continue
            self.naptr_targets.add(r.replacement)
            if r.replacement not in srv_names:
                srv_names.append(r.replacement)
            srv = self.q(r.replacement, "SRV")
            expected = R.SRV_PREFIXES[transport]
            if srv.ok:
                if not r.replacement.startswith(expected + "."):
                    self.add("naptr", subject, Verdict.WARN, f"{detail}: {r.service} usually points to {expected}.{self.domain}",
                             f"check that {r.replacement} really offers {transport.upper()}")
                else:
                    self.add("naptr", subject, Verdict.PASS, f"{detail}; SRV exists")
            elif srv.status in (R.Status.NXDOMAIN, R.Status.NODATA):
                self.add("naptr", subject, Verdict.FAIL, f"{detail}; {r.replacement} has no SRV records",
                         f"{r.replacement} is missing although a NAPTR points to it: add the SRV records or remove the NAPTR")
            else:
                self.lookup_failed("naptr", subject, srv)
        return srv_names

    def check_srv(self, srv_names: list[str]) -> bool:
        legacy = f"{LEGACY_TLS}.{self.domain}"
        found = False
        for name in [*srv_names, legacy]:
            answer = self.q(name, "SRV")
            if answer.status in (R.Status.NXDOMAIN, R.Status.NODATA):
                if name == legacy or name in self.naptr_targets:
                    continue  # absent legacy name is fine; NAPTR row already failed
                self.add("srv", name, Verdict.WARN, "not published",
                         f"publish {name} SRV if the server offers {_service_transport(name)}")
                continue
            if not answer.ok:
                self.lookup_failed("srv", name, answer)
                continue
            found = True
            records = sorted(answer.records, key=lambda r: (r.priority, -r.weight, r.target, r.port))
            listing = "; ".join(f"{r.priority} {r.weight} {r.port} {r.target or '.'}" for r in records)
            problems: list[str] = []
            hints: list[str] = []
            tls = _tls_name(name)
            for r in records:
                if not r.target:
                    continue
                self.srv_targets.add(r.target)
                if tls and r.port == 5060:
                    problems.append(f"port 5060 for TLS on {r.target}")
                    hints.append("TLS (sips) is usually on port 5061")
                elif not tls and r.port == 5061:
                    problems.append(f"port 5061 for {_service_transport(name)} on {r.target}")
                    hints.append("5061 is the TLS port; UDP/TCP SIP is usually on 5060")
            if name == legacy:
                have_sips = self.q(f"_sips._tcp.{self.domain}", "SRV").ok
                if not have_sips:
                    problems.append("legacy _sip._tls only")
                    hints.append(f"RFC 3263 clients look up _sips._tcp.{self.domain}: publish it too")
            if all(not r.target for r in records):
                self.add("srv", name, Verdict.PASS, "service explicitly not offered (target \".\")", records=listing)
            elif problems:
                self.add("srv", name, Verdict.WARN, f"{listing} — {', '.join(problems)}", "; ".join(dict.fromkeys(hints)))
            else:
                self.add("srv", name, Verdict.PASS, listing)
            targets = [r for r in records if r.target]
            self.srv_sets[name] = {r.target for r in targets}
            if len({(r.target, r.port) for r in targets}) > 1:
                self.check_spread(name, targets)
        return found

    def check_spread(self, name: str, records: list[Any]) -> None:
        """How clients share out one SRV name's servers (RFC 2782): the lowest priority takes
        everything while one of it answers, each server by its weight's share; a higher priority
        is the failover."""
        groups: dict[int, list[Any]] = {}
        for r in records:
            groups.setdefault(r.priority, []).append(r)
        parts, shares, problems, hints = [], {}, [], []
        for rank, priority in enumerate(sorted(groups)):
            group = groups[priority]
            total = sum(r.weight for r in group)
            cells = []
            for r in group:
                share = r.weight / total if total else 1 / len(group)
                shares[f"{r.target}:{r.port}"] = {"priority": priority, "share": round(share, 3)}
                cells.append(f"{hostport(r.target, r.port)} {share:.0%}")
            role = "first" if rank == 0 else "if those fail"
            parts.append(f"priority {priority} ({role}): {', '.join(cells)}")
            zero = [r.target for r in group if r.weight == 0]
            if zero and total:
                problems.append(f"weight 0 for {', '.join(zero)} beside weighted servers")
                hints.append("RFC 2782 gives a weight-0 server a very small share: give every node of a priority a weight")
        seen = [(r.target, r.port) for r in records]
        if len(seen) != len(set(seen)):
            problems.append("one server listed twice")
            hints.append("list each target and port once; change its weight to give it a bigger share")
        detail = "; ".join(parts)
        if problems:
            self.add("spread", name, Verdict.WARN, f"{detail} — {', '.join(problems)}", "; ".join(hints), shares=shares)
        else:
            self.add("spread", name, Verdict.PASS, detail, shares=shares)

    def check_targets(self) -> None:
        for target in sorted(self.srv_targets):
            a, aaaa = self.q(target, "A"), self.q(target, "AAAA")
            failed = [x for x in (a, aaaa) if x.status in (R.Status.TIMEOUT, R.Status.SERVFAIL, R.Status.ERROR)]
            ips = [str(ip) for x in (a, aaaa) if x.ok for ip in x.records]
            canonical = a.canonical_name or aaaa.canonical_name
            if canonical is None and not ips and not failed:
                cname = self.q(target, "CNAME")
                canonical = cname.records[0] if cname.ok else None
            if canonical:
                self.add("target", target, Verdict.FAIL, f"is a CNAME for {canonical} (RFC 2782 forbids aliases as SRV targets)",
                         f"point the SRV record at {canonical} itself", canonical=canonical, addresses=ips)
            elif failed and not ips:
                self.lookup_failed("target", target, failed[0])
            elif not ips:
                self.add("target", target, Verdict.FAIL, f"SRV target has no A/AAAA record ({a.status.value})",
                         f"add an A record for {target}")
            else:
                self.add("target", target, Verdict.PASS, f"{', '.join(ips)}", addresses=ips)
            for ip in ips:  # the address belongs to the canonical name, not to an alias
                self.addresses.setdefault(ip, set()).add(canonical or target)

    def check_domain_addresses(self, found_srv: bool) -> bool:
        a, aaaa = self.q(self.domain, "A"), self.q(self.domain, "AAAA")
        ips = [str(ip) for x in (a, aaaa) if x.ok for ip in x.records]
        if ips:
            self.add("address", self.domain, Verdict.PASS, ", ".join(ips), addresses=ips)
            for ip in ips:
                self.addresses.setdefault(ip, set()).add(self.domain)
            return True
        failed = [x for x in (a, aaaa) if x.status in (R.Status.TIMEOUT, R.Status.SERVFAIL, R.Status.ERROR)]
        if failed:
            self.lookup_failed("address", self.domain, failed[0])
        elif found_srv:
            self.add("address", self.domain, Verdict.WARN, "no A/AAAA for the domain itself",
                     f"fine with SRV; clients without SRV support need an A record for {self.domain}")
        else:
            self.add("address", self.domain, Verdict.FAIL, "no A/AAAA for the domain and no SRV records",
                     f"add an A record for {self.domain} or SRV records (RFC 3263 §4.2)")
        return False

    def check_ptr(self) -> None:
        for ip in sorted(self.addresses, key=_ip_sort_key):
            names = self.addresses[ip]
            forward = ", ".join(sorted(names))
            rev = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
            ptr = self.q(rev, "PTR")
            subject = f"{ip} ({forward})"
            if ptr.status in (R.Status.NXDOMAIN, R.Status.NODATA):
                self.add("ptr", subject, Verdict.FAIL, f"no PTR record ({ptr.status.value})",
                         f"add a PTR record {rev} → {sorted(names)[0]}")
                continue
            if not ptr.ok:
                self.lookup_failed("ptr", subject, ptr)
                continue
            rdtype = "AAAA" if ":" in ip else "A"
            confirmed, unconfirmed = [], []
            for name in ptr.records:
                back = self.q(name, rdtype)
                (confirmed if back.ok and ip in back.records else unconfirmed).append((name, back))
            ptr_names = ", ".join(ptr.records)
            if not confirmed:
                name, back = unconfirmed[0]
                how = back.status.value if not back.ok else f"it resolves to {', '.join(back.records)}"
                self.add("ptr", subject, Verdict.FAIL,
                         f"PTR is {ptr_names}, which does not resolve back to {ip} ({how})",
                         f"point the PTR at {sorted(names)[0]}, or add an {rdtype} record {name} → {ip}",
                         ptr=list(ptr.records))
            elif not {n for n, _ in confirmed} & names:
                self.add("ptr", subject, Verdict.WARN,
                         f"PTR {ptr_names} is forward-confirmed but is not the name in the records",
                         f"endpoints comparing names expect {sorted(names)[0]}", ptr=list(ptr.records))
            else:
                self.add("ptr", subject, Verdict.PASS, f"→ {ptr_names} → {ip} (forward-confirmed)", ptr=list(ptr.records))

    def check_resolution(self) -> list[R.Target]:
        all_targets: list[R.Target] = []
        for scheme in ("sip", "sips"):
            gen = R.plan(scheme, self.domain, None, None, randint=lambda a, b: b)
            targets = R.run_sync(gen, self.resolver, self.cache)
            uri = f"{scheme}:{self.domain}"
            listing = ", ".join(f"{t.transport} {hostport(t.host, t.port)}" for t in targets)
            if targets:
                self.add("resolve", uri, Verdict.PASS, listing,
                         targets=[asdict(t) for t in targets])
            elif scheme == "sip":
                self.add("resolve", uri, Verdict.FAIL, "RFC 3263 finds no server (sipd could not route here)",
                         "fix the failures above: SRV records with targets that have addresses, or an A record")
            else:
                self.add("resolve", uri, Verdict.WARN, "no TLS server found",
                         f"publish _sips._tcp.{self.domain} SRV (port 5061) if the server offers TLS")
            all_targets.extend(t for t in targets if t not in all_targets)
        return all_targets

    def check_expectations(self, hosts: list[str], addresses: list[str]) -> None:
        with_a = {n for names in self.addresses.values() for n in names}
        if len(hosts) > 1:  # several nodes: each SRV name should reach each of them
            for name, targets in sorted(self.srv_sets.items()):
                missing = [h for h in hosts if h not in targets]
                if targets and missing:
                    self.add("expect", name, Verdict.WARN,
                             f"does not point at {', '.join(missing)} (its targets: {', '.join(sorted(targets))})",
                             f"clients using {_service_transport(name)} never reach that node: add an SRV record "
                             f"for it, at the same priority to share the load or a higher one as a failover")
        for host in hosts:
            if host in self.srv_targets or host in with_a:
                self.add("expect", host, Verdict.PASS, "the records point at this host")
            else:
                pointed = ", ".join(sorted(self.srv_targets)) or "nothing"
                self.add("expect", host, Verdict.FAIL, f"no record points at {host} (SRV targets: {pointed})",
                         f"make the SRV records of {self.domain} point at {host}")
        for ip in addresses:
            canon = str(ipaddress.ip_address(ip))
            if canon in self.addresses:
                self.add("expect", ip, Verdict.PASS, f"published as {', '.join(sorted(self.addresses[canon]))}")
            else:
                found = ", ".join(sorted(self.addresses, key=_ip_sort_key)) or "none"
                self.add("expect", ip, Verdict.FAIL, f"{ip} is not among the published addresses ({found})",
                         f"add an A/AAAA record → {ip} for the SRV target of this server")

    def check_probes(self, targets: list[R.Target]) -> None:
        if not targets:
            self.add("probe", self.domain, Verdict.WARN, "nothing to probe: no target resolved", "fix the DNS first")
            return
        for t in targets:
            subject = f"{t.transport} {hostport(t.host, t.port)}"
            result = probe_options(t.transport, t.host, t.port, self.domain, self.timeout)
            data = {"status": result.status, "rtt_ms": result.rtt_ms, "name": t.name}
            if result.status is None:
                self.add("probe", subject, Verdict.FAIL, f"no SIP answer: {result.error}",
                         f"is a SIP server listening on {t.transport}:{hostport(t.host, t.port)}? check the firewall", **data)
            elif 200 <= result.status < 300:
                self.add("probe", subject, Verdict.PASS, f"{result.status} {result.reason} in {result.rtt_ms:.1f} ms", **data)
            else:
                self.add("probe", subject, Verdict.WARN, f"{result.status} {result.reason} in {result.rtt_ms:.1f} ms",
                         f"the server answers but not 200: does it serve {self.domain}?", **data)
            if t.transport == "tls" and result.cert_der is not None:
                self.check_certificate(subject, result.cert_der)

    def check_certificate(self, subject: str, der: bytes) -> None:
        covers, names, not_after = certificate_covers(der, self.domain)
        shown = ", ".join(names) or "no names"
        expired = not_after is not None and not_after < time.time()
        until = time.strftime("%Y-%m-%d", time.gmtime(not_after)) if not_after is not None else "?"
        if expired:
            self.add("tls", subject, Verdict.FAIL, f"certificate expired on {until} ({shown})",
                     "renew the certificate (sipctl cert csr)", names=names)
        elif not covers:
            self.add("tls", subject, Verdict.FAIL, f"certificate ({shown}) does not cover {self.domain}",
                     f"RFC 5922 §7.2: the certificate needs subjectAltName DNS:{self.domain} or URI:sip:{self.domain}",
                     names=names)
        else:
            self.add("tls", subject, Verdict.PASS, f"certificate covers {self.domain} (valid until {until})", names=names)


def _service_transport(name: str) -> str:
    if name.startswith("_sips._tcp") or name.startswith(LEGACY_TLS):
        return "TLS"
    if name.startswith("_sip._tcp"):
        return "TCP"
    if name.startswith("_sip._udp"):
        return "UDP"
    return "SIP"


def _ip_sort_key(ip: str) -> tuple[int, int]:
    a = ipaddress.ip_address(ip)
    return (a.version, int(a))


# ---------------------------------------------------------------------------------------------
# TLS certificate coverage (RFC 5922 §7.2)


def certificate_covers(der: bytes, domain: str) -> tuple[bool, list[str], float | None]:
    """Whether the certificate identifies ``domain`` as a SIP domain (RFC 5922 §7.2).

    The rules are sipd's own (:func:`sipd.tlsconf.matches_sip_domain`: subjectAltName ``sip:`` URIs
    and dNSNames, CN only without SAN, never wildcards), so the check agrees with the daemon.

    Returns:
        (covers, the identities found as "DNS:x"/"URI:x"/"IP:x"/"CN:x", notAfter as POSIX time)
    """
    from cryptography import x509

    from sipd.tlsconf import matches_sip_domain

    from .cert import names_of

    cert = x509.load_der_x509_certificate(der)
    names = names_of(cert)
    shown = ([f"URI:{u}" for u in names.uris] + [f"DNS:{d}" for d in names.dns] + [f"IP:{i}" for i in names.ips]
             or ([f"CN:{names.common_name}"] if names.common_name else []))
    return matches_sip_domain(names, domain), shown, cert.not_valid_after_utc.timestamp()
