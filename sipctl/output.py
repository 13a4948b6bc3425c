"""The one output sink: rich tables for people, JSON for scripts, errors and warnings on stderr.

Tables have two layouts. At a terminal they are rich tables whose cells fold (a long Call-ID or
certificate subject wraps onto the next line, it is never cut with an ellipsis: people copy these
values into the next command). When stdout is a pipe or a file they are plain text: a header line,
then one line per row, cells separated by a tab and written in full, so that ``grep``, ``cut -f``
and ``column -t -s $'\\t'`` work on them.

With ``--json`` anywhere on the command line, results and errors are JSON on stdout; an error is
one object ``{"error": ..., "hint": ...}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table


class Output:
    #: Set by sipctl's entry point when the command line asks for JSON (``sipctl --json CMD``), so that
    #: errors and commands without a ``--json`` option of their own answer in JSON too.
    json_requested: ClassVar[bool] = False
    #: Whether this process has written a JSON document to stdout: a check that printed its report
    #: (with ``"ok": false``) and then fails adds no second document, so stdout stays one JSON value.
    json_written: ClassVar[bool] = False

    def __init__(self, *, json_mode: bool = False, quiet: bool = False,
                 stdout: Console | None = None, stderr: Console | None = None):
        self.json_mode = json_mode or Output.json_requested
        self.quiet = quiet
        self.out = stdout or Console(soft_wrap=True)
        self.err = stderr or Console(stderr=True, soft_wrap=True)

    def json(self, data: Any, *, indent: int | None = 2) -> None:
        sys.stdout.write(json.dumps(data, indent=indent, default=str, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        Output.json_written = True

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
              data: Any = None, right: Sequence[str] = ()) -> None:
        """Print rows as a table, or ``data`` (default: list of dicts keyed by column) as JSON.

        ``right`` names the columns to right-align (numbers) in the terminal layout.
        """
        rows = [list(r) for r in rows]
        if self.json_mode:
            if data is None:
                data = [dict(zip(columns, r)) for r in rows]
            self.json(data)
            return
        if self.quiet:
            return
        if not self.out.is_terminal:
            self.out.file.write(plain_table(columns, rows))
            self.out.file.flush()
            return
        self.out.print(rich_table(columns, rows, title=title, right=right))

    def result(self, message: str, data: Any = None) -> None:
        """A success line for people; ``data`` (default ``{"ok": true, "message": ...}``) for --json."""
        if self.json_mode:
            self.json(data if data is not None else {"ok": True, "message": message})
        elif not self.quiet:
            self.out.print(message, highlight=False, markup=False)

    def warning(self, message: str) -> None:
        self.err.print(f"[yellow]Warning:[/yellow] {escape(message)}", highlight=False)

    def error(self, message: str, hint: str = "") -> None:
        """One error: ``Error:`` and ``Hint:`` lines on stderr, or one JSON object on stdout."""
        if self.json_mode and not Output.json_written:
            self.json({"error": message, "hint": hint})
            return
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
    if change.daemon == "failed":  # the database has the change; the running sipd does not yet
        out.warning(change.daemon_message)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def plain_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Header and rows, one per line, tab-separated, values in full (tabs and newlines inside a value
    become spaces so that a row stays one line)."""
    def line(cells: Iterable[Any]) -> str:
        return "\t".join(" ".join(_cell(c).split()) if ("\t" in _cell(c) or "\n" in _cell(c)) else _cell(c)
                         for c in cells)

    return "".join(line(r) + "\n" for r in [list(columns), *rows])


def rich_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
               right: Sequence[str] = (), **kwargs: Any) -> Table:
    """A rich table whose cells fold rather than end in an ellipsis; values are not read as markup."""
    t = Table(title=title, **kwargs)
    for c in columns:
        t.add_column(escape(c), overflow="fold", justify="right" if c in right else "left")
    for r in rows:
        t.add_row(*[escape(_cell(v)) for v in r])
    return t
