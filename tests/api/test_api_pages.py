"""The web pages: stored results as plain HTML, hostile strings shown as text."""

from __future__ import annotations

import datetime as dt
import html
from html.parser import HTMLParser
from urllib.parse import quote

import msgspec
import pytest

from tests.api_support import HOSTILE, scenario, serving
from tests.factories import announce_lab, firmware, insert_firmware
from tests.factories_results import Factory
from wrtci.proto.model import PriorityClass, PullRequest, SourceKind
from wrtci.proto.topology import LAB_HEARTBEAT_TTL
from wrtci.services.api.html import Markup, element, escape, render


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
        self.in_title = False
        self.title = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.in_title = tag == "title"
        self.links += [value for name, value in attrs if tag == "a" and name == "href"]

    def handle_endtag(self, tag):
        self.in_title = self.in_title and tag != "title"

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        elif not (self.tags and self.tags[-1] in ("style", "script")):
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())


async def _page(api, path: str) -> Page:
    async with api.session.get(api.base + path) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/html"
        # Scripts from our own origin only: never inline, never elsewhere.
        directives = dict(d.strip().split(" ", 1)
                          for d in resp.headers["Content-Security-Policy"].split(";"))
        assert directives["script-src"] == "'self'"
        return Page(await resp.text())


def test_markup_helpers_escape_everything_not_built_by_them():
    assert escape("<a href='x'>&") == "&lt;a href=&#x27;x&#x27;&gt;&amp;"
    assert escape(Markup("<b>ok</b>")) == "<b>ok</b>"
    assert render("<td>$v</td>", v="</td><script>") == "<td>&lt;/td&gt;&lt;script&gt;</td>"
    assert element("a", "<i>", href='" onclick="x') == (
        '<a href="&quot; onclick=&quot;x">&lt;i&gt;</a>')


async def test_pages_show_verdicts_and_names_with_hostile_strings_as_text(
        api, js, subjects, pool, storage_config):
    s = await scenario(js, subjects, pool, storage_config)

    listing = await _page(api, "/")
    # Names, not ids: the version and revision; a verdict per firmware.
    assert "SNAPSHOT r101-bbbb 2 regressions" in listing.text
    assert "SNAPSHOT r100-aaaa pass" in listing.text
    assert "24.10.0 r200-cccc running (0/1 done)" in listing.text
    assert s.bad not in listing.text
    assert f"/firmware/{quote(s.bad, safe='')}" in listing.links
    filtered = await _page(api, "/?channel=stable")
    assert "24.10.0" in filtered.text and "r101-bbbb" not in filtered.text
    by_verdict = await _page(api, "/?verdict=regression")
    assert "r101-bbbb" in by_verdict.text and "r100-aaaa" not in by_verdict.text
    by_type = await _page(api, "/?device_type=x86/64/generic&version=SNAPSHOT")
    assert "r101-bbbb" in by_type.text and "24.10.0" not in by_type.text

    firmware = await _page(api, f"/firmware/{quote(s.bad, safe='')}")
    assert firmware.title.startswith("SNAPSHOT r101-bbbb")
    assert "x86/64/generic 2 regressions FAIL 2 PASS 1" in firmware.text
    assert "previous firmware of the channel: SNAPSHOT r100-aaaa" in firmware.text
    assert f"regression x86/64/generic {HOSTILE} SNAPSHOT r100-aaaa" in firmware.text
    assert "regression x86/64/generic base.test_wifi SNAPSHOT r100-aaaa" in firmware.text
    assert "Kernel panic" in firmware.text
    job_link = f"/jobs/{quote(s.bad_job, safe='')}"
    assert job_link in firmware.links
    assert "script" in firmware.tags and "b" not in firmware.tags

    job = await _page(api, job_link)
    assert job.title.startswith("openwrt-x86-64-generic-ext4-combined.img.gz on x86/64/generic")
    assert "SNAPSHOT r101-bbbb x86/64/generic 2 regressions done 2 of 3 lab-a / dut-1" in (
        job.text)
    assert "Attempt 2: fail lab-a / dut-1 console log" in job.text
    assert "Attempt 1: error lab-a / dut-1 · boot_failed" in job.text
    assert HOSTILE in job.text and "base.test_wifi FAIL 1.0 s" in job.text
    assert f"/api/v1/jobs/{quote(s.bad_job, safe='')}/attempts/2/log" in job.links
    assert f"/api/v1/jobs/{quote(s.bad_job, safe='')}/attempts/2/log?stream=pytest.log" in (
        job.links)
    assert "1 [ 0.000000] line 0 of the boot & <console>" in job.text  # numbered log lines
    assert "#L4001" in job.links
    async with api.session.get(api.base + job_link) as resp:
        raw = await resp.text()
    assert html.escape(HOSTILE) in raw and HOSTILE not in raw

    fleet = await _page(api, "/fleet")
    assert "lab-a" in fleet.text and "online" in fleet.text
    assert "dut-1 x86/64/generic idle warning wan, <b>wifi</b>" in fleet.text
    assert "b" not in fleet.tags
    device = await _page(api, "/devices/lab-a/dut-1")
    assert "SNAPSHOT r101-bbbb" in device.text and "slow boot" in device.text
    dtype = await _page(api, "/device-types/" + quote("x86/64/generic", safe=""))
    assert "dut-1" in dtype.text and "SNAPSHOT r100-aaaa" in dtype.text
    matrix = await _page(api, "/matrix?channel=snapshot")
    assert "x86/64/generic 2 regressions pass" in matrix.text
    regressions = await _page(api, "/regressions")
    assert f"{HOSTILE} x86/64/generic SNAPSHOT r100-aaaa SNAPSHOT r101-bbbb" in (
        regressions.text)


