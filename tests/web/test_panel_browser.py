"""The control panel in a real headless browser, against a real sipd and its database.

One sipd, one ``sipctl web`` and one Chromium serve the whole module (starting them is most of the
cost). Each test stands on its own (logs in when it has to, adds the domain it needs through the
panel), so the tests also pass when xdist spreads them over processes.
A screenshot of each page is kept in $SIPD_PANEL_SCREENSHOTS (default: a temporary folder).
"""

from __future__ import annotations

import pytest
from e2e.security_ua import UA

from web.conftest import (
    ADMIN,
    ADMIN_PW,
    HOSTILE_UA,
    VIEWER,
    VIEWER_PW,
    WAIT,
    add_domain,
    fill,
    flashes,
    logged_in,
    register,
    stale,
    wait_for,
)
from web.panel_proc import HttpClient, screenshot

pytestmark = pytest.mark.e2e


def test_login_form_refuses_a_wrong_password_then_shows_the_menu(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    browser.delete_all_cookies()
    browser.get(panel.url + "/")
    assert browser.current_url.endswith("/login")
    assert browser.find_element(By.NAME, "username") and browser.find_element(By.NAME, "password")
    screenshot(browser, shots, "login")
    fill(browser, "form[action='/login']", {"username": ADMIN, "password": "not-the-password"})
    assert "wrong name or password" in flashes(browser)
    fill(browser, "form[action='/login']", {"username": ADMIN, "password": ADMIN_PW})
    assert browser.current_url == panel.url + "/"
    links = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "header nav a")]
    for name in ("Domains", "Users", "Aliases", "Dialplan", "CDR Viewer", "Dialog", "Statistics Monitor",
                 "MI Commands", "SIP Trace", "Audit"):
        assert name in links
    assert "sipd is running" in flashes(browser)
    assert "the running daemon is" not in flashes(browser)  # same version: no skew warning
    screenshot(browser, shots, "dashboard")


def test_a_domain_added_in_the_panel_is_served_at_once(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    # not local yet: sipd refuses a registration for it
    sipd.sipctl("user", "add", "--force", "dora@panel.test", "dora-pw-1")
    assert register(sipd, "dora", "dora-pw-1", "panel.test") == 403
    logged_in(browser, panel)
    add_domain(browser, panel, "Panel.Test")
    assert "domain panel.test added" in flashes(browser)
    assert "not running" not in flashes(browser)
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "tbody td:first-child")]
    assert "panel.test" in cells
    # sipd serves it without a restart or an "Apply" step
    assert register(sipd, "dora", "dora-pw-1", "panel.test") == 200
    screenshot(browser, shots, "domains")
    fill(browser, "form[action='/domains/add']", {"domain": "bad domain!"})
    assert "not a valid domain" in flashes(browser)


def test_a_user_with_an_alias_added_in_the_panel_registers(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    logged_in(browser, panel)
    add_domain(browser, panel, "users.test")
    browser.get(panel.url + "/users")
    fill(browser, "#add-user", {"aor": "carol@users.test", "password": "carol-pw-9", "alias": "2001"})
    shown = flashes(browser)
    assert "user carol@users.test added" in shown and "alias 2001@users.test -> carol@users.test added" in shown
    assert "sipd reloaded" in shown
    # the registrar knows the new user at once (no reload step): a digest REGISTER succeeds,
    # and a call to the alias reaches the registered device
    with UA(("127.0.0.1", sipd.udp_port), user_agent=HOSTILE_UA) as carol, \
            UA(("127.0.0.1", sipd.udp_port)) as caller:
        reply = carol.register("carol", "carol-pw-9", "users.test", expires=300, timeout=10.0)
        assert reply is not None and reply.status == 200
        caller.send(caller._request("INVITE", "sip:2001@users.test", "sip:someone@outside.example",
                                    "sip:2001@users.test")[0])
        assert carol.answer_incoming(WAIT) == f"sip:carol@127.0.0.1:{carol.port}"
    stored = sipd.sipctl("user", "show", "carol@users.test", "--json").stdout
    assert "carol-pw-9" not in stored  # HA1 only
    fill(browser, "form[action='/users'][method='get']", {"user": "car", "domain": "", "alias": "2001"})
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == ["carol"]
    screenshot(browser, shots, "users")
    rows[0].find_element(By.TAG_NAME, "a").click()
    ua_cell = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "td.ua"), "the live registration")[0]
    # the hostile User-Agent is shown as text: no element made from it, no script run
    assert ua_cell.text == HOSTILE_UA
    assert not browser.find_elements(By.ID, "hostile")
    assert browser.title != "owned"
    assert "UDP" in browser.page_source
    screenshot(browser, shots, "user")
    browser.get(panel.url + "/aliases")
    assert "2001@users.test" in browser.page_source
    fill(browser, "#search-aliases", {"alias": "200", "user": "carol", "domain": "users."})
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == ["2001@users.test"]
    fill(browser, "#search-aliases", {"alias": "2001", "user": "nobody", "domain": ""})
    assert "No aliases found." in browser.find_element(By.TAG_NAME, "tbody").text
    screenshot(browser, shots, "aliases")


