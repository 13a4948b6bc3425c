"""sipctl user: SIP accounts (the subscriber table). Passwords are stored as HA1 digests."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output, show_change

app = typer.Typer(help="Manage SIP users (subscribers).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AorArg = Annotated[str, typer.Argument(metavar="USER@DOMAIN", help="The account, e.g. alice@example.org.")]
PasswordArg = Annotated[Optional[str], typer.Argument(
    help="The password (omit it to be prompted, or use --password-stdin).", show_default=False)]
StdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")]
PlainOpt = Annotated[bool, typer.Option(
    "--store-plaintext", help="Also store the password in clear (default: only HA1 digests).")]


def _password(password: str | None, from_stdin: bool) -> str:
    if password is not None:
        return password
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():  # a hidden prompt needs a terminal; without one getpass warns and echoes
        from ..errors import UsageError

        raise UsageError("no password given and no terminal to ask for one",
                         hint="pipe it in with --password-stdin (echo 'secret' | sipctl user add ... --password-stdin)")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@app.command()
def add(
    ctx: typer.Context,
    aor: AorArg,
    password: PasswordArg = None,
    password_stdin: StdinOpt = False,
    store_plaintext: PlainOpt = False,
    email: Annotated[str, typer.Option("--email", help="E-mail address stored with the user.")] = "",
    force: Annotated[bool, typer.Option("--force", help="Allow a domain that is not local.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a user; its domain must be local (sipctl domain add) unless --force.

    Example: sipctl user add alice@example.org --password-stdin < pw.txt
    """
    from ..lib import changes
    from ..lib import db as dblib
    from ..lib import provision

    env = get_env(ctx)
    user, domain = provision.parse_aor(aor)
    secret = _password(password, password_stdin)
    provision.check_password(secret)
    with dblib.env_session(env) as db:
        change = changes.add_user(env.config, db, user, domain, secret, store_plaintext=store_plaintext,
                                  email=email, force=force)
    show_change(Output(json_mode=as_json), change)


@app.command()
def passwd(
    ctx: typer.Context,
    aor: AorArg,
    password: PasswordArg = None,
    password_stdin: StdinOpt = False,
    store_plaintext: PlainOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Change a user's password.

    Example: sipctl user passwd alice@example.org
    """
    from ..lib import changes
    from ..lib import db as dblib
    from ..lib import provision

    env = get_env(ctx)
    user, domain = provision.parse_aor(aor)
    secret = _password(password, password_stdin)
    provision.check_password(secret)
    with dblib.env_session(env) as db:
        change = changes.passwd(env.config, db, user, domain, secret, store_plaintext=store_plaintext)
    show_change(Output(json_mode=as_json), change)


@app.command()
def rm(ctx: typer.Context, aor: AorArg, as_json: JsonOpt = False) -> None:
    """Remove a user together with its aliases and registrations.

    Example: sipctl user rm alice@example.org
    """
    from ..lib import changes
    from ..lib import db as dblib
    from ..lib import provision

    env = get_env(ctx)
    user, domain = provision.parse_aor(aor)
    with dblib.env_session(env) as db:
        change = changes.rm_user(env.config, db, user, domain)
    show_change(Output(json_mode=as_json), change)


@app.command("list")
def list_(
    ctx: typer.Context,
    domain: Annotated[Optional[str], typer.Option("--domain", "-d", help="Only users of this domain.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List users.

    Example: sipctl user list --domain example.org
    """
    from ..lib import db as dblib
    from ..lib import provision

    with dblib.env_session(get_env(ctx)) as db:
        rows = provision.list_users(db, domain)
    Output(json_mode=as_json).table(["user", "domain", "email", "aliases"],
                                    [(r["user"], r["domain"], r["email"], r["aliases"]) for r in rows], data=rows)


@app.command()
def show(ctx: typer.Context, aor: AorArg, as_json: JsonOpt = False) -> None:
    """Show one user: aliases, registrations, how the password is stored (never the secret).

    Example: sipctl user show alice@example.org
    """
    from ..lib import db as dblib
    from ..lib import provision

    user, domain = provision.parse_aor(aor)
    with dblib.env_session(get_env(ctx)) as db:
        r = provision.show_user(db, user, domain)
    out = Output(json_mode=as_json)
    if as_json:
        out.json(r)
        return
    stored = "HA1 (MD5, SHA-256)" + (" + plaintext" if r["plaintext_stored"] else "")
    regs = [f"{c['contact']} (expires {c['expires'] or 'never'})" for c in r["registrations"]]
    out.table(["field", "value"], [
        ("user", f"{r['user']}@{r['domain']}"), ("email", r["email"]), ("rpid", r["rpid"]),
        ("password", stored), ("aliases", ", ".join(r["aliases"]) or "-"),
        ("registrations", "\n".join(regs) or "-"),
    ])
