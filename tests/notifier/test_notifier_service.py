"""The notifier daemon against real NATS, PostgreSQL, an SMTP server (aiosmtpd)
and the local GitHub API: a firmware's move to done mails and comments once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
from nats.js.errors import NotFoundError

from tests import factories
from tests.factories_results import Factory, finished, ingest_all, publish
from tests.helpers import consumer_caught_up, eventually
from tests.results.test_results_kcidb import PANIC_LOG, _put, analyser
from tests.servers.github import GithubServer
from tests.servers.smtp import SmtpServer
from tests.servers.trigger_harness import REPO, TOKEN
from wrtci.core.config import LoggingConfig
from wrtci.proto.events import FirmwareStateChanged, FirmwareStateData
from wrtci.proto.model import FirmwareState, PriorityClass, PullRequest, SourceKind
from wrtci.proto.storage import job_log_key
from wrtci.services.lifecycle import state_event_id
from wrtci.services.notifier import Config, run
from wrtci.services.notifier.config import GithubSection, MailRule, MailSection, NotifierSection
from wrtci.services.stack.servers import free_port

WEB = "https://ci.example.org"
X86 = "x86/64/generic"
ATH79 = "ath79/generic/tplink_archer-c7-v2"
HEAD = "c" * 40
LIST = "openwrt-devel@example.org"


# -- the notifier ---------------------------------------------------------------------------


@pytest.fixture
def configure(nats_config, database_config, storage_config) -> Callable[..., Config]:
    """The notifier's config against this test's servers: ``configure(smtp_port=...)``."""
    return functools.partial(notifier_config, nats_config, database_config, storage_config)


def notifier_config(nats_config, database_config, storage_config, *, smtp_port: int | None,
                    github: GithubServer | None = None, **section) -> Config:
    mail = MailSection(
        enabled=smtp_port is not None, host="127.0.0.1", port=smtp_port or 25, timeout_s=5,
        from_address="wrtci <ci@example.org>", rules=[
            MailRule(to=[LIST], source_kinds=["official"]),
            MailRule(to=["pr-watchers@example.org"], channels=["pr"])],
        submitter_addresses={"contributor": "contributor@example.org"})
    hub = GithubSection(enabled=github is not None, api_url=github.url if github else "",
                        token=TOKEN, timeout_s=5)
    options = {"retry_delays_s": [0.2], "settle_poll_s": 0.2, "lease_s": 30.0} | section
    return Config(nats=nats_config, database=database_config, storage=storage_config,
                  logging=LoggingConfig(format="text"),
                  notifier=NotifierSection(web_url=WEB, mail=mail, github=hub, **options))


@contextlib.asynccontextmanager
async def notifiers(config: Config, replicas: int = 1) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run(config, stop)) for _ in range(replicas)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)


async def deliver(js, subjects, pool, config: Config, firmware_id: str) -> None:
    """One notifier reports ``firmware_id`` done, until every notification settled."""
    async with notifiers(config):
        await publish(js, subjects, done_event(firmware_id))
        await settled(js, subjects, pool)


async def settled(js, subjects, pool, durable: str = "notifier") -> None:
    """Every event handled for good (acked or terminated), no delivery open."""
    async def done() -> bool:
        if not await consumer_caught_up(js, subjects.events_stream, durable):
            return False
        return await pool.fetchval(
            "SELECT count(*) FROM notifications WHERE state IN ('pending', 'sending')") == 0
    await eventually(done, "every notification settled")


# -- firmware as the other services leave it -----------------------------------------------


async def results(js, subjects, pool, storage_config, jobs: dict[str, dict[str, str]],
                  attempt: int = 1, log_of: str | None = None) -> None:
    """Lab results of ``jobs`` ingested and analysed by the real results code."""
    events = []
    for job, tests in jobs.items():
        log_key = None
        if job == log_of:
            log_key = job_log_key(job, attempt)
            _put(storage_config, log_key, PANIC_LOG)
        events.append(finished(job, tests, attempt=attempt, log_key=log_key))
    await publish(js, subjects, *events)
    await ingest_all(js, subjects, pool)
    await analyser(pool, storage_config).run_due(100)


async def mark_done(pool, firmware_id: str, round_: int = 0) -> None:
    """What the scheduler writes when the firmware's last job is done."""
    await pool.execute(
        """UPDATE jobs j SET state = 'done', result = a.result, log_key = a.log_key
             FROM job_attempts a
            WHERE a.job_id = j.id AND a.attempt = j.attempt AND j.checkout_id = $1""",
        firmware_id)
    await pool.execute("UPDATE checkouts SET state = 'done', done_at = now(), round = $2 "
                       "WHERE id = $1", firmware_id, round_)


