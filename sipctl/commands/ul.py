"""sipctl ul: registrations held by the running sipd (opensipsctl ul show / ul rm)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from ..context import get_env
from ..output import Output

app = typer.Typer(help="Registered contacts (user location) of the running sipd: show, rm.", no_args_is_help=True)

#: The per-contact fields shown, in opensipsctl's order (``ul show``), so its
#: readers find them where they expect.
FIELDS = ["Contact", "Expires", "Q", "Callid", "Cseq", "User-agent", "Received", "Path", "State", "Flags",
          "Cflags", "Socket", "Methods", "SIP_instance"]


def _render(out: Output, aors: list[dict[str, Any]], brief: bool) -> None:
    console = out.out
    if brief:
        for a in aors:
            console.print(a["AOR"], highlight=False, markup=False)
        return
    from rich.markup import escape
    from rich.table import Table

    for a in aors:
        contacts = a.get("Contacts", [])
        t = Table(title=f"AOR {escape(a['AOR'])} — {len(contacts)} contact(s)", title_justify="left", show_header=False,
                  box=None, padding=(0, 1))
        t.add_column("field", style="bold")
        t.add_column("value", overflow="fold")
        for i, c in enumerate(contacts):
            if i:
                t.add_row("", "")
            for f in FIELDS:
                if f in c:
                    t.add_row(f, escape(str(c[f])))  # a User-Agent like "X [1.2]" is text, not markup
        console.print(t)
    if not aors:
        console.print("no registrations", highlight=False)


@app.command()
def show(
    ctx: typer.Context,
    aor: Annotated[Optional[str], typer.Argument(help="user@domain; all AORs when omitted.")] = None,
    *,
    json: Annotated[bool, typer.Option("--json", help="The ul_dump / ul_show_contact JSON shape.")] = False,
    brief: Annotated[bool, typer.Option("--brief", help="AORs only.")] = False,
) -> None:
    """Show registered contacts: Contact, Expires, Callid, Cseq, User-agent, State, Flags, Socket...

    Example: sipctl ul show alice@example.com
    """
    from ..lib import mgmt

    config = get_env(ctx).config
    out = Output(json_mode=json)
    if aor:
        rec = mgmt.call(config, "ul_show_contact", ["location", aor])
        if brief:
            rec = {"AOR": rec["AOR"]}
        if json:
            out.json(rec)
        else:
            _render(out, [rec], brief)
        return
    aors = list(mgmt.ul_dump_pages(config, brief=brief))
    if json:
        out.json({"Domains": [{"name": "location", "hash_size": 512, "AORs": aors}]})
    else:
        _render(out, aors, brief)


@app.command()
def rm(
    ctx: typer.Context,
    aor: Annotated[str, typer.Argument(help="user@domain")],
    contact: Annotated[Optional[str], typer.Argument(help="One contact URI; the whole AOR when omitted.")] = None,
    *,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Remove an AOR's registrations, or one contact of it.

    Example: sipctl ul rm alice@example.com sip:alice@10.0.0.5:5060
    """
    from ..lib import mgmt

    config = get_env(ctx).config
    if contact:
        mgmt.call(config, "ul_rm_contact", ["location", aor, contact])
        msg = f"removed contact {contact} of {aor}"
    else:
        mgmt.call(config, "ul_rm", ["location", aor])
        msg = f"removed all contacts of {aor}"
    Output(json_mode=json).result(msg, {"ok": True, "aor": aor, "contact": contact})
