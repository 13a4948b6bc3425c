"""Which part of sipd and sipctl may import which, and no import circle at any depth.

Read on the AST of every module under sipd/ and sipctl/, as the purity test of sipd/sip reads its
imports. An import counts wherever it is written: at module level, inside a function, inside
``try``; only the body of ``if TYPE_CHECKING:`` is skipped, because it never runs. A function-level
import is still a dependency: it only postpones the circle to the first call.

Two rules:

1. Each module belongs to one group (``GROUPS``); a group may import only itself and the groups
   ``ALLOWED`` lists. The table is the design, bottom up: the protocol core and the database rows
   import nothing of sipd; configuration sits on the rows (URLs); transports, features and
   services on the core and the configuration; the shared state on the services; management on
   the state; the daemon (the composition root) on everything, and only ``sipd/__main__.py``
   imports it. sipd never imports sipctl; sipctl may import sipd except the daemon and the
   transports (it talks to a running sipd over the management socket; of the transports it uses
   only the preflight check of a listen address).
2. The module graph has no cycle (Tarjan's strongly connected components).

``KNOWN_VIOLATIONS`` lists the imports that break a rule today, each as (importer, imported). It
can only shrink: an import not listed that breaks a rule fails, and so does a listed one that no
longer breaks any (delete its line). To clear a cycle, the listed edges are removed from the graph
before the cycles are searched, so each cycle needs one of its edges listed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sipd", "sipctl")

#: Group name -> the modules in it: ``"a.b"`` is that module, ``"a.b.*"`` the package and everything
#: below it; a module named exactly wins over its package. A module in no group fails the test: a
#: new module is placed here on purpose.
GROUPS: dict[str, tuple[str, ...]] = {
    "sip": ("sipd.sip.*",),
    "db": ("sipd.db.*",),
    "base": ("sipd", "sipd.problem", "sipd.errors", "sipd.boundary", "sipd.stats", "sipd.logwriter", "sipd.logging",
             "sipd.hep", "sipd.notify", "sipd.sl_stats", "sipd.privileges", "sipd.eventloop", "sipd.corebuild"),
    "config": ("sipd.config", "sipd.config_sections"),
    "transport": ("sipd.transport.*",),
    # is a listen address free, bound as the listener binds it: asked by sipd before it starts and
    # by sipctl doctor, which must not reach into the transports themselves
    "preflight": ("sipd.transport.preflight",),
    "features": ("sipd.tlsconf", "sipd.hep_export", "sipd.livetrace", "sipd.tracefilter"),
    "services": ("sipd.services.*",),
    "state": ("sipd.state", "sipd.reloading"),
    "validation": ("sipd.validation",),
    "mgmt": ("sipd.mgmt.*",),
    "daemon": ("sipd.daemon.*", "sipd.overload", "sipd.readiness"),
    "main": ("sipd.__main__",),
    "sipctl.errors": ("sipctl.errors",),
    "sipctl.lib": ("sipctl.lib.*",),
    "sipctl.web": ("sipctl.web.*",),
    "sipctl.commands": ("sipctl.commands.*",),
    "sipctl": ("sipctl", "sipctl.__main__", "sipctl.app", "sipctl.argv", "sipctl.context", "sipctl.docgen",
               "sipctl.output"),
}

#: What sipctl may use of sipd: all but the daemon's runtime (the composition root, the transports).
SIPD_FOR_SIPCTL = frozenset({"sip", "db", "base", "config", "preflight", "features", "services",
                             "state", "validation", "mgmt"})

#: Group -> the other groups it may import.
ALLOWED: dict[str, frozenset[str]] = {
    "sip": frozenset(),
    "db": frozenset(),
    "base": frozenset({"sip"}),
    "config": frozenset({"base", "db"}),
    "transport": frozenset({"sip", "base", "config"}),
    "preflight": frozenset({"sip", "base", "config", "transport"}),
    "features": frozenset({"sip", "base", "config"}),
    "services": frozenset({"sip", "db", "base", "config", "features"}),
    "state": frozenset({"sip", "db", "base", "config", "features", "services"}),
    "validation": frozenset({"base", "config", "features", "services"}),
    "mgmt": frozenset({"sip", "db", "base", "config", "features", "services", "state", "validation"}),
    "daemon": frozenset({"sip", "db", "base", "config", "transport", "preflight", "features", "services",
                         "state", "validation", "mgmt"}),
    "main": frozenset({"daemon", "base", "config", "validation", "services"}),
    "sipctl.errors": frozenset(),
    "sipctl.lib": SIPD_FOR_SIPCTL | {"sipctl.errors"},
    "sipctl.web": SIPD_FOR_SIPCTL | {"sipctl.errors", "sipctl.lib"},
    "sipctl.commands": SIPD_FOR_SIPCTL | {"sipctl.errors", "sipctl.lib", "sipctl.web", "sipctl"},
    # the application, its context and output sink, and the generator of man pages and completions
    # (which reads sipd's own argument parser)
    "sipctl": SIPD_FOR_SIPCTL | {"main", "sipctl.errors", "sipctl.lib", "sipctl.web", "sipctl.commands"},
}

#: Imports that break a rule today, as (importer, imported). Only ever delete lines here. Where a
#: part loads the parts that import it back, the loading import is listed: the fix is to move that
#: loading up into the daemon's wiring, or the shared types down into a module of their own.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset({
})


# ---------------------------------------------------------------------------------------------
# The module graph


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Module name -> its file, for every module of ``packages`` under ``root``."""
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.Module, package: str) -> list[str]:
    """Every dotted name imported anywhere in ``tree`` except under ``if TYPE_CHECKING:``.

    ``package`` is the package relative imports start from. ``from a import b`` yields ``a.b``
    (a submodule, or a name defined in ``a``: the caller keeps the longest known module)."""
    names: list[str] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                todo.append(ast.Module(body=child.orelse, type_ignores=[]))  # the else branch runs
                continue
            if isinstance(child, ast.Import):
                names.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - child.level + 1])
                    source = f"{base}.{child.module}" if child.module else base
                else:
                    source = child.module or ""
                names.extend(f"{source}.{alias.name}" for alias in child.names)
            todo.append(child)
    return names


