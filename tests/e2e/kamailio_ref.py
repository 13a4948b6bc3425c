"""Kamailio as a reference registrar/proxy behind the same interface as SipdProcess.

Used to validate the e2e harness itself (``SIPD_E2E_TARGET=kamailio scripts/test tests/e2e``): a
scenario that passes against Kamailio and fails against sipd points at sipd, not at the harness.
Behaviour mirrors what the e2e scenarios expect of sipd: REGISTER challenged (401, realm = To domain), INVITE
from a local domain challenged (407), record-routing stateful proxy with parallel forking, 480 for
a known user without contacts, 404 for an unknown user.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from helpers.sipd_proc import ServerProcess

CFG = r"""#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=off
listen=udp:@HOST@:@PORT@
listen=tcp:@HOST@:@PORT@
@ALIASES@
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "nathelper.so"
loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("rr", "enable_full_lr", 1)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "default_expires", 600)
modparam("nathelper", "received_avp", "$avp(RECEIVED)")
modparam("registrar", "received_avp", "$avp(RECEIVED)")
modparam("auth_db", "db_url", "text://@DBDIR@")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "$avp(subscriber_name)=username")

request_route {
	if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
	if (!sanity_check("17895", "7")) { exit; }
	if (is_method("OPTIONS") && uri==myself && $rU==$null) { sl_send_reply("200", "OK"); exit; }
	if (proto != UDP && !is_method("REGISTER") && is_present_hf("Contact")) add_contact_alias();
	if (has_totag()) {
		if (loose_route()) {
			handle_ruri_alias();
			if (uri==myself && $rU!=$null) {
				if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
			}
			route(RELAY);
		}
		if (is_method("ACK")) { if (t_check_trans()) route(RELAY); exit; }
		sl_send_reply("404", "Not here");
		exit;
	}
	if (is_method("CANCEL")) { if (t_check_trans()) route(RELAY); exit; }
	t_check_trans();
	if (is_method("REGISTER")) {
		if (!www_authorize("$td", "subscriber")) { www_challenge("$td", "0"); exit; }
		consume_credentials();
		if (proto != UDP) fix_nated_register();
		if (!save("location")) sl_reply_error();
		exit;
	}
	if (is_method("INVITE|MESSAGE|SUBSCRIBE") && from_uri==myself) {
		if (!proxy_authorize("$fd", "subscriber")) { proxy_challenge("$fd", "0"); exit; }
		consume_credentials();
	}
	if (is_method("INVITE|SUBSCRIBE")) record_route();
	if (uri==myself) {
		if (!lookup("location")) {
			if (is_subscriber("$ru", "subscriber", "0")) { sl_send_reply("480", "Temporarily Unavailable"); exit; }
			sl_send_reply("404", "Not Found");
			exit;
		}
	}
	route(RELAY);
}

route[RELAY] {
	if (is_method("INVITE")) t_on_reply("REPLY");
	if (!t_relay()) sl_reply_error();
	exit;
}

onreply_route[REPLY] {
	if (proto != UDP && is_present_hf("Contact")) add_contact_alias();
}
"""


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or ("/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)


class KamailioProcess(ServerProcess):
    name = "kamailio"

    def __init__(self, tmp_path: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 below: int | None = None, domains: Iterable[str] = ("example.test",),
                 users: Sequence[tuple[str, str]] = (), **_ignored) -> None:
        super().__init__(tmp_path, host=host, port=port, below=below)
        self.binary = kamailio_binary() or "kamailio"
        db = self.dir / "db"
        db.mkdir()
        (db / "version").write_text("table_name(string) table_version(int)\nsubscriber:7\n")
        lines = ["id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string,null)"]
        for i, (aor, pw) in enumerate(users, 1):
            user, dom = aor.split("@", 1)
            ha1 = hashlib.md5(f"{user}:{dom}:{pw}".encode()).hexdigest()
            lines.append(f"{i}:{user}:{dom}:{pw}:{ha1}:")
        (db / "subscriber").write_text("\n".join(lines) + "\n")
        aliases = "\n".join(f'alias="{d}"' for d in domains)
        cfg = (CFG.replace("@HOST@", host).replace("@PORT@", str(self.port))
               .replace("@DBDIR@", str(db.resolve())).replace("@ALIASES@", aliases))
        self.config_path = self.dir / "kamailio.cfg"
        self.config_path.write_text(cfg)

    def argv(self) -> list[str]:
        return [self.binary, "-DD", "-E", "-f", str(self.config_path), "-m", "64", "-M", "8",
                "-w", str(self.dir), "-Y", str(self.dir)]
