"""sipctl doctor: the report's troubleshooting checklist as one command.

The OpenSIPS report lists the places an operator had to look when something failed: the config,
the database tables, ``netstat -tulpn | grep opensips``, the control panel, the log at a high level,
DNS. Each check here answers one of them with a verdict and, when it fails, a hint saying what to do.
Checks reuse the libraries of the single-purpose commands (config check, db status, mgmt, cert check,
dns check); nothing here prints.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import SipctlError

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"


@dataclass(kw_only=True)
class Finding:
    area: str
    subject: str
    verdict: str
    detail: str
    hint: str = ""


@dataclass(kw_only=True)
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)

    def add(self, area: str, subject: str, verdict: str, detail: str, hint: str = "") -> None:
        self.findings.append(Finding(area=area, subject=subject, verdict=verdict, detail=detail, hint=hint))

    @property
    def ok(self) -> bool:
        return not any(f.verdict == FAIL for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "findings": [asdict(f) for f in self.findings]}


def run(env: Any, *, dns_timeout: float = 2.0, skip_dns: bool = False, log_seconds: float = 3600) -> DoctorReport:
    """Walk the checklist. Later checks still run when earlier ones fail."""
    from sipd import config as cfg
    from sipd.validation import VALIDATORS

    report = DoctorReport()
    conf, problems = cfg.check(env.config_path, validators=VALIDATORS)
    where = str(conf.source) if conf.source else "built-in defaults"
    if problems:
        for p in problems:
            report.add("config", p.key or where, FAIL, p.message, p.hint or "run sipd --check-config")
    else:
        report.add("config", where, PASS, "configuration valid")
    if env.db_url:
        conf.database.url = env.db_url

    domains = _check_database(report, conf)
    daemon_up = _check_daemon(report, conf)
    _check_listen(report, conf, daemon_up)
    _check_domains(report, conf, domains, daemon_up)
    _check_provisioning(report, conf)
    _check_tls(report, conf, domains)
    if not skip_dns:
        _check_dns(report, conf, domains, dns_timeout)
    if daemon_up:
        _check_log(report, conf, log_seconds)
    return report


def _guard(report: DoctorReport, area: str, subject: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except SipctlError as exc:
        report.add(area, subject, FAIL, exc.message, exc.hint)


def _check_database(report: DoctorReport, conf: Any) -> list[str]:
    from sipd.db import mask_url

    from . import db as dblib

    url = conf.database.url
    domains: list[str] = []
    try:
        st = dblib.status(url, timeout=min(conf.database.connect_timeout, 5.0))
    except SipctlError as exc:
        report.add("database", mask_url(url), FAIL, exc.message, exc.hint or "check [database] url")
        return domains
    refused = dblib.not_serving(st)
    if refused:
        report.add("database", st["url"], FAIL, *refused)
        return domains
    if st["missing"]:
        report.add("database", st["url"], FAIL, f"tables missing: {', '.join(st['missing'])}",
                   "run sipctl db create")
    elif not st["ok"]:
        old = [t["name"] for t in st["tables"] if t["state"] != "ok"]
        unready = [f"{p['table']} ({p['problem']})" for p in st["galera_problems"]]
        report.add("database", st["url"], FAIL,
                   f"schema version differs for: {', '.join(old)}" if old else
                   f"tables not ready for Galera: {', '.join(unready)}", "run sipctl db migrate")
    else:
        try:  # sipd refuses to start on a database it cannot write; say so before it does
            dblib.check_writable(url, timeout=5.0)
        except SipctlError as exc:
            report.add("database", st["url"], FAIL, f"reachable but not writable: {exc.message}",
                       exc.hint or "sipd needs to write it (registrations, accounting)")
        else:
            report.add("database", st["url"], PASS,
                       f"{st['backend']} reachable and writable, schema up to date ({len(st['tables'])} tables)")
    try:
        with dblib.session(url, timeout=5.0) as db:
            domains = [r["domain"] for r in db.query("SELECT domain FROM domain ORDER BY domain")]
    except SipctlError:
        pass
    return domains


def _check_daemon(report: DoctorReport, conf: Any) -> bool:
    from . import mgmt

    try:
        up = mgmt.call(conf, "uptime", timeout=3.0)
    except SipctlError as exc:
        report.add("daemon", conf.mgmt.socket, FAIL, exc.message,
                   exc.hint or "start sipd (systemctl start sipd) and check its log")
        return False
    report.add("daemon", conf.mgmt.socket, PASS, f"sipd answering, up {up.get('Up time', '?')}")
    _check_core(report, conf)
    return True


def _check_core(report: DoctorReport, conf: Any) -> None:
    """Which protocol core the daemon runs (pure Python, or compiled by scripts/build-core), and
    whether a compiled one is older than its source (it would run the old code)."""
    from . import mgmt

    try:
        core = mgmt.call(conf, "version", timeout=3.0).get("Core", "")
    except SipctlError:
        return
    if not core:
        report.add("core", "protocol core", WARN, "this sipd does not say which core it runs",
                   "restart sipd: it runs older code than this sipctl")
    elif "STALE" in core:
        report.add("core", "protocol core", WARN, core,
                   "scripts/build-core (or --clean for pure Python), then restart sipd")
    else:
        report.add("core", "protocol core", PASS, core)


def _check_listen(report: DoctorReport, conf: Any, daemon_up: bool) -> None:
    """The netstat check: every configured socket bound (by sipd when it runs, free when it doesn't)."""
    from sipd.config import parse_listen

    from .sipprobe import probe_options

    for item in conf.server.listen:
        try:
            la = parse_listen(item)
        except ValueError as exc:
            report.add("listen", item, FAIL, str(exc), "fix server.listen")
            continue
        if daemon_up:
            res = probe_options(la.proto, la.host, la.port, la.host, 2.0)
            if res.status is not None:
                report.add("listen", str(la), PASS, f"answers OPTIONS: {res.status} {res.reason} in {res.rtt_ms:.1f} ms")
            else:
                report.add("listen", str(la), FAIL, f"no SIP answer ({res.error or 'timeout'})",
                           f"sipd runs but {la} is not served: check its log for a bind error; "
                           f"ss -lntup | grep {la.port} shows who holds the port")
        else:
            taken = _port_taken(la.proto, la.host, la.port)
            if taken:
                report.add("listen", str(la), FAIL, f"{taken}, so sipd cannot bind it",
                           f"ss -lntup | grep :{la.port} shows the program holding it; stop it or change server.listen")
            else:
                report.add("listen", str(la), WARN, "free (sipd is not running)", "start sipd")


def _port_taken(proto: str, host: str, port: int) -> str:
    from sipd.transport.preflight import probe_bind

    try:
        probe_bind(proto, host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "port in use by another program"
        if exc.errno == errno.EADDRNOTAVAIL:
            return "address not configured on this host"
        if exc.errno == errno.EACCES:
            return ""  # privileged port: only root can test; not a finding
        return str(exc)
    return ""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _check_domains(report: DoctorReport, conf: Any, db_domains: list[str], daemon_up: bool) -> None:
    """What sipd serves: [server] domains plus the domain table (both multidomain modes), and what it
    does with an IP address domain; with sipd running, a domain it has not loaded yet."""
    all_domains = sorted(set(db_domains) | set(conf.server.domains))
    if not all_domains:
        report.add("domains", "local domains", FAIL, "no local domain: every REGISTER will be refused (403)",
                   "sipctl domain add sip.example.org (and the server's IP address, as the report does)")
        return
    report.add("domains", "local domains", PASS, ", ".join(all_domains))
    for ip in (d for d in all_domains if _is_ip(d.strip("[]"))):
        if conf.spam.enabled and conf.spam.calls_to_own_ip:
            report.add("domains", ip, PASS, f"IP address domain: registrations work, calls to user@{ip} are "
                       "dropped as spam ([spam] calls_to_own_ip = true)")
        else:
            report.add("domains", ip, PASS, f"IP address domain: calls to user@{ip} are routed like calls to a "
                       "domain name ([spam] calls_to_own_ip = false)")
    if daemon_up:
        from . import mgmt

        try:
            served = {d.get("name", "").lower() for d in mgmt.call(conf, "domain_dump", timeout=5.0)["Domains"]}
        except (SipctlError, KeyError, TypeError, AttributeError):
            return
        missing = [d for d in all_domains if d.lower() not in served]
        if missing:
            report.add("domains", "running sipd", WARN, f"not served yet: {', '.join(missing)} (the database "
                       "changed without a reload)", "sipctl reload")


def _check_provisioning(report: DoctorReport, conf: Any) -> None:
    """Aliases and dialplan rules that the configuration keeps from ever applying to a call."""
    from . import db as dblib

    try:
        with dblib.session(conf.database.url, timeout=5.0) as db:
            row = db.query_one("SELECT COUNT(*) AS n FROM dbaliases")
            aliases = int(row["n"]) if row else 0
            dpids = [int(r["dpid"]) for r in db.query("SELECT dpid FROM dialplan WHERE disabled = 0")]
    except SipctlError:
        return  # the database check has said why
    proxy = conf.proxy
    if aliases and not proxy.aliases:
        report.add("aliases", f"{aliases} alias(es)", WARN, "not used: [proxy] aliases = false",
                   "set [proxy] aliases = true and restart sipd, so that calls to an alias reach its user")
    elif aliases:
        report.add("aliases", f"{aliases} alias(es)", PASS, "calls to them reach their users ([proxy] aliases = true)")
    used = dpids.count(proxy.dialplan_id)
    if dpids and not proxy.dialplan:
        report.add("dialplan", f"{len(dpids)} rule(s)", WARN,
                   "never applied to a call: [proxy] dialplan = false", "set [proxy] dialplan = true and restart sipd")
    elif dpids and not used:
        report.add("dialplan", f"{len(dpids)} rule(s)", WARN,
                   f"none has dpid {proxy.dialplan_id}, the one calls use ([proxy] dialplan_id)",
                   "sipctl dp list; set [proxy] dialplan_id (restart sipd) or move the rules with sipctl dp edit --dpid")
    elif dpids:
        report.add("dialplan", f"{used} rule(s) of dpid {proxy.dialplan_id}", PASS,
                   "applied to calls to local domains ([proxy] dialplan = true)")


def _check_tls(report: DoctorReport, conf: Any, db_domains: list[str]) -> None:
    tls = getattr(conf, "tls", None)
    has_tls_listener = any(item.startswith("tls:") for item in conf.server.listen)
    if tls is None or not (has_tls_listener or tls.certificate):
        report.add("tls", "certificate", SKIP, "no TLS listener configured")
        return
    if not tls.certificate:
        report.add("tls", "certificate", FAIL, "a tls: listener is configured but [tls] certificate is empty",
                   "sipctl cert csr ... then set [tls] certificate and private_key")
        return
    from . import certcheck

    names = [d for d in sorted(set(db_domains) | set(conf.server.domains)) if not _is_ip(d)]
    try:
        # the CA sipd is configured with, as sipd itself uses it (the system CAs only when none is set)
        r = certcheck.check(tls.certificate, tls.private_key or None, ca=tls.ca_file or tls.ca_dir or None, domains=names)
    except SipctlError as exc:
        report.add("tls", tls.certificate, FAIL, exc.message, exc.hint)
        return
    for p in r.problems:
        report.add("tls", tls.certificate, FAIL, p, f"sipctl cert check --cert {tls.certificate} shows details")
    for w in r.warnings:
        report.add("tls", tls.certificate, WARN, w, "renew the certificate soon")
    if r.ok:
        report.add("tls", tls.certificate, PASS, f"{r.subject}, valid until {r.not_after} ({r.days_left} days)")


def _check_dns(report: DoctorReport, conf: Any, db_domains: list[str], timeout: float) -> None:
    from sipd.config import parse_listen

    from . import dnscheck

    names = [d for d in sorted(set(db_domains) | set(conf.server.domains)) if not _is_ip(d)]
    if not names:
        report.add("dns", "SRV/A records", SKIP, "no local domain with a DNS name")
        return
    addresses = []
    for item in conf.server.listen:
        try:
            host = parse_listen(item).host
        except ValueError:
            continue
        if _is_ip(host) and not ipaddress.ip_address(host).is_unspecified:
            addresses.append(host)
    nameservers = list(getattr(getattr(conf, "dns", None), "nameservers", []) or [])
    for name in names:
        try:
            r = dnscheck.check_domain(name, nameservers=nameservers, timeout=timeout,
                                      expect_addresses=sorted(set(addresses)))
        except SipctlError as exc:
            report.add("dns", name, FAIL, exc.message, exc.hint)
            continue
        failed = [c for c in r.checks if c.verdict is dnscheck.Verdict.FAIL]
        if failed:
            first = failed[0]
            more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
            report.add("dns", name, FAIL, f"{first.subject}: {first.detail}{more}",
                       first.hint or f"sipctl dns check {name} shows every record")
        else:
            report.add("dns", name, PASS, r.summary())


def _check_log(report: DoctorReport, conf: Any, seconds: float) -> None:
    from . import mgmt

    try:
        recent = mgmt.call(conf, "log_recent", {"seconds": str(int(seconds)), "level": "ERROR"}, timeout=3.0)
    except SipctlError as exc:
        report.add("log", "recent errors", WARN, exc.message)
        return
    records = recent.get("Records", [])
    if records:
        last = records[-1]
        report.add("log", "recent errors", FAIL,
                   f"{len(records)} error(s) in the last {int(seconds // 60)} min; last: {last['time']} {last['message']}",
                   "read the log around that time (journalctl -u sipd, or stderr)")
    else:
        report.add("log", "recent errors", PASS, f"no errors logged in the last {int(seconds // 60)} min")