def test_baresip_registers_as_a_user_added_in_the_panel_and_is_called_by_its_alias(stack, browser, tmp_path):
    """Real clients: baresip registers with the password typed into the panel's form, and a second
    baresip reaches it by the alias added in the same form, with no reload step in between."""
    from conftest import require_tool
    from helpers.baresip import BaresipUA

    require_tool("baresip")
    sipd, panel = stack
    logged_in(browser, panel)
    add_domain(browser, panel, "rooms.test")
    for aor, password, alias in (("ex90@rooms.test", "ex90-pw-77", "1247"), ("sx20@rooms.test", "sx20-pw-77", "")):
        browser.get(panel.url + "/users")
        fill(browser, "#add-user", {"aor": aor, "password": password, "alias": alias})
        assert f"user {aor} added" in flashes(browser)
    proxy = f"127.0.0.1:{sipd.udp_port}"
    callee = BaresipUA(tmp_path, "ex90", "ex90-pw-77", domain="rooms.test", proxy=proxy, answer="manual")
    caller = BaresipUA(tmp_path, "sx20", "sx20-pw-77", domain="rooms.test", proxy=proxy)
    try:
        for ua in (callee.start(), caller.start()):
            assert ua.wait_registered(10) == "OK", f"{ua.user}: {ua.log_text()[-1500:]}"
        caller.dial("sip:1247@rooms.test")
        assert callee.wait_event({"CALL_INCOMING"}, 10) is not None, caller.log_text()[-1500:]
        caller.hangup()
        assert caller.wait_event({"CALL_CLOSED"}, 10) is not None
    finally:
        caller.stop()
        callee.stop()


def test_online_only_shows_the_users_the_registrar_has(stack, browser):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    logged_in(browser, panel)
    assert register(sipd, "alice", "alicepw", "example.test") == 200  # bob is a user, never registered
    browser.get(panel.url + "/users?user=&domain=example.test")
    listed = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tbody tr a")]
    assert "alice" in listed and "bob" in listed
    browser.find_element(By.ID, "online").click()
    browser.find_element(By.CSS_SELECTOR, "form[action='/users'][method='get'] button").click()
    wait_for(lambda: "online" in browser.find_element(By.ID, "user-count").text, "the online-only search")
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tbody tr a")] == ["alice"]
    assert browser.find_element(By.ID, "online").is_selected()  # the filter stays on for the next page


def test_dialplan_checks_the_regex_and_translates_a_number(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    logged_in(browser, panel)
    browser.get(panel.url + "/dialplan")
    fill(browser, "#translate", {"dpid": "1", "number": "0047123"})
    assert "no rule matches" in browser.find_element(By.ID, "translation").text
    fill(browser, "#add-rule", {"match_exp": "^00([0-9]+$"})
    assert "invalid rule" in flashes(browser)
    fill(browser, "#add-rule", {"match_exp": "^00([0-9]+)$", "subst_exp": "^00([0-9]+)$", "repl_exp": "+\\1"})
    assert "added to dialplan 1" in flashes(browser)
    # the translate box kept its number: the result after the change
    assert "becomes +47123" in browser.find_element(By.ID, "translation").text
    # edit the rule: the number now loses its 00 without the +
    browser.find_element(By.LINK_TEXT, "Edit").click()
    wait_for(lambda: browser.find_elements(By.ID, "edit-rule"), "the rule's edit form")
    fill(browser, "#edit-rule", {"repl_exp": "\\1"})
    assert "changed" in flashes(browser)
    assert "becomes 47123" in browser.find_element(By.ID, "translation").text
    # and the running sipd has the edited rule too
    assert '"47123"' in sipd.sipctl("mi", "dp_translate", "1", "0047123").stdout
    screenshot(browser, shots, "dialplan")


def test_every_menu_page_renders(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    logged_in(browser, panel)
    hrefs = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "header nav a")]
    for href in hrefs:
        browser.get(href)
        assert browser.find_element(By.TAG_NAME, "h1").text
        assert "Traceback" not in browser.page_source
        screenshot(browser, shots, "page-" + (href.rstrip("/").rsplit("/", 1)[-1] or "home"))


