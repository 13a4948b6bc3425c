"""Is the routing hook usable? Answered by importing it, in a child process with a time limit.

Loading the configuration (every sipd start, every sipctl command) only reads and compiles a hook
file (``hook.check_spec``): cheap, and it runs no operator code. ``sipd --check-config`` and
``sipctl config check`` go further, as the start would: they import the module and check that
``route`` is a function that takes the request as its one argument (docs/routing-hook.md). The
import runs the module's top-level code, so it happens in a child process: a hook that loops,
blocks or exits at import time cannot hang or end the check, and the checking process keeps none of
its state. Each problem is one line, with ``file:line`` when the hook's own code is at fault.

Run as ``python -m sipd.services.hook_check SPEC``: prints one JSON object, ``{"problem": ...}``
(``null`` when the hook is usable).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import subprocess
import sys
import traceback
from collections.abc import Sequence
from typing import Any

#: Seconds the child may take to import the hook. Generous (a loaded machine, a hook importing a
#: large library), and still short enough that a hook stuck at import is reported, not waited on.
IMPORT_TIME_LIMIT = 20.0


def is_path(spec: str) -> bool:
    """``[routing] hook`` names a file (``.py`` or a path), not an importable module."""
    return spec.endswith(".py") or "/" in spec


def signature_problem(spec: str, fn: Any) -> str | None:
    """Why ``fn`` cannot be called as ``route(request)``, or None."""
    if not callable(fn):
        return f"{spec}: route is {type(fn).__name__}, not a function; define def route(request): ..."
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable without a signature: trust it
        return None
    try:
        sig.bind(object())
    except TypeError:
        return f"{spec}: route{sig} cannot be called as route(request); it must take exactly one argument"
    return None


def _where(spec: str, exc: BaseException) -> str:
    """``file:line`` of the hook's own frame closest to the error (else the last frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    library = ("<", sys.prefix, sys.base_prefix, __file__)
    own = [f for f in frames if f.filename == spec or not f.filename.startswith(library)]
    frame = (own or frames or [None])[-1]
    return f"{frame.filename}:{frame.lineno}" if frame is not None else spec


def _import_and_check(spec: str) -> str | None:
    """In the child: import ``spec`` (a file or a module name) and check its ``route``."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the verdict only
            module = _load(spec)
    except SyntaxError as exc:
        return f"{exc.filename or spec}:{exc.lineno}: syntax error: {exc.msg}"
    except BaseException as exc:  # noqa: BLE001 - anything the operator's module raises (SystemExit too)
        return f"{_where(spec, exc)}: importing {spec} raised {type(exc).__name__}: {exc}"
    if module is None:
        return f"cannot load {spec}"
    if not hasattr(module, "route"):
        return f"{spec} defines no route(request) function (docs/routing-hook.md)"
    return signature_problem(spec, module.route)


def _load(spec: str) -> Any:
    import importlib
    import importlib.util

    if is_path(spec):
        mspec = importlib.util.spec_from_file_location("sipd_routing_hook_check", spec)
        if mspec is None or mspec.loader is None:
            return None
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def probe(spec: str, *, time_limit: float = IMPORT_TIME_LIMIT) -> str | None:
    """Import the hook in a child process; the problem as one line, or None when it is usable."""
    import os

    import sipd

    here = os.path.dirname(os.path.dirname(os.path.abspath(sipd.__file__)))  # the child imports this sipd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-m", "sipd.services.hook_check", spec], capture_output=True,
                              text=True, timeout=time_limit, stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        return (f"importing {spec} did not finish within {time_limit:g} s "
                "(a loop or a blocking call at module level? sipd would hang at start)")
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])["problem"]
    except (IndexError, ValueError, KeyError, TypeError):
        err = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"importing {spec} ended the checking process: {err}"


def check_config(path: str | None, validators: Sequence[Any]) -> tuple[Any, list[Any]]:
    """``sipd.config.check`` plus the import of the routing hook (``--check-config``, config check)."""
    from .. import config as cfg

    conf, problems = cfg.check(path, validators=validators)
    spec = conf.routing.hook
    if spec and not any(p.key == "routing.hook" for p in problems):
        problem = probe(spec)
        if problem:
            problems.append(cfg.Problem("routing.hook", problem, "fix the hook (docs/routing-hook.md)"))
    return conf, problems


if __name__ == "__main__":
    print(json.dumps({"problem": _import_and_check(sys.argv[1])}), flush=True)
