"""The residential configuration template (``sipctl config generate``), like OpenSIPS's osipsconfig.

``render(features)`` writes a commented ``sipd.toml``: every chosen feature switched on, every value
the operator must change marked ``# CUSTOMIZE ME`` (listen addresses, domain, database URL,
certificate paths, gateway and diversion targets), every other key at its safe default with its
documentation (taken from the field metadata of ``sipd.config``, so it never drifts).

The checklist (``CHECKLIST``) maps osipsconfig's residential toggles to our options:

    ENABLE_TCP tcp, ENABLE_TLS tls, USE_ALIASES aliases, USE_AUTH auth, USE_DBACC acc,
    USE_DBUSRLOC persistent_location, USE_DIALOG dialog, USE_MULTIDOMAIN multidomain, USE_NAT nat,
    USE_PRESENCE presence, USE_DIALPLAN dialplan, VM_DIVERSION failure_diversion,
    HAVE_INBOUND_PSTN/HAVE_OUTBOUND_PSTN pstn_gateway, USE_HTTP_MANAGEMENT_INTERFACE http_mgmt.

No Typer, no terminal: plain functions (the command does the prompting).
"""

from __future__ import annotations

import dataclasses
import secrets
import textwrap
from dataclasses import dataclass, field
from typing import Any

from sipd.config import toml_value

#: Placeholders: valid values (so ``sipd --check-config`` accepts the file) that are obviously not
#: the operator's own (RFC 5737 documentation addresses, example.com).
PLACEHOLDER_ADDRESS = "192.0.2.1"
PLACEHOLDER_DOMAIN = "example.com"
PLACEHOLDER_GATEWAY = "sip:192.0.2.10:5060"


@dataclass
class Features:
    """The checklist answers. Strings are empty when the feature is off."""

    tcp: bool = False
    tls: bool = False
    aliases: bool = False
    auth: bool = False
    acc: bool = False
    persistent_location: bool = False
    dialog: bool = False
    multidomain: bool = False
    nat: bool = True  # the daemon's default too: detection keeps every public Contact as written
    presence: bool = False
    dialplan: bool = False
    failure_diversion: str = ""  # URI
    pstn_gateway: str = ""  # URI
    pstn_prefix: str = "+"
    http_mgmt: bool = False
    # values for the CUSTOMIZE ME lines (placeholders when empty)
    address: str = ""
    port: int = 5060  # UDP and TCP; TLS listens on the next port (5061 by default)
    mgmt_socket: str = ""  # empty: the system service's /run/sipd/sipd.sock
    domains: list[str] = field(default_factory=list)
    db_url: str = ""
    tls_certificate: str = ""
    tls_private_key: str = ""


DEFAULT_FEATURES = Features()

#: The answers ``--interactive`` offers when the operator presses Enter: what a new installation
#: wants (sipd's own defaults), not the minimal profile of the bare command. TLS stays off (it needs
#: a certificate first), so do the features that need the operator's own data.
RECOMMENDED = Features(tcp=True, aliases=True, auth=True, acc=True, persistent_location=True, dialog=True,
                       nat=True, presence=True)

#: (attribute, osipsconfig name, question) in osipsconfig's order; booleans are yes/no questions.
CHECKLIST: list[tuple[str, str, str]] = [
    ("tcp", "ENABLE_TCP", "Listen on TCP too?"),
    ("tls", "ENABLE_TLS", "Listen on TLS (port 5061)?"),
    ("aliases", "USE_ALIASES", "Resolve aliases (dbaliases table: short names, numbers)?"),
    ("auth", "USE_AUTH", "Authenticate REGISTER and outgoing calls (digest)?"),
    ("acc", "USE_DBACC", "Account calls in the database (acc, missed_calls, cdrs)?"),
    ("persistent_location", "USE_DBUSRLOC", "Keep registrations in the database across restarts?"),
    ("dialog", "USE_DIALOG", "Track calls as dialogs (sipctl dialog list/end)?"),
    ("multidomain", "USE_MULTIDOMAIN", "Give each local domain its own users (user@a and user@b differ)?"),
    ("nat", "USE_NAT", "Handle endpoints behind NAT (received address, keep-alive pings)?"),
    ("presence", "USE_PRESENCE", "Act as presence server (PUBLISH/SUBSCRIBE/NOTIFY)?"),
    ("dialplan", "USE_DIALPLAN", "Translate dialled numbers with the dialplan?"),
    ("failure_diversion", "VM_DIVERSION", "Divert failed calls (busy/no answer/unavailable) to a voicemail/reception URI?"),
    ("pstn_gateway", "HAVE_OUTBOUND_PSTN", "Route numbers to a PSTN gateway (and trust calls from it)?"),
    ("http_mgmt", "USE_HTTP_MANAGEMENT_INTERFACE", "Open the HTTP management interface (loopback, token)?"),
]


def flags_of(features: Features) -> list[str]:
    """The ``sipctl config generate`` options that reproduce ``features`` (for the header comment)."""
    out = []
    for attr, _, _ in CHECKLIST:
        value = getattr(features, attr)
        opt = "--" + attr.replace("_", "-")
        if isinstance(value, bool) and value != getattr(DEFAULT_FEATURES, attr):
            out.append(opt if value else "--no-" + opt[2:])
        elif isinstance(value, str) and value:
            out.append(f"{opt} {value}")
    if features.pstn_gateway:
        out.append(f"--pstn-prefix {features.pstn_prefix}")
    if features.port != DEFAULT_FEATURES.port:
        out.append(f"--port {features.port}")
    if features.mgmt_socket:
        out.append(f"--socket {features.mgmt_socket}")
    return out


