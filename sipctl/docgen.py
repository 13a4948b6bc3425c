"""Generate man pages and shell completions from the code (the Typer app, sipd's argparse parser,
and the config schema), so that they never drift: tests/ops/test_generated.py regenerates them and
compares with the committed files in man/ and completions/.

Used by ``scripts/gen-docs``. Machine-specific defaults (paths that depend on the user running the
generator) are replaced by their documented form.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import typer

from sipd import __version__

DATE = "2026-11-27"  # fixed so regeneration is byte-stable; bump with the version
ROOT = Path(__file__).resolve().parent.parent


# Glyphs groff has no name for in every output device, in a portable spelling.
_GLYPHS = {"\u2713": "(ok)", "\u2717": "(x)", "\u2014": "\\(em", "\u2013": "\\(en", "\u2192": "\\(->",
           "\u2026": "...", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2265": "\\(>=", "\u2264": "\\(<="}


def esc(text: str) -> str:
    """Escape text for roff: backslashes, leading dots/quotes, hyphens, non-ASCII characters."""
    text = text.replace("\\", "\\e")
    text = text.replace("-", "\\-")
    text = "".join(c if ord(c) < 128 else _GLYPHS.get(c, f"\\[u{ord(c):04X}]" if ord(c) < 0x2000 else "?")
                   for c in text)
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


_RICH_TAG = re.compile(r"(?<!\\)\[/?(bold|italic|dim|red|green|yellow|blue|cyan|magenta|b|i|code)\]")


def _strip_markup(text: str) -> str:
    """Rich markup off, rich escapes (\\[) resolved."""
    return _RICH_TAG.sub("", text or "").replace("\\[", "[")


def _split_doc(doc: str) -> tuple[str, str, list[str]]:
    """(summary, body, examples) from a command docstring."""
    doc = _strip_markup(doc or "").strip()
    examples = []
    body_lines = []
    for line in doc.splitlines():
        s = line.strip()
        if s.startswith("Example:"):
            examples.append(s[len("Example:"):].strip())
        else:
            body_lines.append(s)
    body = "\n".join(body_lines).strip()
    summary = body.split("\n\n")[0].replace("\n", " ") if body else ""
    rest = body[len(body.split("\n\n")[0]):].strip() if body else ""
    return summary, rest, examples


def _walk(cmd, path):  # type: ignore[no-untyped-def]
    """Yield (path, click command) for every leaf command, depth first, sorted by name."""
    sub = getattr(cmd, "commands", None)
    if sub:
        for name in sorted(sub):
            yield from _walk(sub[name], [*path, name])
    else:
        yield path, cmd


def _param_lines(cmd) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for p in cmd.params:
        if getattr(p, "hidden", False):
            continue
        if p.param_type_name == "argument":
            out.append(f".TP\n.I {esc((p.metavar or p.name or '').upper())}\n{esc(_strip_markup(getattr(p, 'help', '') or ''))}")
        else:
            names = ", ".join(p.opts + list(p.secondary_opts))
            meta = "" if p.is_flag else f" {p.metavar or p.name.upper()}"
            out.append(f".TP\n.B {esc(names)}{esc(meta)}\n{esc(_strip_markup(p.help or ''))}")
    return out


def commands() -> list[tuple[list[str], object]]:
    from sipctl.app import app

    root = typer.main.get_command(app)
    return list(_walk(root, []))


def sipctl_man() -> str:
    from sipctl.app import app

    root = typer.main.get_command(app)
    out = [
        f'.TH SIPCTL 1 "{DATE}" "sipd {__version__}" "sipd manual"',
        ".SH NAME",
        "sipctl \\- operate a sipd SIP server",
        ".SH SYNOPSIS",
        ".B sipctl",
        "[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fB\\-\\-db\\-url\\fR \\fIURL\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR...]",
        ".SH DESCRIPTION",
        esc(_strip_markup(root.help or "")),
        "Commands that change or read the database use [database] url of the configuration;",
        "commands about the running daemon use its management socket ([mgmt] socket).",
        "Every read command accepts \\fB\\-\\-json\\fR for scripts.",
        ".PP",
        "The changes of \\fBdomain\\fR, \\fBuser\\fR, \\fBalias\\fR and \\fBdp\\fR add, rm, passwd and edit",
        "take effect on a running sipd at once: sipctl asks it to reload the table it changed (in every",
        "worker process) and says so (\\(lqadded; sipd reloaded aliases\\(rq); when no sipd answers, it says",
        "that the change applies when sipd starts. Each command also says what sipd will do with the",
        "change and names the key that decides it: an alias is not used while [proxy] aliases = false,",
        "a dialplan rule never applies to a call while [proxy] dialplan = false (the default), calls to",
        "user@IP of an IP address domain are dropped as spam while [spam] calls_to_own_ip = true.",
        "\\fBsipctl reload\\fR reloads every table, for changes made to the database by other means.",
        ".SH GLOBAL OPTIONS",
        *_param_lines(root),
        ".SH COMMANDS",
    ]
    for path, cmd in _walk(root, []):
        summary, rest, examples = _split_doc(cmd.help or "")
        out.append(f".SS {esc('sipctl ' + ' '.join(path))}")
        if summary:
            out.append(esc(summary))
        if rest:
            out.append(".PP")
            out.append(esc(rest.replace("\n\n", "\n.PP\n")))
        params = _param_lines(cmd)
        if params:
            out.extend(params)
        for ex in examples:
            out.append(".PP\nExample:\n.RS\n.nf\n" + esc(ex) + "\n.fi\n.RE")
    out += [
        ".SH EXIT STATUS",
        "0 success; 1 failure or failed checks; 2 usage error; 3 database unreachable or schema",
        "missing; 4 sipd not running; 5 permission denied on the management interface; 6 timeout;",
        "7 not found; 8 already exists; 9 unknown management command; 10 wrong parameters;",
        "130 interrupted.",
        ".SH ENVIRONMENT",
        ".TP\n.B SIPD_CONFIG\nconfiguration file used when \\fB\\-\\-config\\fR is not given.",
        ".TP\n.B SIPCTL_DB_URL\ndatabase URL overriding [database] url.",
        ".SH CRON",
        "Statistics history for graphs:",
        ".RS\n.nf\n* * * * * sipd sipctl stats collect \\-\\-keep\\-days 31\n.fi\n.RE",
        ".SH SEE ALSO",
        "\\fBsipd\\fR(8), \\fBsipd.toml\\fR(5)",
        "",
    ]
    return "\n".join(out)


def sipd_man() -> str:
    from sipd.__main__ import _parser

    parser = _parser()
    out = [
        f'.TH SIPD 8 "{DATE}" "sipd {__version__}" "sipd manual"',
        ".SH NAME",
        "sipd \\- SIP registrar and stateful proxy for video\\-conferencing endpoints",
        ".SH SYNOPSIS",
        ".B sipd",
        "[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fB\\-\\-check\\-config\\fR]",
        ".SH DESCRIPTION",
        "sipd serves SIP endpoints of an institution: they register to it, call each other by name or",
        "alias, call other SIP domains (RFC 3263), and are called from outside, over UDP, TCP or TLS.",
        "It keeps location, domains, aliases, dialplan and credentials in memory and in a database",
        "(SQLite by default, MySQL/MariaDB for production), and is operated with \\fBsipctl\\fR(1).",
        ".SH OPTIONS",
    ]
    for action in parser._actions:
        if not action.option_strings:
            continue
        names = ", ".join(action.option_strings)
        meta = f" {action.metavar}" if action.metavar else ""
        out.append(f".TP\n.B {esc(names)}{esc(meta)}\n{esc(action.help or '')}")
    out += [
        ".SH LOCAL DOMAINS, REALM AND NAT",
        "A Route, Record\\-Route or Request\\-URI names this server when its host, port and transport are",
        "those of one of its listeners (no port: 5060, or 5061 for sips: and transport=tls). A URI is in",
        "a local domain when its host is a domain name of [server] domains or the domain table (any",
        "port), or one of the server's addresses on the port of one of its listeners: sip:bob@IP:5112,",
        "the Contact of a phone, is routed to that phone, not looked up as the user bob.",
        ".PP",
        "With [server] multidomain = false all local domains (names and IP addresses) are one user",
        "space, as OpenSIPS use_domain=0: one digest realm ([auth] realm, else the first of [server]",
        "domains, else the first name of the domain table) and users looked up by name alone. With multidomain = true each domain has its own",
        "users and is their realm.",
        ".PP",
        "With [nat] enabled (the default) a UDP endpoint is behind NAT when its top Via sent\\-by is not",
        "the source address and port, or its Contact or Via holds a private (RFC 1918, 100.64/10,",
        "link\\-local) or loopback address that is not the source (nat_uac_test). Such a binding is",
        "flagged NAT and reached at the address its REGISTER came from; a public Contact is kept as",
        "written.",
        ".SH SIGNALS",
        ".TP\n.B SIGTERM, SIGINT\ngraceful stop: stop accepting, flush location and accounting, close. A second SIGINT forces.",
        ".TP\n.B SIGHUP\nreload what can change without a restart (the domain, subscriber, dbaliases and dialplan tables, TLS certificates, routing hook, log level), as \\fBsipctl reload\\fR does.",
        ".SH LIVE RELOAD",
        "sipd answers from memory what is provisioned in the database. sipctl reloads the table it",
        "changed at once (management command \\fBreload\\fR with \\fItables\\fR); with [server] workers > 1",
        "main passes the reload to every worker process. Changes made by other means are read at",
        "\\fBsipctl reload\\fR, SIGHUP, a start, or every [database] reload_interval seconds when that is",
        "set (0, the default, polls never). sipd logs what it reloaded; a failed reload keeps the old table.",
        ".SH LOCAL DOMAINS AND SPAM",
        "The local domains are [server] domains plus the domain table, whatever [server] multidomain says",
        "(multidomain only decides whether each domain has its own users). An IP address can be a",
        "local domain: devices register to user@IP. Calls (INVITE, MESSAGE, REFER) whose To or",
        "Request\\-URI host is one of this server's IP addresses \\(em listen and advertised addresses,",
        "[spam] own_addresses, and every IP address domain, from the file or the database alike \\(em are",
        "dropped as spam and logged as \\(lqDropped Spam\\-Call to URI from SOURCE\\(rq; real callers use",
        "name@domain. [spam] calls_to_own_ip = false routes them like calls to a domain name.",
        ".SH FILES",
        ".TP\n.I /etc/sipd/sipd.toml\nconfiguration, see \\fBsipd.toml\\fR(5).",
        ".TP\n.I /var/lib/sipd/sipd.db\nembedded default database.",
        ".TP\n.I /run/sipd/sipd.sock\nmanagement socket (JSON\\-RPC 2.0).",
        ".SH SYSTEMD",
        "sipd speaks the sd_notify protocol (Type=notify): READY (and the log line \"sipd ready\") once every",
        "listener answers (sipd connects to each; a TLS listener must complete a handshake), STOPPING on shutdown,",
        "WATCHDOG when WatchdogSec= is set. A unit file is shipped as contrib/systemd/sipd.service.",
        ".SH SEE ALSO",
        "\\fBsipctl\\fR(1), \\fBsipd.toml\\fR(5)",
        "",
    ]
    return "\n".join(out)


def _default_text(key: str, default: object) -> str:
    if key == "database.url":
        return "sqlite:////var/lib/sipd/sipd.db (as root; ~/.local/share/sipd/sipd.db otherwise)"
    if key == "mgmt.socket":
        return "/run/sipd/sipd.sock (as root; $XDG_RUNTIME_DIR/sipd.sock otherwise)"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, str):
        return f'"{default}"'
    if isinstance(default, list):
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in default) + "]"
    return str(default)


def sipd_toml_man() -> str:
    from sipd import config

    out = [
        f'.TH SIPD.TOML 5 "{DATE}" "sipd {__version__}" "sipd manual"',
        ".SH NAME",
        "sipd.toml \\- configuration of sipd and sipctl",
        ".SH DESCRIPTION",
        "One TOML file configures both programs. It is read from \\fB\\-\\-config\\fR, else",
        "\\fB$SIPD_CONFIG\\fR, else \\fI/etc/sipd/sipd.toml\\fR, else built\\-in defaults that work",
        "without any file. Unknown keys and wrong types are errors: run \\fBsipd \\-\\-check\\-config\\fR.",
        ".SH KEYS",
    ]
    section = None
    for key, type_name, default, doc in config.describe():
        sec = key.split(".", 1)[0]
        if sec != section:
            section = sec
            out.append(f".SS [{sec}]")
        out.append(f".TP\n.B {esc(key.split('.', 1)[1])}\n{esc(doc)}\n.br\nType: {esc(type_name)}. Default: {esc(_default_text(key, default))}.")
    out += [
        ".SH EXAMPLE",
        ".nf",
        "[server]",
        esc('listen = ["udp:192.0.2.10:5060", "tcp:192.0.2.10:5060", "tls:192.0.2.10:5061"]'),
        esc('domains = ["sip.example.org"]'),
        "[database]",
        esc('url = "mysql://sipd:secret@127.0.0.1:3306/sipd"'),
        ".fi",
        ".SH SEE ALSO",
        "\\fBsipd\\fR(8), \\fBsipctl\\fR(1)",
        "",
    ]
    return "\n".join(out)


def completion(shell: str) -> str:
    """Typer's dynamic completion script for sipctl (never stale on command names)."""
    env = dict(os.environ, _SIPCTL_COMPLETE=f"source_{shell}")
    exe = [str(Path(sys.executable).parent / "sipctl")]
    text = subprocess.run(exe, env=env, capture_output=True, text=True, check=True).stdout
    return text


def sipd_bash_completion() -> str:
    from sipd.__main__ import _parser

    opts = sorted(o for a in _parser()._actions for o in a.option_strings)
    return (
        "# bash completion for sipd (generated by scripts/gen-docs)\n"
        "_sipd() {\n"
        "    local cur prev\n"
        '    cur="${COMP_WORDS[COMP_CWORD]}"\n'
        '    prev="${COMP_WORDS[COMP_CWORD-1]}"\n'
        '    case "$prev" in -c|--config) COMPREPLY=( $(compgen -f -- "$cur") ); return 0;; esac\n'
        f'    COMPREPLY=( $(compgen -W "{" ".join(opts)}" -- "$cur") )\n'
        "}\n"
        "complete -F _sipd sipd\n"
    )


def config_example() -> str:
    """The residential profile with what the report's deployment used (installed as sipd.toml.example)."""
    from sipctl.lib.template import Features, render

    return render(Features(tcp=True, tls=True, aliases=True, auth=True, acc=True, persistent_location=True,
                           dialog=True, dialplan=True))


FILES = {
    "contrib/sipd.toml.example": config_example,
    "man/sipctl.1": sipctl_man,
    "man/sipd.8": sipd_man,
    "man/sipd.toml.5": sipd_toml_man,
    "completions/sipctl.bash": lambda: completion("bash"),
    "completions/_sipctl": lambda: completion("zsh"),
    "completions/sipctl.fish": lambda: completion("fish"),
    "completions/sipd.bash": sipd_bash_completion,
}


def generate(root: Path = ROOT) -> list[Path]:
    written = []
    for rel, fn in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fn(), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT):
        print(p)
