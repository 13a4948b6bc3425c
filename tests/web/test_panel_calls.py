"""The panel's call pages in a real headless browser, with real calls through a real sipd:
the CDR Viewer finds a finished call and exports it, Stop Call ends a live one (both sides get a
BYE), the Statistics Monitor draws the history that ``sipctl stats collect`` keeps, and MI Commands
runs a command (and refuses a state-changing one to a read-only admin)."""

from __future__ import annotations

import csv
import io
import time

import pytest
from e2e.test_acc import Call

from tests.daemon.harness import UA
from web.conftest import (
    ADMIN,
    ADMIN_PW,
    VIEWER,
    VIEWER_PW,
    WAIT,
    fill,
    flashes,
    logged_in,
    wait_for,
)
from web.panel_proc import HttpClient, screenshot

pytestmark = pytest.mark.e2e


def phones(sipd):
    alice = UA(sipd.udp_port, "alice", password="alicepw")
    bob = UA(sipd.udp_port, "bob", password="bobpw")
    assert bob.register(300).status == 200
    return alice, bob


def reload_until(browser, url: str, predicate, what: str):
    def check():
        browser.get(url)
        return predicate()

    return wait_for(check, what)


def test_cdr_viewer_finds_a_real_call_and_exports_it(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    alice, bob = phones(sipd)
    with alice, bob:
        Call(alice, bob, "panel-cdr-1").ring().answer().hangup()
    logged_in(browser, panel)
    reload_until(browser, panel.url + "/cdr?callid=panel-cdr-1",
                 lambda: "panel-cdr-1" in browser.find_element(By.ID, "results").text, "the call's CDR")
    browser.get(panel.url + "/cdr")
    fill(browser, "#search", {"caller": "alice", "callee": "bob", "callid": "panel-cdr-1"})
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == 1 and "answered" in rows[0].text
    screenshot(browser, shots, "cdr")
    rows[0].find_element(By.TAG_NAME, "a").click()
    wait_for(lambda: "Accounting records" in browser.page_source, "the call's details")
    assert "INVITE" in browser.page_source and "BYE" in browser.page_source
    screenshot(browser, shots, "cdr-details")
    # the export link of that search gives exactly that call as CSV
    browser.get(panel.url + "/cdr?callid=panel-cdr-1")
    href = browser.find_element(By.ID, "export").get_attribute("href")
    client = HttpClient(panel.url)
    assert client.login(ADMIN, ADMIN_PW) == 303
    status, text, headers = client.request(href[len(panel.url):])
    assert status == 200 and headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["callid"] for r in rows] == ["panel-cdr-1"] and rows[0]["status"] == "answered"
    # a search that is not a date is a message, not a broken download
    status, html, _ = client.request("/cdr/export.csv?since=yesterday-ish")
    assert status == 200 and "not a date" in html


