"""The jobs panel in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium),
against a real server process: what an administrator sees and does, end to end.

Waits are on page conditions (WebDriverWait re-checks the DOM) or on events recorded in the page by a
MutationObserver, never fixed sleeps. Set XCRON_UPDATE_SCREENSHOT=1 to refresh docs/panel.png."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import pytest
from requires import require
from server_process import ServerProcess

from xcron.client import Client, DayOfWeek, ExecutionState, Schedule
from xcron.server.api.auth import hash_token

ServerFactory = Callable[..., ServerProcess]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.chrome.webdriver import WebDriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - selenium is a dev dependency
    webdriver = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    require(webdriver is not None, "the selenium package (pip install -e '.[dev]')")
    require(CHROMIUM.exists() and CHROMEDRIVER.exists(), "Debian's chromium and chromium-driver packages")
    profile = tempfile.mkdtemp(prefix="xcron-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER), env={**os.environ, "TZ": "UTC"})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def http_server(server_factory: ServerFactory, *extra: str) -> ServerProcess:
    return server_factory(extra_args=["--http-listen", "127.0.0.1:0", *extra]).start()


@pytest.fixture
def web(server_factory: ServerFactory) -> ServerProcess:
    return http_server(server_factory)


def wait_for(driver: WebDriver, check: Callable[[WebDriver], Any], timeout: float = WAIT) -> Any:
    def safe(d: WebDriver) -> Any:
        try:
            return check(d)
        except StaleElementReferenceException:
            return False

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(safe)


def open_panel(driver: WebDriver, server: ServerProcess) -> None:
    driver.get(server.http_url + "/")
    wait_for(driver, lambda d: d.find_element(By.ID, "connection").text == "live")


def row(driver: WebDriver, job_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]')


def state(driver: WebDriver, job_id: str) -> str:
    return str(row(driver, job_id).get_attribute("data-state"))


def dialog(driver: WebDriver) -> WebElement:
    found: WebElement = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "dialog[open]"))
    return found


def field(driver: WebDriver, name: str) -> WebElement:
    return dialog(driver).find_element(By.CSS_SELECTOR, f'input[data-param="{name}"]')


def console(driver: WebDriver) -> list[dict[str, Any]]:
    """The browser console's entries since the last call."""
    return list(driver.get_log("browser"))  # type: ignore[no-untyped-call]  # selenium leaves it unannotated


def record_row_changes(driver: WebDriver, job_id: str) -> None:
    """Every change of the row's state and progress, as the page painted it, into window.seen."""
    driver.execute_script(
        """
        const row = document.querySelector(`tr[data-job-id="${arguments[0]}"]`);
        window.seen = [];
        const note = () => window.seen.push([row.dataset.state, row.querySelector('progress').value,
                                             row.querySelector('progress').hidden]);
        new MutationObserver(note).observe(row, {subtree: true, attributes: true, childList: true,
                                                 characterData: true});
        """,
        job_id,
    )


# --- seeing the jobs -------------------------------------------------------------------------------------------


def test_jobs_and_their_states_are_shown_and_change_live(browser: WebDriver, web: ServerProcess) -> None:
    open_panel(browser, web)
    with Client(web.target, timeout=20) as client:
        ids = [j.id for j in client.list_jobs().items]
        rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
        assert [r.get_attribute("data-job-id") for r in rows] == ids
        assert {state(browser, i) for i in ids} == {"NOT_YET_RUN"}
        greet = row(browser, "example.greet")
        assert "Says hello NAME" in greet.text and "Greet" in greet.text and "not scheduled" in greet.text
        assert client.run_and_wait("test.fail", timeout=20).state is ExecutionState.ABORTED
    # The page learns it from WatchJobs: no reload.
    wait_for(browser, lambda d: state(d, "test.fail") == "ABORTED")
    assert "Aborted" in row(browser, "test.fail").find_element(By.CSS_SELECTOR, ".badge").text
    assert row(browser, "test.fail").find_element(By.CSS_SELECTOR, "time.last-finish").text != ""


# --- run: form, confirmation, progress ------------------------------------------------------------------------


