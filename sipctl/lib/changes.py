"""Provisioning actions that reach the running sipd: change the database, then tell the daemon.

One function per action (``add_domain``, ``rm_user``, ``edit_rule``, ...), shared by the CLI and the
web panel. Each one

1. makes the change in the database (``provision`` / ``dialplan``, which validate and raise
   ``SipctlError``s),
2. asks the running sipd to reload the tables it touched (management command ``reload`` with
   ``tables``; sipd then reloads them in its worker processes too),
3. says what sipd will do with the change, naming the configuration key that decides it
   (an alias while ``[proxy] aliases = false`` is stored but never used, ...),
4. hands the ``Change`` to every function registered with ``subscribe`` (an audit log, the panel's
   flash messages), after the database change and whatever happened to the daemon.

The database change stands even when no sipd answers: ``Change.daemon`` then says so, and the
change applies when sipd next starts (or at the next ``sipctl reload``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MgmtUnavailable, NotFoundError, SipctlError
from . import audit, dialplan, provision

if TYPE_CHECKING:
    from sipd.config import Config
    from sipd.db import Database

logger = logging.getLogger(__name__)

#: What happened to the daemon: it reloaded the tables, no sipd answered, or it answered an error.
RELOADED, NOT_RUNNING, FAILED = "reloaded", "not running", "failed"
RELOAD_TIMEOUT = 10.0  # seconds; a reload reads whole tables (a large subscriber table takes a while)


@dataclass
class Change:
    """The outcome of one action: the database change, the daemon's answer, what sipd will do."""

    action: str                       # "domain add", "user passwd", ...
    message: str                      # "domain example.org added"
    data: dict[str, Any]              # what the database now holds (the row, the new id, ...)
    tables: tuple[str, ...]           # the sipd tables it touched
    users: tuple[str, ...] = ()       # the subscribers it touched (user@domain): sipd re-reads only those
    daemon: str = ""                  # RELOADED | NOT_RUNNING | FAILED
    daemon_message: str = ""          # "sipd reloaded domains", "sipd is not running: ..."
    notes: list[str] = field(default_factory=list)     # what sipd does with it
    warnings: list[str] = field(default_factory=list)  # where sipd will not do what was probably meant
    previous: Any = None              # what the database held before an edit or removal (the audit log's "before")

    @property
    def summary(self) -> str:
        """One line: "alias 1247@example.org -> ex90@example.org added; sipd reloaded aliases"."""
        return f"{self.message}; {self.daemon_message}" if self.daemon_message else self.message

    def as_dict(self) -> dict[str, Any]:
        return {**self.data, "message": self.summary,
                "sipd": {"status": self.daemon, "message": self.daemon_message},
                "notes": list(self.notes), "warnings": list(self.warnings)}


_listeners: list[Callable[[Change], None]] = []


