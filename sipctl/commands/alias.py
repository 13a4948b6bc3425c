"""sipctl alias: extra names for users (the dbaliases table), e.g. a short number for a room system."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output, show_change

app = typer.Typer(help="Manage user aliases.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command()
def add(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(metavar="ALIAS@DOMAIN", help="The new name, e.g. 1247@example.org.")],
    target: Annotated[str, typer.Argument(metavar="USER@DOMAIN", help="The existing user it reaches.")],
    force: Annotated[bool, typer.Option("--force", help="Allow a non-local alias domain or an unknown user.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add an alias for a user.

    Example: sipctl alias add 1247@example.org vcc-ex90@example.org
    """
    from ..lib import changes
    from ..lib import db as dblib
    from ..lib import provision

    env = get_env(ctx)
    a_user, a_domain = provision.parse_aor(alias, "ALIAS@DOMAIN")
    user, domain = provision.parse_aor(target)
    with dblib.env_session(env) as db:
        change = changes.add_alias(env.config, db, a_user, a_domain, user, domain, force=force)
    show_change(Output(json_mode=as_json), change)


@app.command()
def rm(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(metavar="ALIAS@DOMAIN", help="The alias to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove an alias.

    Example: sipctl alias rm 1247@example.org
    """
    from ..lib import changes
    from ..lib import db as dblib
    from ..lib import provision

    env = get_env(ctx)
    a_user, a_domain = provision.parse_aor(alias, "ALIAS@DOMAIN")
    with dblib.env_session(env) as db:
        change = changes.rm_alias(env.config, db, a_user, a_domain)
    show_change(Output(json_mode=as_json), change)


@app.command("list")
def list_(
    ctx: typer.Context,
    user: Annotated[Optional[str], typer.Option("--user", "-u", metavar="USER@DOMAIN",
                                                help="Only aliases of this user.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List aliases and the users they reach.

    Example: sipctl alias list --user vcc-ex90@example.org
    """
    from ..lib import db as dblib
    from ..lib import provision

    u, d = provision.parse_aor(user) if user else (None, None)
    with dblib.env_session(get_env(ctx)) as db:
        rows = provision.list_aliases(db, u, d)
    Output(json_mode=as_json).table(["alias", "target"], [(r["alias"], r["target"]) for r in rows], data=rows)