async def test_firmware_without_jobs_says_why(api, pool):
    factory = Factory(pool)
    firmware_id = await factory.firmware("24.10.1", channel="stable", revision="r300-dddd")
    await factory.build(firmware_id, "ramips/mt7621/nosuch-board")
    fw = await _page(api, f"/firmware/{quote(firmware_id, safe='')}")
    assert "no jobs" in fw.text
    assert "no lab has device type ramips/mt7621/nosuch-board" in fw.text
    listing = await _page(api, "/?verdict=none")
    assert "24.10.1 r300-dddd no jobs" in listing.text


async def test_upload_and_pull_request_firmware_are_named(api, pool):
    await insert_firmware(pool, msgspec.structs.replace(
        firmware(["x86/64/generic"], source_kind=SourceKind.UPLOAD,
                 priority_class=PriorityClass.CUSTOM, tag="u1"),
        submitter="alice"))
    pr = PullRequest(repository="openwrt/openwrt", number=42, head_sha="1a2b3c4d5e6f7a8b",
                     url="https://github.com/openwrt/openwrt/pull/42", title="ramips: fix")
    for sha in ("1a2b3c4d5e6f7a8b", "99aa88bb77cc66dd"):
        await insert_firmware(pool, msgspec.structs.replace(
            firmware(["x86/64/generic"], source_kind=SourceKind.GITHUB_PR,
                     priority_class=PriorityClass.PR, tag=f"pr42-{sha}"),
            pull_request=msgspec.structs.replace(pr, head_sha=sha)))
    listing = await _page(api, "/")
    assert "by alice" in listing.text and "wrtci:upload" not in listing.text
    assert "PR #42 1a2b3c4d" in listing.text and "PR #42 99aa88bb" in listing.text
    prs = await _page(api, "/prs")
    assert "openwrt/openwrt #42 ramips: fix" in prs.text
    one = await _page(api, "/prs/openwrt/openwrt/42")
    assert one.title.startswith("openwrt/openwrt #42: ramips: fix")
    assert "2 pushes" in one.text and pr.url in one.links
    assert "PR #42 1a2b3c4d 1a2b3c4d5e6f no jobs" in one.text


@pytest.mark.parametrize("path", [
    "/firmware/wrtci:official:<nope>", "/jobs/nosuch", "/devices/lab-x/dut-9",
    "/device-types/none%2Fsuch%2Fthing", "/prs/openwrt/openwrt/7", "/no/such/page",
    "/matrix?channel=nosuch", "/jobs/nosuch/attempts/1/console"])
async def test_missing_things_are_404_pages(api, path):
    async with api.session.get(api.base + path) as resp:
        assert resp.status == 404 and resp.content_type == "text/html"
        assert "Error 404" in Page(await resp.text()).text


@pytest.mark.parametrize("path", [
    "/?state=<x>", "/?verdict=great", "/?source=ftp", "/?limit=0", "/?offset=-1",
    "/?chanel=stable", "/?channel=a&channel=b", "/fleet?x=1", "/matrix?limit=999",
    "/regressions?open=maybe", "/flaky?all=2", "/prs?page=2", "/prs/a%20b/c/1",
    "/prs/openwrt/openwrt/0", "/jobs/x?attempt=1", "/firmware/x?y=1",
    "/jobs/x/attempts/1/console?stream=../../etc", "/?channel=" + "x" * 300])
async def test_bad_input_is_a_400_page(api, path):
    async with api.session.get(api.base + path) as resp:
        assert resp.status == 400, (path, await resp.text())
        assert resp.content_type == "text/html"
        text = Page(await resp.text()).text
        assert "Error 400" in text and len(text) > 20


async def test_a_lab_whose_heartbeat_expired_is_offline(api, js, subjects, pool,
                                                       storage_config):
    """The lab said lab.online and never lab.offline (it lost power): its heartbeat
    entry going stale or away is what tells, on the fleet, device and device type
    pages and in the API."""
    await scenario(js, subjects, pool, storage_config)
    device_type = "/device-types/" + quote("x86/64/generic", safe="")
    fleet = await _page(api, "/fleet")
    assert "lab-a online" in fleet.text and "dut-1 x86/64/generic idle" in fleet.text

    stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=LAB_HEARTBEAT_TTL + 60)
    await announce_lab(js, subjects, "lab-a", [("dut-1", "x86/64/generic", [])],
                       heartbeat_at=stale)
    fleet = await _page(api, "/fleet")
    assert "lab-a offline" in fleet.text
    assert "dut-1 x86/64/generic lab lab-a is offline warning" in fleet.text
    device = await _page(api, "/devices/lab-a/dut-1")
    assert "lab-a x86/64/generic lab lab-a is offline warning" in device.text
    assert "lab lab-a is offline" in (await _page(api, device_type)).text
    _, body = await api.get("/api/v1/labs/lab-a")
    assert body["lab"]["online"] is False

    # The entry gone altogether (expired by the bucket's TTL) reads the same.
    kv = await js.key_value(subjects.labs_bucket)
    await kv.purge(subjects.lab_key("lab-a"))
    device = await _page(api, "/devices/lab-a/dut-1")
    assert "lab-a x86/64/generic lab lab-a is offline warning" in device.text
