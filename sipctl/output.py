"""The one output sink: rich tables for people, JSON for scripts, errors and warnings on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False,
                 stdout: Console | None = None, stderr: Console | None = None):
        self.json_mode = json_mode
        self.quiet = quiet
        self.out = stdout or Console(soft_wrap=True)
        self.err = stderr or Console(stderr=True, soft_wrap=True)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
              data: Any = None) -> None:
        """Print rows as a table, or ``data`` (default: list of dicts keyed by column) as JSON."""
        rows = [list(r) for r in rows]
        if self.json_mode:
            if data is None:
                data = [dict(zip(columns, r)) for r in rows]
            self.json(data)
            return
        if self.quiet:
            return
        t = Table(title=title)
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        self.out.print(t)

    def result(self, message: str, data: Any = None) -> None:
        """A success line for people; ``data`` (default ``{"ok": true, "message": ...}``) for --json."""
        if self.json_mode:
            self.json(data if data is not None else {"ok": True, "message": message})
        elif not self.quiet:
            self.out.print(message, highlight=False, markup=False)

    def warning(self, message: str) -> None:
        self.err.print(f"[yellow]Warning:[/yellow] {escape(message)}", highlight=False)

    def error(self, message: str, hint: str = "") -> None:
        # Messages quote config keys like "[mgmt] socket": escape them so rich does not eat them.
        self.err.print(f"[red]Error:[/red] {escape(message)}", highlight=False, markup=True)
        if hint:
            self.err.print(f"Hint: {hint}", highlight=False, markup=False)


def show_change(out: Output, change: Any) -> None:
    """A provisioning change (sipctl/lib/changes.py): the one-line summary, then what sipd does with
    it; warnings (sipd will not do what was probably meant, or did not reload) on stderr."""
    if out.json_mode:
        out.json(change.as_dict())
        return
    out.result(change.summary)
    if not out.quiet:
        for note in change.notes:
            out.out.print(f"  {note}", highlight=False, markup=False)
    for warning in change.warnings:
        out.warning(warning)
