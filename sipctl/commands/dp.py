"""sipctl dp: dialplan rules (OpenSIPS semantics: lowest pr wins, repl_exp with \\1.. references)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..context import get_env
from ..output import Output, show_change

app = typer.Typer(help="Manage and test dialplan rules.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_COLS = ["id", "dpid", "pr", "match_op", "match_exp", "match_flags", "subst_exp", "repl_exp", "attrs", "disabled"]


def _row(r: dict) -> list:
    return [r[c] if c != "disabled" else ("yes" if r[c] else "") for c in _COLS]


@app.command()
def add(
    ctx: typer.Context,
    dpid: Annotated[int, typer.Argument(help="Dialplan id (the group of rules a translation uses).")],
    pr: Annotated[int, typer.Option("--pr", help="Priority: the matching rule with the lowest pr wins.")] = 0,
    match_op: Annotated[str, typer.Option("--match-op", help="equal (0) or regex (1), as in the dialplan table.")] = "regex",
    match_exp: Annotated[str, typer.Option("--match-exp", help="String or PCRE regex the input must match.")] = "",
    match_flags: Annotated[str, typer.Option("--match-flags", help="icase for case-insensitive matching.")] = "",
    subst_exp: Annotated[str, typer.Option("--subst-exp", help="Regex whose groups feed \\1..\\9 in --repl-exp.")] = "",
    repl_exp: Annotated[str, typer.Option("--repl-exp", help="The output; \\1..\\9 are groups of --subst-exp.")] = "",
    attrs: Annotated[str, typer.Option("--attrs", help="Attributes returned with the translation.")] = "",
    disabled: Annotated[bool, typer.Option("--disabled", help="Store the rule but do not use it.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a rule; regexes and references are checked before it is stored.

    Example: sipctl dp add 0 --pr 5 --match-op regex --match-exp 'sip:979[0-9]+' --subst-exp 'sip:979([0-9]+)' --repl-exp 'sip:979\\1@vc.dfn.de'
    """
    from ..errors import UsageError
    from ..lib import changes
    from ..lib import db as dblib

    if not match_exp:
        raise UsageError("--match-exp is required", hint="e.g. --match-exp '^sip:979[0-9]+'")
    env = get_env(ctx)
    with dblib.env_session(env) as db:
        change = changes.add_rule(env.config, db, dpid=dpid, pr=pr, match_op=match_op, match_exp=match_exp,
                                  match_flags=match_flags, subst_exp=subst_exp, repl_exp=repl_exp,
                                  attrs=attrs, disabled=disabled)
    show_change(Output(json_mode=as_json), change)