def done_event(firmware_id: str, round_: int = 0) -> FirmwareStateChanged:
    return FirmwareStateChanged.build(
        FirmwareStateData(firmware_id=firmware_id, state=FirmwareState.DONE,
                          previous=FirmwareState.CLOSING, reason="all jobs done"),
        source="wrtci/scheduler", subject=firmware_id,
        id=state_event_id(firmware_id, FirmwareState.DONE, round_))


async def official_with_regressions(js, subjects, pool, storage_config) -> str:
    """24.10.0 r28427: three tests that passed on r28400 fail on two device types."""
    factory = Factory(pool)
    good = await factory.firmware("24.10.0", revision="r28400-aaaa", channel="stable")
    bad = await factory.firmware("24.10.0", revision="r28427-bbbb", channel="stable")
    for firmware, status in ((good, "PASS"), (bad, "FAIL")):
        x86, ath79 = await factory.job(firmware, X86), await factory.job(firmware, ATH79)
        await results(js, subjects, pool, storage_config, {
            x86: {"base.test_wifi": status, "base.test_ubus": status, "base.test_shell": "PASS"},
            ath79: {"base.test_wifi": status, "base.test_shell": "PASS"},
        }, log_of=ath79 if status == "FAIL" else None)
        await mark_done(pool, firmware)
    return bad


async def pr_firmware(pool, number: int = 42) -> tuple[str, str]:
    """A pull request firmware (as the trigger records it) with one x86 job; (id, job)."""
    data = factories.firmware([X86], priority_class=PriorityClass.PR,
                              source_kind=SourceKind.GITHUB_PR, tag=f"pr{number}-{HEAD[:8]}")
    data = msgspec.structs.replace(
        data, version=f"pr-{number}", revision=None, git_commit_hash=HEAD,
        submitter="contributor", pull_request=PullRequest(
            repository=REPO, number=number, head_sha=HEAD, title="ath79: fix wifi",
            url=f"https://github.com/{REPO}/pull/{number}", author="contributor"))
    await factories.insert_firmware(pool, data)
    job = await Factory(pool).job(data.firmware_id, X86)
    return data.firmware_id, job


async def done_pr_firmware(js, subjects, pool, storage_config, tests: dict[str, str],
                           number: int = 42) -> tuple[str, str]:
    """A pull request firmware whose one job ended with ``tests``, analysed and done."""
    firmware, job = await pr_firmware(pool, number)
    await results(js, subjects, pool, storage_config, {job: tests})
    await mark_done(pool, firmware)
    return firmware, job


# -- tests -----------------------------------------------------------------------------------


