"""sipctl web: the control panel (its own process) and its admin accounts."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output
from .user import _password

app = typer.Typer(help="Run the control panel (sipctl web) and manage its admins.",
                  invoke_without_command=True)
admin = typer.Typer(help="Manage the panel's admin accounts (stored in the database).", no_args_is_help=True)
app.add_typer(admin, name="admin")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The admin's login name, e.g. ops.")]
PasswordArg = Annotated[Optional[str], typer.Argument(
    help="The password, at least 8 characters (omit it to be prompted, or use --password-stdin).",
    show_default=False)]
StdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")]
RoleOpt = Annotated[str, typer.Option("--role", help="read-write, or read-only (may look, not change).")]


@app.callback()
def web(
    ctx: typer.Context,
    listen: Annotated[Optional[str], typer.Option(
        "--listen", help="HOST:PORT to listen on (default: \\[web] listen, 127.0.0.1:8080).")] = None,
) -> None:
    """Serve the control panel until interrupted; log in with an account from sipctl web admin add.

    Example: sipctl web --listen 127.0.0.1:8080
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..lib import webserver
    from ..web.app import create_app

    webserver.serve(get_env(ctx).config, create_app, listen)


@admin.command()
def add(ctx: typer.Context, name: NameArg, password: PasswordArg = None, password_stdin: StdinOpt = False,
        role: RoleOpt = "read-write", as_json: JsonOpt = False) -> None:
    """Add a panel admin (there is no default account).

    Example: sipctl web admin add ops --role read-write
    """
    from ..lib import audit
    from ..lib import db as dblib
    from ..lib import webadmin

    webadmin.check_name(name)
    webadmin.check_role(role)
    secret = _password(password, password_stdin)
    webadmin.check_password(secret)
    with dblib.env_session(get_env(ctx)) as db:
        r = webadmin.add(db, name, secret, role)
        audit.record_cli(db, "web admin add", r["username"], after=r)
    Output(json_mode=as_json).result(f"admin {r['username']} ({r['role']}) added", r)


@admin.command()
def passwd(ctx: typer.Context, name: NameArg, password: PasswordArg = None, password_stdin: StdinOpt = False,
           role: Annotated[Optional[str], typer.Option("--role", help="Also change the role.")] = None,
           as_json: JsonOpt = False) -> None:
    """Set an admin's password (and lift a lockout after failed logins).

    Example: sipctl web admin passwd ops
    """
    from ..lib import audit
    from ..lib import db as dblib
    from ..lib import webadmin

    webadmin.check_name(name)
    secret = _password(password, password_stdin)
    webadmin.check_password(secret)
    with dblib.env_session(get_env(ctx)) as db:
        r = webadmin.passwd(db, name, secret, role=role)
        audit.record_cli(db, "web admin passwd", r["username"], after=r)
    Output(json_mode=as_json).result(f"password of admin {r['username']} changed", r)


@admin.command()
def rm(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """Remove a panel admin.

    Example: sipctl web admin rm ops
    """
    from ..lib import audit
    from ..lib import db as dblib
    from ..lib import webadmin

    with dblib.env_session(get_env(ctx)) as db:
        r = webadmin.rm(db, name)
        audit.record_cli(db, "web admin rm", r["username"])
    Output(json_mode=as_json).result(f"admin {r['username']} removed", r)


@admin.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the panel admins with their role and whether they are locked out.

    Example: sipctl web admin list --json
    """
    from ..lib import db as dblib
    from ..lib import webadmin

    with dblib.env_session(get_env(ctx)) as db:
        rows = webadmin.list_admins(db)
    Output(json_mode=as_json).table(
        ["username", "role", "locked", "last_login"],
        [(r["username"], r["role"], "yes" if r["locked"] else "", r["last_login"]) for r in rows], data=rows)
