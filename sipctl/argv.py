"""Where ``--json`` is on the command line, read before the app parses it.

``sipctl --json CMD`` and ``sipctl CMD --json`` mean the same thing. Most commands take ``--json``
themselves; the global form is moved to the command when the command has that option, and is
otherwise kept as a process-wide request (results and errors as JSON). The entry point must know
before parsing, because a usage error found by the parser is an error to print as JSON too.
"""

from __future__ import annotations

from typing import Any

#: Global options that take a value (their value is not a command name).
_ROOT_VALUE_OPTIONS = {"--config", "-c", "--db-url"}


def json_argv(app: Any, argv: list[str]) -> tuple[list[str], bool]:
    """Return ``argv`` with a global ``--json`` moved after the command path when that command takes
    ``--json``, and whether JSON was asked for anywhere (before a ``--``)."""
    import typer

    end = argv.index("--") if "--" in argv else len(argv)
    wanted = "--json" in argv[:end]
    # the global options, up to the first command word
    i = 0
    root_json = False
    while i < end and argv[i].startswith("-"):
        if argv[i] in _ROOT_VALUE_OPTIONS:
            i += 1
        elif argv[i] == "--json":
            root_json = True
        i += 1
    if not root_json:
        return argv, wanted
    # follow group names to the command itself
    command = typer.main.get_command(app)
    j = i
    while j < end and hasattr(command, "commands") and argv[j] in command.commands:
        command = command.commands[argv[j]]
        j += 1
    takes_json = any("--json" in getattr(p, "opts", ()) for p in getattr(command, "params", ()))
    if not takes_json or j == i or "--json" in argv[j:end]:
        return argv, wanted
    out = [a for k, a in enumerate(argv) if not (k < i and a == "--json")]
    j -= 1  # one token fewer before the command path
    return [*out[:j], "--json", *out[j:]], wanted
