"""The web view in a real headless Chromium (Debian's, driven by its chromedriver through
Selenium), against a real pipeline: one actor (`gated.gate`, which holds each envelope until
the test lets it go), the crew and a gateway with an API key, as `asya dev` runs them.

The browser logs in with the key, watches a task turn from running to succeeded in the list
(the page polls the API), and follows another on its own page, live over EventSource, to
its end. In a second test a task fails (the gate cannot write its `started` file: its
directory is missing), lands in the sump, shows on the sump page; the directory is made and
the page's Redrive button sends it again, and it succeeds. Screenshots go to the test's
tmp_path (never committed); what is checked is the page's DOM.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from asya_cli.local_pipeline import LocalPipeline
from asya_gateway.auth import hash_key
from asya_shared import records
from tests.support.pipeline import HANDLERS, READY_TIMEOUT_S, actor
from tests.support.waiting import wait_until

# Starting the pipeline and the browser takes a while on a shared 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "make browser  (or: apt-get install -y chromium chromium-driver)"
KEY = "browser-test-key-" + uuid.uuid4().hex
# Generous: only a failing test waits this long, and the machine is shared.
DEADLINE_S = 60.0
HOSTILE = "<img src=x onerror=\"document.title='owned'\">"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: this test drives Debian's headless Chromium "
            f"with its chromedriver. Install them with `{INSTALL}`; `make test` does it.",
            pytrace=False,
        )
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[LocalPipeline]:
    """One gated actor, the crew and a gateway whose only key is KEY."""
    keys = tmp_path / "keys"
    keys.write_text(f"{hash_key(KEY)}: browser\n")
    with (tmp_path / "pipeline.log").open("w") as log:
        running = LocalPipeline(
            [actor("gate", "gated.gate")],
            transport="local",
            state_dir=tmp_path / "state",
            namespace=f"ui{uuid.uuid4().hex[:8]}",
            workdir=HANDLERS,
            out=log,
            extra_env={"ASYA_GATEWAY_API_KEYS_FILE": str(keys)},
            gateway_port=0,
        )
        try:
            await running.start(READY_TIMEOUT_S)
            yield running
        finally:
            await running.stop()


async def test_a_task_followed_in_the_browser_from_submit_to_succeeded(
    pipeline: LocalPipeline, browser: WebDriver, tmp_path: Path
) -> None:
    assert pipeline.gateway is not None
    # Selenium blocks; the pipeline's supervisor keeps running on this loop meanwhile.
    await asyncio.to_thread(follow_in_browser, browser, pipeline.gateway.url, tmp_path)


def follow_in_browser(browser: WebDriver, url: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as api:
        wait_until(lambda: healthy(api), what="the gateway's /healthz", timeout=DEADLINE_S)
        log_in(browser, url)
        watch_the_list(browser, api, tmp_path)
        watch_one_task(browser, api, url, tmp_path)


def log_in(browser: WebDriver, url: str) -> None:
    browser.get(f"{url}/ui")
    assert "/ui/login" in browser.current_url  # no key yet
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    until(browser, lambda d: d.find_elements(By.ID, "tasks"), "the task list after logging in")


def watch_the_list(browser: WebDriver, api: httpx.Client, tmp_path: Path) -> None:
    """A task submitted after the page loaded appears running, then succeeded: the page
    refreshes itself."""
    gate = Gate(tmp_path / "first")
    task_id = submit(api, gate)
    until(browser, lambda d: row_status(d, task_id) == "running", f"{task_id} running in the list")
    gate.release()
    until(browser, lambda d: row_status(d, task_id) == "succeeded", f"{task_id} succeeded")
    shoot(browser, tmp_path / "list-succeeded.png")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{task_id}"]')
    assert row.find_element(By.CSS_SELECTOR, ".route").text == "gate → x-sink"
    assert row.find_element(By.CSS_SELECTOR, ".progress").text == "100%"

    Select(browser.find_element(By.ID, "status-filter")).select_by_value("running")
    until(browser, lambda d: row_status(d, task_id) is None, "the status filter to hide it")
    assert "status=running" in browser.current_url
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("succeeded")
    until(browser, lambda d: row_status(d, task_id) == "succeeded", "the filter to show it")


def watch_one_task(browser: WebDriver, api: httpx.Client, url: str, tmp_path: Path) -> None:
    """A task's page follows it live: status, route and event log move as it runs."""
    gate = Gate(tmp_path / "second")
    task_id = submit(api, gate)
    wait_until(gate.started, what="the gate handler to hold the task", timeout=DEADLINE_S)
    browser.get(f"{url}/ui")
    until(browser, lambda d: row_status(d, task_id) == "running", f"{task_id} in the list")
    browser.find_element(By.LINK_TEXT, task_id).click()

    until(browser, lambda d: text(d, "stream-state") == "live", "the event stream to open")
    assert text(browser, "status") == "running"
    assert route(browser) == [("gate", "current")]  # x-sink joins the route after it
    assert logged(browser)[0] == ("status", "running")
    shoot(browser, tmp_path / "task-running.png")

    gate.release()
    until(browser, lambda d: text(d, "status") == "succeeded", f"{task_id} succeeded on its page")
    until(browser, lambda d: text(d, "stream-state") == "ended", "the event stream to end")
    shoot(browser, tmp_path / "task-succeeded.png")
    assert route(browser) == [("gate", "done"), ("x-sink", "done")]
    events = logged(browser)
    assert len(events) >= 2, events  # the opening state, then at least the end, live
    assert events[-1] == ("status", "succeeded")
    assert text(browser, "progress") == "100%"
    result = json.loads(text(browser, "result"))
    assert result["trail"] == ["gate"]
    assert result["note"] == HOSTILE  # shown as text
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")
    assert browser.title != "owned"


