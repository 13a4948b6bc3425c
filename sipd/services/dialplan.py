"""Dialplan translation with OpenSIPS semantics (reference/opensips.md §6). Pure: no I/O.

Theory of operation (OpenSIPS ``modules/dialplan``, ``dp_db.c`` and ``dp_repl.c``):

- Rules are grouped by ``dpid``. Within a dpid the rule with the **lowest** ``pr`` that matches the
  input wins; on equal ``pr`` the one loaded first (lowest ``id``). Only the first match is used,
  there is no "continue" to further rules.
- ``match_op`` 0 = equal (same length, same characters; case-folded with the ``icase`` flag),
  1 = regex (PCRE, unanchored search). Other values are rejected, as in OpenSIPS (2 = fnmatch is a
  Kamailio-only operator).
- ``match_flags`` bit 1 = case-insensitive, for ``match_exp`` and ``subst_exp`` alike.
- Building the output once a rule matched:
  * ``repl_exp`` empty: success with an empty output ("detection" rules carrying only attrs); the
    caller leaves its input unchanged (OpenSIPS writes the output variable only when non-empty).
  * ``subst_exp`` present: it must match the input, **else the translation fails** even though
    ``match_exp`` matched (kamailio#1952 shows the surprise this causes; we report it in
    ``sipctl dp test``).
  * ``subst_exp`` empty or ``repl_exp`` without references: the output is ``repl_exp`` literally.
  * Otherwise the output is ``repl_exp`` with ``\\0``..``\\9`` replaced by the captures of
    ``subst_exp`` (``\\0`` = the whole match). Text of the input outside the captures is not
    carried over (unlike sed ``s///``).
  * ``repl_exp`` escapes: ``\\\\``, ``\\n``, ``\\r``, ``\\t``, ``\\$`` literal; ``\\u`` = the current
    request URI. OpenSIPS ``$pseudo-variables`` are not supported and rejected when a rule is added.
  * An output longer than 127 characters fails (OpenSIPS ``MAX_PHONE_NB_DIGITS`` buffer).
- A rule that cannot be compiled is skipped with a reason in ``Dialplan.discarded`` (OpenSIPS:
  "failed to build rule -- skipping"); ``validate_rule`` rejects it before it is stored.
- ``timerec`` (RFC 2445 time recurrences) is not implemented: such rules are discarded with a
  reason, and ``sipctl dp add`` does not offer the option.

PCRE versus Python ``re``: patterns are translated by ``pcre_to_python`` (named groups ``(?<n>``,
``\\Q..\\E``, ``\\z``, ``\\h``, POSIX classes) and compiled with ``re.ASCII`` because PCRE's ``\\d``,
``\\w`` and ``\\s`` are ASCII-only unless built with UCP.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MATCH_EQUAL = 0
MATCH_REGEX = 1
MATCH_OPS = {"equal": MATCH_EQUAL, "regex": MATCH_REGEX}
FLAG_ICASE = 1
#: OpenSIPS translates into a fixed buffer; longer outputs fail the translation.
MAX_OUTPUT = 127
#: OpenSIPS truncates attrs to this many characters.
MAX_ATTRS = 256


class RuleError(ValueError):
    """A rule that cannot be compiled. ``field`` names the offending column."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True, kw_only=True)
class Rule:
    dpid: int
    pr: int = 0
    match_op: int = MATCH_REGEX
    match_exp: str
    match_flags: int = 0
    subst_exp: str = ""
    repl_exp: str = ""
    attrs: str = ""
    disabled: bool = False
    id: int = 0
    timerec: str = ""

    @property
    def icase(self) -> bool:
        return bool(self.match_flags & FLAG_ICASE)


def rule_from_row(row: Mapping[str, Any]) -> Rule:
    """A rule from a row of the ``dialplan`` table (``sipd.db.queries.load_dialplan``)."""
    return Rule(
        id=int(row["id"]), dpid=int(row["dpid"]), pr=int(row["pr"] or 0),
        match_op=int(row["match_op"]), match_exp=row["match_exp"] or "",
        match_flags=int(row["match_flags"] or 0), subst_exp=row["subst_exp"] or "",
        repl_exp=row["repl_exp"] or "", attrs=row["attrs"] or "",
        timerec=row["timerec"] or "", disabled=bool(row["disabled"]),
    )


@dataclass(frozen=True)
class Translation:
    """What happened when translating: the rule that matched (if any), the output, success."""

    ok: bool
    output: str = ""
    rule: Rule | None = None
    reason: str = ""


# --------------------------------------------------------------------------------------------
# PCRE -> Python re

