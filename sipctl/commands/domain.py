"""sipctl domain: the local SIP domains (host names or IP addresses) served by sipd."""

from __future__ import annotations

from typing import Annotated

import typer

from ..context import get_env
from ..output import Output, show_change

app = typer.Typer(help="Manage local SIP domains.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DomainArg = Annotated[str, typer.Argument(help="Host name or IP address, e.g. example.org or 192.0.2.10.")]


@app.command()
def add(
    ctx: typer.Context,
    domain: DomainArg,
    attrs: Annotated[str, typer.Option("--attrs", help="Free-form attributes stored with the domain.")] = "",
    accept_subdomain: Annotated[bool, typer.Option("--accept-subdomain", help="Also serve its subdomains.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a local domain; a running sipd serves it at once.

    Example: sipctl domain add example.org
    """
    from ..lib import changes
    from ..lib import db as dblib

    env = get_env(ctx)
    with dblib.env_session(env) as db:
        change = changes.add_domain(env.config, db, domain, attrs=attrs, accept_subdomain=accept_subdomain)
    show_change(Output(json_mode=as_json), change)


@app.command()
def rm(
    ctx: typer.Context,
    domain: DomainArg,
    force: Annotated[bool, typer.Option("--force", help="Remove even if users remain in it.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove a local domain (refused while it has users, unless --force).

    Example: sipctl domain rm example.org
    """
    from ..lib import changes
    from ..lib import db as dblib

    env = get_env(ctx)
    with dblib.env_session(env) as db:
        change = changes.rm_domain(env.config, db, domain, force=force)
    show_change(Output(json_mode=as_json), change)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the local domains with their number of users.

    Example: sipctl domain list --json
    """
    from ..lib import db as dblib
    from ..lib import provision

    with dblib.env_session(get_env(ctx)) as db:
        rows = provision.list_domains(db)
    Output(json_mode=as_json).table(
        ["domain", "users", "attrs", "accept_subdomain"],
        [(r["domain"], r["users"], r["attrs"], "yes" if r["accept_subdomain"] else "") for r in rows],
        data=rows)