def test_run_with_parameters_through_form_and_confirmation(browser: WebDriver, web: ServerProcess) -> None:
    open_panel(browser, web)
    record_row_changes(browser, "example.greet")
    row(browser, "example.greet").find_element(By.CSS_SELECTOR, "button.run").click()
    d = dialog(browser)
    name = field(browser, "name")
    assert name.get_attribute("aria-required") == "true"
    assert field(browser, "times").get_attribute("value") == "3"  # the declared default, filled in
    assert field(browser, "times").get_attribute("type") == "number"
    assert field(browser, "shout").get_attribute("type") == "checkbox"
    name.send_keys("Ada")
    times = field(browser, "times")
    times.clear()
    times.send_keys("4")
    delay = field(browser, "delay")
    delay.clear()
    delay.send_keys("0.4")
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    confirm = wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, "dialog[open] section.confirm"))
    wait_for(browser, lambda b: confirm.is_displayed())
    assert "name" in confirm.text and '"Ada"' in confirm.text and "4" in confirm.text
    confirm.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait_for(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, "dialog[open]"))
    wait_for(browser, lambda b: state(b, "example.greet") == "COMPLETED")
    assert row(browser, "example.greet").find_element(By.CSS_SELECTOR, ".status-text").text == "hello Ada (4/4)"
    seen = browser.execute_script("return window.seen")
    running = [float(p) for s, p, hidden in seen if s == "RUNNING" and not hidden]
    assert len(set(running)) >= 2, seen  # the bar moved while it ran
    assert all(0 <= p < 1 for p in running[:-1]) and running == sorted(running), seen
    with Client(web.target, timeout=20) as client:
        (run,) = client.list_executions("example.greet").items
        assert run.parameters["name"] == "Ada" and run.parameters["times"] == 4


def test_a_bad_parameter_shows_the_servers_field_error(browser: WebDriver, web: ServerProcess) -> None:
    open_panel(browser, web)
    row(browser, "example.greet").find_element(By.CSS_SELECTOR, "button.run").click()
    d = dialog(browser)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()  # "name" (required) left empty
    d.find_element(By.CSS_SELECTOR, "section.confirm button.primary").click()
    name = field(browser, "name")
    wait_for(browser, lambda b: name.get_attribute("aria-invalid") == "true")
    error = d.find_element(By.ID, str(name.get_attribute("id")) + "-error")
    assert error.text == "required parameter 'name' is missing"  # BadRequest's description for parameters.name
    assert browser.switch_to.active_element == name
    with Client(web.target, timeout=20) as client:
        assert client.list_executions("example.greet").items == ()


def test_already_running_is_said_plainly(browser: WebDriver, web: ServerProcess, tmp_path: Path) -> None:
    open_panel(browser, web)
    with Client(web.target, timeout=20) as client:
        client.run_job("test.block", {"release": str(tmp_path / "go")})
        wait_for(browser, lambda b: state(b, "test.block") == "RUNNING")
        row(browser, "test.block").find_element(By.CSS_SELECTOR, "button.run").click()
        d = dialog(browser)
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        d.find_element(By.CSS_SELECTOR, "section.confirm button.primary").click()
        alert = wait_for(browser, lambda b: d.find_element(By.CSS_SELECTOR, "section.confirm .form-error").text)
        assert alert == "Block is already running. Wait for it to finish, or cancel it first."
        (tmp_path / "go").touch()


# --- cancel -------------------------------------------------------------------------------------------------


def test_cancel_is_offered_only_for_running_cancellable_jobs(
    browser: WebDriver, web: ServerProcess, tmp_path: Path
) -> None:
    open_panel(browser, web)
    assert not row(browser, "test.block").find_element(By.CSS_SELECTOR, "button.cancel").is_displayed()
    with Client(web.target, timeout=20) as client:
        client.run_job("test.block", {})
        client.run_job("test.stubborn", {"release": str(tmp_path / "go")})
        wait_for(browser, lambda b: state(b, "test.block") == "RUNNING" and state(b, "test.stubborn") == "RUNNING")
        assert not row(browser, "test.stubborn").find_element(By.CSS_SELECTOR, "button.cancel").is_displayed()
        cancel = row(browser, "test.block").find_element(By.CSS_SELECTOR, "button.cancel")
        assert cancel.is_displayed()
        cancel.click()
        wait_for(browser, lambda b: state(b, "test.block") == "CANCELLED")
        assert not row(browser, "test.block").find_element(By.CSS_SELECTOR, "button.cancel").is_displayed()
        assert client.list_executions("test.block").items[0].state is ExecutionState.CANCELLED
        (tmp_path / "go").touch()


# --- schedules ------------------------------------------------------------------------------------------------


