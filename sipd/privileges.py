"""Running as root only as long as needed: bind, then become ``[server] user``/``group``.

Order matters: sockets (SIP listeners, management and trace sockets) are bound and the database is
opened as root; then the SQLite files are handed to the target user, every sipd module is imported
(so later lazy imports never need to read files the new user may not see), and the process switches
group, supplementary groups and user, irreversibly. Plus the PID file, written before the switch
and removed at exit.
"""

from __future__ import annotations

import grp
import importlib
import logging
import os
import pkgutil
import pwd
from pathlib import Path

logger = logging.getLogger(__name__)

# Codecs and modules used lazily deep inside the standard library once serving.
_PRELOAD = ("encodings.latin_1", "encodings.utf_8", "encodings.ascii", "encodings.idna", "json", "csv",
            "hmac", "hashlib", "secrets", "ssl", "concurrent.futures.thread", "logging.handlers")


class PrivilegeError(Exception):
    """The configured user or group cannot be used; the message is one line for the operator."""


def resolve(user: str, group: str) -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"server.user: no such user {user!r} — create it (adduser --system {user}) "
                             f"or change [server] user") from None
    gid = pw.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"server.group: no such group {group!r}") from None
    return pw.pw_uid, gid


def preload() -> int:
    """Import every sipd module and the lazily used stdlib pieces; returns how many were imported."""
    import sipd

    count = 0
    for name in _PRELOAD:
        try:
            importlib.import_module(name)
            count += 1
        except ImportError:
            pass
    for info in pkgutil.walk_packages(sipd.__path__, "sipd."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
            count += 1
        except Exception as exc:  # noqa: BLE001 - an optional module failing to import is not fatal here
            logger.debug("preload of %s failed: %s", info.name, exc)
    return count


def hand_over(paths: list[str], uid: int, gid: int) -> None:
    """Give files sipd keeps writing (SQLite database, its WAL/SHM, their directory) to the user."""
    for p in paths:
        path = Path(p)
        for candidate in (path.parent, path, Path(f"{p}-wal"), Path(f"{p}-shm"), Path(f"{p}-journal")):
            try:
                if candidate.exists():
                    os.chown(candidate, uid, gid)
            except OSError as exc:
                logger.warning("cannot hand %s to uid %d: %s", candidate, uid, exc)


def drop(user: str, group: str, *, writable: list[str] = ()) -> None:  # type: ignore[assignment]
    """Become ``user``/``group`` for good. No-op when not root or no user configured."""
    if not user or os.geteuid() != 0:
        if user and os.geteuid() != 0:
            logger.info("server.user=%s ignored: not started as root", user)
        return
    uid, gid = resolve(user, group)
    hand_over(list(writable), uid, gid)
    preload()
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise PrivilegeError("privilege drop failed: still running as root")
    logger.info("running as user %s (uid %d, gid %d)", user, uid, gid)


def write_pid_file(path: str) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"{os.getpid()}\n")


def remove_pid_file(path: str) -> None:
    if path:
        try:
            if Path(path).read_text().strip() == str(os.getpid()):
                Path(path).unlink()
        except OSError:
            pass
