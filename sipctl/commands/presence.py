"""sipctl presence: what the running sipd knows about a user's presence, and who watches them."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Presence state held by the running sipd: show, watchers, list.", no_args_is_help=True)


@app.command()
def show(
    ctx: typer.Context,
    presentity: Annotated[str, typer.Argument(help="user@domain")],
    *,
    json: Annotated[bool, typer.Option("--json", help="The presentity_show JSON shape.")] = False,
    document: Annotated[bool, typer.Option("--document", help="Also print the merged PIDF document.")] = False,
) -> None:
    """Show a user's publications (entity tag, expiry, basic status, notes) and watcher count.

    Example: sipctl presence show alice@example.com
    """
    from ..lib import presence

    data = presence.show(get_env(ctx).config, presentity)
    out = Output(json_mode=json)
    if json:
        out.json(data)
        return
    rows = [(p["ETag"], p["Expires"], p["Basic"], "; ".join(p["Notes"] + p["Activities"]), p["Sender"])
            for p in data["Publications"]]
    title = f"{data['Presentity']}: {len(rows)} publication(s), {data['Watchers']} watcher(s)"
    if data.get("InCall"):
        title += ", in a call"
    out.table(["ETag", "Expires", "Basic", "Notes", "Sender"], rows, title=title)
    if document and data.get("Document"):
        out.out.print(data["Document"], highlight=False, markup=False)


@app.command()
def watchers(
    ctx: typer.Context,
    presentity: Annotated[str, typer.Argument(help="user@domain")],
    *,
    json: Annotated[bool, typer.Option("--json", help="The watcher_list JSON shape.")] = False,
) -> None:
    """List who watches a user (presence and presence.winfo subscriptions).

    Example: sipctl presence watchers alice@example.com
    """
    from ..lib import presence

    data = presence.watchers(get_env(ctx).config, presentity)
    out = Output(json_mode=json)
    if json:
        out.json(data)
        return
    subs = data["Watchers"] + data["Winfo"]
    out.table(["Watcher", "Event", "Status", "Expires", "Contact"],
              [(s["Watcher"], s["Event"], s["Status"], s["Expires"], s["Contact"]) for s in subs],
              title=f"{data['Presentity']}: {len(data['Watchers'])} watcher(s)")


@app.command("list")
def list_(
    ctx: typer.Context,
    *,
    json: Annotated[bool, typer.Option("--json", help="The pres_phtable_list JSON shape.")] = False,
    domain: Annotated[Optional[str], typer.Option("--domain", help="Only presentities of this domain.")] = None,
) -> None:
    """List every user with published presence: basic status, publications, watchers.

    Example: sipctl presence list --domain example.com
    """
    from ..lib import presence

    items = presence.presentities(get_env(ctx).config)
    if domain:
        items = [p for p in items if p["Presentity"].rpartition("@")[2] == domain.lower()]
    rows = [(p["Presentity"], (p["Publications"][0]["Basic"] if p["Publications"] else ""), len(p["Publications"]),
             p["Watchers"], "yes" if p["InCall"] else "") for p in items]
    Output(json_mode=json).table(["Presentity", "Basic", "Publications", "Watchers", "In call"], rows,
                                 data={"Presentities": items})
