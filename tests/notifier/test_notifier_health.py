"""Device health reaches people: the notifier's "Healthcheck <lab>/<device>" issue.

Real NATS and PostgreSQL, the local GitHub API (tests/servers/github.py) and
an SMTP server: device.health events as a lab publishes them open one issue,
never a second one across restarts, two replicas or a lost table, and close
it on recovery; without GitHub the lab's owners get mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from nats.js.errors import NotFoundError

from tests.helpers import eventually
from tests.servers.github import GithubServer
from tests.servers.trigger_harness import TOKEN
from wrtci.core.config import LoggingConfig
from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import DeviceHealthChanged, DeviceHealthData
from wrtci.proto.model import DeviceHealth, DeviceState
from wrtci.proto.storage import health_log_path
from wrtci.services.notifier import Config, run
from wrtci.services.notifier.config import (
    GithubSection,
    HealthSection,
    MailSection,
    NotifierSection,
)
from wrtci.services.notifier.health import issue_title

REPO = "openwrt/openwrt-tests"
LAB, DEVICE = "labgrid-wrtci", "openwrt_one"
TITLE = issue_title(LAB, DEVICE)
T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
LOG_URL = health_log_path(LAB, DEVICE, "20261130T080000Z-0a1b2c3d")
"""What the lab puts in ``log_url``: the API's path of the check's console log."""
LOG_LINK = "https://ci.example.org" + LOG_URL
"""What the issue links: that path on wrtci's web address (``[notifier] web_url``)."""


@pytest.fixture
def github_repo() -> str:
    """Device-health issues go to the openwrt-tests repository."""
    return REPO


def _config(nats_config, database_config, storage_config, *, github: GithubServer | None,
            smtp_port: int | None = None) -> Config:
    return Config(
        nats=nats_config, database=database_config, storage=storage_config,
        logging=LoggingConfig(format="text"),
        notifier=NotifierSection(
            web_url="https://ci.example.org", retry_delays_s=[0.2], lease_s=30.0,
            mail=MailSection(enabled=smtp_port is not None, host="127.0.0.1",
                             port=smtp_port or 25, timeout_s=5,
                             from_address="wrtci <ci@example.org>"),
            github=GithubSection(enabled=github is not None,
                                 api_url=github.url if github else "", token=TOKEN,
                                 timeout_s=5),
            health=HealthSection(repository=REPO if github else None, lab_owners={
                LAB: ["@lab-owner", "owner@example.org"]})))


@contextlib.asynccontextmanager
async def notifiers(config: Config, js, replicas: int = 1) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run(config, stop)) for _ in range(replicas)]
    subjects = config.nats.subjects
    try:
        # the consumer starts at "now": publish only once it exists
        await eventually(lambda: _consumer_exists(js, subjects.events_stream,
                                                  config.notifier.health.durable),
                         "the health consumer")
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)


async def _consumer_exists(js, stream: str, durable: str) -> bool:
    try:
        await js.consumer_info(stream, durable)
        return True
    except NotFoundError:
        return False


async def _health(js, subjects, health: DeviceHealth, minutes: int, *, passed: bool,
                  failures: int = 0, log_url: str | None = None) -> None:
    state = DeviceState.UNHEALTHY if health is DeviceHealth.UNHEALTHY else DeviceState.IDLE
    event = DeviceHealthChanged.build(DeviceHealthData(
        lab=LAB, device=DEVICE, device_type="mediatek/filogic/openwrt_one", health=health,
        state=state, consecutive_failures=failures, check_passed=passed,
        message="Timeout while waiting for login prompt" if not passed else "ok",
        log_url=log_url), source=f"wrtci-lab/{LAB}", subject=DEVICE,
        time=T0 + dt.timedelta(minutes=minutes))
    await EventPublisher(js, subjects).publish(event)


