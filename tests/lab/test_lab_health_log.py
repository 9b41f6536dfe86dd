"""A failing health check's console log, readable through wrtci (issue 10 item 6).

Real NATS, PostgreSQL and S3, the real lab daemon (the fake suite: no boot),
log writer, API and notifier, and the local GitHub API: the lab streams the
failing check's console log, the log writer stores it, the API serves it at
the ``log_url`` of the check's device.health event, and the health issue links
it. Another lab cannot write a health log for a device it does not have.
"""

from __future__ import annotations

import asyncio

import aiohttp

from tests.api_support import serving
from tests.helpers import eventually
from tests.lab_helpers import lab_config, running_lab, running_log_writer
from tests.logs.test_logs_writer import _get, _wait_object
from tests.notifier.test_notifier_health import _config, github_repo, notifiers  # noqa: F401
from wrtci.lab_daemon.config import HealthConfig
from wrtci.proto import events as ev
from wrtci.proto.events import LogChunk, LogChunkData
from wrtci.proto.model import DeviceHealth, DeviceState
from wrtci.proto.storage import HEALTH_LOG_PATH, health_log_id, health_log_key, health_log_path
from wrtci.services.identity import REJECTED
from wrtci.services.notifier.health import issue_title, log_link

CONSOLE_LINE = "U-Boot 2024.10 ... Timeout while waiting for login prompt"
FAILING_CHECK = f'''
from pathlib import Path

def test_boot_fails():
    # labgrid writes its console log to <run>/labgrid/console_main (--lg-log);
    # pytest runs in <run>/plans/health.
    console = Path.cwd().parent.parent / "labgrid" / "console_main"
    console.write_text("{CONSOLE_LINE}\\n")
    print("pytest side of the failing check", flush=True)
    assert False, "no login prompt"
'''


async def test_a_failing_checks_console_log_is_stored_served_and_linked_from_the_issue(
        js, subjects, events, nats_config, database_config, storage_config, pool, github,
        fake_suite, tmp_path):
    (fake_suite / "tests" / "test_health_fails.py").write_text(FAILING_CHECK)
    health = HealthConfig(tests=["tests/test_health_fails.py::test_boot_fails"],
                          warn_after=1, disable_after=1)
    config = lab_config(nats_config, tmp_path / "work", fake_suite, health=health)
    notifier_config = _config(nats_config, database_config, storage_config, github=github)
    async with running_log_writer(nats_config, storage_config, database_config), \
            serving(nats_config, database_config, storage_config) as api, \
            notifiers(notifier_config, js), running_lab(config):
        await events.wait_for(lambda e: any(h.data.check_passed is False
                                            for h in e.of(ev.DeviceHealthChanged)))
        [failed] = [h.data for h in events.of(ev.DeviceHealthChanged)
                    if h.data.check_passed is False]
        assert failed.health is DeviceHealth.UNHEALTHY
        assert failed.log_url is not None
        assert failed.log_url.startswith(health_log_path("lab1", "dut1", "x")[:-len(
            "x/console.log")])
        # Stored by the log writer, served by the API at exactly that URL.
        async with aiohttp.ClientSession() as session:
            async def served() -> tuple[int, str, dict]:
                async with session.get(api.base + failed.log_url) as resp:
                    return resp.status, await resp.text(), dict(resp.headers)

            await eventually(lambda: _status_is(served, 200), "the health log served")
            status, text, headers = await served()
            assert status == 200
            assert CONSOLE_LINE in text
            assert headers["Content-Type"].startswith("text/plain")
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in headers["Content-Security-Policy"]
            pytest_url = failed.log_url.replace("/console.log", "/pytest.log")
            async with session.get(api.base + pytest_url) as resp:
                assert resp.status == 200
                assert "pytest side of the failing check" in await resp.text()
            async with session.get(api.base + HEALTH_LOG_PATH + "lab1/dut1/..%2Fx/a") as resp:
                assert resp.status == 404
        # The issue links it on wrtci's web address.
        title = issue_title("lab1", "dut1")
        await eventually(lambda: github.issues_titled(title), "the health issue opened")
        [issue] = github.issues_titled(title)
        link = "https://ci.example.org" + failed.log_url
        assert f"Console log of the failing check: {link}" in issue["body"]