def test_calendar_schedule_with_server_preview_then_saved(browser: WebDriver, web: ServerProcess) -> None:
    open_panel(browser, web)
    row(browser, "example.greet").find_element(By.CSS_SELECTOR, "button.schedule").click()
    d = dialog(browser)
    d.find_element(By.XPATH, ".//button[text()='Add a schedule']").click()
    editor = d.find_element(By.CSS_SELECTOR, "fieldset.schedule-editor")
    Select(editor.find_element(By.NAME, "kind")).select_by_value("calendar")
    for day in ("Mon", "Fri"):
        editor.find_element(By.XPATH, f".//label[normalize-space()='{day}']/input").click()
    time_input = editor.find_element(By.NAME, "time")
    browser.execute_script("arguments[0].value = '23:00'", time_input)
    zone = editor.find_element(By.NAME, "time_zone")
    zone.clear()
    zone.send_keys("Europe/Paris")
    editor.find_element(By.CSS_SELECTOR, 'input[data-param="name"]').send_keys("weekly")
    preview = editor.find_element(By.CSS_SELECTOR, "ol.preview")
    wait_for(browser, lambda b: len(preview.find_elements(By.TAG_NAME, "li")) == 5)
    shown = [li.text for li in preview.find_elements(By.TAG_NAME, "li")]
    # The browser runs in UTC: 23:00 in Paris is 22:00 UTC in winter, 21:00 UTC in summer.
    assert all(t.endswith(("22:00:00", "21:00:00")) for t in shown), shown
    assert not web.schedule_file.exists()  # a preview saves nothing
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, "dialog[open]"))
    greet = row(browser, "example.greet")
    wait_for(
        browser, lambda b: greet.find_element(By.CSS_SELECTOR, "td.schedule").text == "Mon, Fri 23:00 Europe/Paris"
    )
    assert greet.find_element(By.CSS_SELECTOR, "time.next-fire").text == shown[0]
    xml = web.schedule_file.read_text()
    assert 'days="Monday Friday"' in xml and 'xc:timeZone="Europe/Paris"' in xml and "weekly" in xml
    with Client(web.target, timeout=20) as client:
        (saved,) = client.get_job("example.greet").schedules
        assert saved.spec.days == {DayOfWeek.MONDAY, DayOfWeek.FRIDAY}  # type: ignore[union-attr]


def test_several_schedules_with_policies_and_an_end(browser: WebDriver, web: ServerProcess) -> None:
    open_panel(browser, web)
    row(browser, "example.countdown").find_element(By.CSS_SELECTOR, "button.schedule").click()
    d = dialog(browser)
    add = d.find_element(By.XPATH, ".//button[text()='Add a schedule']")
    add.click()
    add.click()
    first, second = d.find_elements(By.CSS_SELECTOR, "fieldset.schedule-editor")
    every = first.find_element(By.NAME, "every")
    every.clear()
    every.send_keys("2")
    Select(first.find_element(By.NAME, "unit")).select_by_visible_text("hours")
    Select(first.find_element(By.NAME, "overlap")).select_by_visible_text("run once it ends")
    Select(second.find_element(By.NAME, "kind")).select_by_value("cron")
    zone = second.find_element(By.NAME, "time_zone")
    zone.clear()
    zone.send_keys("America/New_York")
    Select(second.find_element(By.NAME, "misfire")).select_by_visible_text("skip")
    browser.execute_script("arguments[0].value = '2099-12-31T23:00'", second.find_element(By.NAME, "end"))
    second.find_element(By.NAME, "end").send_keys(Keys.TAB)
    previews = [e.find_element(By.CSS_SELECTOR, "ol.preview") for e in (first, second)]
    wait_for(browser, lambda b: [len(p.find_elements(By.TAG_NAME, "li")) for p in previews] == [5, 5])
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, "dialog[open]"))
    summary = row(browser, "example.countdown").find_element(By.CSS_SELECTOR, "td.schedule")
    wait_for(browser, lambda b: summary.text == "every 2 h; 0 3 * * * America/New_York")
    with Client(web.target, timeout=20) as client:
        interval, cron = client.get_job("example.countdown").schedules
    assert interval.spec.every == timedelta(hours=2)  # type: ignore[union-attr]
    assert interval.overlap_policy.name == "BUFFER_ONE"
    assert cron.misfire_policy.name == "SKIP" and cron.time_zone == "America/New_York"
    assert cron.end_time is not None and cron.end_time.year == 2100  # 23:00 in New York, Dec 31 2099 = 04:00 UTC
    xml = web.schedule_file.read_text()
    assert 'interval="7200"' in xml and 'expression="0 3 * * *"' in xml


