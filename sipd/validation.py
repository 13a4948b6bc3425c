"""Every check of sipd.toml's values beyond their type, in the order their problems are reported.

``sipd.config`` reads the file and checks the sections it owns itself; the other sections are
checked by the code that uses their keys. Each such check is one function of one shape,
``validate(config) -> list[Problem]``, and this list names them all. It is handed to
``sipd.config.load``/``check`` by whoever loads the configuration to use it: the daemon at start
and at reload, ``sipd --check-config``, ``sipctl`` (every command, ``config check``, ``doctor``).
Nothing registers itself on import: a check that is not listed here does not run.

A new section's check goes into the module that reads the section, and its name into this list.
"""

from __future__ import annotations

from . import config, hep_export, tlsconf
from .services import cluster, hook, presence_state, pstn

VALIDATORS: tuple[config.Validator, ...] = (
    hep_export.validate,  # [trace]
    config.validate_security,  # [antiflood], [spam], [acc]
    tlsconf.validate,  # [tls] and its domain tables
    presence_state.validate,  # [presence]
    pstn.validate,  # [nat], [diversion], [pstn]
    hook.validate,  # [routing]
    cluster.validate,  # [cluster]
)
