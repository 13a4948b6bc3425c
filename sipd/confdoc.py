"""The metadata of a configuration key: its documentation (sipd.toml(5), ``config generate``,
``sipctl config show``) and any checks. In a module of its own so that the sections declared
beside the services they configure (``[overload]``, ``[web]``, the HEP keys of ``[trace]``) use it
without importing ``sipd.config``, which imports them."""

from __future__ import annotations

from typing import Any


def doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"doc": text, **extra}
