"""Domains, users (subscriber) and aliases (dbaliases): validation and the SQL behind the commands.

Functions take an open ``sipd.db.Database`` and return plain data; they raise ``SipctlError``
subclasses with a hint. Multi-row changes run in one transaction (nothing half-written).
Passwords are never logged or returned; only HA1 digests are stored unless plaintext is requested.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ExistsError, NotFoundError, UsageError

if TYPE_CHECKING:
    from sipd.db import Database

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )
_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,64}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
MAX_DOMAIN = 64  # subscriber.domain / domain.domain are CHAR(64) as in OpenSIPS


def normalize_domain(text: str) -> str:
    """Lowercase host name, dotted IPv4, or bracketed IPv6. Raises UsageError when malformed."""
    raw = text.strip()
    host = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return f"[{ip.compressed}]" if ip.version == 6 else str(ip)
    name = host.lower().rstrip(".")
    if not name or len(name) > MAX_DOMAIN or not all(_LABEL.match(p) for p in name.split(".")) \
            or name.replace(".", "").isdigit():
        raise UsageError(f"{text!r} is not a valid domain (a host name or an IP address)",
                         hint="e.g. example.org, 192.0.2.10 or [2001:db8::1]; at most 64 characters")
    return name


def parse_aor(text: str, what: str = "USER@DOMAIN") -> tuple[str, str]:
    """Split ``user@domain`` (a leading ``sip:`` is accepted). Raises UsageError when malformed."""
    raw = text.strip()
    if raw.lower().startswith("sip:"):
        raw = raw[4:]
    user, sep, domain = raw.rpartition("@")
    if not sep or not user or not domain:
        raise UsageError(f"{text!r} is not {what}", hint=f"write it as {what}, e.g. alice@example.org")
    if not _USER.match(user):
        raise UsageError(f"invalid user name {user!r} in {text!r}",
                         hint="letters, digits and -_.!~*'()&=+$,;?/ only, at most 64 characters")
    return user, normalize_domain(domain)


def ha1_md5(user: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


def ha1_sha256(user: str, realm: str, password: str) -> str:
    return hashlib.sha256(f"{user}:{realm}:{password}".encode()).hexdigest()


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------------------------
# domains

def add_domain(db: Database, domain: str, *, attrs: str = "", accept_subdomain: bool = False) -> dict[str, Any]:
    name = normalize_domain(domain)
    if db.query_one("SELECT id FROM domain WHERE domain = ?", (name,)):
        raise ExistsError(f"domain {name} already exists", hint="sipctl domain list shows the local domains")
    db.execute("INSERT INTO domain (domain, attrs, accept_subdomain, last_modified) VALUES (?, ?, ?, ?)",
               (name, attrs or None, int(accept_subdomain), _now()))
    return {"domain": name, "attrs": attrs, "accept_subdomain": accept_subdomain}


def rm_domain(db: Database, domain: str, *, force: bool = False) -> dict[str, Any]:
    name = normalize_domain(domain)

    def remove(db: Database) -> int:
        if not db.query_one("SELECT id FROM domain WHERE domain = ?", (name,)):
            raise NotFoundError(f"domain {name} does not exist", hint="sipctl domain list shows the local domains")
        users = db.query_one("SELECT COUNT(*) AS n FROM subscriber WHERE domain = ?", (name,))
        n = int(users["n"]) if users else 0
        if n and not force:
            raise UsageError(f"domain {name} still has {n} user(s)",
                             hint="remove them first (sipctl user list --domain ...), or pass --force")
        db.execute("DELETE FROM domain WHERE domain = ?", (name,))
        return n

    return {"domain": name, "users_left": db.run_transaction(remove)}


def list_domains(db: Database) -> list[dict[str, Any]]:
    rows = db.query("SELECT d.domain, d.attrs, d.accept_subdomain, d.last_modified, "
                    "(SELECT COUNT(*) FROM subscriber s WHERE s.domain = d.domain) AS users "
                    "FROM domain d")
    rows.sort(key=lambda r: r["domain"])  # same order on both backends (MySQL collation differs)
    return [{"domain": r["domain"], "attrs": r["attrs"] or "", "accept_subdomain": bool(r["accept_subdomain"]),
             "users": int(r["users"]), "last_modified": str(r["last_modified"])} for r in rows]


def require_local(db: Database, domain: str, extra_local: Iterable[str] = ()) -> None:
    """Raise NotFoundError unless ``domain`` is in the domain table or the configured domains."""
    if domain in {normalize_domain(d) for d in extra_local if d}:
        return
    if db.query_one("SELECT id FROM domain WHERE domain = ?", (domain,)):
        return
    raise NotFoundError(f"domain {domain} is not a local domain",
                        hint=f"add it with sipctl domain add {domain}, or pass --force")


# ---------------------------------------------------------------------------------------------
# users

def check_password(password: str) -> None:
    if not password:
        raise UsageError("the password is empty", hint="give a password, or type it at the prompt")
    if any(ord(c) < 32 for c in password):
        raise UsageError("the password contains control characters", hint="use printable characters")
    if len(password) > 64:
        raise UsageError("the password is longer than 64 characters", hint="use a shorter one")


def add_user(db: Database, user: str, domain: str, password: str, *, store_plaintext: bool = False,
             email: str = "", force: bool = False, local_domains: Iterable[str] = ()) -> dict[str, Any]:
    check_password(password)
    if not force:
        require_local(db, domain, local_domains)

    def add(db: Database) -> None:
        if db.query_one("SELECT id FROM subscriber WHERE username = ? AND domain = ?", (user, domain)):
            raise ExistsError(f"user {user}@{domain} already exists",
                              hint=f"change the password with sipctl user passwd {user}@{domain}")
        alias = db.query_one("SELECT username, domain FROM dbaliases WHERE alias_username = ? AND alias_domain = ?",
                             (user, domain))
        if alias:
            raise ExistsError(f"{user}@{domain} is already an alias of {alias['username']}@{alias['domain']}",
                              hint=f"remove it first with sipctl alias rm {user}@{domain}")
        db.execute("INSERT INTO subscriber (username, domain, password, email_address, ha1, ha1_sha256) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (user, domain, password if store_plaintext else "", email,
                    ha1_md5(user, domain, password), ha1_sha256(user, domain, password)))

    db.run_transaction(add)
    return {"user": user, "domain": domain, "plaintext_stored": store_plaintext}


def passwd(db: Database, user: str, domain: str, password: str, *, store_plaintext: bool = False) -> dict[str, Any]:
    check_password(password)
    res = db.execute("UPDATE subscriber SET password = ?, ha1 = ?, ha1_sha256 = ? WHERE username = ? AND domain = ?",
                     (password if store_plaintext else "", ha1_md5(user, domain, password),
                      ha1_sha256(user, domain, password), user, domain))
    if res.rowcount == 0:
        raise NotFoundError(f"user {user}@{domain} does not exist", hint="sipctl user list shows the users")
    return {"user": user, "domain": domain, "plaintext_stored": store_plaintext}


def rm_user(db: Database, user: str, domain: str) -> dict[str, Any]:
    """Remove the user, its aliases and its registrations, in one transaction."""

    def remove(db: Database) -> tuple[int, int]:
        res = db.execute("DELETE FROM subscriber WHERE username = ? AND domain = ?", (user, domain))
        if res.rowcount == 0:
            raise NotFoundError(f"user {user}@{domain} does not exist", hint="sipctl user list shows the users")
        aliases = db.execute("DELETE FROM dbaliases WHERE username = ? AND domain = ?", (user, domain)).rowcount
        contacts = db.execute("DELETE FROM location WHERE username = ? AND domain = ?", (user, domain)).rowcount
        return aliases, contacts

    aliases, contacts = db.run_transaction(remove)
    return {"user": user, "domain": domain, "aliases_removed": aliases, "contacts_removed": contacts}


def list_users(db: Database, domain: str | None = None) -> list[dict[str, Any]]:
    sql = ("SELECT s.username, s.domain, s.email_address, "
           "(SELECT COUNT(*) FROM dbaliases a WHERE a.username = s.username AND a.domain = s.domain) AS aliases "
           "FROM subscriber s")
    params: tuple[Any, ...] = ()
    if domain:
        sql += " WHERE s.domain = ?"
        params = (normalize_domain(domain),)
    rows = sorted(db.query(sql, params), key=lambda r: (r["domain"], r["username"]))
    return [{"user": r["username"], "domain": r["domain"], "email": r["email_address"] or "",
             "aliases": int(r["aliases"])} for r in rows]


def show_user(db: Database, user: str, domain: str) -> dict[str, Any]:
    row = db.query_one("SELECT username, domain, password, email_address, rpid, ha1, ha1_sha256 "
                       "FROM subscriber WHERE username = ? AND domain = ?", (user, domain))
    if row is None:
        raise NotFoundError(f"user {user}@{domain} does not exist", hint="sipctl user list shows the users")
    aliases = db.query("SELECT alias_username, alias_domain FROM dbaliases WHERE username = ? AND domain = ? "
                       "ORDER BY alias_domain, alias_username", (user, domain))
    contacts = db.query("SELECT contact, expires, user_agent, received FROM location "
                        "WHERE username = ? AND domain = ? ORDER BY contact_id", (user, domain))
    return {
        "user": row["username"], "domain": row["domain"], "email": row["email_address"] or "",
        "rpid": row["rpid"] or "", "plaintext_stored": bool(row["password"]),
        "has_ha1": bool(row["ha1"]), "has_ha1_sha256": bool(row["ha1_sha256"]),
        "aliases": [f"{a['alias_username']}@{a['alias_domain']}" for a in aliases],
        "registrations": [{"contact": c["contact"], "expires": int(c["expires"]),
                           "user_agent": c["user_agent"] or "", "received": c["received"] or ""} for c in contacts],
    }


# ---------------------------------------------------------------------------------------------
# aliases

def add_alias(db: Database, alias_user: str, alias_domain: str, user: str, domain: str, *,
              force: bool = False, local_domains: Iterable[str] = ()) -> dict[str, Any]:
    if not force:
        require_local(db, alias_domain, local_domains)

    def add(db: Database) -> None:
        if not force and not db.query_one("SELECT id FROM subscriber WHERE username = ? AND domain = ?",
                                          (user, domain)):
            raise NotFoundError(f"user {user}@{domain} does not exist",
                                hint=f"add it first with sipctl user add {user}@{domain}, or pass --force")
        existing = db.query_one("SELECT username, domain FROM dbaliases WHERE alias_username = ? AND alias_domain = ?",
                                (alias_user, alias_domain))
        if existing:
            raise ExistsError(f"alias {alias_user}@{alias_domain} already exists "
                              f"(-> {existing['username']}@{existing['domain']})",
                              hint=f"remove it first with sipctl alias rm {alias_user}@{alias_domain}")
        if db.query_one("SELECT id FROM subscriber WHERE username = ? AND domain = ?", (alias_user, alias_domain)):
            raise ExistsError(f"{alias_user}@{alias_domain} is a user, it cannot also be an alias",
                              hint="choose another alias name")
        db.execute("INSERT INTO dbaliases (alias_username, alias_domain, username, domain) VALUES (?, ?, ?, ?)",
                   (alias_user, alias_domain, user, domain))

    db.run_transaction(add)
    return {"alias": f"{alias_user}@{alias_domain}", "target": f"{user}@{domain}"}


def rm_alias(db: Database, alias_user: str, alias_domain: str) -> dict[str, Any]:
    res = db.execute("DELETE FROM dbaliases WHERE alias_username = ? AND alias_domain = ?", (alias_user, alias_domain))
    if res.rowcount == 0:
        raise NotFoundError(f"alias {alias_user}@{alias_domain} does not exist",
                            hint="sipctl alias list shows the aliases")
    return {"alias": f"{alias_user}@{alias_domain}"}


def list_aliases(db: Database, user: str | None = None, domain: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT alias_username, alias_domain, username, domain FROM dbaliases"
    params: tuple[Any, ...] = ()
    if user is not None and domain is not None:
        sql += " WHERE username = ? AND domain = ?"
        params = (user, domain)
    rows = sorted(db.query(sql, params), key=lambda r: (r["alias_domain"], r["alias_username"]))
    return [{"alias": f"{r['alias_username']}@{r['alias_domain']}", "target": f"{r['username']}@{r['domain']}"}
            for r in rows]
