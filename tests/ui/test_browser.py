"""The console in a real browser: Debian's chromium and chromedriver driven by selenium
(SE_OFFLINE: Selenium Manager never downloads anything), against `python -m receiver
serve` in a subprocess (selenium calls block, so the server cannot share this loop).

Sign in, watch a tenant's tile turn open after a webhook without a reload, acknowledge an
incident from its page, write and read the postmortem, and see a form posted without its
CSRF token refused with nothing changed. The same code takes the screenshots of the board
and of an incident page: into docs/ with UPDATE_SCREENSHOTS=1, else into a temporary
folder (so `make test` exercises them without touching the repository).

    UPDATE_SCREENSHOTS=1 pytest tests/ui/test_browser.py
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from demo.probes import http
from receiver import embedded_pg
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN, truncate_all
from tests.integration.helpers import REPO, ServerProcess, firing, server_env

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS = REPO / "docs"
OPERATOR = "dana"
TENANTS = {  # tier, name, hourly cost
    "acme": ("platinum", "Acme Corp", 2400.0),
    "globex": ("gold", "Globex", 900.0),
    "hooli": ("gold", "Hooli", 750.0),
    "initech": ("silver", "Initech", 320.0),
    "stark": ("silver", "Stark Industries", 410.0),
    "umbrella": ("bronze", "Umbrella", 60.0),
    "wayne": ("platinum", "Wayne Enterprises", 1800.0),
    "tyrell": ("bronze", None, None),
}


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    truncate_all(database_url)
    port = embedded_pg.free_port()
    env = server_env(
        database_url,
        port,
        RECEIVER_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        RECEIVER_API_TOKEN=API_TOKEN,
        RECEIVER_MAX_ISOLATED_PERCENT="50",
        RECEIVER_BREAKER_OPEN_SECONDS="600",
        RECEIVER_SWEEP_INTERVAL_SECONDS="0.5",
    )
    proc = ServerProcess(env=env, log_path=tmp_path_factory.mktemp("ui") / "server.log", port=port)
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not _ready(proc.url):
            assert proc.proc is not None and proc.proc.poll() is None, proc.log()
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.1)
        for tenant, (tier, name, cost) in TENANTS.items():
            body = {"tier": tier, "name": name, "hourly_cost": cost}
            reply = api(proc.url, "PUT", f"/v1/tenants/{tenant}", body)
            assert reply.ok, reply
        yield proc.url
    finally:
        proc.stop()


def _ready(url: str) -> bool:
    try:
        return http("GET", f"{url}/readyz").status == 200
    except OSError:
        return False


def api(url: str, method: str, path: str, body: Any = None) -> Any:
    return http(method, url + path, token=API_TOKEN, body=body)


def failing(tenant: str, *, seconds_ago: float = 34.0) -> dict[str, Any]:
    """The tenant's isolating alert, started (pending) `seconds_ago`, as Prometheus would."""
    started = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return firing(tenant, starts_at=started.isoformat(timespec="milliseconds"))


def webhook(url: str, body: Any) -> None:
    reply = http("POST", f"{url}/v1/alertmanager", token=WEBHOOK_TOKEN, body=body)
    assert reply.ok, reply


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(
            f"browser tests need {missing}: apt-get install chromium chromium-driver "
            "fonts-liberation (scripts/system-deps.sh; make test runs it)",
            pytrace=False,
        )
    # Selenium Manager must never reach out for a browser or a driver.
    os.environ["SE_OFFLINE"] = "true"
    os.environ["SE_AVOID_STATS"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--lang=en-GB"):
        options.add_argument(arg)
    options.add_argument("--window-size=1360,900")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, what: str, until: Any, within: float = 10.0) -> Any:
    try:
        return WebDriverWait(
            driver, within, poll_frequency=0.1, ignored_exceptions=(WebDriverException,)
        ).until(until)
    except Exception as exc:
        raise AssertionError(f"{what} (page: {driver.current_url})") from exc


def sign_in(driver: WebDriver, url: str) -> None:
    driver.get(f"{url}/ui/")
    if "/ui/login" not in driver.current_url:
        return
    driver.find_element(By.ID, "token").send_keys(API_TOKEN)
    driver.find_element(By.ID, "name").send_keys(OPERATOR)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver, "the board after signing in", lambda d: d.find_elements(By.ID, "board-live"))


