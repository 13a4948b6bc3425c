"""Database URLs: how they are written, split and shown with the password masked.

SQLite and MySQL URLs follow SQLAlchemy's rules, so a URL copied from its documentation names the
same database here. Kept apart from the backends: the configuration (the default URL, masked
secrets) and sipctl use these without opening anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from .errors import DbUnavailable


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and ``sipctl config show``)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_db_url() -> str:
    """The database when ``[database] url`` is not set: the system's data directory for root,
    else the user's (``$XDG_DATA_HOME``, ``~/.local/share``)."""
    if _is_root():
        return "sqlite:////var/lib/sipd/sipd.db"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return f"sqlite:///{os.path.abspath(base)}/sipd/sipd.db"


@dataclass(frozen=True)
class DbUrl:
    scheme: str           # "sqlite" | "mysql"
    path: str = ""        # sqlite file (or ":memory:")
    host: str = ""
    port: int = 3306
    user: str = ""
    password: str = ""
    database: str = ""

    def with_database(self, name: str) -> str:
        """A mysql:// URL text for the same server and user but another database."""
        return build_mysql_url(self.user, self.password, self.host, self.port, name)


def build_mysql_url(user: str, password: str, host: str, port: int, database: str) -> str:
    cred = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    h = f"[{host}]" if ":" in host else host
    return f"mysql://{cred}@{h}:{port}/{database}"


#: How an SQLite URL names its file (SQLAlchemy's rules, so URLs copied from its documentation
#: or from other tools mean the same file here): after ``sqlite://`` comes ``/`` and the path, so
#: three slashes start a relative path (from the current directory) and four an absolute one.
SQLITE_URL_RULES = ("sqlite:///relative/path.db is relative to the current directory; "
                    "an absolute path takes four slashes: sqlite:////var/lib/sipd/sipd.db")


def parse_url(url: str) -> DbUrl:
    """Split a database URL. Raises DbUnavailable for an unsupported or malformed URL.

    SQLite: ``sqlite:///relative.db`` (from the current directory), ``sqlite:////abs/path.db``,
    ``sqlite://`` or ``sqlite:///:memory:`` for a database in memory. ``path`` is made absolute.
    """
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        if rest in ("//", "//:memory:", "///:memory:"):
            return DbUrl("sqlite", path=":memory:")
        if not rest.startswith("///") or len(rest) < 4:
            raise DbUnavailable(url, "an SQLite URL is sqlite:/// followed by the file's path",
                                hint=SQLITE_URL_RULES)
        return DbUrl("sqlite", path=os.path.abspath(unquote(rest[3:])))
    if url.startswith("mysql://"):
        parts = urlsplit(url)
        try:
            port = parts.port or 3306
        except ValueError:
            raise DbUnavailable(mask_url(url), "bad port in URL",
                                hint="write mysql://user:pw@host:3306/dbname") from None
        if not parts.hostname:
            raise DbUnavailable(mask_url(url), "no host in URL",
                                hint="write mysql://user:pw@host:3306/dbname")
        return DbUrl(
            "mysql", host=parts.hostname, port=port, user=unquote(parts.username or ""),
            password=unquote(parts.password or ""), database=unquote(parts.path.lstrip("/")),
        )
    raise DbUnavailable(mask_url(url), "unsupported URL scheme",
                        hint="use sqlite:////abs/path/file.db or mysql://user:pw@host:3306/db")
