"""One configuration for sipd and sipctl, loaded from TOML.

Where the file comes from: ``--config FILE``, else ``$SIPD_CONFIG``, else ``/etc/sipd/sipd.toml``
if it exists, else built-in defaults that work without any file.

Every key is declared once, as a field of a section dataclass in ``sipd.config_sections``. This
module reads a file into them (every problem collected, none stopping the reading), checks the
values of the sections it owns itself (where sipd listens, its database, logs, management socket,
registrar, auth, location, DNS), and runs the checks of every other section that its caller hands
in: ``validate(config, validators)``. Those validators live with the code that uses the keys
(``[tls]`` in sipd/tlsconf.py, ``[presence]`` in sipd/services/presence_state.py, ...), and
``sipd.validation.VALIDATORS`` lists them all, so that this module imports no feature module.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any, get_args, get_origin, get_type_hints

from .config_sections import (
    AccSection,
    AntifloodSection,
    AuthSection,
    ClusterSection,
    DatabaseSection,
    DialogSection,
    DiversionSection,
    DnsSection,
    LimitsSection,
    LocationSection,
    LogSection,
    MgmtSection,
    NatSection,
    OverloadSection,
    PresenceSection,
    ProxySection,
    PstnSection,
    RegistrarSection,
    RoutingSection,
    ServerSection,
    SpamSection,
    TlsSection,
    TraceSection,
    WebSection,
)
from .db.url import mask_url
from .problem import Problem, StartupProblem  # noqa: F401 - part of this module's API

DEFAULT_PATH = Path("/etc/sipd/sipd.toml")


@dataclass(kw_only=True)
class Config:
    """The effective configuration. ``source`` is the file it came from, or None for defaults."""

    server: ServerSection = field(default_factory=ServerSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    mgmt: MgmtSection = field(default_factory=MgmtSection)
    log: LogSection = field(default_factory=LogSection)
    registrar: RegistrarSection = field(default_factory=RegistrarSection)
    auth: AuthSection = field(default_factory=AuthSection)
    location: LocationSection = field(default_factory=LocationSection)
    proxy: ProxySection = field(default_factory=ProxySection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    dns: DnsSection = field(default_factory=DnsSection)
    antiflood: AntifloodSection = field(default_factory=AntifloodSection)
    overload: OverloadSection = field(default_factory=OverloadSection)
    spam: SpamSection = field(default_factory=SpamSection)
    tls: TlsSection = field(default_factory=TlsSection)
    acc: AccSection = field(default_factory=AccSection)
    dialog: DialogSection = field(default_factory=DialogSection)
    presence: PresenceSection = field(default_factory=PresenceSection)
    nat: NatSection = field(default_factory=NatSection)
    diversion: DiversionSection = field(default_factory=DiversionSection)
    pstn: PstnSection = field(default_factory=PstnSection)
    routing: RoutingSection = field(default_factory=RoutingSection)
    trace: TraceSection = field(default_factory=TraceSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    web: WebSection = field(default_factory=WebSection)
    source: Path | None = None


class ConfigError(Exception):
    """The configuration could not be loaded. ``problems`` lists (key, message, hint)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def sections() -> dict[str, type]:
    """Section name -> dataclass, in file order."""
    hints = get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.name != "source"}


def resolve_path(path: str | os.PathLike[str] | None) -> Path | None:
    """Which file to read: explicit, $SIPD_CONFIG, /etc/sipd/sipd.toml, or None (defaults)."""
    if path:
        return Path(path)
    env = os.environ.get("SIPD_CONFIG")
    if env:
        return Path(env)
    if DEFAULT_PATH.exists():
        return DEFAULT_PATH
    return None


#: A check of a configuration's values: every problem it finds, in the order it finds them.
Validator = Callable[[Config], list[Problem]]


def load(path: str | os.PathLike[str] | None, *, validators: Sequence[Validator]) -> Config:
    """Load and validate the configuration; ``validators`` as for ``validate``.

    Raises:
        ConfigError: with every problem found (unknown key, wrong type, bad value, unreadable file).
    """
    config, problems = check(path, validators=validators)
    if problems:
        raise ConfigError(problems)
    return config


