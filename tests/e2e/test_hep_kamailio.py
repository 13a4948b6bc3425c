"""sipd's HEPv3 codec against a real implementation: Kamailio's siptrace module sends a traced
OPTIONS as HEPv3 to a collector socket; sipd.hep decodes every field, and encoding the decoded
packet gives back Kamailio's bytes exactly (same chunks, same order, same lengths)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from conftest import free_port, require_tool
from sipd import hep

pytestmark = pytest.mark.e2e

CFG = """#!KAMAILIO
debug=2
log_stderror=yes
fork=no
children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "siptrace.so"
modparam("siptrace", "duplicate_uri", "sip:127.0.0.1:{collector}")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", 3)
modparam("siptrace", "hep_capture_id", 77)
modparam("siptrace", "trace_to_database", 0)
modparam("siptrace", "trace_on", 1)
request_route {{
  sip_trace();
  sl_send_reply("200", "OK");
}}
"""


def test_kamailio_siptrace_packet_decodes_and_reencodes_identically(tmp_path):
    kamailio = require_tool("kamailio")
    port, collector = free_port(), free_port()
    coll = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    coll.bind(("127.0.0.1", collector))
    coll.settimeout(10)
    (tmp_path / "k.cfg").write_text(CFG.format(port=port, collector=collector))
    log = open(tmp_path / "k.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([kamailio, "-f", str(tmp_path / "k.cfg"), "-P", str(tmp_path / "k.pid"), "-Y", str(tmp_path),
                             "-w", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT)
    ua = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ua.bind(("127.0.0.1", 0))
    ua.settimeout(1)
    ua_port = ua.getsockname()[1]
    options = (f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{ua_port};branch=z9hG4bKhep1\r\n"
               "From: <sip:probe@example.test>;tag=1\r\nTo: <sip:ping@example.test>\r\nCall-ID: hep-interop-1\r\n"
               "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    try:
        answered = False
        for _ in range(30):  # until Kamailio is up (bounded: 30 tries of 1 s)
            ua.sendto(options, ("127.0.0.1", port))
            try:
                answered = ua.recv(4096).startswith(b"SIP/2.0 200")
                break
            except TimeoutError:
                if proc.poll() is not None:
                    break
        assert answered, (tmp_path / "k.log").read_text(errors="replace")[-2000:]
        raw = coll.recv(65535)
    finally:
        ua.close()
        coll.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
    p = hep.decode(raw)
    assert (p.capture_id, p.ip_proto, p.proto_type) == (77, hep.PROTO_UDP, hep.PROTO_TYPE_SIP)
    assert (p.src_ip, p.src_port, p.dst_ip, p.dst_port) == ("127.0.0.1", ua_port, "127.0.0.1", port)
    assert abs(p.time - time.time()) < 120
    assert p.payload.startswith(b"OPTIONS sip:ping@") and b"Call-ID: hep-interop-1" in p.payload
    assert hep.encode(p) == raw
