"""One configuration for sipd and sipctl, loaded from TOML.

Where the file comes from: ``--config FILE``, else ``$SIPD_CONFIG``, else ``/etc/sipd/sipd.toml``
if it exists, else built-in defaults that work without any file.

Every key is declared once, below, as a field of a section dataclass with a ``doc`` in its metadata.
``sipd --check-config``, ``sipctl config show`` and the ``sipd.toml(5)`` man page are all derived
from these declarations, so a key that is not declared here does not exist.

How to add a key: add a field to the section with ``field(default=..., metadata=_doc("..."))``.
Types allowed: bool, int, float, str, list[str], dict[str, str]. Validation of values beyond their
type goes into ``_validate_values``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from .confdoc import doc as _doc
from .hep_export import TraceSection, validate as _validate_trace
from .overload import OverloadSection
from .problem import Problem, StartupProblem  # noqa: F401 - part of this module's API
from .webconf import WebSection

DEFAULT_PATH = Path("/etc/sipd/sipd.toml")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_db_url() -> str:
    if _is_root():
        return "sqlite:////var/lib/sipd/sipd.db"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return f"sqlite:///{os.path.abspath(base)}/sipd/sipd.db"


def _default_socket() -> str:
    if _is_root():
        return "/run/sipd/sipd.sock"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/sipd-{os.getuid()}"
    return f"{base}/sipd.sock"


@dataclass(kw_only=True)
class ServerSection:
    listen: list[str] = field(
        default_factory=lambda: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
        metadata=_doc("Listen sockets as proto:host:port (proto udp, tcp or tls; IPv6 as [::1])."),
    )
    domains: list[str] = field(default_factory=list, metadata=_doc(
        "Local SIP domains served in addition to the `domain` table. A name is local on any port; an IP address only "
        "on the port of one of our listeners (sip:bob@IP:5112 is a phone's Contact, routed to it)."))
    advertised_address: str = field(
        default="",
        metadata=_doc("Host put in Via/Record-Route instead of the listen address (e.g. behind NAT)."),
    )
    server_header: str = field(
        default="",
        metadata=_doc("Server/User-Agent header value sent; empty sends none (scanners learn less)."),
    )
    user: str = field(
        default="",
        metadata=_doc("Started as root, sipd binds its sockets and then runs as this user (e.g. \"sipd\"); empty keeps the user."),
    )
    group: str = field(default="", metadata=_doc("Group to run as after binding; empty uses the user's primary group."))
    pid_file: str = field(default="", metadata=_doc("Write the daemon's PID to this file (removed at exit); empty writes none."))
    multidomain: bool = field(
        default=False,
        metadata=_doc("USE_MULTIDOMAIN: true gives each local domain its own users (user@a and user@b differ); "
                      "false (OpenSIPS's default) makes the local domains one user space. Either way the local "
                      "domains are `domains` plus the `domain` table."),
    )
    workers: int = field(
        default=1,
        metadata=_doc("Processes reading the UDP sockets (Kamailio's `children`): 1 is one process; N > 1 adds N-1 "
                      "workers that answer REGISTERs for their share of the AORs and handle UDP calls for their "
                      "share of the Call-IDs (not with [diversion] uri or a [routing] hook); 0 means one per CPU. "
                      "TCP/TLS, presence, accounting and management stay in the main process."),
    )


@dataclass(kw_only=True)
class DatabaseSection:
    url: str = field(
        default_factory=default_db_url,
        metadata=_doc(
            "Database URL: sqlite:////ABSOLUTE/PATH (four slashes; three: relative to the current directory) or mysql://user:pw@host:3306/dbname.",
            secret_in_url=True,
        ),
    )
    ro_url: str = field(
        default="",
        metadata=_doc("Read-only URL used by reporting commands; empty means use `url`.", secret_in_url=True),
    )
    connect_timeout: float = field(default=5.0, metadata=_doc("Seconds to wait when connecting."))
    reload_interval: float = field(
        default=0.0,
        metadata=_doc("Seconds between re-reads of the domain, subscriber, dbaliases and dialplan tables, for "
                      "changes made without sipctl (which makes sipd reload at once); 0 = only on `sipctl reload`."),
    )


@dataclass(kw_only=True)
class MgmtSection:
    socket: str = field(
        default_factory=_default_socket,
        metadata=_doc("Path of the management Unix socket (JSON-RPC 2.0)."),
    )
    socket_mode: str = field(default="0660", metadata=_doc("File mode of the socket, octal."))
    socket_group: str = field(default="", metadata=_doc("Group owning the socket; empty keeps the default."))
    socket_owner: str = field(default="", metadata=_doc("User owning the socket; empty keeps the default."))
    fifo: str = field(default="", metadata=_doc("Path of the OpenSIPS-style MI FIFO; empty disables it."))
    http_listen: str = field(
        default="",
        metadata=_doc("host:port of the HTTP management interface (loopback only); empty disables it."),
    )
    http_token: str = field(
        default="",
        metadata=_doc("Bearer token required by the HTTP management interface.", secret=True),
    )
    timeout: float = field(default=5.0, metadata=_doc("Seconds sipctl waits for a management reply."))
    fifo_mode: str = field(default="0660", metadata=_doc("File mode of the MI FIFO, octal."))
    fifo_reply_dir: str = field(
        default="/tmp",
        metadata=_doc("Directory holding the clients' reply FIFOs (the `:name:` of a FIFO request)."),
    )
    max_request_size: int = field(
        default=65536, metadata=_doc("Largest management request accepted, in bytes (larger: rejected).")
    )
    read_timeout: float = field(
        default=10.0,
        metadata=_doc("Seconds a management client may take to send its request or read the reply."),
    )
    max_connections: int = field(
        default=64,
        metadata=_doc("Concurrent management connections (socket + HTTP); when full, the one waiting longest without sending is told busy and closed, one slot is kept from such clients, a newcomer is told busy only when all serve requests."),
    )


@dataclass(kw_only=True)
class LogSection:
    level: str = field(default="info", metadata=_doc("Log level: debug, info, warning, error."))
    destination: str = field(default="stderr", metadata=_doc("stderr or syslog."))
    facility: str = field(default="local1", metadata=_doc("Syslog facility (e.g. local1, as the report's LOG_LOCAL1)."))
    ident: str = field(default="sipd", metadata=_doc("Syslog ident."))
    sip_trace: bool = field(default=False, metadata=_doc("Log every SIP message in full (logger sipd.trace)."))


@dataclass(kw_only=True)
class RegistrarSection:
    min_expires: int = field(default=60, metadata=_doc("Shortest registration accepted, seconds (0 = no minimum)."))
    default_expires: int = field(default=3600, metadata=_doc(
        "Expiry used when REGISTER has no Expires header or contact expires param, seconds."))
    max_expires: int = field(default=86400, metadata=_doc("Longer registrations are clamped to this, seconds (0 = no maximum)."))
    min_expires_mode: str = field(default="clamp", metadata=_doc(
        "Below min_expires: clamp (raise silently, as OpenSIPS) or reject (423 with Min-Expires, RFC 3261 10.3)."))
    max_contacts: int = field(default=10, metadata=_doc("Bindings per address-of-record (0 = unlimited); see max_contacts_mode."))
    max_contacts_mode: str = field(default="replace-oldest", metadata=_doc(
        "Beyond max_contacts: replace-oldest (the oldest bindings make room, OpenSIPS save() flag r) or reject (503)."))
    gruu: bool = field(default=True, metadata=_doc("Hand out GRUUs (RFC 5627) to contacts with +sip.instance."))


@dataclass(kw_only=True)
class AuthSection:
    register: bool = field(default=True, metadata=_doc("Challenge REGISTER with digest auth (see realm)."))
    invite: bool = field(default=True, metadata=_doc(
        "Challenge requests from a local domain that leave the server (407); only authenticated users call."))
    realm: str = field(default="", metadata=_doc(
        "Digest realm of single-domain mode ([server] multidomain = false), where all local domains are one user "
        "space and users are looked up by name alone; empty = the first of [server] domains (else of the domain table). With multidomain the "
        "realm is each user's own domain."))
    algorithms: list[str] = field(
        default_factory=lambda: ["MD5"],
        metadata=_doc(
            'Digest algorithms offered, in order: MD5 and/or SHA-256. Offering SHA-256 at all locks out baresip 1.0'
            ' (it refuses any challenge list naming SHA-256); SIPp and sipsak answer only the first; linphone the'
            ' first it can.'
        ),
    )
    nonce_expires: int = field(default=300, metadata=_doc("Lifetime of a nonce, seconds; older ones get stale=true."))
    secret: str = field(
        default="",
        metadata=_doc("Secret signing nonces; empty picks a random one at start (set it when nodes share load).", secret=True),
    )


@dataclass(kw_only=True)
class LocationSection:
    mode: str = field(
        default="write-through",
        metadata=_doc(
            "Persistence of registrations: write-through (200 sent once committed), write-back (flushed on a timer"
            " and at shutdown), db-only (read from the database on lookup; several nodes), memory (never stored)."
        ),
    )
    flush_interval: float = field(default=10.0, metadata=_doc("write-back: seconds between flushes."))


@dataclass(kw_only=True)
class ProxySection:
    record_route: bool = field(default=True, metadata=_doc("Insert Record-Route (double when the transport changes)."))
    aliases: bool = field(default=True, metadata=_doc("Resolve R-URIs through the dbaliases table."))
    dialplan: bool = field(default=False, metadata=_doc("Translate the R-URI user with the dialplan before routing."))
    dialplan_id: int = field(default=0, metadata=_doc("Dialplan id (dpid) used for the R-URI translation."))
    invite_timeout: float = field(
        default=60.0, metadata=_doc("Seconds a forked INVITE may ring before branches are cancelled (408)."),
    )
    serial_timeout: float = field(
        default=20.0, metadata=_doc("Seconds before moving to the next q-value group in serial forking."),
    )


@dataclass(kw_only=True)
class LimitsSection:
    tcp_max_connections: int = field(default=4096, metadata=_doc("TCP/TLS connections open at once, in total."))
    tcp_max_per_source: int = field(default=64, metadata=_doc("TCP/TLS connections from one IP address."))
    tcp_idle_timeout: float = field(default=600.0, metadata=_doc("Seconds before an idle TCP/TLS connection is closed."))
    max_message_size: int = field(
        default=65535, metadata=_doc("Largest UDP datagram parsed, bytes (the parser's own cap is 65535); larger ones are dropped unread."),
    )
    max_transactions: int = field(
        default=20000,
        metadata=_doc(
            "Transactions held at once (only forwarded requests hold one: refusals and challenges are stateless);"
            " beyond it new UDP requests from unknown sources ([overload]) are dropped unparsed until some end."
        ),
    )
    nonce_table: int = field(default=100000, metadata=_doc("Nonces remembered for the nonce-count replay check (least recently used forgotten)."))


@dataclass(kw_only=True)
class DnsSection:
    nameservers: list[str] = field(
        default_factory=list,
        metadata=_doc('Name servers for RFC 3263 lookups as IP or IP:PORT (e.g. ["127.0.0.1:5353"]); empty uses /etc/resolv.conf.'),
    )
    timeout: float = field(default=2.0, metadata=_doc("Seconds one DNS lookup may take in total."))
    cache_size: int = field(default=4096, metadata=_doc("DNS answers kept in the resolver cache (least recently used dropped)."))
    negative_ttl: float = field(
        default=30.0, metadata=_doc("Seconds a missing name/record is remembered when the server sends no SOA (RFC 2308)."),
    )


@dataclass(kw_only=True)
class AntifloodSection:
    enabled: bool = field(default=True, metadata=_doc("Count packets per source IP and ban sources over the limit (like Kamailio pike)."))
    window: float = field(default=2.0, metadata=_doc("Sliding window of the per-source packet count, seconds."))
    limit: int = field(
        default=400,
        metadata=_doc("Packets (UDP datagrams, or requests on TCP/TLS) one source may send per window before it is banned."),
    )
    ban_time: float = field(default=300.0, metadata=_doc("Seconds a flooding source stays banned (its packets dropped before parsing)."))
    trusted_networks: list[str] = field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        metadata=_doc("CIDR networks never counted nor banned automatically (peer proxies, gateways, the host itself)."),
    )
    max_tracked: int = field(default=50000, metadata=_doc("Sources counted at once (the least recently active is forgotten first)."))
    max_bans: int = field(default=10000, metadata=_doc("Entries in the ban table (the oldest automatic ban is evicted first)."))
    auth_fail_threshold: int = field(
        default=5, metadata=_doc("Failed digest attempts from one source within auth_fail_window that ban it (0 = never)."),
    )
    auth_fail_window: float = field(default=600.0, metadata=_doc("Window for counting failed digest attempts, seconds."))
    auth_fail_ban_time: float = field(default=900.0, metadata=_doc("Seconds a source stays banned after too many failed digest attempts."))
    scanner_ban_time: float = field(
        default=0.0, metadata=_doc("Seconds a source sending a scanner User-Agent is banned (0 = only drop its requests)."),
    )


@dataclass(kw_only=True)
class SpamSection:
    enabled: bool = field(default=True, metadata=_doc("Drop calls to user@<our IP address> and requests from known scanners."))
    own_addresses: list[str] = field(
        default_factory=list,
        metadata=_doc("IP addresses of this server besides the listen and advertised addresses (public IPs behind NAT)."),
    )
    action: str = field(
        default="drop",
        metadata=_doc('What a spam call gets: "drop" (silently), "403" or "404". Logged as "Dropped Spam-Call to <To-URI> from <source>".'),
    )
    methods: list[str] = field(
        default_factory=lambda: ["INVITE", "MESSAGE", "REFER"],
        metadata=_doc("Initial requests checked by the IP-domain rule (REGISTER and OPTIONS to the IP stay legitimate)."),
    )
    numeric_ip_users: bool = field(
        default=False, metadata=_doc("Also treat digits@<any IP address> (To or Request-URI) as spam."),
    )
    calls_to_own_ip: bool = field(
        default=True,
        metadata=_doc("Drop calls (`methods`) to user@<one of our IP addresses>, an IP address listed as a domain "
                      "included (registrations to it work); false routes them like calls to a domain name."),
    )
    scanner_user_agents: list[str] = field(
        default_factory=lambda: [
            "friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "sundayddr", "iWar",
            "sip-scan", "SIVuS", "smap", "pplsip", "Gulp", "sipsscan",
        ],
        metadata=_doc("User-Agent substrings (case-insensitive) whose requests are dropped silently; empty list disables."),
    )


@dataclass(kw_only=True)
class TlsSection:
    """Defaults for every TLS domain. Per-socket server domains and per-destination client domains
    are tables of the same keys (any subset) that override these; see docs of server_domains."""

    certificate: str = field(default="", metadata=_doc("PEM certificate (leaf first, then intermediates) sipd presents, as server and as client."))
    private_key: str = field(default="", metadata=_doc("PEM private key of the certificate (unencrypted; mode 0600)."))
    ca_file: str = field(default="", metadata=_doc("PEM file of CAs trusted to verify peers; empty with empty ca_dir uses the system CAs."))
    ca_dir: str = field(default="", metadata=_doc("Directory of hashed CA files (c_rehash) trusted to verify peers."))
    verify_cert: bool = field(
        default=True,
        metadata=_doc("Client role: verify the certificate of servers sipd connects to (chain + RFC 5922 identity). "
                      "In a server domain: verify a client certificate when one is presented."),
    )
    require_cert: bool = field(default=False, metadata=_doc("Server role: refuse clients that present no valid certificate (mutual TLS)."))
    min_version: str = field(default="1.2", metadata=_doc('Lowest TLS version accepted: "1.2" or "1.3" ("1.0"/"1.1" only for broken old endpoints).'))
    max_version: str = field(default="", metadata=_doc('Highest TLS version; "1.2" caps for old endpoints (and sipsak); empty = newest.'))
    ciphers: str = field(default="", metadata=_doc("OpenSSL cipher list for TLS <= 1.2; empty keeps OpenSSL's secure default."))
    server_name: str = field(default="", metadata=_doc("Client role: SIP domain or host name the server's certificate must assert (and SNI); empty = the destination host."))
    handshake_timeout: float = field(default=10.0, metadata=_doc("Seconds a TLS handshake may take before the connection is dropped (large chains, slow endpoints)."))
    send_timeout: float = field(default=10.0, metadata=_doc("Seconds a TLS connection may leave written data unsent before it is closed."))
    max_pending_handshakes: int = field(default=512, metadata=_doc("Handshakes in progress at once per server; further connections are refused until some finish."))
    reload_interval: float = field(default=10.0, metadata=_doc("Seconds between checks of certificate/key file modification times (hot reload); 0 disables."))
    server_domains: dict[str, str] = field(
        default_factory=dict,
        metadata=_doc('Server TLS domains per listening socket: [tls.server_domains."tls:127.0.0.1:5061"] with any keys of [tls]. '
                      'A tls listener without its own table uses [tls].'),
    )
    client_domains: dict[str, str] = field(
        default_factory=dict,
        metadata=_doc('Client TLS domains per destination: [tls.client_domains."host:port"] or [tls.client_domains."host"] '
                      'with any keys of [tls]; other destinations use [tls].'),
    )


@dataclass(kw_only=True)
class PresenceSection:
    enabled: bool = field(default=True, metadata=_doc("Act as presence server (PUBLISH/SUBSCRIBE/NOTIFY, RFC 3856/3903/6665) for local-domain users."))
    policy: str = field(
        default="same-domain",
        metadata=_doc("Who may watch whom: same-domain (watcher and presentity share a domain), local (any local-domain user), open (anyone), rules (the `rules` list)."),
    )
    rules: list[str] = field(
        default_factory=list,
        metadata=_doc('policy = "rules": "WATCHER PRESENTITY" glob pairs, e.g. "*@example.com boss@example.com"; a SUBSCRIBE matching none gets 403.'),
    )
    default_expires: int = field(default=3600, metadata=_doc("Expires used when a PUBLISH/SUBSCRIBE has none, seconds."))
    min_expires: int = field(default=60, metadata=_doc("Shorter non-zero PUBLISH/SUBSCRIBE expiry gets 423 Interval Too Brief, seconds."))
    max_expires: int = field(default=3600, metadata=_doc("Longer PUBLISH/SUBSCRIBE expiry is clamped to this, seconds."))
    max_subscriptions: int = field(default=20000, metadata=_doc("Active subscriptions held at once; more get 503."))
    max_publications: int = field(default=20000, metadata=_doc("Publications (entity tags) held at once; more get 503."))
    max_body: int = field(default=16384, metadata=_doc("Largest PIDF body accepted in a PUBLISH, bytes (larger gets 413)."))
    busy_from_calls: bool = field(default=True, metadata=_doc("Show users in an answered call as busy (on-the-phone) without them publishing."))


@dataclass(kw_only=True)
class AccSection:
    enabled: bool = field(default=True, metadata=_doc("Accounting: acc rows per INVITE/BYE/CANCEL, missed_calls for INVITEs without 2xx, one cdrs row per call."))
    db_url: str = field(
        default="", metadata=_doc("Database for accounting records; empty = [database] url.", secret_in_url=True),
    )
    spool: str = field(
        default="",
        metadata=_doc("Append-only file holding records while the database is unreachable (replayed in order); "
                      "empty = acc.spool beside the SQLite file, else /var/spool/sipd/acc.spool."),
    )
    retry_interval: float = field(default=2.0, metadata=_doc("Seconds between attempts to reach the database again while spooling."))
    writer: str = field(
        default="process",
        metadata=_doc("Where records are written to the database and spool: \"process\" (a child process, off the "
                      "event loop's CPU and GIL) or \"thread\" (a thread of the daemon)."),
    )


@dataclass(kw_only=True)
class DialogSection:
    enabled: bool = field(default=True, metadata=_doc("Track calls as dialogs (sipctl dialog list/end), persisted in the dialog table across restarts."))
    lifetime: float = field(default=43200.0, metadata=_doc(
        "Seconds an answered call may last; then both sides get a BYE (CDR end reason \"Dialog Timeout\"). 0 = no limit."))


@dataclass(kw_only=True)
class NatSection:
    """USE_NAT: endpoints behind NAT (detection, the received address, keep-alive pings)."""

    enabled: bool = field(default=True, metadata=_doc(
        "Detect UDP endpoints behind NAT as nat_uac_test does (a private or loopback address in Contact or Via that is "
        "not the source, Via sent-by other than the source address/port; a public Contact is kept as written), reach "
        "them at the address their REGISTER came from, fix the Contact of NATed callers, and ping NATed contacts; "
        "false sends to every Contact URI as written."))
    keepalive_interval: float = field(default=30.0, metadata=_doc("Seconds between keep-alive pings to each NATed contact (0 = no pings)."))
    keepalive_method: str = field(default="options", metadata=_doc('Keep-alive ping: "options" (a SIP OPTIONS request) or "crlf" (a CRLF datagram).'))


@dataclass(kw_only=True)
class DiversionSection:
    """VM_DIVERSION: failed calls to local users go to a voicemail/reception URI."""

    uri: str = field(default="", metadata=_doc("Where failed calls to local users are redirected (voicemail, reception); empty disables."))
    on_busy: bool = field(default=True, metadata=_doc("Divert when the callee is busy (486, 600)."))
    on_no_answer: bool = field(default=True, metadata=_doc("Divert when nobody answers within no_answer_timeout."))
    on_unavailable: bool = field(default=True, metadata=_doc("Divert when the callee is unavailable (480, 404, 408, or no registered contact)."))
    no_answer_timeout: float = field(default=20.0, metadata=_doc("Seconds a call may ring before its branches are cancelled and it is diverted."))
    header: str = field(default="diversion", metadata=_doc('Header telling the target why: "diversion" (RFC 5806) or "history-info" (RFC 7044).'))


@dataclass(kw_only=True)
class PstnSection:
    """HAVE_OUTBOUND_PSTN / HAVE_INBOUND_PSTN: a PSTN gateway for numbers."""

    gateway: str = field(default="", metadata=_doc('SIP URI of the PSTN gateway, e.g. "sip:192.0.2.10:5060"; empty disables PSTN routing.'))
    prefixes: list[str] = field(default_factory=lambda: ["+"], metadata=_doc("R-URI user prefixes dialled to the PSTN (the number is all digits after it)."))
    strip_prefix: bool = field(default=False, metadata=_doc("Remove the matched prefix before sending the number to the gateway."))
    trusted_addresses: list[str] = field(
        default_factory=list,
        metadata=_doc("Source IPs trusted as inbound PSTN (no auth challenge); empty = the gateway's own address."),
    )


@dataclass(kw_only=True)
class RoutingSection:
    """The Python routing hook, for routing the built-in policy does not cover (see sipd.toml(5))."""

    hook: str = field(default="", metadata=_doc("Python file (/path/hook.py) or module name whose route(request) is called for each initial request; empty = none."))
    error_log_interval: float = field(default=60.0, metadata=_doc("A failing hook's traceback is logged at most once per this many seconds."))


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


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the configuration.

    Raises:
        ConfigError: with every problem found (unknown key, wrong type, bad value, unreadable file).
    """
    config, problems = check(path)
    if problems:
        raise ConfigError(problems)
    return config


