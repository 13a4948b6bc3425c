"""Accounts of the control panel (``sipctl web``): add, change password, remove, list, log in.

Passwords are kept as scrypt strings (``hashlib.scrypt``, a salt of their own each), never in clear
and never as the unsalted md5 of the OpenSIPS Control Panel. There is no default account and no
default password: the first admin is made with ``sipctl web admin add``.

A login that fails ``limit`` times in a row locks the account for ``lockout`` seconds; the counters
live in the ``web_admin`` table so the lock holds across panel restarts. Unknown names cost the same
scrypt work as known ones, so timing does not tell which accounts exist.

No Typer, rich or web code here: the CLI and the panel both call these functions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ExistsError, NotFoundError, SipctlError, UsageError

if TYPE_CHECKING:
    from sipd.db import Database

READ_WRITE = "read-write"
READ_ONLY = "read-only"
ROLES = (READ_WRITE, READ_ONLY)

# scrypt cost: N=2^14, r=8, p=1 is the RFC 7914 §2 interactive-login choice (16 MiB, ~50 ms here).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
MIN_PASSWORD = 8
MAX_PASSWORD = 256
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


class LoginFailed(SipctlError):
    """Wrong name or password, or a locked account. The message is the same for both wrong cases."""


@dataclass(frozen=True)
class Admin:
    username: str
    role: str

    @property
    def can_write(self) -> bool:
        return self.role == READ_WRITE


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


# A stored hash to check unknown names against, so they cost the same time as known ones.
_DUMMY = hash_password(secrets.token_urlsafe(16))


def check_name(username: str) -> str:
    name = username.strip()
    if not _NAME.match(name):
        raise UsageError(f"{username!r} is not a valid admin name",
                         hint="letters, digits and . _ @ - only, at most 64 characters")
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is shorter than {MIN_PASSWORD} characters", hint="choose a longer one")
    if len(password) > MAX_PASSWORD:
        raise UsageError(f"the password is longer than {MAX_PASSWORD} characters", hint="choose a shorter one")
    if any(ord(c) < 32 for c in password):
        raise UsageError("the password contains control characters", hint="use printable characters")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}", hint=f"one of {', '.join(ROLES)}")
    return role


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def add(db: Database, username: str, password: str, role: str = READ_WRITE) -> dict[str, Any]:
    name = check_name(username)
    check_password(password)
    check_role(role)
    if db.query_one("SELECT id FROM web_admin WHERE username = ?", (name,)):
        raise ExistsError(f"admin {name} already exists",
                          hint=f"change the password with sipctl web admin passwd {name}")
    db.execute("INSERT INTO web_admin (username, password, role, failures, locked_until, created) "
               "VALUES (?, ?, ?, 0, 0, ?)", (name, hash_password(password), role, _now()))
    return {"username": name, "role": role}


def passwd(db: Database, username: str, password: str, *, role: str | None = None) -> dict[str, Any]:
    """Set a new password (and role, when given); clears a lockout."""
    name = check_name(username)
    check_password(password)
    sets, params = "password = ?, failures = 0, locked_until = 0", [hash_password(password)]
    if role is not None:
        sets += ", role = ?"
        params.append(check_role(role))
    res = db.execute(f"UPDATE web_admin SET {sets} WHERE username = ?", (*params, name))
    if res.rowcount == 0:
        raise NotFoundError(f"admin {name} does not exist", hint="sipctl web admin list shows the admins")
    return {"username": name, "role": role} if role else {"username": name}


def rm(db: Database, username: str) -> dict[str, Any]:
    name = check_name(username)
    if db.execute("DELETE FROM web_admin WHERE username = ?", (name,)).rowcount == 0:
        raise NotFoundError(f"admin {name} does not exist", hint="sipctl web admin list shows the admins")
    return {"username": name}


def list_admins(db: Database, now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    rows = db.query("SELECT username, role, failures, locked_until, created, last_login FROM web_admin")
    rows.sort(key=lambda r: r["username"])
    return [{"username": r["username"], "role": r["role"], "failures": int(r["failures"]),
             "locked": int(r["locked_until"]) > now, "created": str(r["created"]),
             "last_login": str(r["last_login"] or "")} for r in rows]


def authenticate(db: Database, username: str, password: str, *, limit: int = 5, lockout: float = 300.0,
                 now: float | None = None) -> Admin:
    """Check a login; count failures and lock the account after ``limit`` of them in a row.

    Raises:
        LoginFailed: wrong name or password (one message for both), or the account is locked.
    """
    now = time.time() if now is None else now
    row = db.query_one("SELECT username, password, role, failures, locked_until FROM web_admin "
                       "WHERE username = ?", (username.strip()[:64],))
    ok = verify_password(password, row["password"] if row else _DUMMY)
    if row is None:
        raise LoginFailed("wrong name or password")
    if int(row["locked_until"]) > now:
        raise LoginFailed("this account is locked after repeated failed logins",
                          hint=f"try again in {int(row['locked_until'] - now) + 1} s, "
                               "or reset it with sipctl web admin passwd")
    if not ok:
        failures = int(row["failures"]) + 1
        locked_until = int(now + lockout) if limit and failures >= limit else 0
        db.execute("UPDATE web_admin SET failures = ?, locked_until = ? WHERE username = ?",
                   (0 if locked_until else failures, locked_until, row["username"]))
        if locked_until:
            raise LoginFailed("this account is locked after repeated failed logins",
                              hint=f"try again in {int(lockout)} s, or reset it with sipctl web admin passwd")
        raise LoginFailed("wrong name or password")
    db.execute("UPDATE web_admin SET failures = 0, locked_until = 0, last_login = ? WHERE username = ?",
               (_now(), row["username"]))
    return Admin(row["username"], row["role"])