def check(path: str | os.PathLike[str] | None, *,
          validators: Sequence[Validator]) -> tuple[Config, list[Problem]]:
    """Load the configuration and return it with the list of problems (empty when valid):
    those of the file, then ``validate(config, validators)``'s."""
    resolved = resolve_path(path)
    if resolved is None:
        config = Config()
        return config, validate(config, validators)
    try:
        raw = tomllib.loads(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Config(), [Problem("", f"config file {resolved} does not exist", "create it or pass --config")]
    except PermissionError:
        return Config(), [Problem("", f"config file {resolved} is not readable", "check its mode and owner")]
    except IsADirectoryError:
        return Config(), [Problem("", f"config path {resolved} is a directory", "pass the TOML file itself")]
    except UnicodeDecodeError:
        return Config(), [Problem("", f"config file {resolved} is not UTF-8 text", "save it as UTF-8")]
    except tomllib.TOMLDecodeError as exc:
        return Config(), [Problem("", f"{resolved}: invalid TOML: {exc}", "fix the syntax at that line")]
    config, problems = from_dict(raw)
    config.source = resolved
    problems += validate(config, validators)
    return config, problems


def from_dict(raw: dict[str, Any]) -> tuple[Config, list[Problem]]:
    """Build a Config from parsed TOML, collecting problems instead of stopping at the first."""
    problems: list[Problem] = []
    kwargs: dict[str, Any] = {}
    known = sections()
    for name, value in raw.items():
        if name not in known:
            problems.append(Problem(name, "unknown section", f"known sections: {', '.join(known)}"))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(name, "must be a table", f"write it as [{name}]"))
            continue
        kwargs[name] = _build_section(name, known[name], value, problems)
    return Config(**kwargs), problems


def _build_section(name: str, cls: type, values: dict[str, Any], problems: list[Problem]) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    good: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{name}.{key}"
        if key not in fields:
            close = [k for k in fields if k.replace("_", "") == key.replace("_", "").replace("-", "")]
            hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(fields)}"
            problems.append(Problem(dotted, "unknown key", hint))
            continue
        expected = hints[key]
        coerced, ok = _coerce(value, expected)
        if not ok:
            problems.append(
                Problem(dotted, f"expected {_type_name(expected)}, got {type(value).__name__} {value!r}")
            )
            continue
        good[key] = coerced
    return cls(**good)


def _coerce(value: Any, expected: Any) -> tuple[Any, bool]:
    origin = get_origin(expected)
    if origin is list:
        (item,) = get_args(expected)
        if not isinstance(value, list):
            return value, False
        items = []
        for v in value:
            c, ok = _coerce(v, item)
            if not ok:
                return value, False
            items.append(c)
        return items, True
    if origin is dict:
        if not isinstance(value, dict):
            return value, False
        return dict(value), True
    if expected is bool:
        return value, isinstance(value, bool)
    if expected is int:
        return value, isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), True
        return value, False
    if expected is str:
        return value, isinstance(value, str)
    return value, True


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a table"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


# ---------------------------------------------------------------------------------------------
# Value validation

_LISTEN_RE = re.compile(r"^(udp|tcp|tls):(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")


