"""The console in a real browser (headless Chromium through Selenium).

Seeds a helpdesk through the API, then walks what an auditor does: sign in,
open the audit log, filter by one agent and one action and see exactly the
rows the API's search returns, export CSV with the same filter, open a
ticket from a row and read its conversation, sign out. Takes the
screenshots shown in the README when SCREENSHOT_DIR is set.

    python3 scripts/browser_test.py BASE_URL ADMIN_EMAIL ADMIN_PASSWORD
"""
import csv
import io
import os
import sys
import time
import urllib.parse

import requests
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, ADMIN_EMAIL, ADMIN_PASSWORD = sys.argv[1:4]
API = BASE + "/api/v1"
SHOTS = os.environ.get("SCREENSHOT_DIR")
AUDITOR_EMAIL, AUDITOR_PASSWORD = "auditor@example.com", "auditor-password-1"


def api(token, method, path, **kw):
    r = requests.request(method, API + path, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kw)
    if r.status_code >= 400:
        raise SystemExit(f"{method} {path}: {r.status_code} {r.text}")
    return r


def login(email, password):
    r = requests.post(API + "/auth/login", json={"email": email, "password": password}, timeout=30)
    r.raise_for_status()
    return r.json()["token"]


def seed():
    admin = login(ADMIN_EMAIL, ADMIN_PASSWORD)
    dept = api(admin, "POST", "/departments", json={"name": "Billing"}).json()["id"]
    people = {}
    for name, email, role in [
        ("Ada Lindqvist", "ada@example.com", "agent"),
        ("Ben Okafor", "ben@example.com", "agent"),
        ("Audra Quinn", AUDITOR_EMAIL, "auditor"),
    ]:
        password = AUDITOR_PASSWORD if role == "auditor" else f"{email}-password"
        body = {"name": name, "email": email, "role": role, "password": password}
        if role == "agent":
            body["department_id"] = dept
        people[email] = {"id": api(admin, "POST", "/users", json=body).json()["id"], "password": password}
    ada = login("ada@example.com", people["ada@example.com"]["password"])
    ben = login("ben@example.com", people["ben@example.com"]["password"])
    tickets = []
    for token, subject, who in [
        (ada, "Refund for order 1042", "Ada"),
        (ada, "<script>alert(1)</script> cannot log in", "Ada"),
        (ben, "Invoice address is wrong", "Ben"),
    ]:
        t = api(token, "POST", "/tickets", json={
            "subject": subject,
            "body": f"Hello, this is the customer about: {subject}",
            "channel": "email",
            "requester": {"name": "Carla Customer", "email": "carla@example.net"},
        }).json()
        api(token, "POST", f"/tickets/{t['id']}/messages", json={"body": f"{who} here: we are on it."})
        api(token, "POST", f"/tickets/{t['id']}/notes", json={"body": f"Internal: {who} checked the order."})
        tickets.append(t["id"])
    return people, tickets


def wait(driver, cond, timeout=20):
    return WebDriverWait(driver, timeout).until(cond)


def main():
    people, tickets = seed()
    ada_id = people["ada@example.com"]["id"]
    action = "ticket.message_added"  # adjusted to the catalogue below
    auditor = login(AUDITOR_EMAIL, AUDITOR_PASSWORD)
    catalogue = api(auditor, "GET", "/audit/actions").json()["items"]
    codes = {c["code"] for c in catalogue}
    assert action in codes, f"{action} not in the catalogue: {sorted(codes)}"
    # What the API finds for the same filter: the rows the page must show.
    time.sleep(1)
    expected = api(auditor, "GET", "/audit", params={"actor": ada_id, "action": action, "limit": 500}).json()["items"]
    # Ada replied on her two tickets: at least those two rows.
    assert len(expected) >= 2, expected

    opts = Options()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000"]:
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts)
    try:
        run(driver, people, tickets, ada_id, action, expected)
    except Exception:
        driver.save_screenshot("/tmp/browser-test-failure.png")
        print("page at failure:", driver.current_url, file=sys.stderr)
        print(driver.page_source[:4000], file=sys.stderr)
        raise
    finally:
        driver.quit()
    print("browser test: ok")