def test_a_bad_cron_expression_is_flagged_while_typing(browser: WebDriver, web: ServerProcess) -> None:
    open_panel(browser, web)
    row(browser, "example.countdown").find_element(By.CSS_SELECTOR, "button.schedule").click()
    d = dialog(browser)
    d.find_element(By.XPATH, ".//button[text()='Add a schedule']").click()
    editor = d.find_element(By.CSS_SELECTOR, "fieldset.schedule-editor")
    Select(editor.find_element(By.NAME, "kind")).select_by_value("cron")
    cron = editor.find_element(By.NAME, "cron")
    cron.clear()
    cron.send_keys("0 0 1 * * *")  # Quartz's seconds-first spelling: refused, with the seconds-last one
    wait_for(browser, lambda b: cron.get_attribute("aria-invalid") == "true")
    assert "0 1 * * *" in editor.find_element(By.CSS_SELECTOR, ".schedule-error").text


def test_pause_and_resume(browser: WebDriver, web: ServerProcess) -> None:
    with Client(web.target, timeout=20) as client:
        client.set_schedule("example.countdown", [Schedule.every(timedelta(hours=6))])
    open_panel(browser, web)
    countdown = row(browser, "example.countdown")
    assert countdown.find_element(By.CSS_SELECTOR, "td.schedule").text == "every 6 h"
    assert countdown.find_element(By.CSS_SELECTOR, "time.next-fire").text != ""
    countdown.find_element(By.CSS_SELECTOR, "button.schedule").click()
    pause = dialog(browser).find_element(By.CSS_SELECTOR, "button.pause")
    assert pause.text == "Pause schedules"
    pause.click()
    wait_for(browser, lambda b: pause.text == "Resume schedules")
    assert countdown.find_element(By.CSS_SELECTOR, "td.schedule").text == "paused · every 6 h"
    assert countdown.find_element(By.CSS_SELECTOR, "time.next-fire").text == ""
    assert 'xc:paused="true"' in web.schedule_file.read_text()
    pause.click()
    wait_for(browser, lambda b: pause.text == "Pause schedules")
    assert countdown.find_element(By.CSS_SELECTOR, "td.schedule").text == "every 6 h"
    assert "xc:paused" not in web.schedule_file.read_text()


# --- history --------------------------------------------------------------------------------------------------


def test_history_chart_list_and_detail(browser: WebDriver, web: ServerProcess) -> None:
    with Client(web.target, timeout=20) as client:
        client.run_and_wait("test.fail", {"message": "disk on fire"}, timeout=20)
        client.run_and_wait("test.fail", timeout=20)
    open_panel(browser, web)
    row(browser, "test.fail").find_element(By.CSS_SELECTOR, "button.history").click()
    d = dialog(browser)
    wait_for(browser, lambda b: len(d.find_elements(By.CSS_SELECTOR, "table.executions tbody tr")) == 2)
    bars = d.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert [b.get_attribute("class") for b in bars] == ["bar state-ABORTED"] * 2
    assert "2 aborted" in str(d.find_element(By.CSS_SELECTOR, "svg.chart").get_attribute("aria-label"))
    first, second = d.find_elements(By.CSS_SELECTOR, "table.executions tbody tr")
    assert "boom" in first.text and "disk on fire" in second.text  # newest first
    second.find_element(By.TAG_NAME, "button").click()
    detail = wait_for(browser, lambda b: d.find_element(By.CSS_SELECTOR, ".execution-detail dl"))
    assert "disk on fire" in detail.text and "manual" in detail.text


# --- sign-in and roles ------------------------------------------------------------------------------------------