def _listen(features: Features) -> list[str]:
    host = features.address or PLACEHOLDER_ADDRESS
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = features.port
    out = [f"udp:{host}:{port}"]
    if features.tcp:
        out.append(f"tcp:{host}:{port}")
    if features.tls:
        out.append(f"tls:{host}:{port + 1}")
    return out


def settings(features: Features) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(values that differ from the defaults by section, CUSTOMIZE ME notes by "section.key")."""
    f = features
    values: dict[str, dict[str, Any]] = {
        "server": {"listen": _listen(f), "domains": f.domains or [PLACEHOLDER_DOMAIN], "multidomain": f.multidomain},
        "database": {},
        "mgmt": {"socket": f.mgmt_socket} if f.mgmt_socket else {},
        "auth": {"register": f.auth, "invite": f.auth},
        "location": {"mode": "write-through" if f.persistent_location else "memory"},
        "proxy": {"aliases": f.aliases, "dialplan": f.dialplan},
        "acc": {"enabled": f.acc},
        "dialog": {"enabled": f.dialog},
        "presence": {"enabled": f.presence},
        "nat": {"enabled": f.nat},
        "diversion": {"uri": f.failure_diversion},
        "pstn": {"gateway": f.pstn_gateway, "prefixes": [f.pstn_prefix]} if f.pstn_gateway else {"gateway": ""},
    }
    notes = {
        "server.listen": "this server's IP address (and ports)",
        "server.domains": "your SIP domain(s)",
        "database.url": "sqlite:////ABSOLUTE/PATH (four slashes) or mysql://user:password@host:3306/sipd",
    }
    if f.db_url:
        values["database"]["url"] = f.db_url
    else:
        values["database"]["url"] = "sqlite:////var/lib/sipd/sipd.db"
    if f.tls:
        values["tls"] = {"certificate": f.tls_certificate or "/etc/sipd/tls/sipd.crt",
                         "private_key": f.tls_private_key or "/etc/sipd/tls/sipd.key"}
        notes["tls.certificate"] = "the server certificate (sipctl cert csr makes the request)"
        notes["tls.private_key"] = "its private key (mode 0600)"
    if f.http_mgmt:
        values["mgmt"].update(http_listen="127.0.0.1:8888", http_token=secrets.token_urlsafe(24))
        notes["mgmt.http_listen"] = "loopback host:port of the HTTP management interface"
        notes["mgmt.http_token"] = "generated at random; keep it secret, give it to the HTTP clients"
    if f.failure_diversion:
        notes["diversion.uri"] = "your voicemail or reception URI"
    if f.pstn_gateway:
        notes["pstn.gateway"] = "your PSTN gateway"
    return values, notes


#: Sections written, in order; the others keep their defaults silently (listed at the end).
SECTIONS = ["server", "database", "mgmt", "log", "auth", "registrar", "location", "proxy", "nat", "diversion",
            "pstn", "routing", "acc", "dialog", "presence", "tls", "antiflood", "spam", "limits", "dns"]
#: Sections written only when their feature is on (their defaults say "off" by themselves).
ONLY_WHEN_ON = {"tls": "tls"}


def _comment(text: str, width: int = 98) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, width - 2, break_on_hyphens=False, break_long_words=False)] or ["#"]


def render(features: Features) -> str:
    """The commented sipd.toml for ``features``."""
    from sipd import config as cfg

    values, notes = settings(features)
    yes = {name: bool(getattr(features, attr)) for attr, name, _ in CHECKLIST}
    yes["HAVE_INBOUND_PSTN"] = yes["HAVE_OUTBOUND_PSTN"]
    flags = " ".join(flags_of(features))
    lines = [
        "# sipd.toml -- residential profile",
        f"# generated by: sipctl config generate {flags}".rstrip(),
        "#",
        *_comment("Features (osipsconfig names): " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in yes.items())),
        "#",
        "# Change every line marked CUSTOMIZE ME, then check with `sipd --check-config -c FILE`",
        "# (or `sipctl -c FILE config check`). Every other key is at a safe default; the comment above",
        "# each key says what it does. Keys not written here keep their defaults (sipctl config show).",
        "",
    ]
    defaults = cfg.Config()
    known = cfg.sections()
    for section in SECTIONS:
        if section in ONLY_WHEN_ON and not getattr(features, ONLY_WHEN_ON[section]):
            continue
        cls = known[section]
        lines.append(f"[{section}]")
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            lines += _comment(" ".join(cls.__doc__.split()))
        chosen = values.get(section, {})
        for f in dataclasses.fields(cls):
            value = chosen.get(f.name, getattr(getattr(defaults, section), f.name))
            if isinstance(value, dict):
                continue  # nested tables (tls domains): documented in sipd.toml(5)
            if section == "mgmt" and f.name == "socket" and "socket" not in chosen:
                value = "/run/sipd/sipd.sock"  # the system service's path, whoever generates the file
            lines += _comment(f.metadata.get("doc", ""))
            line = f"{f.name} = {toml_value(value)}"
            note = notes.get(f"{section}.{f.name}")
            if note:
                line += f"  # CUSTOMIZE ME: {note}"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def parse_generated(text: str) -> dict[str, Any]:
    """The TOML data of a generated file (used by tests and ``--out`` verification)."""
    import tomllib

    return tomllib.loads(text)