async def test_one_issue_opened_never_duplicated_and_closed_on_recovery(
        js, subjects, nats_config, database_config, storage_config, pool, github):
    config = _config(nats_config, database_config, storage_config, github=github)

    async def issue_state(state: str) -> bool:
        found = github.issues_titled(TITLE)
        return bool(found) and found[-1]["state"] == state

    async with notifiers(config, js):
        await _health(js, subjects, DeviceHealth.HEALTHY, 0, passed=True)
        await _health(js, subjects, DeviceHealth.WARNING, 60, passed=False, failures=3)
        await _health(js, subjects, DeviceHealth.UNHEALTHY, 120, passed=False, failures=5,
                      log_url=LOG_URL)
        await eventually(lambda: issue_state("open"), "the health issue open")
    [issue] = github.issues_titled(TITLE)
    assert [label["name"] for label in issue["labels"]] == ["healthcheck"]
    assert f"Console log of the failing check: {LOG_LINK}" in issue["body"]
    assert "**Last passed**: 2026-11-30 08:00 UTC" in issue["body"]  # the warning did not
    assert "@lab-owner" in issue["body"] and "waiting for login prompt" in issue["body"]

    # restarted, two replicas: the device keeps failing, then passes
    async with notifiers(config, js, replicas=2):
        for minutes in (180, 240):
            await _health(js, subjects, DeviceHealth.UNHEALTHY, minutes, passed=False,
                          failures=6)
        await _health(js, subjects, DeviceHealth.HEALTHY, 300, passed=True)
        await eventually(lambda: issue_state("closed"), "the health issue closed")
        await _health(js, subjects, DeviceHealth.UNHEALTHY, 200, passed=False)  # older
        await asyncio.sleep(1.0)
    [issue] = github.issues_titled(TITLE)
    assert issue["state"] == "closed"
    [comment] = github.comments_on(issue["number"])
    assert "passed its health check at 2026-11-30 13:00 UTC" in comment["body"]
    assert github.requests["create_issue"] == 1

    # the table lost (a new database): the issue is found by its title and reopened
    await pool.execute("DELETE FROM health_issues")
    async with notifiers(config, js):
        await _health(js, subjects, DeviceHealth.UNHEALTHY, 400, passed=False, failures=5)
        await eventually(lambda: issue_state("open"), "the health issue open")
    assert len(github.issues_titled(TITLE)) == 1
    assert github.requests["create_issue"] == 1
    row = await pool.fetchrow("SELECT state, issue_number FROM health_issues")
    assert (row["state"], row["issue_number"]) == ("open", issue["number"])


async def test_replicas_racing_over_one_device_open_one_issue(
        js, subjects, nats_config, database_config, storage_config, pool, github):
    config = _config(nats_config, database_config, storage_config, github=github)
    async with notifiers(config, js, replicas=2):
        await asyncio.gather(*(
            _health(js, subjects, DeviceHealth.UNHEALTHY, minutes, passed=False, failures=5)
            for minutes in range(10)))
        await eventually(lambda: _handled(pool, T0 + dt.timedelta(minutes=9)),
                         "the 9-minute report handled")
    assert len(github.issues_titled(TITLE)) == 1
    assert github.requests["create_issue"] == 1


async def _handled(pool, at: dt.datetime) -> bool:
    return await pool.fetchval("SELECT last_event_at FROM health_issues") == at


async def test_without_github_the_lab_owner_gets_mail_once_per_change(
        js, subjects, nats_config, database_config, storage_config, pool, smtp):
    config = _config(nats_config, database_config, storage_config, github=None,
                     smtp_port=smtp.port)
    mailbox = smtp.mailbox
    async with notifiers(config, js):
        await _health(js, subjects, DeviceHealth.UNHEALTHY, 0, passed=False, failures=5,
                      log_url=LOG_URL)
        await _health(js, subjects, DeviceHealth.UNHEALTHY, 60, passed=False, failures=6)
        await eventually(lambda: _handled(pool, T0 + dt.timedelta(minutes=60)),
                         "the 60-minute report handled")
        await _health(js, subjects, DeviceHealth.HEALTHY, 120, passed=True)
        await eventually(lambda: _handled(pool, T0 + dt.timedelta(minutes=120)),
                         "the 120-minute report handled")
    subjects_ = [m["Subject"] for m in mailbox.messages]
    assert subjects_ == [f"{TITLE}: failed", f"{TITLE}: recovered"]
    assert mailbox.envelopes == [["owner@example.org"], ["owner@example.org"]]
    assert LOG_LINK in mailbox.messages[0].get_content()


async def test_a_lab_cannot_report_another_labs_device(pool, subjects, nats_config,
                                                       database_config, storage_config):
    from wrtci.services.consume import MsgMeta, Reject
    from wrtci.services.notifier.health import HealthNotifier

    config = _config(nats_config, database_config, storage_config, github=None, smtp_port=25)
    notifier = HealthNotifier(pool, config.notifier, None, subjects)
    event = DeviceHealthChanged.build(DeviceHealthData(
        lab=LAB, device=DEVICE, device_type="x/y/z", health=DeviceHealth.UNHEALTHY,
        state=DeviceState.UNHEALTHY), source="wrtci-lab/other")
    meta = MsgMeta(subject=subjects.lab_event("other-lab", "device.health"), stream_seq=1,
                   num_delivered=1)
    with pytest.raises(Reject, match="sent by lab 'other-lab'"):
        await notifier.handle(event, meta)
    assert await pool.fetchval("SELECT count(*) FROM health_issues") == 0