def subscribe(listener: Callable[[Change], None]) -> Callable[[], None]:
    """Call ``listener(change)`` after every action (the audit hook); returns the unsubscriber."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def tell_daemon(config: Config, tables: tuple[str, ...] | list[str], users: tuple[str, ...] = ()) -> tuple[str, str]:
    """Ask the running sipd to reload ``tables`` (of subscribers only ``users``, user@domain, when
    given): (RELOADED | NOT_RUNNING | FAILED, what to say)."""
    from . import mgmt

    names = ", ".join(tables)
    params: dict[str, Any] = {"tables": list(tables)}
    if users:
        params["users"] = list(users)
    try:
        mgmt.call(config, "reload", params, timeout=RELOAD_TIMEOUT)
    except MgmtUnavailable:
        return NOT_RUNNING, "sipd is not running: the change applies when it starts"
    except SipctlError as exc:
        return FAILED, (f"sipd did not reload {names} ({exc.message}): the change applies at the next "
                        "`sipctl reload` or start")
    return RELOADED, f"sipd reloaded {names}"


def _finish(config: Config, change: Change) -> Change:
    change.daemon, change.daemon_message = tell_daemon(config, change.tables, change.users)
    for listener in list(_listeners):
        try:
            listener(change)
        except Exception:  # noqa: BLE001 - an audit hook's bug must not turn a done change into an error
            logger.exception("change listener %r failed", listener)
    return change


def local_domains(config: Config, db: Database) -> set[str]:
    """What sipd treats as local: ``[server] domains`` plus the domain table (either multidomain mode)."""
    names = {provision.normalize_domain(d) for d in config.server.domains if d}
    return names | {r["domain"] for r in provision.list_domains(db)}


def single_realm(config: Config, db: Database) -> str | None:
    """The one realm (user space) of ``[server] multidomain = false``, as sipd picks it; None in
    multidomain mode."""
    from types import SimpleNamespace

    from sipd.services.realm import single_realm as pick
    from sipd.state import DomainCache

    # the daemon's own domain table, so the realm is picked from the same names the same way
    domains = DomainCache(sorted(local_domains(config, db)))
    return pick(SimpleNamespace(config=config, domains=domains))  # type: ignore[arg-type]


def _realm_moved(config: Config, db: Database, before: str | None, change: Change) -> str | None:
    """The single realm after a domain change; warns when it moved (the users stored under the old
    one stop authenticating)."""
    after = single_realm(config, db)
    if before is not None and after != before:
        change.warnings.append(
            f"the realm of the one user space moves from {before} to {after or 'nothing'} (the first domain "
            f"name of the domain table, [server] multidomain = false): users stored as user@{before} no longer "
            f"register; set [auth] realm = \"{before}\" (or [server] domains) and restart sipd to keep it")
    return after


def _outside_user_space(config: Config, db: Database, what: str, user: str, domain: str, change: Change) -> bool:
    """Single-domain mode knows users (and aliases) by name in one realm: one stored under another
    local domain is never found. Warns and returns True then."""
    realm = single_realm(config, db)
    if realm is None or domain == realm or domain not in local_domains(config, db):
        return False
    change.warnings.append(
        f"with [server] multidomain = false sipd knows {what} by name in realm {realm} only (one user "
        f"space for all local domains): {user}@{domain} is never used; add {user}@{realm} instead "
        "(it also answers at every other local domain), or set [server] multidomain = true and restart sipd")
    return True


def _ip_domain_notes(config: Config, domain: str, change: Change) -> None:
    from sipd.services.spam import canonical_ip

    if canonical_ip(domain) is None:
        return
    if config.spam.enabled and config.spam.calls_to_own_ip:
        change.notes.append(f"registrations to {domain} work; calls to user@{domain} are dropped as spam "
                            "([spam] calls_to_own_ip = true; set it to false and restart sipd to route them)")
    else:
        change.notes.append(f"calls to user@{domain} are routed like calls to a domain name "
                            "([spam] calls_to_own_ip = false)")


# ---------------------------------------------------------------------------------------------
# domains

def add_domain(config: Config, db: Database, domain: str, *, attrs: str = "",
               accept_subdomain: bool = False) -> Change:
    before = single_realm(config, db)
    r = provision.add_domain(db, domain, attrs=attrs, accept_subdomain=accept_subdomain)
    name = r["domain"]
    change = Change("domain add", f"domain {name} added", r, ("domains",))
    change.notes.append(f"sipd serves {name} as a local domain: REGISTERs and calls to it are handled here")
    realm = _realm_moved(config, db, before, change)
    if realm == name:
        change.notes.append(f"{name} is the realm of the one user space of all local domains "
                            "([server] multidomain = false)")
    elif realm is not None:
        change.notes.append(f"user@{name} is the same user as user@{realm} (one user space, "
                            "[server] multidomain = false)")
    _ip_domain_notes(config, name, change)
    if accept_subdomain:
        change.warnings.append(f"sipd serves {name} itself, not its subdomains "
                               "(accept_subdomain is stored for OpenSIPS tools only)")
    return _finish(config, change)


def rm_domain(config: Config, db: Database, domain: str, *, force: bool = False) -> Change:
    before = single_realm(config, db)
    previous = audit.before(db, "domain rm", domain=provision.normalize_domain(domain))
    r = provision.rm_domain(db, domain, force=force)
    name = r["domain"]
    change = Change("domain rm", f"domain {name} removed", r, ("domains",), previous=previous)
    _realm_moved(config, db, before, change)
    if name in {provision.normalize_domain(d) for d in config.server.domains if d}:
        change.warnings.append(f"{name} stays local: it is listed in [server] domains")
    else:
        change.notes.append(f"sipd refuses new REGISTERs (403) and calls to {name}")
    return _finish(config, change)


# ---------------------------------------------------------------------------------------------
# users

def add_user(config: Config, db: Database, user: str, domain: str, password: str, *,
             store_plaintext: bool = False, email: str = "", force: bool = False) -> Change:
    r = provision.add_user(db, user, domain, password, store_plaintext=store_plaintext, email=email,
                           force=force, local_domains=config.server.domains)
    change = Change("user add", f"user {user}@{domain} added", r, ("subscribers",), (f"{user}@{domain}",))
    if domain not in local_domains(config, db):
        change.warnings.append(f"{domain} is not a local domain: sipd refuses REGISTERs for it (403) "
                               f"until you add it with sipctl domain add {domain}")
    elif _outside_user_space(config, db, "users", user, domain, change):
        pass
    elif not config.auth.register:
        change.notes.append(f"{user}@{domain} can register; sipd does not check passwords on REGISTER "
                            "([auth] register = false)")
    else:
        change.notes.append(f"{user}@{domain} can register with this password")
    return _finish(config, change)


def passwd(config: Config, db: Database, user: str, domain: str, password: str, *,
           store_plaintext: bool = False) -> Change:
    previous = audit.before(db, "user passwd", user=user, domain=domain)
    r = provision.passwd(db, user, domain, password, store_plaintext=store_plaintext)
    change = Change("user passwd", f"password of {user}@{domain} changed", r, ("subscribers",), (f"{user}@{domain}",),
                    previous=previous)
    change.notes.append("sipd refuses the old password from now on; registered devices keep their "
                        "registration until they refresh it")
    return _finish(config, change)


def rm_user(config: Config, db: Database, user: str, domain: str) -> Change:
    """Remove the user, its aliases and registrations, in the database and in the running sipd."""
    previous = audit.before(db, "user rm", user=user, domain=domain)
    r = provision.rm_user(db, user, domain)
    change = Change("user rm", f"user {user}@{domain} removed ({r['aliases_removed']} alias(es), "
                               f"{r['contacts_removed']} registration(s))", r, ("subscribers", "aliases"),
                    (f"{user}@{domain}",), previous=previous)
    change.notes.append(f"{user}@{domain} can no longer register or authenticate")
    _finish(config, change)
    if change.daemon == RELOADED:
        from . import mgmt

        try:  # its devices' registrations live in sipd's memory too: calls must not reach them
            mgmt.call(config, "ul_rm", ["location", f"{user}@{domain}"], timeout=RELOAD_TIMEOUT)
            change.notes.append(f"sipd dropped the registrations of {user}@{domain}")
        except NotFoundError:
            pass
        except SipctlError as exc:
            change.warnings.append(f"sipd kept the registrations of {user}@{domain} ({exc.message}); "
                                   f"remove them with sipctl ul rm {user}@{domain}")
    return change


# ---------------------------------------------------------------------------------------------
# aliases

def _alias_notes(config: Config, alias: str, target: str, change: Change) -> None:
    if not config.proxy.aliases:
        change.warnings.append(f"sipd does not use aliases while [proxy] aliases = false: calls to {alias} "
                               f"do not reach {target}; set [proxy] aliases = true and restart sipd")
    else:
        change.notes.append(f"calls to {alias} reach {target} ([proxy] aliases = true)")


def add_alias(config: Config, db: Database, alias_user: str, alias_domain: str, user: str, domain: str, *,
              force: bool = False) -> Change:
    r = provision.add_alias(db, alias_user, alias_domain, user, domain, force=force,
                            local_domains=config.server.domains)
    change = Change("alias add", f"alias {r['alias']} -> {r['target']} added", r, ("aliases",))
    if not _outside_user_space(config, db, "aliases", alias_user, alias_domain, change):
        _alias_notes(config, r["alias"], r["target"], change)
    if alias_domain not in local_domains(config, db):
        change.warnings.append(f"{alias_domain} is not a local domain: sipd never looks up aliases in it")
    return _finish(config, change)


def rm_alias(config: Config, db: Database, alias_user: str, alias_domain: str) -> Change:
    previous = audit.before(db, "alias rm", alias_user=alias_user, alias_domain=alias_domain)
    r = provision.rm_alias(db, alias_user, alias_domain)
    change = Change("alias rm", f"alias {r['alias']} removed", r, ("aliases",), previous=previous)
    return _finish(config, change)


# ---------------------------------------------------------------------------------------------
# dialplan

def dialplan_notes(config: Config, dpid: int, *, disabled: bool = False) -> tuple[list[str], list[str]]:
    """(notes, warnings): whether sipd applies rules of ``dpid`` to calls, naming the keys."""
    proxy = config.proxy
    if disabled:
        return [], ["the rule is disabled: sipd skips it"]
    if not proxy.dialplan:
        return [], [f"sipd does not translate calls while [proxy] dialplan = false (the default): the rule "
                    f"never applies to a call; set [proxy] dialplan = true (and dialplan_id = {dpid}) and restart sipd"]
    if dpid != proxy.dialplan_id:
        return [], [f"sipd translates calls with dpid {proxy.dialplan_id} ([proxy] dialplan_id): rules of "
                    f"dpid {dpid} apply only through sipctl mi dp_translate or a routing hook"]
    return [f"sipd applies it to the next call to a local domain ([proxy] dialplan = true, dialplan_id = {dpid})"], []


def _dp_change(config: Config, action: str, message: str, r: dict[str, Any], previous: Any = None) -> Change:
    change = Change(action, message, r, ("dialplan",), previous=previous)
    change.notes, change.warnings = dialplan_notes(config, int(r["dpid"]), disabled=bool(r["disabled"]))
    return _finish(config, change)


def add_rule(config: Config, db: Database, **rule: Any) -> Change:
    """``dialplan.add_rule``'s keywords (dpid, pr, match_op, match_exp, ...)."""
    r = dialplan.add_rule(db, **rule)
    return _dp_change(config, "dp add", f"rule {r['id']} added to dialplan {r['dpid']}", r)


def edit_rule(config: Config, db: Database, rule_id: int, **changes: Any) -> Change:
    """Change some fields of rule ``rule_id`` (``dialplan.edit_rule``'s keywords)."""
    previous = audit.before(db, "dp edit", rule_id=rule_id)
    r = dialplan.edit_rule(db, rule_id, **changes)
    return _dp_change(config, "dp edit", f"rule {rule_id} changed", r, previous)


def rm_rule(config: Config, db: Database, rule_id: int) -> Change:
    previous = audit.before(db, "dp rm", rule_id=rule_id)
    r = dialplan.rm_rule(db, rule_id)
    return _finish(config, Change("dp rm", f"rule {rule_id} removed", r, ("dialplan",), previous=previous))