def test_read_only_token_gets_run_disabled(browser: WebDriver, server_factory: ServerFactory, tmp_path: Path) -> None:
    tokens = {"read": "panel-read-token-0123456789abcdef", "admin": "panel-admin-token-0123456789abcdef"}
    path = tmp_path / "tokens.txt"
    path.write_text("".join(f"{role}-user {role} {hash_token(token)}\n" for role, token in tokens.items()))
    server = http_server(server_factory, "--tokens-file", str(path))
    browser.get(server.http_url + "/")
    wait_for(browser, lambda b: b.find_element(By.ID, "signin-token").is_displayed())
    token = browser.find_element(By.ID, "signin-token")
    assert browser.switch_to.active_element == token
    token.send_keys("not-a-valid-token-at-all", Keys.ENTER)
    wait_for(browser, lambda b: b.find_element(By.ID, "signin-error").text == "invalid bearer token")
    token.send_keys(tokens["read"], Keys.ENTER)
    wait_for(browser, lambda b: b.find_element(By.ID, "connection").text == "live")
    assert "read-user (read)" in browser.find_element(By.ID, "caller").text
    greet = row(browser, "example.greet")
    assert not greet.find_element(By.CSS_SELECTOR, "button.run").is_enabled()
    assert greet.find_element(By.CSS_SELECTOR, "button.history").is_enabled()
    greet.find_element(By.CSS_SELECTOR, "button.schedule").click()
    d = dialog(browser)
    assert not d.find_element(By.CSS_SELECTOR, "button[type=submit]").is_enabled()
    assert "Read only" in d.find_element(By.CSS_SELECTOR, ".schedule-status").text
    d.find_element(By.CSS_SELECTOR, "button.close").click()
    # Nothing was stored: a new page load asks again.
    assert browser.execute_script("return localStorage.length") == 0
    browser.get(server.http_url + "/")
    wait_for(browser, lambda b: b.find_element(By.ID, "signin").is_displayed())


# --- keyboard, narrow screens, and the README's picture -------------------------------------------------------


def test_keyboard_only(browser: WebDriver, web: ServerProcess) -> None:
    open_panel(browser, web)
    body = browser.find_element(By.TAG_NAME, "body")
    body.click()
    for _ in range(60):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if browser.switch_to.active_element.get_attribute("aria-label") == "Run Greet":
            break
    else:
        pytest.fail("Tab never reached the Run button of Greet")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    dialog(browser)
    active = browser.switch_to.active_element
    assert active.get_attribute("data-param") == "name"  # focus moved into the dialog
    label = browser.find_element(By.CSS_SELECTOR, f'label[for="{active.get_attribute("id")}"]')
    assert label.text.startswith("name")
    active.send_keys("Kay", Keys.ENTER)  # Enter: next step
    wait_for(browser, lambda b: b.switch_to.active_element.text == "Run now")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(browser, lambda b: state(b, "example.greet") == "COMPLETED")
    row(browser, "example.greet").find_element(By.CSS_SELECTOR, "button.history").send_keys(Keys.ENTER)
    dialog(browser)
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_for(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, "dialog[open]"))


def test_narrow_screen(browser: WebDriver, web: ServerProcess) -> None:
    browser.set_window_size(390, 844)
    try:
        open_panel(browser, web)
        greet = row(browser, "example.greet")
        assert greet.value_of_css_property("display") == "block"  # a card per job
        run = greet.find_element(By.CSS_SELECTOR, "button.run")
        assert run.is_displayed() and run.rect["x"] + run.rect["width"] <= 390
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, "the page scrolls sideways"
    finally:
        browser.set_window_size(1280, 900)


def test_screenshot(browser: WebDriver, web: ServerProcess, tmp_path: Path) -> None:
    with Client(web.target, timeout=20) as client:
        client.set_schedule("xcron.purge-history", [Schedule.cron("0 3 * * *", time_zone="America/New_York")])
        weekly = Schedule.on_days(
            [DayOfWeek.MONDAY, DayOfWeek.FRIDAY], time(23), time_zone="Europe/Paris", parameters={"name": "weekly"}
        )
        client.set_schedule("example.greet", [weekly])
        client.set_schedule("xcron.backup", [Schedule.every(timedelta(hours=6))])
        client.run_and_wait("example.greet", {"name": "Ada", "times": 2}, timeout=20)
        client.run_and_wait("test.fail", timeout=20)
        client.run_job("test.block", {"release": str(tmp_path / "go")})
        browser.set_window_size(1280, 1400)
        console(browser)  # drop what earlier tests logged (their refused calls)
        open_panel(browser, web)
        wait_for(browser, lambda b: state(b, "test.block") == "RUNNING")
        target = ROOT / "docs" / "panel.png" if os.environ.get("XCRON_UPDATE_SCREENSHOT") else tmp_path / "panel.png"
        browser.save_screenshot(str(target))
        problems = [e["message"] for e in console(browser) if e["level"] in ("SEVERE", "WARNING")]
        assert problems == [], problems  # no script error, no Content-Security-Policy violation
        browser.set_window_size(1280, 900)
        assert target.read_bytes().startswith(b"\x89PNG")
        (tmp_path / "go").touch()
