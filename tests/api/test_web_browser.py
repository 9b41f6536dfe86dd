"""The web pages in a real browser: Debian's Chromium driven by Selenium (chromedriver).

Every page reachable from the front page is opened by following links; the
job page of a running job is watched while the lab sends new console lines.
Screenshots go to ``$WRTCI_TEST_ARTIFACTS/screenshots`` (or the pytest base
temp directory) as test artifacts.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.api.test_api_livelog import chunk, progress, running_job, send
from tests.api_support import scenario, serving
from tests.factories_results import ingest_all, publish

CHROMEDRIVER = "/usr/bin/chromedriver"
MAX_PAGES = 60


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    root = os.environ.get("WRTCI_TEST_ARTIFACTS")
    path = (Path(root) if root else tmp_path_factory.getbasetemp()) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
async def api(js, nats_config, database_config, storage_config):
    async with serving(nats_config, database_config, storage_config) as client:
        yield client


class Browser:
    """The blocking driver, called from a thread so the API in this loop keeps serving."""

    def __init__(self, driver, shots: Path) -> None:
        self.driver, self.shots = driver, shots

    async def open(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def run(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        await self.run(self.driver.save_screenshot, str(path))
        assert path.stat().st_size > 1000
        return path

    def links(self) -> list[str]:
        # One script, not one WebDriver round trip per anchor (a list page has hundreds).
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href]'), a => a.href)")

    def text(self, css: str) -> str:
        return self.driver.find_element(By.CSS_SELECTOR, css).text


def _name(url: str) -> str:
    parts = urlsplit(url)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", unquote(parts.path + "-" + parts.query))
    return slug.strip("-")[:100] or "front"


async def test_every_page_opens_and_links_lead_somewhere(api, browser, screenshots, js,
                                                         subjects, pool, storage_config):
    await scenario(js, subjects, pool, storage_config)
    b = Browser(browser, screenshots)
    origin = api.base
    seen, queue, opened = set(), [origin + "/"], []
    while queue and len(opened) < MAX_PAGES:
        url = queue.pop(0).split("#")[0]
        if url in seen or not url.startswith(origin) or "/api/v1/" in url:
            seen.add(url)
            continue
        seen.add(url)
        await b.open(url)
        title = browser.title
        assert not title.startswith("Error"), (url, title, browser.page_source[:500])
        # The heading stays inside the page (no horizontal run-off).
        width = await b.run(browser.execute_script,
                            "return [document.querySelector('h1').scrollWidth,"
                            " document.documentElement.clientWidth]")
        assert width[0] <= width[1], (url, width)
        if len(opened) < 25:
            await b.shot(f"page-{len(opened):02d}-{_name(url)}")
        opened.append(url)
        queue += [h for h in await b.run(b.links) if h and h.split("#")[0] not in seen]
    # On a narrow screen too, nothing runs off the page: tables wrap, the log
    # viewer scrolls inside itself.
    await b.run(browser.set_window_size, 700, 1000)
    try:
        for n, url in enumerate(opened):
            await b.open(url)
            width = await b.run(browser.execute_script,
                                "return [document.documentElement.scrollWidth,"
                                " document.documentElement.clientWidth]")
            assert width[0] <= width[1], (url, width)
            if n < 12:
                await b.shot(f"narrow-{n:02d}-{_name(url)}")
    finally:
        await b.run(browser.set_window_size, 1280, 1000)
    paths = {urlsplit(u).path.split("/")[1] for u in opened}
    assert {"", "matrix", "fleet", "regressions", "flaky", "prs", "firmware", "jobs",
            "devices", "device-types"} <= paths, paths
    # A raw log link answers with the log itself.
    await b.open(origin + "/api/v1/jobs/nosuch/attempts/1/log")
    assert "no attempt 1" in browser.page_source


async def test_job_page_log_grows_live_with_its_stage(api, browser, screenshots, js,
                                                      subjects, pool):
    job_id = await running_job(js, subjects, pool)
    await send(js, subjects, chunk(job_id, 0, "SeaBIOS (version 1.16)\n"),
               chunk(job_id, 1, "\x1b[1;32mBooting\x1b[0m Linux\n"))
    await publish(js, subjects, progress(job_id, "download"))
    await ingest_all(js, subjects, pool)  # the results service stores the stage
    b = Browser(browser, screenshots)
    await b.open(f"{api.base}/jobs/{quote(job_id, safe='')}")
    assert await b.run(b.text, "#stage") == "download"
    assert "Booting Linux" in await b.run(b.text, "#log")
    await b.shot("job-running-before")

    async def shown(needle: str, within_s: float = 2.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < within_s + 3:
            if needle in await b.run(b.text, "#log"):
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise AssertionError(f"{needle!r} never shown")

    await asyncio.sleep(1.0)  # the EventSource is connected
    await send(js, subjects, chunk(job_id, 2, "root@OpenWrt:/# uname -a\n"))
    await publish(js, subjects, progress(job_id, "test"))
    await shown("root@OpenWrt:/# uname -a")
    assert await b.run(b.text, "#L3 a") == "3"  # numbered like the rest
    await b.shot("job-running-after")
    for _ in range(40):
        if await b.run(b.text, "#stage") == "test":
            break
        await asyncio.sleep(0.1)
    assert await b.run(b.text, "#stage") == "test"
    assert await b.run(b.text, "#live-status") == "live"
    assert (await b.run(b.text, "td .verdict")) == "running"