def by(testid):
    return (By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def shot(driver, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        driver.save_screenshot(os.path.join(SHOTS, name))


def run(driver, people, tickets, ada_id, action, expected):
    # Signed out, the console sends a visitor to the sign-in page.
    driver.get(BASE + "/")
    wait(driver, EC.presence_of_element_located(by("login-form")))
    driver.find_element(*by("login-email")).send_keys(AUDITOR_EMAIL)
    driver.find_element(*by("login-password")).send_keys(AUDITOR_PASSWORD)
    driver.find_element(*by("login-submit")).click()
    wait(driver, EC.presence_of_element_located(by("sign-out")))
    assert "Audra Quinn" in driver.find_element(*by("signed-in-as")).text

    # The audit log, filtered by one agent and one action.
    driver.get(BASE + "/console/audit")
    wait(driver, EC.presence_of_element_located(by("audit-filter")))
    Select(driver.find_element(*by("filter-actor"))).select_by_value(ada_id)
    actions = Select(driver.find_element(*by("filter-action")))
    for selected in actions.all_selected_options:
        actions.deselect_by_value(selected.get_attribute("value"))
    actions.select_by_value(action)
    driver.find_element(*by("audit-search")).click()
    wait(driver, lambda d: "actor=" in d.current_url)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(driver.current_url).query)
    assert query.get("actor") == [ada_id] and query.get("action") == [action], driver.current_url
    rows = driver.find_elements(*by("audit-row"))
    shown = [int(r.get_attribute("data-position")) for r in rows]
    assert shown == [e["position"] for e in expected], (shown, [e["position"] for e in expected])
    assert all(r.get_attribute("data-action") == action for r in rows)
    assert all(r.find_element(*by("audit-agent")).text == "Ada Lindqvist" for r in rows)
    shot(driver, "console-audit-log.png")

    # Export CSV with the filters on screen: the same rows as the API's export.
    href = driver.find_element(*by("export-csv")).get_attribute("href")
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    got = requests.get(href, cookies=cookies, headers={"Origin": BASE}, timeout=30)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv"), (got.status_code, got.text[:300])
    auditor = login(AUDITOR_EMAIL, AUDITOR_PASSWORD)
    want = api(auditor, "GET", "/audit", params={"actor": ada_id, "action": action, "format": "csv"})
    # The export starts with a byte-order mark for spreadsheets.
    got_rows = list(csv.DictReader(io.StringIO(got.content.decode("utf-8-sig"))))
    want_rows = list(csv.DictReader(io.StringIO(want.content.decode("utf-8-sig"))))
    assert [r["position"] for r in got_rows] == [r["position"] for r in want_rows], (got.text[:500], want.text[:500])
    assert len(got_rows) == len(expected)

    # Open the ticket from a row and read its conversation.
    link = driver.find_elements(*by("audit-row"))[-1].find_element(*by("audit-ticket-link"))
    ticket_id = link.get_attribute("title")
    link.click()
    wait(driver, EC.presence_of_element_located(by("conversation")))
    assert ticket_id in driver.current_url
    subject = driver.find_element(*by("ticket-subject")).text
    assert subject == "Refund for order 1042", subject
    bodies = [b.text for b in driver.find_elements(*by("conversation-body"))]
    assert "Ada here: we are on it." in bodies, bodies
    assert "Internal: Ada checked the order." in bodies, bodies
    shot(driver, "console-ticket.png")

    # A subject with markup is shown as text, never run.
    driver.get(BASE + f"/console/tickets/{tickets[1]}")
    wait(driver, EC.presence_of_element_located(by("ticket-subject")))
    assert driver.find_element(*by("ticket-subject")).text.startswith("<script>alert(1)</script>")

    # Sign out: the session is gone, the console asks to sign in again.
    driver.find_element(*by("sign-out")).click()
    wait(driver, EC.presence_of_element_located(by("login-form")))
    driver.get(BASE + "/console/audit")
    wait(driver, EC.presence_of_element_located(by("login-form")))
    stale = requests.get(BASE + "/console/audit", cookies=cookies, allow_redirects=False, timeout=30)
    assert stale.status_code in (302, 303), stale.status_code


if __name__ == "__main__":
    main()
