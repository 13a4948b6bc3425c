"""What is wrong with a configuration: a key, a message and a hint (sipd --check-config, sipctl)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}" if self.key else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text


@dataclass(frozen=True)
class StartupProblem(Problem):
    """A problem only for starting sipd: a file sipd must open when it starts (the TLS certificate,
    its key, the CA) is missing. The file is complete and readable, so sipctl works with it: an
    operator creates the database and provisions users before the certificate exists. sipd refuses
    to start; ``sipd --check-config``, ``sipctl config check`` and ``sipctl doctor`` report it."""