async def test_a_failed_task_is_redriven_from_the_sump_page(
    pipeline: LocalPipeline, browser: WebDriver, tmp_path: Path
) -> None:
    assert pipeline.gateway is not None
    await asyncio.to_thread(
        redrive_in_browser, browser, pipeline.gateway.url, pipeline.state_dir, tmp_path
    )


def redrive_in_browser(browser: WebDriver, url: str, state_dir: Path, tmp_path: Path) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as api:
        wait_until(lambda: healthy(api), what="the gateway's /healthz", timeout=DEADLINE_S)
        log_in(browser, url)
        # The gate writes `started` into a directory that does not exist yet: it fails (a
        # handler error) until the directory is made. Its release is there from the start.
        gate = Gate(tmp_path / "flaky")
        missing = tmp_path / "flaky" / "not-yet"
        gate.payload["started"] = str(missing / "started")
        gate.release()
        task_id = submit(api, gate)
        wait_until(lambda: task_status(api, task_id) == "failed", what=f"{task_id} to fail",
                   timeout=DEADLINE_S)  # fmt: skip

        browser.get(f"{url}/ui/sump")
        until(browser, lambda d: sump_row(d, task_id) is not None, f"{task_id} on the sump page")
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{task_id}"]')
        assert row.find_element(By.CSS_SELECTOR, ".actor").text == "gate"
        assert row.find_element(By.CSS_SELECTOR, ".reason").text == "HandlerError"
        assert row.find_element(By.CSS_SELECTOR, ".error").text.startswith("FileNotFoundError")
        shoot(browser, tmp_path / "sump-listed.png")

        missing.mkdir()  # the fix
        row.find_element(By.CSS_SELECTOR, "button.redrive").click()
        until(browser, lambda d: sump_row(d, task_id) == "redriven", f"{task_id} redriven")
        shoot(browser, tmp_path / "sump-redriven.png")
        outcome = browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{task_id}"] .outcome')
        assert outcome.text == "redriven to gate"

        final = wait_until(
            lambda: sink_record(state_dir, task_id, "succeeded"),
            what=f"x-sink to record {task_id} succeeded",
            timeout=DEADLINE_S,
        )
        assert final is not None
        assert final["payload"]["trail"] == ["gate"]
        assert final["headers"]["redriven-from"]["actor"] == "gate"
        assert Path(gate.payload["started"]).exists()
        listed = api.get("/v1/sump").json()["records"]
        assert task_id not in [item["id"] for item in listed]  # it left the sump
        # The gateway's task follows the redrive to its end.
        wait_until(
            lambda: task_status(api, task_id) == "succeeded",
            what=f"task {task_id} to succeed after its redrive",
            timeout=DEADLINE_S,
        )


