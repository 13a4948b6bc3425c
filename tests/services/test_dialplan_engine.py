"""sipd.services.dialplan: OpenSIPS dialplan semantics (match operators, flags,
substitution, priorities), pure unit tests."""

from __future__ import annotations

import pytest

from sipd.services.dialplan import (
    MATCH_EQUAL, MATCH_REGEX, Dialplan, Rule, RuleError, pcre_to_python, validate_rule,
)

REPORT = Rule(id=1, dpid=0, pr=5, match_op=MATCH_REGEX,
              match_exp="sip:979[0-9]+(@osips.vcc.test.tu-dresden.de){0,1}",
              subst_exp="sip:979([0-9]+)(@osips.vcc.test.tu-dresden.de){0,1}",
              repl_exp="sip:979\\1@vc.dfn.de")


def R(**kw) -> Rule:  # noqa: N802
    kw.setdefault("dpid", 0)
    return Rule(**kw)


def test_report_rule():
    plan = Dialplan([REPORT])
    out, rule = plan.translate(0, "sip:97924988@osips.vcc.test.tu-dresden.de")
    assert out == "sip:97924988@vc.dfn.de" and rule is REPORT
    # the domain part is optional in match and subst: a bare number is rewritten too
    assert plan.translate(0, "sip:97911")[0] == "sip:97911@vc.dfn.de"
    assert plan.translate(0, "sip:12345@osips.vcc.test.tu-dresden.de") is None
    assert plan.translate(1, "sip:97924988@x") is None  # unknown dpid fails


def test_lowest_pr_wins_then_lowest_id():
    rules = [R(id=1, pr=10, match_exp="^sip:1", repl_exp="pr10"),
             R(id=3, pr=2, match_op=MATCH_EQUAL, match_exp="sip:100", repl_exp="pr2-id3"),
             R(id=2, pr=2, match_exp="^sip:10", repl_exp="pr2-id2")]
    plan = Dialplan(rules)
    assert plan.translate(0, "sip:100")[0] == "pr2-id2"      # equal and regex at same pr: lower id
    assert plan.translate(0, "sip:1")[0] == "pr10"
    assert [c.rule.id for c in plan._by_dpid[0]] == [2, 3, 1]


def test_only_first_match_no_continue():
    plan = Dialplan([R(id=1, pr=1, match_exp="a", subst_exp="(b)", repl_exp="\\1"),
                     R(id=2, pr=2, match_exp="a", repl_exp="second")])
    # rule 1 matches match_exp but not subst_exp: the translation FAILS, rule 2 is not tried
    assert plan.translate(0, "a") is None
    t = plan.explain(0, "a")
    assert t.rule.id == 1 and "not subst_exp" in t.reason


def test_output_is_only_the_expanded_repl():
    plan = Dialplan([R(match_exp="^0", subst_exp="^0([0-9]+)", repl_exp="+49\\1")])
    # text after the captured part (";user=phone") is NOT carried over, unlike sed s///
    assert plan.translate(0, "0351123;user=phone")[0] == "+49351123"


def test_backrefs_zero_and_unmatched_groups_and_escapes():
    plan = Dialplan([R(match_exp="x", subst_exp="(x)(y)?", repl_exp="[\\0|\\1|\\2]\\t\\\\\\$")])
    assert plan.translate(0, "ax")[0] == "[x|x|]\t\\$"


def test_no_subst_means_literal_repl_and_empty_repl_means_unchanged():
    plan = Dialplan([R(id=1, pr=1, match_exp="^lit", repl_exp="literal"),
                     R(id=2, pr=2, match_exp="^keep", attrs="a" * 300)])
    assert plan.translate(0, "lit123")[0] == "literal"
    out, rule = plan.translate(0, "keep-me")
    assert out == "" and rule.id == 2
    assert plan.rewrite(0, "keep-me") == "keep-me"
    assert plan.rewrite(0, "lit") == "literal"
    assert plan.rewrite(0, "nothing") == "nothing"


