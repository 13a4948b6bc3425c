"""``sipctl web`` with ``[web] certificate`` and ``private_key``: HTTPS only, a Secure cookie, and
a client that checks the certificate logs in."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers.sipd_proc import SipdProcess

from web.panel_proc import HttpClient, PanelProcess


def test_panel_serves_https_with_a_secure_cookie(tmp_path: Path) -> None:
    from sipctl.lib import cert

    cert.ca_init(tmp_path / "ca", "Panel Test CA", key_type="ec:p256")
    cert.ca_issue(tmp_path / "ca", "panel.example.test", ["127.0.0.1"], cert_out=tmp_path / "web.pem",
                  key_out=tmp_path / "web.key", key_type="ec:p256")
    sipd = SipdProcess(tmp_path)  # not started: the panel needs only its database and config
    sipd.config["web"] = {"certificate": str(tmp_path / "web.pem"), "private_key": str(tmp_path / "web.key")}
    sipd.write_config()
    sipd.provision()
    sipd.sipctl("web", "admin", "add", "ops", "--password-stdin", input="https-secret-1\n")
    panel = PanelProcess(sipd, ca_file=str(tmp_path / "ca" / "ca.pem")).start()
    try:
        client = HttpClient(panel.url, panel.ssl)
        status, html, headers = client.request("/login")
        assert status == 200 and 'name="password"' in html
        cookie = headers.get("set-cookie", "")
        assert "Secure" in cookie and "HttpOnly" in cookie
        assert client.login("ops", "https-secret-1") == 303
        status, html, _ = client.request("/")
        assert status == 200 and "sipd is not running" in html  # the panel says so, and works
        with pytest.raises(OSError):  # plain HTTP is not served (the connection is dropped)
            urllib.request.urlopen(f"http://127.0.0.1:{panel.port}/login", timeout=10)
        with pytest.raises(urllib.error.URLError):  # nor HTTPS to a client that does not trust it
            urllib.request.urlopen(panel.url + "/login", timeout=10, context=ssl.create_default_context())
    finally:
        panel.close()
