"""sipctl config: check and show the configuration shared by sipd and sipctl."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Check and show the configuration (sipd.toml).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command()
def check(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Validate the configuration like sipd --check-config; exit 1 when it has problems.

    Example: sipctl --config /etc/sipd/sipd.toml config check
    """
    from sipd.services.hook_check import check_config as check_all
    from sipd.validation import VALIDATORS

    from ..errors import CheckFailed

    env = get_env(ctx)
    conf, problems = check_all(env.config_path, VALIDATORS)  # as sipd --check-config: the routing hook imported too
    where = str(conf.source) if conf.source else (env.config_path or "built-in defaults")
    out = Output(json_mode=as_json)
    if as_json:
        out.json({"source": where, "ok": not problems,
                  "problems": [{"key": p.key, "message": p.message, "hint": p.hint} for p in problems]})
    else:
        for p in problems:
            out.err.print(f"{where}: {p}", highlight=False, markup=False)
        if not problems:
            out.result(f"configuration OK ({where})")
    if problems:
        if as_json:
            raise typer.Exit(1)
        raise CheckFailed(f"{len(problems)} problem(s) in {where}", hint="fix the keys listed above")


@app.command()
def show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print the effective configuration, defaults included, secrets masked.

    Example: sipctl config show --json
    """
    from sipd import config as cfg

    env = get_env(ctx)
    conf = env.config
    data = cfg.to_dict(conf, mask_secrets=True)
    out = Output(json_mode=as_json)
    if as_json:
        out.json({"source": str(conf.source) if conf.source else None, "config": data})
        return
    lines = [f"# effective configuration (source: {conf.source or 'built-in defaults'})"]
    for section, values in data.items():
        lines.append(f"\n[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    out.out.print("\n".join(lines), highlight=False, markup=False)


def _ask(features: object) -> None:
    """The osipsconfig-style checklist: one question per feature (typer.confirm / typer.prompt)."""
    from ..lib.template import CHECKLIST, RECOMMENDED

    for attr, name, question in CHECKLIST:
        # Enter takes what the command line asked for, else the recommended answer
        current = getattr(features, attr) or getattr(RECOMMENDED, attr)
        if attr == "failure_diversion":
            if typer.confirm(f"{name}: {question}", default=bool(current)):
                setattr(features, attr, typer.prompt("  diversion URI", default=current or "sip:voicemail@example.com"))
            else:
                setattr(features, attr, "")
        elif attr == "pstn_gateway":
            if typer.confirm(f"{name}: {question}", default=bool(current)):
                setattr(features, attr, typer.prompt("  gateway URI", default=current or "sip:192.0.2.10:5060"))
                features.pstn_prefix = typer.prompt("  number prefix", default=features.pstn_prefix)  # type: ignore[attr-defined]
            else:
                setattr(features, attr, "")
        else:
            setattr(features, attr, typer.confirm(f"{name}: {question}", default=bool(current)))


@app.command()
def generate(
    ctx: typer.Context,
    tcp: Annotated[bool, typer.Option("--tcp", help="ENABLE_TCP: listen on TCP too.")] = False,
    tls: Annotated[bool, typer.Option("--tls", help="ENABLE_TLS: listen on TLS (5061).")] = False,
    aliases: Annotated[bool, typer.Option("--aliases", help="USE_ALIASES: resolve the dbaliases table.")] = False,
    auth: Annotated[bool, typer.Option("--auth", help="USE_AUTH: digest authentication.")] = False,
    acc: Annotated[bool, typer.Option("--acc", help="USE_DBACC: accounting in the database.")] = False,
    persistent_location: Annotated[bool, typer.Option("--persistent-location", help="USE_DBUSRLOC: registrations stored in the database.")] = False,
    dialog: Annotated[bool, typer.Option("--dialog", help="USE_DIALOG: dialog tracking.")] = False,
    multidomain: Annotated[bool, typer.Option("--multidomain", help="USE_MULTIDOMAIN: each local domain has its own users.")] = False,
    nat: Annotated[bool, typer.Option("--nat/--no-nat", help="USE_NAT: NAT traversal (no media relay).")] = True,
    presence: Annotated[bool, typer.Option("--presence", help="USE_PRESENCE: presence server.")] = False,
    dialplan: Annotated[bool, typer.Option("--dialplan", help="USE_DIALPLAN: R-URI translation by the dialplan.")] = False,
    failure_diversion: Annotated[str, typer.Option("--failure-diversion", metavar="URI", help="VM_DIVERSION: divert failed calls to URI.")] = "",
    pstn_gateway: Annotated[str, typer.Option("--pstn-gateway", metavar="URI", help="HAVE_*_PSTN: PSTN gateway URI.")] = "",
    pstn_prefix: Annotated[str, typer.Option("--pstn-prefix", metavar="P", help="Number prefix routed to the PSTN gateway.")] = "+",
    http_mgmt: Annotated[bool, typer.Option("--http-mgmt", help="USE_HTTP_MANAGEMENT_INTERFACE: HTTP management on loopback.")] = False,
    address: Annotated[str, typer.Option("--address", help="This server's IP address (else a CUSTOMIZE ME placeholder).")] = "",
    port: Annotated[int, typer.Option("--port", min=1, max=65534, help="SIP port for UDP and TCP; TLS listens on the next one.")] = 5060,
    socket: Annotated[str, typer.Option("--socket", metavar="PATH", help="Management socket sipctl talks to sipd through (else /run/sipd/sipd.sock).")] = "",
    domain: Annotated[list[str] | None, typer.Option("--domain", help="SIP domain served (repeatable).")] = None,
    db_url: Annotated[str, typer.Option("--db-url", help="Database URL (else sqlite:////var/lib/sipd/sipd.db).")] = "",
    tls_cert: Annotated[str, typer.Option("--tls-cert", help="TLS certificate file.")] = "",
    tls_key: Annotated[str, typer.Option("--tls-key", help="TLS private key file.")] = "",
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Ask the feature checklist like osipsconfig.")] = False,
    out_file: Annotated[str, typer.Option("--out", "-o", metavar="FILE", help="Write to FILE instead of standard output.")] = "",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --out file.")] = False,
) -> None:
    """Write a commented sipd.toml for the residential profile; CUSTOMIZE ME marks what to change.

    With no feature option: a minimal registrar/proxy (UDP, no auth, registrations in memory).
    With --interactive, pressing Enter takes the recommended answer (TCP, auth, accounting, aliases,
    dialogs, NAT, presence, registrations kept in the database).

    Example: sipctl config generate --tcp --auth --acc --nat --failure-diversion sip:voicemail@example.com -o sipd.toml
    """
    from pathlib import Path

    from ..errors import ExistsError, UsageError
    from ..lib.template import Features, render

    features = Features(tcp=tcp, tls=tls, aliases=aliases, auth=auth, acc=acc, persistent_location=persistent_location,
                        dialog=dialog, multidomain=multidomain, nat=nat, presence=presence, dialplan=dialplan,
                        failure_diversion=failure_diversion, pstn_gateway=pstn_gateway, pstn_prefix=pstn_prefix,
                        http_mgmt=http_mgmt, address=address, port=port, mgmt_socket=socket, domains=list(domain or []), db_url=db_url,
                        tls_certificate=tls_cert, tls_private_key=tls_key)
    if interactive:
        _ask(features)
    if features.pstn_gateway and not features.pstn_prefix:
        raise UsageError("--pstn-prefix must not be empty", hint='e.g. --pstn-prefix + or --pstn-prefix 00')
    text = render(features)
    out = Output()
    if not out_file:
        out.out.print(text, highlight=False, markup=False, soft_wrap=True)
        return
    path = Path(out_file)
    if path.exists() and not force:
        raise ExistsError(f"{path} exists", hint="pass --force to overwrite it, or choose another --out")
    path.write_text(text, encoding="utf-8")
    out.result(f"wrote {path}; change the CUSTOMIZE ME lines, then: sipd --check-config -c {path}")