def test_uri_escape():
    plan = Dialplan([R(match_exp=".", repl_exp="\\u")])
    assert plan.translate(0, "7", ruri="sip:7@x")[0] == "sip:7@x"


def test_equal_and_icase():
    plan = Dialplan([R(id=1, match_op=MATCH_EQUAL, match_exp="Alice", repl_exp="a"),
                     R(id=2, dpid=1, match_op=MATCH_EQUAL, match_exp="Alice", match_flags=1, repl_exp="b"),
                     R(id=3, dpid=2, match_exp="^ALICE$", match_flags=1, subst_exp="^AL(ICE)$", repl_exp="\\1")])
    assert plan.translate(0, "Alice")[0] == "a"
    assert plan.translate(0, "alice") is None
    assert plan.translate(0, "Alice2") is None  # equal compares the whole string
    assert plan.translate(1, "aLiCe")[0] == "b"
    assert plan.translate(2, "alice")[0] == "ice"  # icase applies to subst_exp too


def test_regex_is_unanchored_search_and_ascii_digits():
    plan = Dialplan([R(match_exp="[0-9]{3}", repl_exp="num"), R(dpid=1, match_exp=r"^\d+$", repl_exp="d")])
    assert plan.translate(0, "sip:abc123@x")[0] == "num"
    assert plan.translate(1, "١٢٣") is None  # PCRE \d is ASCII-only


def test_output_limit():
    plan = Dialplan([R(match_exp="x", subst_exp="(x+)", repl_exp="\\1\\1")])
    assert plan.translate(0, "x" * 63)[0] == "x" * 126
    assert plan.translate(0, "x" * 64) is None


def test_disabled_and_discarded_rules():
    plan = Dialplan([R(id=1, match_exp="a", repl_exp="off", disabled=True),
                     R(id=2, match_exp="(", repl_exp="bad"),
                     R(id=3, match_exp="a", timerec="20240101T000000|..."),
                     R(id=4, match_exp="a", repl_exp="on")])
    assert plan.translate(0, "a")[0] == "on"
    assert [(r.id, why.split(":")[0]) for r, why in plan.discarded] == [(2, "match_exp"), (3, "timerec")]
    assert len(plan) == 1 and plan.dpids == [0]


@pytest.mark.parametrize("rule, field", [
    (R(match_op=2, match_exp="a*"), "match_op"),
    (R(match_op=MATCH_EQUAL, match_exp=""), "match_exp"),
    (R(match_exp="a", subst_exp="[z"), "subst_exp"),
    (R(match_exp="a", subst_exp="(a)", repl_exp="\\2"), "repl_exp"),
    (R(match_exp="a", repl_exp="\\1"), "repl_exp"),
    (R(match_exp="a", repl_exp="$rU"), "repl_exp"),
    (R(match_exp="a", repl_exp="\\q"), "repl_exp"),
    (R(match_exp="a", repl_exp="trailing\\"), "repl_exp"),
    (R(match_exp="a", match_flags=4), "match_flags"),
])
def test_validate_rejects(rule, field):
    with pytest.raises(RuleError) as exc:
        validate_rule(rule)
    assert exc.value.field == field


@pytest.mark.parametrize("pcre, text, matches", [
    (r"(?<num>\d+)-\k<num>", "12-12", True),
    (r"\Qa.b\E", "a.b", True),
    (r"\Qa.b\E", "axb", False),
    (r"^abc\z", "abc", True),
    (r"^abc\Z", "abc\n", True),
    (r"[[:digit:]]+x", "123x", True),
    (r"[[:alpha:]]", "1", False),
    (r"a\hb", "a\tb", True),
    (r"[]a]", "]", True),
])
def test_pcre_translation(pcre, text, matches):
    import re

    assert (re.search(pcre_to_python(pcre), text, re.ASCII) is not None) is matches