async def test_done_firmware_mails_one_report_with_its_regressions(
        js, subjects, pool, configure, storage_config, smtp):
    firmware = await official_with_regressions(js, subjects, pool, storage_config)
    config = configure(smtp_port=smtp.port)
    await deliver(js, subjects, pool, config, firmware)

    (message,) = smtp.mailbox.messages
    assert message["Subject"] == "[wrtci] 24.10.0 r28427: 3 regressions on 2 device types"
    assert smtp.mailbox.envelopes == [[LIST]]
    assert message["From"] == "wrtci <ci@example.org>"
    body = message.get_content()
    # regressions first, each with the firmware it last passed on
    regressions = body.index("Regressions (passed on the previous firmware")
    assert regressions < body.index("Per device type:")
    for dtype, path in [(X86, "base.test_wifi"), (X86, "base.test_ubus"),
                        (ATH79, "base.test_wifi")]:
        assert f"  {dtype}  {path}  (last passed on wrtci:official:stable:24.10.0:r28400-aaaa)" \
            in body
    assert f"{X86}: 2 regressions; tests FAIL=2 PASS=1" in body
    assert f"Web page:  {WEB}/firmware/wrtci:official:stable:24.10.0:r28427-bbbb" in body
    # the console-log incident with its log key and the matching line
    assert "Kernel panic - not syncing: Attempted to kill init!" in body
    assert f"log: {job_log_key(await _job(pool, firmware, ATH79), 1)}" in body
    row = await pool.fetchrow("SELECT * FROM notifications WHERE firmware_id = $1", firmware)
    assert (row["channel"], row["state"], row["attempts"], row["target"]) == (
        "mail", "sent", 1, LIST)
    assert row["detail"] == message["Message-ID"]


async def _job(pool, firmware: str, device_type: str) -> str:
    return await pool.fetchval("SELECT id FROM jobs WHERE checkout_id = $1 AND device_type = $2",
                               firmware, device_type)


async def test_pull_request_gets_one_status_one_comment_and_its_submitter_a_mail(
        js, subjects, pool, configure, storage_config, smtp, github):
    github.add_pull(42, HEAD, ["ci-test-requested"])
    github.add_comment(42, "Looks good to me")
    firmware, _job = await done_pr_firmware(js, subjects, pool, storage_config,
                                            {"base.test_shell": "PASS"})
    config = configure(smtp_port=smtp.port, github=github)
    await deliver(js, subjects, pool, config, firmware)

    (status,) = github.statuses
    assert (status["sha"], status["state"], status["context"]) == (HEAD, "success", "wrtci")
    assert status["target_url"] == f"{WEB}/firmware/{firmware}"
    human, ours = github.comments_on(42)
    assert human["body"] == "Looks good to me"
    assert ours["body"].startswith(f"<!-- wrtci:{firmware} -->\n### ✅ wrtci: PASS")
    assert f"| `{X86}` | 0 | PASS=1 | pass=1 |" in ours["body"]
    (message,) = smtp.mailbox.messages
    assert message["Subject"] == f"[wrtci] pr-42 {HEAD[:12]}: PASS"
    assert smtp.mailbox.envelopes == [["contributor@example.org", "pr-watchers@example.org"]]
    states = {r["channel"]: r["state"] for r in await pool.fetch("SELECT * FROM notifications")}
    assert states == {"mail": "sent", "github_status": "sent", "github_comment": "sent"}


async def test_same_done_event_twice_and_two_replicas_report_once(
        js, subjects, pool, configure, storage_config, smtp, github):
    github.add_pull(7, HEAD, [])
    firmware, _job = await done_pr_firmware(js, subjects, pool, storage_config,
                                            {"base.test_shell": "FAIL"}, 7)
    config = configure(smtp_port=smtp.port, github=github)
    # Two copies in the stream (a redelivery that NATS did not dedupe), two replicas.
    await publish(js, subjects, done_event(firmware), done_event(firmware), dedupe=False)
    async with notifiers(config, replicas=2):
        await settled(js, subjects, pool)
    async with notifiers(config):  # and once more after a restart
        await publish(js, subjects, done_event(firmware), dedupe=False)
        await settled(js, subjects, pool)

    assert len(smtp.mailbox.messages) == 1
    assert len(github.statuses) == 1 and github.statuses[0]["state"] == "failure"
    assert len(github.comments_on(7)) == 1
    assert github.requests["create_comment"] == 1 and github.requests["edit_comment"] == 0