def module_graph(files: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``files`` it imports (itself excluded)."""
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for target in imported_names(ast.parse(path.read_text(encoding="utf-8"), str(path)), package):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


# ---------------------------------------------------------------------------------------------
# The rules


def group_of(module: str, groups: Mapping[str, tuple[str, ...]] = GROUPS) -> str | None:
    for group, patterns in groups.items():
        if module in patterns:
            return group
    for group, patterns in groups.items():
        for pattern in patterns:
            package = pattern.removesuffix(".*")
            if package != pattern and (module == package or module.startswith(package + ".")):
                return group
    return None


def table_violations(graph: Mapping[str, set[str]], groups: Mapping[str, tuple[str, ...]] = GROUPS,
                     allowed: Mapping[str, frozenset[str]] = ALLOWED) -> set[tuple[str, str]]:
    """The imports one group may not make of another."""
    out = set()
    for importer, targets in graph.items():
        mine = group_of(importer, groups)
        for target in targets:
            theirs = group_of(target, groups)
            if theirs != mine and theirs not in allowed.get(mine or "", ()):
                out.add((importer, target))
    return out


def cycles(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph.get(target, ()))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def problems(graph: Mapping[str, set[str]], known: Iterable[tuple[str, str]] = KNOWN_VIOLATIONS,
             groups: Mapping[str, tuple[str, ...]] = GROUPS,
             allowed: Mapping[str, frozenset[str]] = ALLOWED) -> list[str]:
    """Everything wrong with ``graph``, one line each (empty when it follows the rules)."""
    known = set(known)
    out = [f"{m} is in no group of GROUPS" for m in sorted(graph) if group_of(m, groups) is None]
    forbidden = table_violations(graph, groups, allowed)
    out += [f"{a} ({group_of(a, groups)}) imports {b} ({group_of(b, groups)})"
            for a, b in sorted(forbidden - known)]
    cut = {m: targets - {b for a, b in known if a == m} for m, targets in graph.items()}
    for component in cycles(cut):
        edges = sorted((a, b) for a in component for b in cut[a] if b in component)
        out.append("import cycle: " + ", ".join(f"{a} -> {b}" for a, b in edges))
    circular = {(a, b) for component in cycles(graph) for a in component for b in graph[a]
                if b in component}
    for a, b in sorted(known):
        if b not in graph.get(a, ()):
            out.append(f"KNOWN_VIOLATIONS lists {a} -> {b}, which is gone: delete its line")
        elif (a, b) not in forbidden and (a, b) not in circular:
            out.append(f"KNOWN_VIOLATIONS lists {a} -> {b}, which breaks no rule now: delete its line")
    return out


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return module_graph(module_files())


def test_the_graph_is_read(graph):
    """The reading itself works: known imports at module level and inside functions are seen."""
    assert len(graph) > 100
    assert "sipd.sip.message" in graph["sipd.sip.layer"]
    assert "sipd.config" in graph["sipctl.context"]  # imported inside a function only


def test_layering(graph):
    assert problems(graph) == []


def test_every_listed_violation_is_still_real(graph):
    """Also said by test_layering; apart so that a stale line is named on its own."""
    stale = [p for p in problems(graph) if p.startswith("KNOWN_VIOLATIONS")]
    assert stale == []


SYNTHETIC_GROUPS = {"core": ("app.core.*",), "services": ("app.services.*",), "daemon": ("app.daemon.*",)}
SYNTHETIC_ALLOWED = {"core": frozenset(), "services": frozenset({"core"}),
                     "daemon": frozenset({"core", "services"})}


def _check(graph: dict[str, set[str]], known=frozenset()) -> list[str]:
    return problems(graph, known, SYNTHETIC_GROUPS, SYNTHETIC_ALLOWED)


def test_checker_catches_a_back_reference():
    good = {"app.core.message": set(), "app.services.proxy": {"app.core.message"},
            "app.daemon.app": {"app.services.proxy", "app.core.message"}}
    assert _check(good) == []
    back = {**good, "app.core.message": {"app.services.proxy"}}  # the core reaching up
    found = _check(back)
    assert "app.core.message (core) imports app.services.proxy (services)" in found
    assert any(p.startswith("import cycle: ") and "app.core.message -> app.services.proxy" in p for p in found)
    # Listed, the same import is accepted, and the cycle through it is cut.
    assert _check(back, {("app.core.message", "app.services.proxy")}) == []


def test_checker_catches_a_cycle_inside_one_group():
    graph = {"app.services.a": {"app.services.b"}, "app.services.b": {"app.services.c"},
             "app.services.c": {"app.services.a"}, "app.core.x": set()}
    found = _check(graph)
    assert len(found) == 1 and found[0].startswith("import cycle: ")
    assert _check(graph, {("app.services.c", "app.services.a")}) == []


def test_known_violations_can_only_shrink():
    graph = {"app.core.message": set(), "app.services.proxy": {"app.core.message"}}
    found = _check(graph, {("app.core.message", "app.services.proxy"),
                           ("app.services.proxy", "app.core.message")})
    assert found == [
        "KNOWN_VIOLATIONS lists app.core.message -> app.services.proxy, which is gone: delete its line",
        "KNOWN_VIOLATIONS lists app.services.proxy -> app.core.message, which breaks no rule now: delete its line",
    ]


def test_a_module_named_exactly_wins_over_its_package():
    assert group_of("sipd.transport.preflight") == "preflight"
    assert group_of("sipd.transport.udp") == group_of("sipd.transport") == "transport"


def test_a_module_in_no_group_is_reported():
    assert _check({"app.stray": set()}) == ["app.stray is in no group of GROUPS"]


def test_imports_in_functions_count_and_type_checking_ones_do_not():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import app.core.a\n"
        "if TYPE_CHECKING:\n"
        "    from app.daemon import server\n"
        "else:\n"
        "    from . import fallback\n"
        "def f():\n"
        "    from ..core import b\n"
        "    try:\n"
        "        import app.core.c as c\n"
        "    except ImportError:\n"
        "        pass\n")
    names = imported_names(tree, "app.services")
    assert sorted(names) == ["app.core.a", "app.core.b", "app.core.c", "app.services.fallback",
                             "typing.TYPE_CHECKING"]
