"""The optional compiled protocol core: which modules it is, whether this process runs it, and
the build that makes it.

sipd is pure Python by default. ``scripts/build-core`` (or ``scripts/install --compiled``)
compiles the modules listed in ``MODULES`` with Cython into extension modules placed beside their
``.py`` files; Python's import then prefers the extension module, so nothing else changes: the
``.py`` stays the source of truth, read by Cython together with an optional ``.pxd`` beside it
that declares static types for hot functions without touching the ``.py``. ``--clean`` removes the
extension modules and the pure build is back.

Cython compiles ordinary Python with Python's semantics (classes stay Python classes, module
globals stay patchable, objects keep their identity); type annotations are not taken as C types
(``annotation_typing`` off), so an annotation that is only a hint never turns into a run-time
type check. An extension module older than its ``.py`` is reported as stale: it still runs, and
it runs the old code.

    python -m sipd.corebuild build [--root DIR] [--jobs N] [--module NAME ...]
    python -m sipd.corebuild clean [--root DIR]
    python -m sipd.corebuild status [--root DIR]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

# The protocol core and the per-message path around it, chosen by counting instructions per
# REGISTER, REGISTER + digest and call in-process (bench/instructions.py --callgrind).
MODULES: tuple[str, ...] = (
    "sipd.sip.auth",
    "sipd.sip.framing",
    "sipd.sip.header_fields",
    "sipd.sip.headers",
    "sipd.sip.layer",
    "sipd.sip.message",
    "sipd.sip.parser",
    "sipd.sip.sanity",
    "sipd.sip.stateless",
    "sipd.sip.transaction",
    "sipd.sip.uri",
)

# Annotations stay hints; the rest is Cython's default for Python 3 code.
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True}
CFLAGS = ["-O2", "-g0"]  # no debug info: a third of the compile time, and nothing reads it

PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def _source(root: Path, name: str) -> Path:
    return root.joinpath(*name.split(".")).with_suffix(".py")


def _extensions(root: Path, name: str) -> list[Path]:
    """The extension modules of ``name`` beside its source, for any Python's suffix."""
    src = _source(root, name)
    return sorted(p for p in src.parent.glob(src.stem + ".*") if p.suffix in (".so", ".pyd"))


def loaded_compiled(names: Iterable[str] = MODULES) -> dict[str, bool]:
    """For each core module: does this process run it compiled? (Imports it if not yet.)"""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    out = {}
    for name in names:
        module = sys.modules.get(name) or importlib.import_module(name)
        out[name] = str(getattr(module, "__file__", "") or "").endswith(suffixes)
    return out


def stale(root: Path = PACKAGE_PARENT, names: Iterable[str] = MODULES) -> list[str]:
    """Modules whose extension module is older than the ``.py`` beside it."""
    out = []
    for name in names:
        src = _source(root, name)
        pxd = src.with_suffix(".pxd")
        newest = max(src.stat().st_mtime, pxd.stat().st_mtime if pxd.exists() else 0.0)
        if any(ext.stat().st_mtime < newest for ext in _extensions(root, name)):
            out.append(name)
    return out


def describe() -> str:
    """One line for ``sipd --version``, ``sipctl version`` and ``sipctl doctor``."""
    compiled = [n for n, c in loaded_compiled().items() if c]
    if not compiled:
        return "pure Python"
    what = f"compiled with Cython ({len(compiled)} of {len(MODULES)} core modules)"
    if len(compiled) < len(MODULES):
        what = "partly " + what
    old = [n for n in stale() if n in compiled]
    if old:
        what += f", STALE: older than their source: {', '.join(old)} (run scripts/build-core again)"
    return what


def build(root: Path = PACKAGE_PARENT, names: Iterable[str] = MODULES, jobs: int = 0,
          quiet: bool = False) -> list[Path]:
    """Compile ``names`` under ``root`` (the directory holding the ``sipd`` package) into extension
    modules beside their sources. C files and objects go to a temporary directory that is removed
    afterwards; only the extension modules are left. Returns their paths."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    root = root.resolve()
    names = list(names)
    jobs = jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="sipd-build-core-") as tmp:
        here = os.getcwd()
        os.chdir(root)  # Cython names the C files after the source path relative to this directory
        try:
            exts = [Extension(n, [os.path.relpath(_source(root, n), root)], extra_compile_args=CFLAGS)
                    for n in names]
            modules = cythonize(exts, build_dir=os.path.join(tmp, "c"), compiler_directives=DIRECTIVES,
                                nthreads=jobs if jobs > 1 else 0, quiet=True, force=True)
            dist = Distribution({"name": "sipd-core", "ext_modules": modules})
            dist.script_name = "build-core"
            cmd = build_ext(dist)
            cmd.build_lib = str(root)
            cmd.build_temp = os.path.join(tmp, "obj")
            cmd.parallel = jobs
            cmd.ensure_finalized()
            if quiet:
                with open(os.devnull, "w") as null:
                    saved = os.dup(1)
                    os.dup2(null.fileno(), 1)
                    try:
                        cmd.run()
                    finally:
                        os.dup2(saved, 1)
                        os.close(saved)
            else:
                cmd.run()
        finally:
            os.chdir(here)
    built = [ext for n in names for ext in _extensions(root, n)]
    missing = [n for n in names if not _extensions(root, n)]
    if missing:
        raise RuntimeError(f"no extension module built for {', '.join(missing)}")
    return built


def clean(root: Path = PACKAGE_PARENT, names: Iterable[str] = MODULES) -> list[Path]:
    """Remove the extension modules of ``names``: the pure build is what imports next."""
    removed = []
    for name in names:
        for ext in _extensions(root, name):
            ext.unlink()
            removed.append(ext)
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sipd.corebuild", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("build", "clean", "status"))
    ap.add_argument("--root", type=Path, default=PACKAGE_PARENT,
                    help="the directory that holds the sipd package (default: this installation's)")
    ap.add_argument("--jobs", type=int, default=0, help="parallel compilations (default: one per CPU)")
    ap.add_argument("--module", action="append", choices=MODULES, help="only this module (repeatable)")
    args = ap.parse_args(argv)
    names = args.module or MODULES
    if args.action == "build":
        try:
            built = build(args.root, names, args.jobs, quiet=True)
        except ImportError as exc:
            print(f"build-core: {exc}: install Cython first (pip install 'sipd[compiled]')", file=sys.stderr)
            return 1
        print(f"build-core: {len(built)} extension modules built under {args.root / 'sipd'}")
    elif args.action == "clean":
        removed = clean(args.root, names)
        print(f"build-core: {len(removed)} extension modules removed; the pure-Python core runs")
    else:
        for name in names:
            exts = _extensions(args.root, name)
            print(f"{name}: {'compiled' if exts else 'pure'}{' (stale)' if name in stale(args.root, [name]) else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