def test_read_only_admin_csrf_and_lockout(stack):
    sipd, panel = stack
    viewer = HttpClient(panel.url)
    assert viewer.login(VIEWER, VIEWER_PW) == 303
    status, html, _ = viewer.request("/domains")
    assert status == 200 and "/domains/add" not in html  # no form offered
    token = viewer.csrf("/domains")
    status, html, _ = viewer.request("/domains/add", {"csrf": token, "domain": "ro.test"})
    assert status == 403 and "read-only" in html
    ops = HttpClient(panel.url)
    assert ops.login(ADMIN, ADMIN_PW) == 303
    status, _, _ = ops.request("/domains/add", {"csrf": "forged", "domain": "forged.test"})
    assert status == 403
    assert "forged.test" not in sipd.sipctl("domain", "list", "--json").stdout
    # the session cookie cannot be read by scripts nor sent cross-site
    _, _, headers = HttpClient(panel.url).request("/login")
    cookie = headers.get("set-cookie", "")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    # repeated failures lock the account, even against the right password afterwards
    sipd.sipctl("web", "admin", "add", "victim", "--password-stdin", input="victim-pw-1\n")
    attacker = HttpClient(panel.url)
    for _ in range(5):
        assert attacker.login("victim", "guess-guess") == 401
    assert attacker.login("victim", "victim-pw-1") == 401
    status, html, _ = attacker.request("/login")
    assert '"locked": true' in sipd.sipctl("web", "admin", "list", "--json").stdout
    sipd.sipctl("web", "admin", "passwd", "victim", "--password-stdin", input="victim-pw-2\n")
    assert attacker.login("victim", "victim-pw-2") == 303


def test_audit_log_shows_who_changed_what_from_the_panel_and_sipctl(stack, browser, shots):
    import json

    from selenium.webdriver.common.by import By

    sipd, panel = stack
    logged_in(browser, panel)
    add_domain(browser, panel, "audit.test")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr") if "audit.test" in r.text)
    old = browser.find_element(By.TAG_NAME, "html")
    row.find_element(By.CSS_SELECTOR, "button.danger").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: stale(old), "the page after the removal")
    assert "domain audit.test removed" in flashes(browser)
    sipd.sipctl("alias", "add", "--force", "7001@example.test", "alice@example.test")
    browser.get(panel.url + "/audit")
    text = browser.find_element(By.ID, "audit").text
    assert "domain rm" in text and "domain add" in text and "alias add" in text
    assert "ops" in text and "panel" in text and "sipctl" in text
    screenshot(browser, shots, "audit")
    entries = json.loads(sipd.sipctl("audit", "list", "--json").stdout)
    removed = next(e for e in entries if e["action"] == "domain rm")
    assert removed["actor"] == ADMIN and removed["origin"] == "panel" and removed["object"] == "audit.test"
    assert json.loads(removed["value_before"])["domain"] == "audit.test" and removed["value_after"] is None
    added = next(e for e in entries if e["action"] == "alias add")
    assert added["origin"] == "sipctl" and added["object"] == "7001@example.test"



def test_password_change_and_removal_reach_the_registrar(stack, browser, shots):
    from selenium.webdriver.common.by import By

    sipd, panel = stack
    logged_in(browser, panel)
    add_domain(browser, panel, "pw.test")
    browser.get(panel.url + "/users")
    fill(browser, "#add-user", {"aor": "erin@pw.test", "password": "erin-old-pw", "alias": ""})
    assert register(sipd, "erin", "erin-old-pw", "pw.test") == 200
    browser.get(panel.url + "/users/erin@pw.test")
    fill(browser, "form[action$='/passwd']", {"password": "erin-new-pw"})
    assert "password of erin@pw.test changed" in flashes(browser)
    assert register(sipd, "erin", "erin-old-pw", "pw.test") in (401, 403)
    assert register(sipd, "erin", "erin-new-pw", "pw.test") == 200
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, "form[action$='/rm'] button").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: stale(old), "the page after the removal")
    assert "user erin@pw.test removed" in flashes(browser)
    assert register(sipd, "erin", "erin-new-pw", "pw.test") in (401, 403, 404)