def test_stop_call_ends_a_live_call_with_a_bye_to_both_sides(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    alice, bob = phones(sipd)
    with alice, bob:
        Call(alice, bob, "panel-stop-1").ring().answer()
        logged_in(browser, panel)
        row = reload_until(browser, panel.url + "/dialog",
                           lambda: [r for r in browser.find_elements(By.CSS_SELECTOR, "#dialogs tbody tr")
                                    if "panel-stop-1" in r.text], "the live call")[0]
        assert "confirmed" in row.text
        screenshot(browser, shots, "dialog")
        row.find_element(By.CSS_SELECTOR, "button.stop").click()
        wait_for(lambda: _accept_alert(browser), "the confirmation")
        bye_a = alice.expect_request("BYE", timeout=WAIT)
        bye_b = bob.expect_request("BYE", timeout=WAIT)
        alice.respond(bye_a, 200)
        bob.respond(bye_b, 200)
    wait_for(lambda: "stopped" in flashes(browser), "the page after Stop Call")


def _accept_alert(browser) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        browser.switch_to.alert.accept()
        return True
    except NoAlertPresentException:
        return False


def test_statistics_monitor_draws_the_collected_history(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    for _ in range(2):
        sipd.sipctl("stats", "collect")
        time.sleep(1.1)  # two samples a second apart: a line, not a point
    logged_in(browser, panel)
    browser.get(panel.url + "/stats?name=core%3Arcv_requests&since=1h")
    line = browser.find_element(By.CSS_SELECTOR, "#chart svg polyline")
    assert len(line.get_attribute("points").split()) >= 2
    assert "rcv_requests" in browser.find_element(By.CSS_SELECTOR, ".groups").text
    screenshot(browser, shots, "stats")


def test_mi_commands_run_and_read_only_admins_are_limited(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    logged_in(browser, panel)
    browser.get(panel.url + "/mi")
    browser.find_element(By.LINK_TEXT, "uptime").click()
    wait_for(lambda: browser.find_elements(By.ID, "run"), "the uptime form")
    fill(browser, "#run", {})
    assert "Up time" in browser.find_element(By.ID, "mi-result").text
    screenshot(browser, shots, "mi")
    viewer = HttpClient(panel.url)
    assert viewer.login(VIEWER, VIEWER_PW) == 303
    token = viewer.csrf("/mi")
    status, html, _ = viewer.request("/mi", {"csrf": token, "command": "reset_all_statistics", "params": ""})
    assert status == 403
    status, html, _ = viewer.request("/mi", {"csrf": token, "command": "version", "params": ""})
    assert status == 200 and "sipd" in html


def test_bans_are_added_and_lifted(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    logged_in(browser, panel)
    browser.get(panel.url + "/bans")
    fill(browser, "#add-ban", {"ip": "192.0.2.7", "seconds": "600"})
    assert "192.0.2.7 banned for 600 s" in flashes(browser)
    assert "192.0.2.7" in sipd.sipctl("ban", "list", "--json").stdout
    screenshot(browser, shots, "bans")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#bans tbody tr") if "192.0.2.7" in r.text)
    row.find_element(By.CSS_SELECTOR, "button.danger").click()
    wait_for(lambda: _accept_alert(browser), "the confirmation")
    wait_for(lambda: "lifted" in flashes(browser), "the page after lifting the ban")
    assert "192.0.2.7" not in sipd.sipctl("ban", "list", "--json").stdout
    fill(browser, "#add-ban", {"ip": "not-an-address", "seconds": "600"})
    assert "not-an-address" in flashes(browser)


def test_sip_trace_captures_a_registration_and_downloads_it_as_pcap(stack, browser, shots):
    import threading
    import urllib.request

    from selenium.webdriver.common.by import By

    sipd, panel = stack
    logged_in(browser, panel)
    browser.get(panel.url + "/trace")
    stop = threading.Event()

    def registrations() -> None:  # bounded: at most 40 REGISTERs while the capture runs
        for _ in range(40):
            if stop.wait(0.5):
                return
            with UA(sipd.udp_port, "alice", password="alicepw") as alice:
                alice.register(300)

    sender = threading.Thread(target=registrations, daemon=True)
    sender.start()
    try:
        fill(browser, "#capture", {"user": "alice", "method": "REGISTER", "seconds": "4"})
    finally:
        stop.set()
        sender.join(timeout=30)
    captured = browser.find_element(By.ID, "captured").text
    assert "message(s)" in captured and not captured.startswith("0 ")
    # each call a ladder: the client's lifeline left of sipd's, REGISTER drawn towards sipd, 200 back
    ladder = browser.find_elements(By.CSS_SELECTOR, "svg.ladder")[-1]
    lanes = [t.text for t in ladder.find_elements(By.CSS_SELECTOR, "text.lane")]
    assert len(lanes) == 2 and lanes[1] == "sipd" and lanes[0].startswith("127.0.0.1:"), lanes
    arrows = [(g.find_element(By.CSS_SELECTOR, "text.label").text, g.find_element(By.TAG_NAME, "line"))
              for g in ladder.find_elements(By.CSS_SELECTOR, "g.msg")]
    x = {label: (float(line.get_attribute("x1")), float(line.get_attribute("x2"))) for label, line in arrows}
    assert x["REGISTER"][0] < x["REGISTER"][1] and x["200 OK"][0] > x["200 OK"][1], x
    summaries = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "ol.messages summary")]
    assert any("REGISTER sip:" in s for s in summaries) and any("SIP/2.0 200" in s for s in summaries)
    screenshot(browser, shots, "trace")
    href = browser.find_element(By.ID, "pcap").get_attribute("href")
    cookie = browser.get_cookie("sipd_panel")["value"]
    request = urllib.request.Request(href, headers={"Cookie": f"sipd_panel={cookie}"})
    with urllib.request.urlopen(request, timeout=20) as r:
        data = r.read()
    assert data[:4] == bytes.fromhex("d4c3b2a1") and b"REGISTER sip:" in data  # pcap, little-endian
