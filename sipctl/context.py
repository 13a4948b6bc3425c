"""The environment a command runs in (config path, consoles). Hangs off ``ctx.obj``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sipd.config import Config


@dataclass
class Env:
    config_path: str | None = None
    db_url: str | None = None   # --db-url / $SIPCTL_DB_URL overrides [database] url
    _config: Config | None = field(default=None, repr=False)

    @cached_property
    def config(self) -> Config:
        """The loaded configuration; a broken file is a usage error with the problems listed."""
        from sipd import config as cfg
        from sipd.validation import VALIDATORS

        from .errors import SipctlError, ExitStatus
        if self._config is not None:
            conf = self._config
        else:
            # Only sipd needs the files it opens at start (TLS certificate and key): sipctl works
            # before they exist; config check and doctor report them.
            conf, problems = cfg.check(self.config_path, validators=VALIDATORS)
            problems = [p for p in problems if not isinstance(p, cfg.StartupProblem)]
            if problems:
                first = problems[0]
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise SipctlError(f"configuration: {first}{more}", hint="run sipctl config check",
                                  exit_code=ExitStatus.USAGE)
        if self.db_url:
            conf.database.url = self.db_url
        return conf


def get_env(ctx: typer.Context) -> Env:
    root = ctx.find_root()
    if not isinstance(root.obj, Env):
        root.obj = Env()
    return root.obj
