"""A real ``sipctl web`` process beside a real sipd, and a headless Chromium to drive it.

The panel runs as ``python -m sipctl --config FILE web --listen 127.0.0.1:PORT`` with sipd's own
configuration (same database, same management socket), exactly as an operator starts it. It is
ended by its PID. The browser is Debian's chromium through Debian's chromedriver: nothing is
downloaded at run time.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from helpers.sipd_proc import REPO, SipdProcess, _end_pid

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
READY_TIMEOUT = 30.0


class PanelProcess:
    def __init__(self, sipd: SipdProcess, *, ca_file: str | None = None) -> None:
        """``ca_file``: the panel serves HTTPS ([web] certificate in sipd's config), trusted by this CA."""
        import ssl

        from conftest import free_port

        self.sipd = sipd
        self.port = free_port("tcp")
        self.url = f"{'https' if ca_file else 'http'}://127.0.0.1:{self.port}"
        self.ssl = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.log_path = sipd.dir / "panel.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> PanelProcess:
        cmd = [sys.executable, "-m", "sipctl", "--config", str(self.sipd.config_path), "web",
               "--listen", f"127.0.0.1:{self.port}"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.sipd.dir, env=self.sipd.env(), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sipctl web exited (rc={self.proc.returncode}):\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=2, context=self.ssl) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"sipctl web did not answer within {READY_TIMEOUT}s:\n{self.log_text()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        if self.proc is not None:
            _end_pid(self.proc, 10)
            self._log.close()
        assert "Traceback" not in self.log_text(), f"the panel logged a traceback:\n{self.log_text()}"


class HttpClient:
    """A cookie-keeping HTTP client for what a browser cannot do (forged and replayed posts)."""

    def __init__(self, base: str, context: Any = None) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  urllib.request.HTTPSHandler(context=context), _NoRedirect())

    def request(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(self.base + path, body, timeout=20) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    def csrf(self, path: str) -> str:
        _, html, _ = self.request(path)
        m = re.search(r'name="csrf" value="([^"]+)"', html)
        assert m, f"no CSRF token on {path}"
        return m.group(1)

    def login(self, username: str, password: str) -> int:
        token = self.csrf("/login")
        status, _, _ = self.request("/login", {"csrf": token, "username": username, "password": password})
        return status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def make_driver() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    service = Service(CHROMEDRIVER, log_output=os.devnull)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


def screenshot(driver: Any, folder: Path, name: str) -> None:
    """Keep a picture of the page; never fail the test for it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(folder / f"{name}.png"))
    except Exception:  # noqa: BLE001 - a screenshot is a keepsake, not a check
        pass


__all__ = ["REPO", "HttpClient", "PanelProcess", "make_driver", "screenshot"]