@app.command()
def edit(
    ctx: typer.Context,
    rule_id: Annotated[int, typer.Argument(metavar="ID", help="Rule id (see sipctl dp list).")],
    dpid: Annotated[Optional[int], typer.Option("--dpid", help="Move the rule to this dialplan id.")] = None,
    pr: Annotated[Optional[int], typer.Option("--pr", help="Priority: the matching rule with the lowest pr wins.")] = None,
    match_op: Annotated[Optional[str], typer.Option("--match-op", help="equal (0) or regex (1).")] = None,
    match_exp: Annotated[Optional[str], typer.Option("--match-exp", help="String or PCRE regex the input must match.")] = None,
    match_flags: Annotated[Optional[str], typer.Option("--match-flags", help="icase, or '' for none.")] = None,
    subst_exp: Annotated[Optional[str], typer.Option("--subst-exp", help="Regex whose groups feed \\1..\\9.")] = None,
    repl_exp: Annotated[Optional[str], typer.Option("--repl-exp", help="The output; \\1..\\9 are groups of --subst-exp.")] = None,
    attrs: Annotated[Optional[str], typer.Option("--attrs", help="Attributes returned with the translation.")] = None,
    disabled: Annotated[Optional[bool], typer.Option("--disabled/--enabled", help="Skip the rule, or use it again.",
                                                     show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change fields of a rule; the others stay as they are. The result is checked like dp add.

    Example: sipctl dp edit 3 --repl-exp 'sip:979\\1@vc.dfn.de' --pr 4
    """
    from ..lib import changes
    from ..lib import db as dblib

    env = get_env(ctx)
    with dblib.env_session(env) as db:
        change = changes.edit_rule(env.config, db, rule_id, dpid=dpid, pr=pr, match_op=match_op,
                                   match_exp=match_exp, match_flags=match_flags, subst_exp=subst_exp,
                                   repl_exp=repl_exp, attrs=attrs, disabled=disabled)
    show_change(Output(json_mode=as_json), change)


@app.command()
def rm(
    ctx: typer.Context,
    rule_id: Annotated[int, typer.Argument(metavar="ID", help="Rule id (see sipctl dp list).")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a rule by id.

    Example: sipctl dp rm 3
    """
    from ..lib import changes
    from ..lib import db as dblib

    env = get_env(ctx)
    with dblib.env_session(env) as db:
        change = changes.rm_rule(env.config, db, rule_id)
    show_change(Output(json_mode=as_json), change)


@app.command("list")
def list_(
    ctx: typer.Context,
    dpid: Annotated[Optional[int], typer.Argument(help="Only this dialplan id.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List rules in evaluation order (dpid, then pr, then id).

    Example: sipctl dp list 0
    """
    from ..lib import db as dblib
    from ..lib import dialplan

    with dblib.env_session(get_env(ctx)) as db:
        rows = dialplan.list_rules(db, dpid)
    out = Output(json_mode=as_json)
    if as_json:
        out.json(rows)
        return
    # one line per rule: regexes are too long for table cells in an 80-column terminal
    last = None
    for r in rows:
        if r["dpid"] != last:
            out.out.print(f"dpid {r['dpid']}", highlight=False, markup=False, style="bold")
            last = r["dpid"]
        out.out.print("  " + _describe(r), highlight=False, markup=False, soft_wrap=True)
    if not rows:
        out.result("no dialplan rules" + (f" for dpid {dpid}" if dpid is not None else ""))


def _q(text: str) -> str:
    return f"'{text}'"


def _describe(r: dict) -> str:
    text = f"[{r['id']}] pr {r['pr']} {r['match_op']} {_q(r['match_exp'])}"
    if r["match_flags"]:
        text += f" ({r['match_flags']})"
    if r["subst_exp"]:
        text += f" subst {_q(r['subst_exp'])}"
    text += f" -> {_q(r['repl_exp'])}" if r["repl_exp"] else " -> (input unchanged)"
    if r["attrs"]:
        text += f" attrs {_q(r['attrs'])}"
    if r["disabled"]:
        text += " [disabled]"
    return text


@app.command()
def test(
    ctx: typer.Context,
    dpid: Annotated[int, typer.Argument(help="Dialplan id.")],
    text: Annotated[str, typer.Argument(metavar="INPUT", help="The string to translate, e.g. a request URI.")],
    as_json: JsonOpt = False,
) -> None:
    """Translate INPUT as sipd would: print the matching rule and the output (exit 1 if none).

    Example: sipctl dp test 0 sip:97924988@osips.vcc.test.tu-dresden.de
    """
    from ..lib import changes
    from ..lib import db as dblib
    from ..lib import dialplan

    env = get_env(ctx)
    with dblib.env_session(env) as db:
        r = dialplan.test(db, dpid, text)
    r["notes"], r["warnings"] = changes.dialplan_notes(env.config, dpid)
    out = Output(json_mode=as_json)
    if as_json:
        out.json(r)
    else:
        if r["rule"]:
            rule = r["rule"]
            out.table(["field", "value"], [(c, v) for c, v in zip(_COLS, _row(rule)) if v not in ("", None)],
                      title=f"matching rule {rule['id']}")
        if r["matched"]:
            shown = r["output"] if r["output"] else f"{text} (unchanged: the rule has no repl_exp)"
            out.result(f"{text} -> {shown}")
        for d in r["discarded"]:
            out.warning(f"rule {d['id']} is skipped by sipd: {d['reason']}")
        for warning in r["warnings"]:
            out.warning(warning)
    if not r["matched"]:
        if not as_json:
            out.error(f"no translation for {text!r}: {r['reason']}",
                      "sipctl dp list shows the rules" if not r["rule"] else "check --subst-exp of that rule")
        raise typer.Exit(1)