async def _status_is(get, status: int) -> bool:
    return (await get())[0] == status


def _health_chunk(lab: str, device: str, check_id: str, *, job_lab: str | None = None,
                  job_id: str | None = None) -> LogChunk:
    return LogChunk.build(LogChunkData(
        job_id=job_id or health_log_id(device, check_id), attempt=1, lab=job_lab or lab,
        device=device, seq=0, text=f"console of {device} by {lab}\n", final=True),
        source=f"wrtci-lab/{lab}")


async def test_another_lab_cannot_write_a_health_log_for_a_device_it_does_not_have(
        js, subjects, nats_config, storage_config):
    # lab1 has dut1 (its record in the devices bucket, as its daemon writes it).
    kv = await js.key_value(subjects.devices_bucket)
    await kv.put(subjects.device_key("lab1", "dut1"), b"{}")
    before = REJECTED[("logs", "log.chunk")]
    forged = [
        # lab2, on its own subject, for lab1's device
        ("lab2", _health_chunk("lab2", "dut1", "c-forged")),
        # lab2 claiming to be lab1
        ("lab2", _health_chunk("lab2", "dut1", "c-claimed", job_lab="lab1")),
        # the chunk's device is not the one its id names
        ("lab1", LogChunk.build(LogChunkData(
            job_id=health_log_id("dut1", "c-mixed"), attempt=1, lab="lab1", device="dut9",
            seq=0, text="x", final=True), source="x")),
        # not an id the lab makes
        ("lab1", _health_chunk("lab1", "dut1", "", job_id="health:dut1")),
    ]

    async def publish(lab: str, event: LogChunk) -> None:
        subject = subjects.log_chunk(lab, event.data.job_id)
        await js.publish(subject, ev.encode(event), headers={"Nats-Msg-Id": event.id})

    async with running_log_writer(nats_config, storage_config):
        for lab, event in forged:
            await publish(lab, event)
        await eventually(lambda: REJECTED[("logs", "log.chunk")] - before >= len(forged),
                         "every forged health log rejected")
        # the owner's own health log is stored (the check above can fail)
        await publish("lab1", _health_chunk("lab1", "dut1", "c-real"))
        own = "console of dut1 by lab1\n"
        assert await _wait_object(storage_config, health_log_key("lab1", "dut1", "c-real"),
                                  own) == own
    for key in (health_log_key("lab2", "dut1", "c-forged"),
                health_log_key("lab1", "dut1", "c-claimed"),
                health_log_key("lab2", "dut1", "c-claimed"),
                health_log_key("lab1", "dut1", "c-mixed"),
                health_log_key("lab1", "dut9", "c-mixed")):
        assert await asyncio.to_thread(_get, storage_config, key) is None
    assert REJECTED[("logs", "log.chunk")] - before == len(forged)


def test_the_issue_links_only_a_health_log_of_that_lab_and_device():
    def data(log_url: str | None) -> ev.DeviceHealthData:
        return ev.DeviceHealthData(lab="lab1", device="dut1", device_type="t",
                                   health=DeviceHealth.UNHEALTHY, state=DeviceState.UNHEALTHY,
                                   log_url=log_url)

    own = health_log_path("lab1", "dut1", "20260101T000000Z-ab12")
    assert log_link(data(own), "https://ci.example.org/") == "https://ci.example.org" + own
    for other in (health_log_path("lab2", "dut1", "c"), health_log_path("lab1", "dut2", "c"),
                  "https://evil.example/phish", "/api/v1/jobs/x/attempts/1/log", None,
                  HEALTH_LOG_PATH + "lab1/dut1/c/../../x"):
        assert log_link(data(other), "https://ci.example.org") is None
