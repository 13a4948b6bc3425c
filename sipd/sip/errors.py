"""Errors of the SIP protocol core.

Like h11, a protocol error carries the status a peer should be answered with (``status_hint``);
``None`` means "drop silently" (broken responses, messages we cannot even frame).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .message import Request


class SipError(Exception):
    """Base of every error raised by ``sipd.sip``."""


class ProtocolError(SipError):
    """A message violates the protocol. ``status_hint`` is the status to answer with, or None."""

    def __init__(self, msg: str, status_hint: int | None = 400) -> None:
        super().__init__(msg)
        self.status_hint = status_hint

    @property
    def reason(self) -> str:
        return str(self)


class LocalProtocolError(ProtocolError):
    """We tried to build or send something illegal (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something we cannot accept.

    ``partial`` is a best-effort :class:`Request` when the request line and the headers needed to
    build a response (Via, From, To, Call-ID, CSeq) could be read, so the caller can answer
    ``status_hint``; otherwise None (drop).
    """

    def __init__(self, msg: str, status_hint: int | None = 400, partial: Any = None) -> None:
        super().__init__(msg, status_hint)
        self.partial: Request | None = partial


class TransactionError(SipError):
    """Misuse of the transaction layer (unknown transaction key, illegal state transition)."""