@dataclass(frozen=True)
class ListenAddress:
    proto: str
    host: str  # without brackets
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}:{host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """Parse ``proto:host:port``. Raises ValueError with a readable message."""
    m = _LISTEN_RE.match(text.strip())
    if not m:
        raise ValueError(f"cannot parse listen address {text!r}; write proto:host:port, e.g. udp:127.0.0.1:5060 or tcp:[::1]:5060")
    proto, host, port = m.group(1), m.group(2), int(m.group(3))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range in {text!r}")
    if host.startswith("["):
        host = host[1:-1]
    return ListenAddress(proto, host, port)


_LEVELS = {"trace", "debug", "info", "warning", "error", "critical"}


def validate(config: Config, validators: Sequence[Validator]) -> list[Problem]:
    """The problems of the values: those of the sections this module checks itself, then those
    each of ``validators`` finds, in that order. sipd and sipctl pass
    ``sipd.validation.VALIDATORS``; ``()`` checks only what this module knows."""
    problems: list[Problem] = []
    if not config.server.listen:
        problems.append(Problem("server.listen", "no listen address", 'e.g. listen = ["udp:127.0.0.1:5060"]'))
    for i, item in enumerate(config.server.listen):
        try:
            parse_listen(item)
        except ValueError as exc:
            problems.append(Problem(f"server.listen[{i}]", str(exc)))
    url = config.database.url
    if not (url.startswith("sqlite:///") or url.startswith("mysql://")):
        problems.append(
            Problem("database.url", f"unsupported URL {mask_url(url)!r}", "use sqlite:////abs/path/file.db or mysql://user:pw@host:3306/db")
        )
    if not 0 <= config.server.workers <= 64:
        problems.append(Problem("server.workers", f"out of range: {config.server.workers}", "1 (one process) .. 64, or 0 for one per CPU"))
    if config.log.level.lower() not in _LEVELS:
        problems.append(Problem("log.level", f"unknown level {config.log.level!r}", f"one of {', '.join(sorted(_LEVELS))}"))
    if config.log.destination not in ("stderr", "syslog"):
        problems.append(Problem("log.destination", f"unknown destination {config.log.destination!r}", "stderr or syslog"))
    try:
        int(config.mgmt.socket_mode, 8)
    except ValueError:
        problems.append(Problem("mgmt.socket_mode", f"not an octal mode: {config.mgmt.socket_mode!r}", 'e.g. "0660"'))
    if config.mgmt.http_listen:
        host = config.mgmt.http_listen.rsplit(":", 1)[0].strip("[]")
        if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
            problems.append(Problem("mgmt.http_listen", "must be a loopback address", "e.g. 127.0.0.1:8888"))
        if not config.mgmt.http_token:
            problems.append(Problem("mgmt.http_token", "HTTP management needs a token", "set http_token to a long random string"))
    for key, modes in (("min_expires_mode", ("clamp", "reject")), ("max_contacts_mode", ("replace-oldest", "reject"))):
        if (mode := getattr(config.registrar, key)) not in modes:
            problems.append(Problem(f"registrar.{key}", f"unknown mode {mode!r}", " or ".join(modes)))
    for alg in config.auth.algorithms:
        if alg not in ("MD5", "SHA-256"):
            problems.append(Problem("auth.algorithms", f"unknown algorithm {alg!r}", 'MD5 and/or SHA-256, e.g. ["MD5"]'))
    if not config.auth.algorithms:
        problems.append(Problem("auth.algorithms", "empty", 'e.g. ["MD5"]'))
    if config.location.mode not in ("write-through", "write-back", "db-only", "memory"):
        problems.append(Problem("location.mode", f"unknown mode {config.location.mode!r}", "write-through, write-back, db-only or memory"))
    for i, ns in enumerate(config.dns.nameservers):
        if not re.fullmatch(r"[0-9.]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*", ns):
            problems.append(Problem(f"dns.nameservers[{i}]", f"not IP or IP:PORT: {ns!r}", 'e.g. "127.0.0.1:5353"'))
    if config.dns.timeout <= 0:
        problems.append(Problem("dns.timeout", "must be positive", "e.g. 2.0"))
    if config.database.reload_interval < 0:
        problems.append(Problem("database.reload_interval", "must not be negative", "0 (off) or e.g. 60"))
    for validator in validators:
        problems.extend(validator(config))
    return problems


def validate_security(config: Config) -> list[Problem]:
    """[antiflood], [spam] and [acc] values. A validator like those of the features, run only when
    listed (sipd.validation, where its place keeps the order problems are reported in); it lives
    here because the code reading these keys has no configuration code of its own."""
    problems: list[Problem] = []
    for i, item in enumerate(config.antiflood.trusted_networks):
        try:
            ipaddress.ip_network(item.replace("[", "").replace("]", ""), strict=False)
        except ValueError:
            problems.append(Problem(f"antiflood.trusted_networks[{i}]", f"not a network: {item!r}", "e.g. 10.0.0.0/8 or ::1/128"))
    a = config.antiflood
    for key in ("window", "limit", "max_tracked", "max_bans"):
        if getattr(a, key) <= 0:
            problems.append(Problem(f"antiflood.{key}", "must be positive"))
    for key in ("ban_time", "auth_fail_window", "auth_fail_ban_time", "scanner_ban_time", "auth_fail_threshold"):
        if getattr(a, key) < 0:
            problems.append(Problem(f"antiflood.{key}", "must not be negative"))
    if config.acc.writer not in ("process", "thread"):
        problems.append(Problem("acc.writer", f"unknown writer {config.acc.writer!r}", 'one of "process", "thread"'))
    if config.spam.action not in ("drop", "403", "404"):
        problems.append(Problem("spam.action", f"unknown action {config.spam.action!r}", 'one of "drop", "403", "404"'))
    for i, item in enumerate(config.spam.own_addresses):
        try:
            ipaddress.ip_address(item.strip("[]"))
        except ValueError:
            problems.append(Problem(f"spam.own_addresses[{i}]", f"not an IP address: {item!r}"))
    return problems


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def toml_value(value: Any) -> str:
    """A value as TOML text (the inverse of what ``tomllib`` reads for the types keys may have)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def dump(conf: dict[str, dict[str, Any]]) -> str:
    """Sections of ``key = value`` lines as TOML text (configs written by tools and tests). Section
    names are written as given, so dotted table paths (``tls.server_domains."tls:IP:PORT"``) work."""
    return "".join(f"[{name}]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in values.items()) + "\n"
                   for name, values in conf.items())


def to_dict(config: Config, *, mask_secrets: bool = True) -> dict[str, dict[str, Any]]:
    """The effective configuration as plain data, defaults included."""
    out: dict[str, dict[str, Any]] = {}
    for name in sections():
        section = getattr(config, name)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if mask_secrets and f.metadata.get("secret") and v:
                v = "***"
            elif mask_secrets and f.metadata.get("secret_in_url") and isinstance(v, str):
                v = mask_url(v)
            values[f.name] = v
        out[name] = values
    return out


def describe() -> list[tuple[str, str, Any, str]]:
    """Every key as (dotted name, type, default, doc) for docs and the man page."""
    rows = []
    for name, cls in sections().items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = None
            rows.append((f"{name}.{f.name}", _type_name(hints[f.name]), default, f.metadata.get("doc", "")))
    return rows
