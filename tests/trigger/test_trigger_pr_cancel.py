"""A new push, a removed label or a closed PR cancels the PR's firmware not yet done.

Against the local GitHub API server, with real NATS and PostgreSQL; the last
test runs the scheduler too and shows the old firmware's queued job withdrawn.
"""

from __future__ import annotations

import pytest

from tests import factories
from tests.helpers import eventually
from tests.pipeline import firmware_jobs, firmware_state, running, stored_events
from tests.servers.trigger_harness import LABEL, REPO, TOKEN, firmware_artifacts, trigger_config
from wrtci.proto import events as ev
from wrtci.services.scheduler.service import SchedulerSettings
from wrtci.services.trigger.config import GithubConfig
from wrtci.services.trigger.github import PullRequestSource
from wrtci.services.trigger.pr_cancel import Cause, PrFirmware, PrNow, to_cancel
from wrtci.services.trigger.service import open_context

SHA1 = "a" * 40
SHA2 = "b" * 40
SHA3 = "c" * 40
OLD = f"wrtci:pr:{REPO}#101:{SHA1}"
NEW = f"wrtci:pr:{REPO}#101:{SHA2}"
X86 = "x86/64/generic"


@pytest.fixture
def config(nats_config, database_config, storage_config, github, js):
    return trigger_config(nats_config, database_config, storage_config, github=GithubConfig(
        enabled=True, api_url=github.url, repository=REPO, token=TOKEN, workflow="build.yml"))


async def poll(config):
    """One poll by a trigger started for it: nothing is remembered between two calls."""
    async with open_context(config) as ctx:
        return await PullRequestSource(config.trigger.github, ctx).poll_once()


async def cancel_requests(js, subjects) -> list[ev.FirmwareCancelRequested]:
    return await stored_events(js, subjects, "firmware.cancel_requested")  # type: ignore[return-value]


async def labelled_pr_with_firmware(github, config) -> None:
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, firmware_artifacts())
    assert (await poll(config)).announced == 1


async def test_new_push_cancels_the_previous_heads_firmware_once(github, config, js,
                                                                 subjects, pool) -> None:
    await labelled_pr_with_firmware(github, config)
    github.push(101, SHA2)
    github.add_run(SHA2, firmware_artifacts(b"2"))

    report = await poll(config)
    again = await poll(config)

    assert (report.announced, report.cancelled) == (1, 1)
    assert (again.announced, again.cancelled) == (0, 0)
    [request] = await cancel_requests(js, subjects)
    assert request.id == f"firmware.cancel_requested:{OLD}:superseded"
    assert request.subject == OLD
    assert (request.data.firmware_id, request.data.requested_by, request.data.reason) == (
        OLD, "wrtci/trigger", f"superseded by {SHA2}")
    assert [e.data.firmware_id for e in await stored_events(js, subjects,
                                                            "firmware.discovered")] == [OLD, NEW]


async def test_a_push_without_a_build_yet_still_supersedes(github, config, js,
                                                           subjects) -> None:
    await labelled_pr_with_firmware(github, config)
    github.push(101, SHA2)  # its build is still running: no firmware for it yet

    report = await poll(config)

    assert (report.waiting, report.cancelled) == (1, 1)
    assert [r.data.firmware_id for r in await cancel_requests(js, subjects)] == [OLD]


async def test_removing_the_label_cancels_even_after_a_restart(github, config, js, subjects,
                                                               pool) -> None:
    """The trigger that saw the label is gone; a new one learns it from the database."""
    await labelled_pr_with_firmware(github, config)
    github.set_labels(101, ["target/x86"])

    first = await poll(config)
    second = await poll(config)

    assert (first.labelled, first.cancelled, second.cancelled) == (0, 1, 0)
    [request] = await cancel_requests(js, subjects)
    assert (request.id, request.data.reason) == (
        f"firmware.cancel_requested:{OLD}:label-removed", "label removed")
    # Marked as published: a poll after the stream's dedupe window sends nothing either.
    assert await pool.fetchval("SELECT checkout_id FROM trigger_announcements "
                               "WHERE event_id = $1", request.id) == OLD


