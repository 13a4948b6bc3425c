"""sipctl trace: live SIP messages from the running daemon, filtered on the daemon side."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ..context import get_env

KEY_HEADERS = ("From", "To", "Call-ID", "CSeq", "Contact", "Via", "Route", "Record-Route", "User-Agent")


def trace(
    ctx: typer.Context,
    user: Annotated[Optional[str], typer.Option("--user", "-u", help="Only messages whose R-URI, From, To or Contact user is this.")] = None,
    ip: Annotated[Optional[str], typer.Option("--ip", help="Only messages to or from this peer address.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", "-m", help="Only this method (requests and their responses).")] = None,
    call_id: Annotated[Optional[str], typer.Option("--call-id", help="Only this Call-ID.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Print whole messages instead of the summary.")] = False,
    pcap: Annotated[Optional[str], typer.Option("--pcap", help="Also write the messages to this pcap file (Wireshark, sngrep).")] = None,
    count: Annotated[int, typer.Option("--count", "-n", help="Stop after this many messages (0 = until Ctrl-C).")] = 0,
    duration: Annotated[float, typer.Option("--duration", help="Stop after this many seconds (0 = until Ctrl-C).")] = 0.0,
) -> None:
    """Show live SIP messages from the running sipd (filtered by the daemon; free when unused).

    Example: sipctl trace --user alice --method REGISTER --pcap /tmp/alice.pcap
    """
    from rich.console import Console
    from rich.markup import escape

    from sipd.livetrace import trace_socket_path

    from ..lib import trace as lib

    env = get_env(ctx)
    path = trace_socket_path(env.config.mgmt.socket)
    sock = lib.connect(path, {"user": user or "", "ip": ip or "", "method": method or "", "call_id": call_id or ""})
    out = Console(highlight=False)
    fh = open(pcap, "wb") if pcap else None  # noqa: SIM115 - closed in finally
    writer = lib.PcapWriter(fh) if fh else None
    shown = 0
    try:
        for ev in lib.events(sock, count=count, duration=duration):
            shown += 1
            if writer:
                writer.write(ev)
            arrow = "[cyan]<-[/cyan]" if ev.direction == "in" else "[magenta]->[/magenta]"
            peer = f"[{ev.peer[0]}]:{ev.peer[1]}" if ":" in ev.peer[0] else f"{ev.peer[0]}:{ev.peer[1]}"
            stamp = time.strftime("%H:%M:%S", time.localtime(ev.time)) + f".{int(ev.time % 1 * 1000):03d}"
            first = ev.first_line
            style = "bold green" if first.startswith("SIP/2.0 2") else "bold red" if first.startswith(("SIP/2.0 4", "SIP/2.0 5", "SIP/2.0 6")) else "bold"
            out.print(f"[dim]{stamp}[/dim] {arrow} {ev.proto} {escape(peer)}  [{style}]{escape(first)}[/{style}]")
            if raw:
                out.print(escape(ev.data.decode("latin-1").rstrip("\r\n")).replace("\r", ""), markup=True)
                out.print()
            else:
                for name in KEY_HEADERS[:4]:
                    value = ev.header(name, {"From": "f", "To": "t", "Call-ID": "i"}.get(name, name))
                    if value:
                        out.print(f"    [dim]{name}:[/dim] {escape(value)}")
            if ev.dropped:
                out.print(f"[yellow]({ev.dropped} messages dropped: terminal too slow)[/yellow]")
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        if fh:
            fh.close()
    if pcap:
        Console(stderr=True).print(f"{shown} message(s) written to {pcap}", highlight=False, markup=False)
