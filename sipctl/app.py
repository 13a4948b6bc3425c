"""The sipctl Typer app: global options, command groups, and the one place errors become exit codes.

Each command group lives in ``sipctl/commands/<noun>.py`` exposing ``app``; register it in GROUPS.
Command modules import heavy things (database drivers, cryptography, dnspython) inside functions so
that ``sipctl --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Annotated, Optional

import typer

from .context import Env

app = typer.Typer(
    name="sipctl",
    help="Operate a sipd SIP server: database, users, domains, dialplan, registrations, calls, TLS, DNS.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# (module under sipctl.commands, group name) — a group's module exposes ``app``.
GROUPS: list[tuple[str, str]] = [
    ("db", "db"),
    ("domain", "domain"),
    ("user", "user"),
    ("alias", "alias"),
    ("dp", "dp"),
    ("config", "config"),
    ("cert", "cert"),
    ("tls", "tls"),
    ("dns", "dns"),
    ("ban", "ban"),
    ("ul", "ul"),
    ("stats", "stats"),
    ("dialog", "dialog"),
    ("cdr", "cdr"),
    ("missed", "missed"),
    ("presence", "presence"),
    ("web", "web"),
    ("audit", "audit"),
    ("cluster", "cluster"),
]
# (module, function name, command name) — single top-level verbs.
VERBS: list[tuple[str, str, str]] = [
    ("online", "online", "online"),
    ("monitor", "monitor", "monitor"),
    ("mi", "mi", "mi"),
    ("runtime", "ps", "ps"),
    ("runtime", "uptime", "uptime"),
    ("runtime", "version", "version"),
    ("runtime", "log_level", "log-level"),
    ("runtime", "reload", "reload"),
    ("doctor", "doctor", "doctor"),
    ("trace", "trace", "trace"),
]


def _print_version(value: bool) -> None:
    if value:
        from sipd import __version__

        from .output import Output

        Output().result(f"sipctl {__version__}", {"sipctl": __version__})
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Optional[str],
        typer.Option("--config", "-c", envvar="SIPD_CONFIG", help="sipd.toml to use (default: $SIPD_CONFIG, /etc/sipd/sipd.toml, built-in defaults)."),
    ] = None,
    db_url: Annotated[
        Optional[str],
        typer.Option("--db-url", envvar="SIPCTL_DB_URL", help="Database URL overriding \\[database] url."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON on stdout for every command, errors included (same as CMD --json)."),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print sipctl's version and exit."),
    ] = False,
) -> None:
    from .output import Output

    if as_json:  # (main() found it already; this is for the app run by other means, e.g. tests)
        Output.json_requested = True
        ctx.call_on_close(lambda: setattr(Output, "json_requested", False))
    ctx.obj = Env(config_path=config, db_url=db_url)
    if ctx.invoked_subcommand != "web":  # the panel records its changes itself, with the admin's name
        from .lib import audit, changes
        from .output import Output

        ctx.call_on_close(changes.subscribe(audit.cli_listener(lambda: ctx.obj.config, Output().warning)))


def _register() -> None:
    for module, name in GROUPS:
        mod = importlib.import_module(f"sipctl.commands.{module}")
        app.add_typer(mod.app, name=name)
    for module, func, name in VERBS:
        mod = importlib.import_module(f"sipctl.commands.{module}")
        app.command(name)(getattr(mod, func))


_register()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning known errors into one line and an exit code."""
    from .argv import json_argv
    from .output import Output

    argv, wanted = json_argv(app, sys.argv[1:] if argv is None else list(argv))
    Output.json_requested, Output.json_written = wanted, False
    shown = warnings.showwarning
    # A library's warning is the operator's only as one "Warning:" line, never Python's file:line dump.
    warnings.showwarning = lambda message, *_args, **_kw: Output().warning(str(message))
    try:
        return _run(argv, wanted)
    finally:  # nothing of this run's output mode is left for the next (tests run many in one process)
        Output.json_requested = Output.json_written = False
        warnings.showwarning = shown


def _run(argv: list[str], wanted: bool) -> int:
    from .errors import DEFAULT_HINTS, ExitStatus, SipctlError
    from .output import Output

    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:  # typer.Exit(n) inside a command returns n here
            return rc
    except SipctlError as exc:
        Output(json_mode=wanted).error(exc.message, exc.hint or DEFAULT_HINTS.get(exc.exit_code, ""))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        Output(json_mode=wanted).error("interrupted", DEFAULT_HINTS[ExitStatus.INTERRUPTED])
        return int(ExitStatus.INTERRUPTED)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        Output(json_mode=wanted).error("aborted: a question was not answered", "answer it at a terminal, or give the value as an option")
        return int(ExitStatus.ERROR)
    except Exception as exc:  # click usage errors and anything else: one line, no traceback
        code = getattr(exc, "exit_code", None)
        show = getattr(exc, "format_message", None)
        if code is not None and show is not None:  # a click.UsageError or BadParameter
            message = show()
            if message:  # empty for "no arguments: help printed" (no_args_is_help)
                Output(json_mode=wanted).error(message, "see --help")
            return int(code)
        if isinstance(exc, (BrokenPipeError,)):
            return 0
        Output(json_mode=wanted).error(f"unexpected {type(exc).__name__}: {exc}", "please report this as a bug with the command line you ran")
        return int(ExitStatus.ERROR)
    # With standalone_mode=False, click returns the code of a typer.Exit raised by the command.
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
