"""The ``[web]`` section of sipd.toml: where ``sipctl web`` (the control panel) listens and how it
guards its logins. Declared here, beside the other sections in ``sipd.config``, so that the panel's
keys live in the one TOML file, are checked by ``sipd --check-config`` and appear in sipd.toml(5).

sipd itself never reads these keys: the panel is its own process, started by ``sipctl web``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .confdoc import doc as _doc


@dataclass(kw_only=True)
class WebSection:
    """The control panel (``sipctl web``)."""

    listen: str = field(default="127.0.0.1:8080", metadata=_doc("HOST:PORT the panel listens on (IPv6 as [::1]:8080); loopback by default, put it behind TLS before opening it wider."))
    certificate: str = field(default="", metadata=_doc("PEM certificate for HTTPS; with private_key set the panel serves HTTPS only and marks its cookie Secure."))
    private_key: str = field(default="", metadata=_doc("PEM private key of the certificate (unencrypted; mode 0600)."))
    session_timeout: float = field(default=28800.0, metadata=_doc("Seconds a login stays valid without activity."))
    lockout_failures: int = field(default=5, metadata=_doc("Failed logins in a row after which an admin account is locked."))
    lockout_seconds: float = field(default=300.0, metadata=_doc("Seconds a locked admin account stays locked."))