_POSIX = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "xdigit": "0-9A-Fa-f", "punct": r"!-/:-@\[-`{-~",
    "word": r"\w", "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e", "graph": r"\x21-\x7e",
}


def pcre_to_python(pattern: str) -> str:
    """Translate the PCRE constructs Python's ``re`` spells differently. Others pass through."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                end = n if end < 0 else end
                out.append(re.escape(pattern[i + 2:end]))
                i = end + 2
                continue
            if nxt == "E":
                i += 2
                continue
            if nxt == "z" and not in_class:
                out.append(r"\Z")
            elif nxt == "Z" and not in_class:
                out.append(r"(?=\n?\Z)")
            elif nxt == "h":
                out.append(r" \t" if in_class else r"[ \t]")
            elif nxt == "H" and not in_class:
                out.append(r"[^ \t]")
            elif nxt == "e":
                out.append(r"\x1b")
            elif nxt == "k" and i + 2 < n and pattern[i + 2] in "<{'":
                close = {"<": ">", "{": "}", "'": "'"}[pattern[i + 2]]
                end = pattern.find(close, i + 3)
                if end < 0:
                    raise re.error("unterminated \\k reference")
                out.append(f"(?P={pattern[i + 3:end]})")
                i = end + 1
                continue
            else:
                out.append(ch + nxt)
            i += 2
            continue
        if in_class:
            if ch == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2:end] if end > 0 else ""
                negate = name.startswith("^")
                if name.lstrip("^") in _POSIX and not negate:
                    out.append(_POSIX[name])
                    i = end + 2
                    continue
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            # a ']' right after '[' or '[^' is a literal member
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append(r"\]")
                i += 1
            continue
        if ch == "(" and pattern.startswith("(?<", i) and i + 3 < n and pattern[i + 3] not in "=!":
            out.append("(?P<")
            i += 3
            continue
        if ch == "(" and pattern.startswith("(?'", i):
            end = pattern.find("'", i + 3)
            if end < 0:
                raise re.error("unterminated group name")
            out.append(f"(?P<{pattern[i + 3:end]}>")
            i = end + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def compile_pcre(pattern: str, icase: bool) -> re.Pattern[str]:
    """Compile an OpenSIPS (PCRE) pattern. Raises re.error."""
    flags = re.ASCII | (re.IGNORECASE if icase else 0)
    return re.compile(pcre_to_python(pattern), flags)


# --------------------------------------------------------------------------------------------
# repl_exp

_URI = object()  # \u: the current request URI


def parse_repl(text: str) -> tuple[list[str | int | object], int]:
    """Split ``repl_exp`` into literals, group numbers and the \\u marker.

    Returns:
        (parts, highest group referenced or -1).
    Raises:
        RuleError: unknown escape, trailing backslash, or an OpenSIPS $pseudo-variable.
    """
    parts: list[str | int | object] = []
    buf: list[str] = []
    highest = -1
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                raise RuleError("repl_exp", "ends with a lone backslash")
            nxt = text[i + 1]
            if nxt.isdigit():
                if buf:
                    parts.append("".join(buf))
                    buf = []
                parts.append(int(nxt))
                highest = max(highest, int(nxt))
            elif nxt == "u":
                if buf:
                    parts.append("".join(buf))
                    buf = []
                parts.append(_URI)
            elif nxt in "\\$":
                buf.append(nxt)
            elif nxt in "nrt":
                buf.append({"n": "\n", "r": "\r", "t": "\t"}[nxt])
            else:
                raise RuleError("repl_exp", f"unknown escape \\{nxt} (use \\0..\\9, \\u, \\\\, \\$, \\n, \\r, \\t)")
            i += 2
            continue
        if ch == "$":
            raise RuleError("repl_exp", "pseudo-variables ($...) are not supported; write \\$ for a literal $")
        buf.append(ch)
        i += 1
    if buf:
        parts.append("".join(buf))
    return parts, highest


# --------------------------------------------------------------------------------------------
# Rules

@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    match_re: re.Pattern[str] | None
    subst_re: re.Pattern[str] | None
    repl: list[str | int | object]
    has_refs: bool


def compile_rule(rule: Rule) -> _Compiled:
    """Compile a rule as OpenSIPS does at load time. Raises RuleError naming the bad field."""
    if rule.match_op not in (MATCH_EQUAL, MATCH_REGEX):
        raise RuleError("match_op", f"unknown operator {rule.match_op} (0 = equal, 1 = regex)")
    if rule.timerec:
        raise RuleError("timerec", "time recurrences are not supported")
    if rule.match_flags & ~FLAG_ICASE:
        raise RuleError("match_flags", f"unknown flags {rule.match_flags} (1 = icase)")
    match_re = None
    if rule.match_op == MATCH_EQUAL:
        if not rule.match_exp:
            raise RuleError("match_exp", "an equal rule needs a non-empty match_exp")
    else:
        if not rule.match_exp:
            raise RuleError("match_exp", "a regex rule needs a non-empty match_exp")
        try:
            match_re = compile_pcre(rule.match_exp, rule.icase)
        except re.error as exc:
            raise RuleError("match_exp", f"invalid regex {rule.match_exp!r}: {exc}") from None
    subst_re = None
    if rule.subst_exp:
        try:
            subst_re = compile_pcre(rule.subst_exp, rule.icase)
        except re.error as exc:
            raise RuleError("subst_exp", f"invalid regex {rule.subst_exp!r}: {exc}") from None
    repl, highest = parse_repl(rule.repl_exp or "")
    groups = subst_re.groups if subst_re is not None else -1
    if highest > groups:
        if subst_re is None:
            raise RuleError("repl_exp", f"uses \\{highest} but there is no subst_exp to capture it")
        raise RuleError("repl_exp", f"uses \\{highest} but subst_exp has only {groups} group(s)")
    has_refs = any(not isinstance(p, str) for p in repl)
    return _Compiled(rule, match_re, subst_re, repl, has_refs)


def validate_rule(rule: Rule) -> None:
    """Raise RuleError when the rule would be discarded at load time."""
    compile_rule(rule)


def _matches(c: _Compiled, text: str) -> bool:
    if c.match_re is not None:
        return c.match_re.search(text) is not None
    exp = c.rule.match_exp
    if len(exp) != len(text):
        return False
    return exp.lower() == text.lower() if c.rule.icase else exp == text


def _build(c: _Compiled, text: str, ruri: str) -> Translation:
    rule = c.rule
    if not rule.repl_exp:
        return Translation(True, "", rule, "no repl_exp: input left unchanged")
    m = None
    if c.subst_re is not None:
        m = c.subst_re.search(text)
        if m is None:
            return Translation(False, "", rule,
                               f"rule {rule.id} matched match_exp but not subst_exp {rule.subst_exp!r}")
    if m is None or not c.has_refs:
        out = "".join(p if isinstance(p, str) else (ruri if p is _URI else "") for p in c.repl)
    else:
        pieces = []
        for p in c.repl:
            if isinstance(p, str):
                pieces.append(p)
            elif p is _URI:
                pieces.append(ruri)
            else:
                assert isinstance(p, int)
                pieces.append(m.group(p) or "")
        out = "".join(pieces)
    if len(out) > MAX_OUTPUT:
        return Translation(False, "", rule, f"output longer than {MAX_OUTPUT} characters")
    return Translation(True, out, rule)


@dataclass
class Dialplan:
    """The rules of all dpids, compiled and ordered; rebuild a new one to reload (swap atomically).

    Args:
        rules: any order; disabled rules are ignored, uncompilable ones land in ``discarded``.
    """

    rules: Iterable[Rule]
    discarded: list[tuple[Rule, str]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._by_dpid: dict[int, list[_Compiled]] = {}
        self.rules = list(self.rules)
        for rule in sorted(self.rules, key=lambda r: (r.pr, r.id)):
            if rule.disabled:
                continue
            try:
                compiled = compile_rule(rule)
            except RuleError as exc:
                self.discarded.append((rule, str(exc)))
                continue
            self._by_dpid.setdefault(rule.dpid, []).append(compiled)

    @property
    def dpids(self) -> list[int]:
        return sorted(self._by_dpid)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_dpid.values())

    def explain(self, dpid: int, text: str, *, ruri: str | None = None) -> Translation:
        """Translate and say why: the matched rule, the output, or the reason for failure."""
        rules = self._by_dpid.get(dpid)
        if not rules:
            return Translation(False, "", None, f"no rules for dpid {dpid}")
        for c in rules:
            if _matches(c, text):
                return _build(c, text, text if ruri is None else ruri)
        return Translation(False, "", None, f"no rule of dpid {dpid} matches")

    def translate(self, dpid: int, text: str, *, ruri: str | None = None) -> tuple[str, Rule] | None:
        """OpenSIPS ``dp_translate``: ``(output, rule)`` on success, None on no match or failure.

        An empty output is a success that leaves the input unchanged (see ``rewrite``).
        """
        t = self.explain(dpid, text, ruri=ruri)
        if not t.ok or t.rule is None:
            return None
        return t.output, t.rule

    def rewrite(self, dpid: int, text: str) -> str:
        """The text after translation, or unchanged when nothing matched or the output is empty."""
        result = self.translate(dpid, text)
        return result[0] if result and result[0] else text