async def test_second_round_edits_the_comment_and_mails_again(
        js, subjects, pool, configure, storage_config, smtp, github):
    github.add_pull(42, HEAD, [])
    firmware, job = await done_pr_firmware(js, subjects, pool, storage_config,
                                           {"base.test_wifi": "PASS"})
    config = configure(smtp_port=smtp.port, github=github)
    async with notifiers(config):
        await publish(js, subjects, done_event(firmware))
        await settled(js, subjects, pool)
        # A retry: the scheduler reopens the firmware (round 1), a new attempt fails.
        await Factory(pool).add_attempt(job, 2)
        await pool.execute("UPDATE jobs SET attempt = 2 WHERE id = $1", job)
        await results(js, subjects, pool, storage_config, {job: {"base.test_wifi": "FAIL"}},
                      attempt=2)
        await mark_done(pool, firmware, round_=1)
        await publish(js, subjects, done_event(firmware, round_=1))
        await settled(js, subjects, pool)

    (comment,) = github.comments_on(42)
    assert "### ❌ wrtci: no regressions, 1 failed test" in comment["body"]
    assert "round 1 (after a retry)" in comment["body"]
    assert github.requests["create_comment"] == 1 and github.requests["edit_comment"] == 1
    assert [s["state"] for s in github.statuses] == ["success", "failure"]
    subjects_sent = [m["Subject"] for m in smtp.mailbox.messages]
    assert subjects_sent == [f"[wrtci] pr-42 {HEAD[:12]}: PASS",
                             f"[wrtci] pr-42 {HEAD[:12]}: no regressions, 1 failed test "
                             f"(retry 1)"]
    rounds = await pool.fetch("SELECT round, count(*) AS n FROM notifications "
                              "WHERE state = 'sent' GROUP BY round ORDER BY round")
    assert [(r["round"], r["n"]) for r in rounds] == [(0, 3), (1, 3)]


async def test_mail_is_sent_once_when_the_smtp_server_comes_back(
        js, subjects, pool, configure, storage_config):
    firmware = await official_with_regressions(js, subjects, pool, storage_config)
    down = SmtpServer()  # its port, nobody listening yet
    config = configure(smtp_port=down.port, max_attempts=50)
    try:
        async with notifiers(config):
            await publish(js, subjects, done_event(firmware))

            async def refused() -> bool:
                return bool(await pool.fetchval(
                    "SELECT last_error FROM notifications WHERE state = 'pending'"))
            await eventually(refused, "the mail server's refusal recorded")
            await down.start()
            await settled(js, subjects, pool)
    finally:
        await down.stop()
    assert len(down.mailbox.messages) == 1
    row = await pool.fetchrow("SELECT * FROM notifications")
    assert row["state"] == "sent" and row["attempts"] >= 2 and row["last_error"] is None


async def test_github_server_error_is_retried_into_one_status(
        js, subjects, pool, configure, storage_config, github):
    github.add_pull(42, HEAD, [])
    github.fail("status", 500, times=2)
    github.fail("comments", 502, times=1)
    firmware, _job = await done_pr_firmware(js, subjects, pool, storage_config,
                                            {"base.test_shell": "PASS"})
    config = configure(smtp_port=None, github=github)
    await deliver(js, subjects, pool, config, firmware)
    assert github.requests["status"] == 3 and len(github.statuses) == 1
    assert len(github.comments_on(42)) == 1
    rows = {r["channel"]: r for r in await pool.fetch("SELECT * FROM notifications")}
    assert (rows["github_status"]["state"], rows["github_status"]["attempts"]) == ("sent", 3)
    assert (rows["github_comment"]["state"], rows["github_comment"]["attempts"]) == ("sent", 2)


async def test_github_client_error_fails_at_once_and_the_rest_is_delivered(
        js, subjects, pool, configure, storage_config, smtp, github):
    # No such pull request on GitHub: listing its comments answers 404.
    firmware, _job = await done_pr_firmware(js, subjects, pool, storage_config,
                                            {"base.test_shell": "PASS"}, 404)
    config = configure(smtp_port=smtp.port, github=github)
    await deliver(js, subjects, pool, config, firmware)
    rows = {r["channel"]: r for r in await pool.fetch("SELECT * FROM notifications")}
    assert (rows["github_comment"]["state"], rows["github_comment"]["attempts"]) == ("failed", 1)
    assert "HTTP 404" in rows["github_comment"]["last_error"]
    assert rows["github_status"]["state"] == rows["mail"]["state"] == "sent"
    assert len(smtp.mailbox.messages) == 1


