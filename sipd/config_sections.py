"""The sections of sipd.toml: every key, its type, its default and its documentation.

Each section is a dataclass and each key a field with a ``doc`` in its metadata; ``sipd.config``
reads the file into them, and ``sipd --check-config``, ``sipctl config show`` and the
``sipd.toml(5)`` man page are derived from them, so a key that is not declared here does not
exist. The checks of the values beyond their type live with the code that uses them and are listed
in ``sipd.validation``.

How to add a key: add a field to its section with ``field(default=..., metadata=_doc("..."))``.
Types allowed: bool, int, float, str, list[str], dict[str, str].
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .db.cluster import DEAD_AFTER
from .db.url import default_db_url


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    """A key's metadata: its documentation (sipd.toml(5), ``config generate``, ``config show``) and
    flags such as ``secret`` (masked when shown)."""
    return {"doc": text, **extra}


def _default_socket() -> str:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
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
        metadata=_doc("Processes serving SIP (Kamailio's `children`): 1 is one process; N > 1 adds N-1 workers "
                      "that read the same UDP sockets, answer REGISTERs for their share of the AORs, handle calls "
                      "for their share of the Call-IDs (not with [diversion] uri or a [routing] hook) and serve "
                      "their share of the TCP/TLS connections (main accepts each and hands it over); 0 means one "
                      "per CPU. Presence, accounting and management stay in the main process."),
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
            " and at shutdown), db-only (read from the database on lookup: the mode of every node of a [cluster]),"
            " memory (never stored)."
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
class OverloadSection:
    """Shedding the requests of strangers first when overloaded (sipd/overload.py)."""

    enabled: bool = field(default=True, metadata=_doc(
        "Shed initial requests from unknown sources first when overloaded (known sources: authenticated or trusted)."))
    unknown_rate: int = field(default=3000, metadata=_doc(
        "Initial requests per second (per process) parsed from sources that never authenticated; beyond it they are shed."))
    max_receive_queue: float = field(default=0.1, metadata=_doc(
        "Share of a UDP socket's receive buffer that may hold unread datagrams before initial requests from"
        " unknown sources are shed (for hold seconds)."))
    max_loop_lag: float = field(default=0.1, metadata=_doc(
        "Seconds the event loop may lag before every initial request from an unknown source is shed."))
    hold: float = field(default=2.0, metadata=_doc("Seconds the shedding lasts after the last lag over max_loop_lag."))
    known_ttl: float = field(default=3600.0, metadata=_doc(
        "Seconds an address stays known after its last successful authentication."))
    max_known: int = field(default=100000, metadata=_doc("Known addresses remembered (the oldest forgotten first)."))
    reply_503: bool = field(default=False, metadata=_doc(
        "Answer a shed request 503 Service Unavailable with Retry-After instead of dropping it unread."))
    retry_after: int = field(default=30, metadata=_doc("Retry-After of those 503 answers, seconds."))


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
class TraceSection:
    """HEPv3 export of SIP traffic to a capture collector (Homer); sent by sipd/hep_export.py."""

    hep_collector: str = field(default="", metadata=_doc(
        'Where to send every SIP message sipd receives and sends as HEPv3: "udp:HOST:PORT" or "tcp:HOST:PORT" '
        '(e.g. "udp:127.0.0.1:9060", IPv6 as "udp:[::1]:9060"); empty = no export. HOST is resolved once at start.'))
    hep_capture_id: int = field(default=1, metadata=_doc("Capture agent id sent with each packet (HEP chunk 12), naming this sipd in the collector."))
    hep_password: str = field(default="", metadata={**_doc(
        "Authentication key sent with each packet (HEP chunk 14), for a collector that checks one; empty = none."),
        "secret": True})
    hep_user: str = field(default="", metadata=_doc("Export only messages whose request URI, From, To or Contact has this user part; empty = all."))
    hep_ip: str = field(default="", metadata=_doc("Export only messages from or to this peer IP address; empty = all."))
    hep_call_id: str = field(default="", metadata=_doc("Export only messages with this Call-ID; empty = all."))
    hep_method: str = field(default="", metadata=_doc("Export only messages whose CSeq method is this one (e.g. INVITE); empty = all."))


@dataclass(kw_only=True)
class ClusterSection:
    """Several sipd nodes on one database (docs/several-nodes.md): this node's name and heartbeat,
    written by sipd/services/cluster.py into the ``cluster_node`` table."""

    node_id: str = field(default="", metadata=_doc(
        "This node's name in a cluster of sipd nodes sharing one database (e.g. \"a\"; letters, digits, '.', '_', "
        "'-', at most 64), unique per node; empty = no cluster: no heartbeat is written."))
    address: str = field(default="", metadata=_doc(
        "HOST:PORT the other nodes reach this node at (IPv6 as [::1]:5060), shown by `sipctl cluster status`: they "
        "relay there the requests for registrations only this node can reach (its TCP/TLS connections and NAT "
        "pinholes), and trust requests from its address; empty = the first [server] listen address (its host "
        "replaced by [server] advertised_address if set)."))
    heartbeat_interval: float = field(default=10.0, metadata=_doc(
        "Seconds between this node's heartbeats (its row in the cluster_node table)."))
    record_route_host: str = field(default="", metadata=_doc(
        "HOST or HOST:PORT every node writes in its Record-Route instead of its own address, and counts as "
        "itself: a name all nodes answer to (the domain of the _sip SRV records, or an address the nodes share), "
        "so that a call's BYE, re-INVITE and ACK reach a surviving node when the one that took the call is dead; "
        "empty = each node's own address (in-dialog requests then reach that node only)."))
    dead_after: float = field(default=float(DEAD_AFTER), metadata=_doc(
        "A node whose last heartbeat is older than this many seconds is dead (`sipctl cluster status`); "
        "more than heartbeat_interval, e.g. three intervals, so one slow write does not declare a node dead."))
    ban_interval: float = field(default=1.0, metadata=_doc(
        "Seconds between two looks at the bans the nodes share (the cluster_ban table): a ban or an unban made at "
        "one node applies at the others within this plus one write, at most twice this."))


@dataclass(kw_only=True)
class WebSection:
    """The control panel (``sipctl web``), a process of its own: sipd itself never reads these keys;
    they are here so that the panel's keys live in the one file, are checked by ``sipd
    --check-config`` and appear in sipd.toml(5)."""

    listen: str = field(default="127.0.0.1:8080", metadata=_doc("HOST:PORT the panel listens on (IPv6 as [::1]:8080); loopback by default, put it behind TLS before opening it wider."))
    certificate: str = field(default="", metadata=_doc("PEM certificate for HTTPS; with private_key set the panel serves HTTPS only and marks its cookie Secure."))
    private_key: str = field(default="", metadata=_doc("PEM private key of the certificate (unencrypted; mode 0600)."))
    session_timeout: float = field(default=28800.0, metadata=_doc("Seconds a login stays valid without activity."))
    lockout_failures: int = field(default=5, metadata=_doc("Failed logins in a row after which an admin account is locked."))
    lockout_seconds: float = field(default=300.0, metadata=_doc("Seconds a locked admin account stays locked."))