@pytest.mark.parametrize("merged", [False, True])
async def test_closing_or_merging_the_pr_cancels(github, config, js, subjects,
                                                 merged) -> None:
    await labelled_pr_with_firmware(github, config)
    github.close(101, merged=merged)

    report = await poll(config)
    await poll(config)

    assert report.cancelled == 1
    [request] = await cancel_requests(js, subjects)
    assert (request.data.firmware_id, request.data.reason) == (OLD, "pull request closed")
    assert github.requests["pull"] == 1  # asked once; then the request is marked


async def test_firmware_already_done_and_other_prs_are_left_alone(github, config, js,
                                                                  subjects, pool) -> None:
    await labelled_pr_with_firmware(github, config)
    github.add_pull(102, SHA3, [LABEL])
    github.add_run(SHA3, firmware_artifacts(b"3"))
    await poll(config)
    # The scheduler finished PR 101's firmware; PR 102 is untouched.
    await pool.execute("UPDATE checkouts SET state = 'done', done_at = now() WHERE id = $1",
                       OLD)
    github.push(101, SHA2)

    report = await poll(config)

    assert report.cancelled == 0
    assert await cancel_requests(js, subjects) == []


async def test_a_failed_lookup_of_a_closed_pr_cancels_nothing_until_it_answers(
        github, config, js, subjects) -> None:
    await labelled_pr_with_firmware(github, config)
    github.close(101)
    github.fail("pull", 502)

    assert (await poll(config)).cancelled == 0
    assert (await poll(config)).cancelled == 1


def test_what_cancels_and_why() -> None:
    firmware = [PrFirmware("fw1", 1, SHA1), PrFirmware("fw2", 2, SHA1),
                PrFirmware("fw3", 3, SHA1), PrFirmware("fw4", 4, SHA1),
                PrFirmware("fw5", 5, SHA1)]
    pulls = {1: PrNow(SHA1, labelled=True),  # current head: kept
             2: PrNow(SHA2, labelled=True),  # pushed again
             3: PrNow(SHA2, labelled=False),  # pushed and unlabelled: the label wins
             4: PrNow(SHA1, labelled=True, open=False)}  # closed; 5: unknown, left alone
    assert [(r.firmware_id, r.cause, r.reason) for r in to_cancel(firmware, pulls)] == [
        ("fw2", Cause.SUPERSEDED, f"superseded by {SHA2}"),
        ("fw3", Cause.LABEL_REMOVED, "label removed"),
        ("fw4", Cause.CLOSED, "pull request closed"),
    ]


async def test_with_the_scheduler_the_old_heads_queued_job_is_withdrawn(
        github, config, js, subjects, pool, nats_config, database_config,
        storage_config) -> None:
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, [])])
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, firmware_artifacts())

    async def queued_for() -> set[str]:
        info = await js.stream_info(subjects.jobs_stream)
        found = set()
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(subjects.jobs_stream, seq)
            except Exception:  # withdrawn: deleted from the stream
                continue
            found.add(ev.decode(msg.data).data.firmware_id)  # type: ignore[union-attr]
        return found

    async with running(nats_config, database_config, storage_config,
                       scheduler=SchedulerSettings(holdoff_s=3600), with_timeout=False):
        await poll(config)

        async def old_queued():
            return await queued_for() == {OLD}
        await eventually(old_queued, "the first head's job queued")

        github.push(101, SHA2)
        github.add_run(SHA2, firmware_artifacts(b"2"))
        await poll(config)

        async def old_withdrawn_new_queued():
            return (await queued_for() == {NEW}
                    and await firmware_state(pool, OLD) == "done")
        await eventually(old_withdrawn_new_queued, "old job withdrawn, new one queued")

    [old_job] = await firmware_jobs(pool, OLD)
    assert (old_job["device_type"], old_job["state"], old_job["result"],
            old_job["error_code"]) == (X86, "done", "error", "cancelled")
    assert await firmware_state(pool, NEW) == "available"
    [new_job] = await firmware_jobs(pool, NEW)
    assert new_job["state"] == "queued"