# ------------------------------------------------------------------------------ helpers


class Gate:
    """The files `gated.gate` waits on: it writes `started`, and goes on once `release`
    exists."""

    def __init__(self, base: Path) -> None:
        base.mkdir()
        self.payload = {
            "started": str(base / "started"),
            "release": str(base / "release"),
            "note": HOSTILE,
        }

    def started(self) -> bool:
        return Path(self.payload["started"]).exists()

    def release(self) -> None:
        Path(self.payload["release"]).touch()


def healthy(api: httpx.Client) -> bool:
    try:
        return api.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def submit(api: httpx.Client, gate: Gate) -> str:
    task_id = f"ui-{uuid.uuid4().hex[:10]}"
    response = api.post(
        "/v1/tasks", json={"id": task_id, "route": ["gate"], "payload": gate.payload}
    )
    assert response.status_code == 201, response.text
    return task_id


def until(browser: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> None:
    try:
        # The page redraws rows that changed while it polls: an element found a moment ago
        # may be gone, which is a reason to look again, not a failure.
        WebDriverWait(
            browser,
            DEADLINE_S,
            poll_frequency=0.1,
            ignored_exceptions=(StaleElementReferenceException,),
        ).until(condition)
    except Exception as exc:
        raise AssertionError(
            f"timed out after {DEADLINE_S}s waiting for {what} at {browser.current_url}:\n"
            + browser.find_element(By.TAG_NAME, "main").text
        ) from exc


def task_status(api: httpx.Client, task_id: str) -> str | None:
    response = api.get(f"/v1/tasks/{task_id}")
    return str(response.json()["status"]) if response.status_code == 200 else None


def sump_row(browser: WebDriver, envelope_id: str) -> str | None:
    """None without a row for the envelope; else its outcome ("" before a redrive)."""
    found = browser.find_elements(By.CSS_SELECTOR, f'#sump tr[data-id="{envelope_id}"]')
    return (found[0].get_attribute("data-result") or "") if found else None


def sink_record(state_dir: Path, envelope_id: str, phase: str) -> dict[str, Any] | None:
    """x-sink's record of the envelope once its status has `phase`."""
    try:
        found: dict[str, Any] = json.loads(
            (state_dir / "results" / records.key(envelope_id)).read_text()
        )
    except (FileNotFoundError, ValueError):  # not there yet, or being written
        return None
    return found if found["status"]["phase"] == phase else None


def row_status(browser: WebDriver, task_id: str) -> str | None:
    found = browser.find_elements(By.CSS_SELECTOR, f'tr[data-id="{task_id}"]')
    return found[0].get_attribute("data-status") if found else None


def text(browser: WebDriver, element_id: str) -> str:
    found = browser.find_elements(By.ID, element_id)
    return str(found[0].text) if found else ""


def route(browser: WebDriver) -> list[tuple[str, str | None]]:
    return [
        (step.text, step.get_attribute("data-state"))
        for step in browser.find_elements(By.CSS_SELECTOR, "#route li")
    ]


def logged(browser: WebDriver) -> list[tuple[str | None, str | None]]:
    return [
        (item.get_attribute("data-kind"), item.get_attribute("data-status"))
        for item in browser.find_elements(By.CSS_SELECTOR, "#events li")
    ]


def shoot(browser: WebDriver, path: Path) -> None:
    assert browser.save_screenshot(str(path)), f"no screenshot written to {path}"
    assert path.stat().st_size > 0
