"""Fixtures for the panel's browser tests: per test module one real sipd (with accounting and
dialogs on, its defaults), one ``sipctl web`` over it, and one headless Chromium."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import missing
from e2e.security_ua import UA
from helpers.sipd_proc import SipdProcess

from web.panel_proc import CHROMEDRIVER, CHROMIUM, PanelProcess, make_driver

ADMIN, ADMIN_PW = "ops", "panel-secret-1"
VIEWER, VIEWER_PW = "viewer", "panel-secret-2"
HOSTILE_UA = '<script>document.title="owned"</script><b id="hostile">bold</b>'
WAIT = 20.0  # generous bound for any page change on a loaded machine


@pytest.fixture(scope="module")
def shots() -> Path:
    return Path(os.environ.get("SIPD_PANEL_SCREENSHOTS") or tempfile.mkdtemp(prefix="sipd-panel-shots-"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SipdProcess, PanelProcess]]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            missing(f"{path} not installed (Debian packages chromium and chromium-driver; see .ci/run)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing("selenium not installed (pip install -e .[test])")
    # several domains, each its own user space and digest realm (as the panel's users are added)
    sipd = SipdProcess(tmp_path_factory.mktemp("panel"), {"server": {"multidomain": True}},
                       domains=["example.test"],
                       users=[("alice@example.test", "alicepw"), ("bob@example.test", "bobpw")])
    sipd.start()
    sipd.sipctl("web", "admin", "add", ADMIN, "--password-stdin", input=ADMIN_PW + "\n")
    sipd.sipctl("web", "admin", "add", VIEWER, "--role", "read-only", "--password-stdin", input=VIEWER_PW + "\n")
    panel = PanelProcess(sipd).start()
    try:
        yield sipd, panel
    finally:
        panel.close()
        sipd.close()


@pytest.fixture(scope="module")
def browser(stack: tuple[SipdProcess, PanelProcess]) -> Iterator[Any]:
    driver = make_driver()
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(predicate: Any, what: str, timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except StaleElementReferenceException:
            value = None  # found in the old page while the browser replaced it: ask again
        except WebDriverException as exc:
            if "does not belong to the document" not in str(exc):  # the same, in chromedriver's words
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def flashes(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return " | ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".flash"))


def fill(driver: Any, form_selector: str, values: dict[str, str]) -> None:
    """Type into a form's fields and submit it, then wait for the next page."""
    from selenium.webdriver.common.by import By

    form = driver.find_element(By.CSS_SELECTOR, form_selector)
    for name, value in values.items():
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    old = driver.find_element(By.TAG_NAME, "html")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: stale(old), "the next page")


def stale(element: Any) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        # asked while the old document is being replaced, chromedriver may answer with an
        # inspector error instead of "stale element": the page is gone all the same
        if "does not belong to the document" in str(exc):
            return True
        raise


def logged_in(driver: Any, panel: PanelProcess) -> None:
    driver.get(panel.url + "/")
    if driver.current_url.endswith("/login"):
        fill(driver, "form[action='/login']", {"username": ADMIN, "password": ADMIN_PW})
    assert driver.current_url == panel.url + "/", flashes(driver)


def add_domain(driver: Any, panel: PanelProcess, domain: str) -> None:
    driver.get(panel.url + "/domains")
    fill(driver, "form[action='/domains/add']", {"domain": domain})


def register(sipd: SipdProcess, user: str, password: str, domain: str, user_agent: str = "panel-test/1") -> int:
    with UA(("127.0.0.1", sipd.udp_port), user_agent=user_agent) as ua:
        reply = ua.register(user, password, domain, expires=300, timeout=10.0)
    return reply.status if reply else 0


