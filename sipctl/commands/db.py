"""sipctl db: create, inspect, migrate and drop the database (SQLite or MySQL/MariaDB)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Create, inspect, migrate and drop the database.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AdminUrl = Annotated[Optional[str], typer.Option(
    "--admin-url", envvar="SIPCTL_DB_ADMIN_URL",
    help="MySQL account allowed to create databases and users, e.g. mysql://root@localhost.")]


@app.command()
def create(
    ctx: typer.Context,
    admin_url: AdminUrl = None,
    ro_user: Annotated[Optional[str], typer.Option(
        "--ro-user", help="Read-only MySQL user (default: from database.ro_url, else <db>_ro).")] = None,
    ro_password: Annotated[Optional[str], typer.Option(
        "--ro-password", help="Its password (default: from database.ro_url, else generated and shown once).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the database and all tables; a second run changes nothing and reports what exists.

    With --admin-url (MySQL) also creates the database in utf8mb4, the read-write user of
    database.url and a read-only user, with their grants. SQLite: creates the file and tables.

    Example: sipctl db create --admin-url mysql://root@localhost
    """
    from ..lib import db as dblib

    env = get_env(ctx)
    conf = env.config.database
    report = dblib.create(conf.url, admin_url=admin_url, ro_user=ro_user, ro_password=ro_password,
                          ro_url=conf.ro_url, timeout=conf.connect_timeout)
    out = Output(json_mode=as_json)
    if as_json:
        out.json(report.as_dict())
        return
    out.table(["what", "name", "state"], [(i["kind"], i["name"], i["state"]) for i in report.items],
              title=f"sipctl db create {report.url}")
    for note in report.notes:
        out.warning(note)
    out.result("created" if report.changed else "nothing to do: everything already exists")


@app.command()
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the tables, their schema versions and what is missing (exit 1 if anything is).

    On MySQL/MariaDB also whether every table is ready for a Galera cluster (InnoDB, a primary
    key), and on a Galera node the cluster's size and this node's state.

    Example: sipctl db status --json
    """
    from ..errors import CheckFailed
    from ..lib import db as dblib

    conf = get_env(ctx).config.database
    st = dblib.status(conf.url, conf.connect_timeout)
    out = Output(json_mode=as_json)
    out.table(["table", "version", "expected", "state"],
              [(t["name"], t["version"], t["expected"], t["state"]) for t in st["tables"]],
              title=f"{st['backend']} {st['url']}", data=st)
    if not out.json_mode:
        for line in _galera_lines(st):
            out.result(line)
    refused = dblib.not_serving(st)
    if refused:
        raise CheckFailed(refused[0], hint=refused[1])
    if not st["ok"]:
        hint = "run sipctl db create" if st["missing"] else "run sipctl db migrate"
        what = (f"missing tables: {', '.join(st['missing'])}" if st["missing"] else
                "schema not current" if any(t["state"] != "ok" for t in st["tables"]) else
                "tables not ready for Galera")
        raise CheckFailed(what, hint=hint)


def _galera_lines(st: dict) -> list[str]:
    if st["backend"] == "sqlite":
        return ["Galera-ready: not applicable (SQLite is for one node)"]
    problems = "; ".join(f"{p['table']}: {p['problem']}" for p in st["galera_problems"])
    lines = ["Galera-ready: unknown (this node does not serve queries)" if st["galera_ready"] is None
             else "Galera-ready: yes (every table InnoDB with a primary key)" if st["galera_ready"]
             else f"Galera-ready: no ({problems})"]
    g = st["galera"]
    if g is None:
        lines.append("Galera: not a Galera node (wsrep off)")
    else:
        lines.append(f"Galera: cluster size {g['cluster_size']}, {g['cluster_status']}, node "
                     f"{g['node_name']} {g['local_state']}, ready {'ON' if g['ready'] else 'OFF'}")
    return lines


@app.command()
def migrate(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Bring the schema to the current version (creates missing tables, applies migrations).

    Example: sipctl db migrate
    """
    from ..lib import db as dblib

    conf = get_env(ctx).config.database
    done = dblib.migrate(conf.url, conf.connect_timeout)
    out = Output(json_mode=as_json)
    if as_json:
        out.json({"changed": bool(done), "steps": [{"table": t, "action": a} for t, a in done]})
    elif done:
        out.table(["table", "action"], done, title="migrations applied")
    else:
        out.result("schema is current; nothing to do")


@app.command()
def drop(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    admin_url: AdminUrl = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop all sipd tables (with --admin-url on MySQL: the whole database). Asks first.

    Example: sipctl db drop --yes
    """
    from sipd.db import mask_url

    from ..lib import db as dblib

    conf = get_env(ctx).config.database
    what = f"the database of {mask_url(conf.url)}" if admin_url else f"all sipd tables in {mask_url(conf.url)}"
    if not yes:
        typer.confirm(f"Drop {what}? This deletes all users, aliases and rules", abort=True)
    res = dblib.drop(conf.url, admin_url=admin_url, timeout=conf.connect_timeout)
    if res["dropped_database"]:
        msg = f"dropped database {res['dropped_database']}"
    else:
        msg = f"dropped {len(res['tables'])} table(s)" if res["tables"] else "nothing to drop"
    Output(json_mode=as_json).result(msg, res)
