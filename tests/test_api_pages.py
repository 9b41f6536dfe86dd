"""The web pages: stored results as plain HTML, hostile strings shown as text."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

from services.api.html import Markup, element, escape, render
from tests.api_support import HOSTILE, scenario, serving


@pytest.fixture
async def api(js, nats_config, database_config, storage_config):
    async with serving(nats_config, database_config, storage_config) as client:
        yield client


class Page(HTMLParser):
    """The text, links and tags of a page, as a browser would parse them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.chunks: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [value for name, value in attrs if tag == "a" and name == "href"]

    def handle_data(self, data):
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())


async def _page(api, path: str) -> Page:
    async with api.session.get(api.base + path) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/html"
        assert "script-src" not in resp.headers["Content-Security-Policy"]
        return Page(await resp.text())


def test_markup_helpers_escape_everything_not_built_by_them():
    assert escape("<a href='x'>&") == "&lt;a href=&#x27;x&#x27;&gt;&amp;"
    assert escape(Markup("<b>ok</b>")) == "<b>ok</b>"
    assert render("<td>$v</td>", v="</td><script>") == "<td>&lt;/td&gt;&lt;script&gt;</td>"
    assert element("a", "<i>", href='" onclick="x') == (
        '<a href="&quot; onclick=&quot;x">&lt;i&gt;</a>')


async def test_pages_show_the_stored_results_with_hostile_strings_as_text(
        api, js, subjects, pool, storage_config):
    s = await scenario(js, subjects, pool, storage_config)

    listing = await _page(api, "/")
    assert s.bad in listing.text and s.stable in listing.text
    assert "1 waiting for a lab" in listing.text
    assert f"/firmware/{quote(s.bad, safe='')}" in listing.links
    filtered = await _page(api, "/?channel=stable")
    assert s.stable in filtered.text and s.bad not in filtered.text

    firmware = await _page(api, f"/firmware/{quote(s.bad, safe='')}")
    assert "x86/64/generic" in firmware.text
    assert "PASS 1" in firmware.text and "FAIL 2" in firmware.text
    assert f"REGRESSION {HOSTILE} (last passed on {s.good}" in firmware.text
    assert "REGRESSION base.test_wifi" in firmware.text
    assert "incident: Kernel panic" in firmware.text
    job_link = f"/jobs/{quote(s.bad_job, safe='')}"
    log_link = f"/api/v1/jobs/{quote(s.bad_job, safe='')}/attempts/2/log"
    assert job_link in firmware.links and log_link in firmware.links
    assert "script" not in firmware.tags

    job = await _page(api, job_link)
    assert "Attempt 2: fail" in job.text and "Attempt 1: error boot_failed" in job.text
    assert HOSTILE in job.text and "base.test_wifi FAIL" in job.text
    assert log_link in job.links
    assert "script" not in job.tags
    async with api.session.get(api.base + job_link) as resp:
        raw = await resp.text()
    assert html.escape(HOSTILE) in raw and HOSTILE not in raw

    labs = await _page(api, "/labs")
    assert "lab-a" in labs.text and "online" in labs.text
    assert "dut-1 x86/64/generic idle warning 1 wan, <b>wifi</b>" in labs.text
    assert "b" not in labs.tags


async def test_missing_firmware_and_bad_filter_are_html_errors(api):
    async with api.session.get(api.base + "/firmware/wrtci:official:<nope>") as resp:
        assert resp.status == 404 and resp.content_type == "text/html"
        page = Page(await resp.text())
        assert "no firmware wrtci:official:<nope>" in page.text
    async with api.session.get(api.base + "/?state=<x>") as resp:
        assert resp.status == 400 and resp.content_type == "text/html"
    async with api.session.get(api.base + "/no/such/page") as resp:
        assert resp.status == 404 and resp.content_type == "text/html"

