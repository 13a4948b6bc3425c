"""Command line of the daemon: ``sipd [--config FILE] [--check-config]``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sipd", description="SIP registrar and stateful proxy.")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="configuration file (default: $SIPD_CONFIG, /etc/sipd/sipd.toml, built-in defaults)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, print each problem with its key, exit 1 on problems")
    p.add_argument("--version", action="store_true", help="print the version and which protocol core runs")
    return p


def check_config(path: str | None) -> int:
    from .services.hook_check import check_config as check
    from .validation import VALIDATORS

    conf, problems = check(path, VALIDATORS)  # the configuration, and the routing hook imported in a child
    where = str(conf.source) if conf.source else (path or "built-in defaults")
    if problems:
        for problem in problems:
            print(f"sipd: {where}: {problem}", file=sys.stderr)
        print(f"sipd: {len(problems)} problem(s) in the configuration", file=sys.stderr)
        return 1
    print(f"sipd: configuration OK ({where})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from .corebuild import describe

        print(f"sipd {__version__}, protocol core: {describe()}")
        return 0
    if args.check_config:
        return check_config(args.config)
    from .config import ConfigError
    from .daemon.app import load_config

    try:
        conf = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"sipd: configuration: {problem}", file=sys.stderr)
        print("sipd: not started; run sipd --check-config for the full list", file=sys.stderr)
        return 1
    from .daemon.lifecycle import run

    return run(conf)


if __name__ == "__main__":
    sys.exit(main())
