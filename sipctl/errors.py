"""Errors sipctl's library raises; each carries an exit code. Handled in one place: app.main()."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1          # the operation failed (or a check found problems)
    USAGE = 2          # bad command line / bad input
    DB = 3             # database unreachable, access denied, schema missing
    MGMT = 4           # sipd not running / management interface unreachable
    MGMT_PERMISSION = 5  # management interface exists but we may not use it
    TIMEOUT = 6
    NOT_FOUND = 7      # the thing named does not exist
    EXISTS = 8         # the thing to add already exists
    MGMT_UNKNOWN_COMMAND = 9  # sipd does not know that management command
    MGMT_BAD_PARAMS = 10      # sipd refused the command's parameters
    INTERRUPTED = 130


#: The hint printed with an error that brings none of its own: every error says where to go next.
DEFAULT_HINTS: dict[ExitStatus, str] = {
    ExitStatus.ERROR: "sipctl doctor checks the installation; the command's --help shows its options",
    ExitStatus.USAGE: "the command's --help shows what it takes",
    ExitStatus.DB: "check [database] url; sipctl db status says what is wrong",
    ExitStatus.MGMT: "is sipd running? sipctl doctor checks the management socket",
    ExitStatus.MGMT_PERMISSION: "run as root or as a member of the group owning [mgmt] socket",
    ExitStatus.TIMEOUT: "sipd did not answer in time: check its log (journalctl -u sipd)",
    ExitStatus.NOT_FOUND: "check the name: the group's list command shows what exists",
    ExitStatus.EXISTS: "the group's list command shows what exists",
    ExitStatus.MGMT_UNKNOWN_COMMAND: "sipctl mi which lists sipd's management commands",
    ExitStatus.MGMT_BAD_PARAMS: "sipctl mi which COMMAND shows what it takes",
    ExitStatus.INTERRUPTED: "run the command again to finish it",
}


class SipctlError(Exception):
    """An error with a one-line message, an optional hint, and an exit code."""

    exit_code: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, *, hint: str = "", exit_code: ExitStatus | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(SipctlError):
    exit_code = ExitStatus.USAGE


class DbError(SipctlError):
    exit_code = ExitStatus.DB


class NotFoundError(SipctlError):
    exit_code = ExitStatus.NOT_FOUND


class ExistsError(SipctlError):
    exit_code = ExitStatus.EXISTS


class MgmtUnavailable(SipctlError):
    exit_code = ExitStatus.MGMT


class MgmtPermission(SipctlError):
    exit_code = ExitStatus.MGMT_PERMISSION


class MgmtTimeout(SipctlError):
    exit_code = ExitStatus.TIMEOUT


class MgmtCommandError(SipctlError):
    exit_code = ExitStatus.ERROR


class CertError(SipctlError):
    exit_code = ExitStatus.ERROR


class CheckFailed(SipctlError):
    """A check command found problems (output already printed)."""

    exit_code = ExitStatus.ERROR
