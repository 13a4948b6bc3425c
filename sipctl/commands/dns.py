"""sipctl dns: check that a SIP domain's DNS lets endpoints find the server (RFC 3263)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..context import get_env
from ..output import Output

if TYPE_CHECKING:
    from ..lib.dnscheck import Report

app = typer.Typer(help="DNS of a SIP domain: NAPTR, SRV, A/AAAA, PTR and live probes.", no_args_is_help=True)

MARKS = {"pass": "[green]✓[/green]", "fail": "[red]✗[/red]", "warn": "[yellow]![/yellow]"}


@app.command()
def check(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="The SIP domain, e.g. example.org.")],
    *,
    nameserver: Annotated[Optional[list[str]], typer.Option(
        "--nameserver", "-n", help="Name server to ask, IP or IP:PORT (repeat); default \\[dns] nameservers, else the system's.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per DNS lookup and per probe.")] = 2.0,
    probe: Annotated[bool, typer.Option("--probe", help="Send OPTIONS to every target (UDP, TCP, TLS); check TLS certificates.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable report (for monitoring).")] = False,
    expect_host: Annotated[Optional[list[str]], typer.Option(
        "--expect-host", help="Host name the SRV records must point at (repeat).")] = None,
    expect_address: Annotated[Optional[list[str]], typer.Option(
        "--expect-address", help="Address that must be published (repeat); default: the config's listen addresses when a config file is used.")] = None,
) -> None:
    """Check NAPTR, SRV, target addresses, reverse DNS and RFC 3263 resolution of a SIP domain.

    Every check prints ✓ (pass), ✗ (fail, with a hint) or ! (warning).
    Exit status: 0 when nothing failed, 1 when something did, 2 for usage errors.

    Example: sipctl dns check example.org --nameserver 127.0.0.1:5353 --probe
    """
    from ..lib.dnscheck import Verdict, check_domain

    env = get_env(ctx)
    servers = list(nameserver or [])
    addresses = list(expect_address or [])
    if not servers or expect_address is None:
        conf = env.config
        servers = servers or list(conf.dns.nameservers)
        if expect_address is None and conf.source is not None:
            addresses = _listen_addresses(conf)
    report = check_domain(domain, nameservers=servers, timeout=timeout, probe=probe,
                          expect_hosts=list(expect_host or []), expect_addresses=addresses)
    render(report, Output(json_mode=json_))
    if not report.ok:
        from ..errors import CheckFailed

        failed = report.count(Verdict.FAIL)
        raise CheckFailed(f"DNS of {report.domain}: {failed} check{'s' if failed != 1 else ''} failed",
                          hint="each ✗ line says what to change", exit_code=report.exit_code)


def _listen_addresses(conf) -> list[str]:  # type: ignore[no-untyped-def]
    """Specific (not wildcard) hosts sipd listens on or advertises: what DNS should point at."""
    import ipaddress

    from sipd.config import parse_listen

    hosts = [parse_listen(item).host for item in conf.server.listen]
    if conf.server.advertised_address:
        hosts = [conf.server.advertised_address]
    out: list[str] = []
    for host in hosts:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if not ip.is_unspecified and str(ip) not in out:
            out.append(str(ip))
    return out


def render(report: Report, out: Output) -> None:
    """The report as a table with a summary line, or as JSON."""
    from rich.markup import escape
    from rich.table import Table

    if out.json_mode:
        out.json(report.to_dict())
        return
    table = Table(title=f"DNS check of {escape(report.domain)} via {escape(', '.join(report.nameservers))}")
    for col in ("", "check", "subject", "result", "hint"):
        table.add_column(col, overflow="fold")  # a long SRV target or hint wraps, never cut
    for c in report.checks:
        table.add_row(MARKS[c.verdict.value], c.section, escape(c.subject), escape(c.detail), escape(c.hint))
    out.out.print(table)
    colour = "green" if report.ok else "red"
    out.out.print(f"[{colour}]{escape(report.summary())}[/{colour}]", highlight=False)