def tile_state(driver: WebDriver, tenant: str) -> str | None:
    """Read in one script: the live board replaces its tiles at any moment (a found
    element would go stale)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const t = document.querySelector(`li.tile[data-tenant='${arguments[0]}']`);"
        "return t ? t.dataset.state : null;",
        tenant,
    )


def tile_text(driver: WebDriver, tenant: str) -> str:
    return driver.execute_script(  # type: ignore[no-any-return]
        "return document.querySelector(`li.tile[data-tenant='${arguments[0]}']`).innerText;",
        tenant,
    )


def open_incident(driver: WebDriver, url: str, tenant: str) -> str:
    (incident,) = api(url, "GET", f"/v1/incidents?tenant={tenant}").body["incidents"]
    driver.get(f"{url}/ui/incidents/{incident['id']}")
    return str(incident["id"])


def test_sign_in_then_a_tile_turns_open_without_a_reload(browser: WebDriver, server: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{server}/ui/incidents")
    assert "/ui/login" in browser.current_url, "an unauthenticated page must ask to sign in"
    sign_in(browser, server)
    browser.get(f"{server}/ui/")
    assert browser.find_element(By.ID, "operator-name").text == OPERATOR
    assert tile_state(browser, "globex") == "closed"
    wait(
        browser,
        "the live stream to connect",
        lambda d: "online" in d.find_element(By.ID, "live-status").get_attribute("class"),
    )
    browser.execute_script("window.notReloaded = true")
    webhook(server, failing("globex"))
    wait(browser, "globex's tile to turn open", lambda d: tile_state(d, "globex") == "open")
    assert browser.execute_script("return window.notReloaded") is True, "the page reloaded"
    text = tile_text(browser, "globex")
    assert "half-open in" in text.lower() and "0 %" in text


def test_acknowledge_an_incident_from_its_page(browser: WebDriver, server: str) -> None:
    sign_in(browser, server)
    webhook(server, failing("initech", seconds_ago=29.0))
    incident_id = open_incident(browser, server, "initech")
    assert "open" in browser.find_element(By.ID, "incident-status").text
    browser.find_element(By.ID, "ack-note").send_keys("looking at the gateway logs")
    browser.find_element(By.ID, "acknowledge").click()
    wait(
        browser,
        "the acknowledged status",
        lambda d: "acknowledged" in d.find_element(By.ID, "incident-status").text,
    )
    assert f"acknowledged by {OPERATOR}" in browser.find_element(By.TAG_NAME, "main").text
    reply = api(server, "GET", f"/v1/incidents/{incident_id}")
    assert (reply.body["status"], reply.body["acknowledged_by"]) == ("acknowledged", OPERATOR)


def test_write_and_read_the_postmortem(browser: WebDriver, server: str) -> None:
    sign_in(browser, server)
    open_incident(browser, server, "initech")
    document = browser.find_element(By.ID, "postmortem-document")
    assert document.find_element(By.TAG_NAME, "h1").text.startswith("Postmortem: INC-")
    fields = {
        "root_cause": "A bad index build made every query of initech time out.",
        "five_whys": "Queries timed out\nThe index was rebuilt at peak\nNo freeze window",
        "action_items": "Freeze index builds at peak | search-team | 2030-01-31",
    }
    for name, text in fields.items():
        browser.find_element(By.ID, name).send_keys(text)
    browser.find_element(By.ID, "save-postmortem").click()
    wait(
        browser,
        "the saved root cause in the document",
        lambda d: "bad index build" in d.find_element(By.ID, "postmortem-document").text,
    )
    text = browser.find_element(By.ID, "postmortem-document").text
    assert "No freeze window" in text and "search-team" in text


def test_a_form_without_its_csrf_token_is_refused(browser: WebDriver, server: str) -> None:
    sign_in(browser, server)
    incident_id = open_incident(browser, server, "initech")
    browser.execute_script("document.querySelector('#resolve-form input[name=csrf]').remove()")
    browser.find_element(By.ID, "resolve").click()
    wait(
        browser,
        "the refusal page",
        lambda d: "Form refused" in d.find_element(By.TAG_NAME, "h1").text,
    )
    assert "nothing was changed" in browser.find_element(By.ID, "error-detail").text
    reply = api(server, "GET", f"/v1/incidents/{incident_id}")
    assert reply.body["status"] == "acknowledged", "the refused form changed the incident"


def _screenshot(driver: WebDriver, path: Path, *, dark: bool = False, most: int = 1800) -> Path:
    """The page at 1360 px wide, as tall as its content (at most `most` px), in light or
    dark mode (prefers-color-scheme emulated)."""
    scheme = "dark" if dark else "light"
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    driver.execute_script("document.documentElement.style.overflow = 'hidden'")
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    metrics = {"width": 1360, "height": min(height, most), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        driver.execute_script("document.documentElement.style.overflow = ''")
    return path


def test_screenshots_of_the_board_and_an_incident(
    browser: WebDriver, server: str, tmp_path: Path
) -> None:
    out = DOCS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(exist_ok=True)
    sign_in(browser, server)
    reply = api(
        server,
        "POST",
        "/v1/tenants/umbrella/breaker",
        {
            "action": "force_open",
            "reason": "abusive batch job, isolate until the call",
            "actor": OPERATOR,
        },
    )
    assert reply.ok, reply
    reply = api(
        server,
        "POST",
        "/v1/tenants/hooli/breaker",
        {"action": "force_close", "reason": "launch day: keep serving", "actor": OPERATOR},
    )
    assert reply.ok, reply
    browser.get(f"{server}/ui/")
    wait(browser, "umbrella forced open", lambda d: tile_state(d, "umbrella") == "forced_open")
    shots = [
        _screenshot(browser, out / "console-board.png"),
        _screenshot(browser, out / "console-board-dark.png", dark=True),
    ]
    open_incident(browser, server, "initech")
    shots.append(_screenshot(browser, out / "console-incident.png"))
    browser.get(f"{server}/ui/analytics?days=7")
    shots.append(_screenshot(browser, out / "console-analytics.png"))
    for path in shots:
        assert path.stat().st_size > 20_000, path