def check(path: str | os.PathLike[str] | None = None) -> tuple[Config, list[Problem]]:
    """Load the configuration and return it with the list of problems (empty when valid)."""
    resolved = resolve_path(path)
    if resolved is None:
        config = Config()
        return config, _validate_values(config)
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
    problems += _validate_values(config)
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


def _validate_values(config: Config) -> list[Problem]:
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
    for check_fn in VALIDATORS:
        problems.extend(check_fn(config))
    return problems


#: Extra validators registered by feature modules: ``fn(config) -> list[Problem]``.
VALIDATORS: list[Any] = [_validate_trace]  # [trace]: sipd/hep_export.py


def _validate_security(config: Config) -> list[Problem]:
    """[antiflood] and [spam] values."""
    import ipaddress

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


VALIDATORS.append(_validate_security)


def _validate_tls(config: Config) -> list[Problem]:
    """[tls] values and domain tables; the rules live in sipd/tlsconf.py."""
    from .tlsconf import validate_config

    return validate_config(config)


VALIDATORS.append(_validate_tls)


def _validate_presence(config: Config) -> list[Problem]:
    """[presence] values; the rules live in sipd/services/presence_state.py."""
    from .services.presence_state import validate_config

    return [Problem(k, m, h) for k, m, h in validate_config(config.presence)]


VALIDATORS.append(_validate_presence)


def _validate_residential(config: Config) -> list[Problem]:
    """[nat], [diversion], [pstn], [routing] values."""
    from .services.pstn import validate_config

    return [Problem(k, m, h) for k, m, h in validate_config(config)]


VALIDATORS.append(_validate_residential)


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


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and ``config show``)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


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
