"""Errors that every layer of the daemon may raise, kept here so no layer imports the daemon."""

from __future__ import annotations


class StartupError(Exception):
    """Startup failed; the message is one line for the operator (exit 1, no traceback)."""
