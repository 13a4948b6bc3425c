"""Dialplan rules in the database: add (validated), remove, list, and test a translation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from sipd.db import Database
    from sipd.services.dialplan import Rule

MAX_EXP = 255  # dialplan.match_exp / subst_exp / repl_exp are CHAR(255)


def rule_dict(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id, "dpid": rule.dpid, "pr": rule.pr,
        "match_op": "equal" if rule.match_op == 0 else "regex" if rule.match_op == 1 else str(rule.match_op),
        "match_exp": rule.match_exp, "match_flags": "icase" if rule.match_flags & 1 else "",
        "subst_exp": rule.subst_exp, "repl_exp": rule.repl_exp, "attrs": rule.attrs,
        "disabled": rule.disabled,
    }


def add_rule(db: Database, *, dpid: int, pr: int, match_op: str | int, match_exp: str, match_flags: str = "",
             subst_exp: str = "", repl_exp: str = "", attrs: str = "", disabled: bool = False) -> dict[str, Any]:
    """Validate the rule exactly as the daemon will compile it, then store it."""
    rule = _checked_rule(dpid=dpid, pr=pr, match_op=parse_match_op(match_op), match_exp=match_exp,
                         match_flags=parse_match_flags(match_flags), subst_exp=subst_exp, repl_exp=repl_exp,
                         attrs=attrs, disabled=disabled)
    res = db.execute("INSERT INTO dialplan (dpid, pr, match_op, match_exp, match_flags, subst_exp, repl_exp, "
                     "timerec, disabled, attrs) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                     (dpid, pr, rule.match_op, match_exp, rule.match_flags, subst_exp or None, repl_exp or None,
                      int(disabled), attrs or None))
    rid = int(res.lastrowid or 0)
    return rule_dict(_with_id(rule, rid))


def edit_rule(db: Database, rule_id: int, **changes: Any) -> dict[str, Any]:
    """Change the given fields of a rule (add_rule's keywords; None = keep), validated like add_rule."""
    from dataclasses import replace

    current = _get_rule(db, rule_id)
    fields = {k: v for k, v in changes.items() if v is not None}
    unknown = set(fields) - {"dpid", "pr", "match_op", "match_exp", "match_flags", "subst_exp", "repl_exp",
                             "attrs", "disabled"}
    if unknown:
        raise UsageError(f"unknown rule field {sorted(unknown)[0]!r}", hint="see sipctl dp edit --help")
    if "match_op" in fields:
        fields["match_op"] = parse_match_op(fields["match_op"])
    if "match_flags" in fields:
        fields["match_flags"] = parse_match_flags(fields["match_flags"])
    rule = replace(current, **fields)
    rule = _checked_rule(**{k: getattr(rule, k) for k in ("dpid", "pr", "match_op", "match_exp", "match_flags",
                                                         "subst_exp", "repl_exp", "attrs", "disabled")})
    db.execute("UPDATE dialplan SET dpid = ?, pr = ?, match_op = ?, match_exp = ?, match_flags = ?, subst_exp = ?, "
               "repl_exp = ?, disabled = ?, attrs = ? WHERE id = ?",
               (rule.dpid, rule.pr, rule.match_op, rule.match_exp, rule.match_flags, rule.subst_exp or None,
                rule.repl_exp or None, int(rule.disabled), rule.attrs or None, rule_id))
    return rule_dict(_with_id(rule, rule_id))


def _get_rule(db: Database, rule_id: int) -> Rule:
    from sipd.services.dialplan import rule_from_row

    row = db.query_one("SELECT id, dpid, pr, match_op, match_exp, match_flags, subst_exp, repl_exp, timerec, "
                       "disabled, attrs FROM dialplan WHERE id = ?", (rule_id,))
    if row is None:
        raise NotFoundError(f"dialplan rule {rule_id} does not exist", hint="sipctl dp list shows the rule ids")
    return rule_from_row(row)


def _checked_rule(**fields: Any) -> Rule:
    from sipd.services.dialplan import Rule, RuleError, validate_rule

    for name in ("match_exp", "subst_exp", "repl_exp", "attrs"):
        if len(fields[name]) > MAX_EXP:
            raise UsageError(f"{name} is longer than {MAX_EXP} characters", hint="shorten it")
    rule = Rule(**fields)
    try:
        validate_rule(rule)
    except RuleError as exc:
        raise UsageError(f"invalid rule: {exc}", hint=_hint(exc.field)) from None
    return rule


def parse_match_flags(text: str | int) -> int:
    """``icase`` (or the table's number, 1) -> the match_flags bits; empty or 0 = none."""
    if isinstance(text, int) or str(text).strip().isdigit():
        if int(text) not in (0, 1):
            raise UsageError(f"unknown match flags {text!r}", hint="0 (none) or 1 (icase)")
        return int(text)
    flags = 0
    for flag in filter(None, (f.strip() for f in str(text).split(","))):
        if flag != "icase":
            raise UsageError(f"unknown match flag {flag!r}", hint="the only flag is icase")
        flags |= 1
    return flags


def parse_match_op(text: str | int) -> int:
    """``equal``/``regex`` or the numbers the dialplan table holds (OpenSIPS: 0 = equal, 1 = regex),
    as the report's table and OpenSIPS control panels write them; ``regexp`` as opensips-cli spells it."""
    from sipd.services.dialplan import MATCH_OPS

    name = str(text).strip().lower()
    name = {"0": "equal", "1": "regex", "regexp": "regex"}.get(name, name)
    if name not in MATCH_OPS:
        raise UsageError(f"unknown match operator {text!r}",
                         hint="use --match-op equal (or 0) or --match-op regex (or 1)")
    return MATCH_OPS[name]


def _with_id(rule: Rule, rid: int) -> Rule:
    from dataclasses import replace

    return replace(rule, id=rid)


def _hint(field: str) -> str:
    return {
        "match_exp": "check the regular expression (PCRE syntax, e.g. ^sip:979[0-9]+)",
        "subst_exp": "check the regular expression (PCRE syntax); its groups feed \\1..\\9 in --repl-exp",
        "repl_exp": "use \\1..\\9 for groups of --subst-exp, \\\\ for a backslash, \\$ for a dollar",
    }.get(field, "see sipctl dp add --help")


def rm_rule(db: Database, rule_id: int) -> dict[str, Any]:
    rule = _get_rule(db, rule_id)
    db.execute("DELETE FROM dialplan WHERE id = ?", (rule_id,))
    return {"id": rule_id, "dpid": rule.dpid}


def list_rules(db: Database, dpid: int | None = None) -> list[dict[str, Any]]:
    from sipd.db.queries import load_dialplan
    from sipd.services.dialplan import rule_from_row

    rules = [rule_from_row(row) for row in load_dialplan(db, include_disabled=True)]
    return [rule_dict(r) for r in sorted(rules, key=lambda r: (r.dpid, r.pr, r.id))
            if dpid is None or r.dpid == dpid]


def test(db: Database, dpid: int, text: str) -> dict[str, Any]:
    """Translate ``text`` with the enabled rules of ``dpid`` as the daemon would."""
    from sipd.db.queries import load_dialplan
    from sipd.services.dialplan import Dialplan, rule_from_row

    plan = Dialplan([rule_from_row(row) for row in load_dialplan(db)])
    t = plan.explain(dpid, text)
    return {
        "dpid": dpid, "input": text, "matched": t.ok, "output": t.output,
        "result": (t.output or text) if t.ok else None,
        "rule": rule_dict(t.rule) if t.rule else None, "reason": t.reason,
        "discarded": [{"id": r.id, "reason": why} for r, why in plan.discarded if r.dpid == dpid],
    }