async def test_temporary_failures_end_as_failed_after_the_last_try(
        js, subjects, pool, configure, storage_config):
    firmware = await official_with_regressions(js, subjects, pool, storage_config)
    config = configure(smtp_port=free_port(), max_attempts=3, retry_delays_s=[0.05])
    await deliver(js, subjects, pool, config, firmware)
    row = await pool.fetchrow("SELECT * FROM notifications")
    assert (row["state"], row["attempts"]) == ("failed", 3)
    assert row["last_error"].startswith("gave up after 3 tries: SMTP 127.0.0.1")


async def test_unknown_firmware_is_rejected_and_the_next_event_handled(
        js, subjects, pool, configure, storage_config, smtp):
    firmware = await official_with_regressions(js, subjects, pool, storage_config)
    config = configure(smtp_port=smtp.port)
    async with notifiers(config):
        await publish(js, subjects, done_event("wrtci:official:stable:no-such-firmware"),
                      done_event(firmware))
        await settled(js, subjects, pool)
    assert len(smtp.mailbox.messages) == 1
    assert await pool.fetchval("SELECT firmware_id FROM notifications") == firmware


async def test_report_waits_for_the_results_analysis(
        js, subjects, pool, configure, storage_config, smtp):
    """Done can come before the results service has analysed the last attempt."""
    factory = Factory(pool)
    good = await factory.firmware("24.10.0", revision="r28400-aaaa", channel="stable")
    bad = await factory.firmware("24.10.0", revision="r28427-bbbb", channel="stable")
    job = await factory.job(good, X86)
    await results(js, subjects, pool, storage_config, {job: {"base.test_wifi": "PASS"}})
    job = await factory.job(bad, X86)
    await publish(js, subjects, finished(job, {"base.test_wifi": "FAIL"}))
    await ingest_all(js, subjects, pool)  # stored, not analysed yet
    await mark_done(pool, bad)
    config = configure(smtp_port=smtp.port)
    async with notifiers(config):
        await publish(js, subjects, done_event(bad))

        async def waited() -> bool:  # handled, put off, and handed out again
            try:
                info = await js.consumer_info(subjects.events_stream, "notifier")
            except NotFoundError:
                return False
            return info.num_redelivered > 0
        await eventually(waited, "the event put off and redelivered")
        assert smtp.mailbox.messages == []
        await analyser(pool, storage_config).run_due(100)
        await settled(js, subjects, pool)
    (message,) = smtp.mailbox.messages
    assert message["Subject"] == "[wrtci] 24.10.0 r28427: 1 regression on 1 device type"


async def test_a_claim_left_by_a_crashed_replica_is_taken_over_after_its_lease(
        js, subjects, pool, configure, storage_config, smtp, github):
    """A replica died between claiming (maybe sending) and marking: sent again, once."""
    github.add_pull(42, HEAD, [])
    firmware, _job = await done_pr_firmware(js, subjects, pool, storage_config,
                                            {"base.test_shell": "PASS"})
    # Its comment went out before the crash; its claims are still held for a moment.
    github.add_comment(42, f"<!-- wrtci:{firmware} -->\nold", login="wrtci[bot]")
    for channel in ("mail", "github_status", "github_comment"):
        await pool.execute(
            """INSERT INTO notifications (firmware_id, round, channel, state, attempts,
                                          lease_until)
               VALUES ($1, 0, $2, 'sending', 1, now() + interval '1 second')""",
            firmware, channel)
    config = configure(smtp_port=smtp.port, github=github)
    await deliver(js, subjects, pool, config, firmware)
    assert len(smtp.mailbox.messages) == 1 and len(github.statuses) == 1
    (comment,) = github.comments_on(42)  # the crashed replica's comment, edited
    assert "### ✅ wrtci: PASS" in comment["body"]
    attempts = {r["channel"]: r["attempts"] for r in await pool.fetch(
        "SELECT channel, attempts FROM notifications WHERE state = 'sent'")}
    assert attempts == {"mail": 2, "github_status": 2, "github_comment": 2}
