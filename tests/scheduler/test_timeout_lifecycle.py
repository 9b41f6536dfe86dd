"""Job and firmware life: labs report, attempts retry, timers end what hangs."""

from __future__ import annotations

import msgspec
import pytest

from tests import factories
from tests.helpers import eventually
from tests.pipeline import (
    QUICK_RETRY,
    X86,
    FakeLab,
    firmware_in,
    firmware_jobs,
    job_row,
    running,
    stored_events,
)
from wrtci.proto.events import JobStarted, JobStartedData
from wrtci.proto.model import ErrorCode, JobResult
from wrtci.services.consume import MsgMeta, Reject
from wrtci.services.lifecycle import Lifecycle
from wrtci.services.lifecycle.dispatch import Dispatcher
from wrtci.services.scheduler.service import SchedulerSettings
from wrtci.services.timeout.deadlines import DeadlineLoop
from wrtci.services.timeout.service import LifecycleHandler, TimeoutSettings

FAST = SchedulerSettings(holdoff_s=0.3)
SHORT_ACK_WAIT = msgspec.structs.replace(FAST, job_ack_wait_s=1.0)
"""The job consumers' ack wait: a lab that stops acking loses its job in 1 s."""


async def _lab(js, subjects):
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, ["rootfs"])])
    await factories.announce_lab(js, subjects, "lab-b", [("x86-2", X86, ["rootfs"])])


def _job_done(pool, job_id):
    async def check():
        row = await job_row(pool, job_id)
        return row is not None and row["state"] == "done"
    return check


async def test_job_runs_and_firmware_is_done_exactly_once(js, nc, subjects, nats_config,
                                                          database_config, storage_config,
                                                          pool):
    await _lab(js, subjects)
    data = factories.firmware([X86])
    await factories.insert_firmware(pool, data)
    async with running(nats_config, database_config, storage_config, scheduler=FAST):
        await factories.publish_firmware(js, subjects, data)
        lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        job = await lab.take(X86)
        await lab.start(job)

        async def is_running():
            return (await job_row(pool, job.spec.job_id))["state"] == "running"
        await eventually(is_running, "job running")
        await lab.progress(job)
        await lab.finish(job, JobResult.PASS)
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware done")
        # The lab reports again (a resend): nothing changes, no second done.
        await lab.finish(job, JobResult.PASS, ack=False)
        await factories.publish_firmware(js, subjects, data, event_id="again")
        await lab.close()

    row = await job_row(pool, job.spec.job_id)
    assert (row["state"], row["result"], row["attempt"], row["lab"]) == (
        "done", "pass", 1, "lab-a")
    states = [e.data.state for e in await stored_events(js, subjects, "firmware.state")]
    assert states == ["available", "done"]
    info = await js.stream_info(subjects.jobs_stream)
    assert info.state.messages == 0  # acked: the work queue is empty


async def test_lab_that_vanishes_mid_job_is_replaced_by_redelivery(
        js, nc, subjects, nats_config, database_config, storage_config, pool):
    await _lab(js, subjects)
    data = factories.firmware([X86])
    # Short ack wait: lab A dies without acking, JetStream hands the job to lab B,
    # whose start takes the attempt over once A has been silent that long.
    async with running(nats_config, database_config, storage_config, scheduler=SHORT_ACK_WAIT,
                       timeouts=TimeoutSettings(heartbeat_timeout_s=60, infra_retry=QUICK_RETRY,
                                                takeover_after_s=0.9)):
        await factories.publish_firmware(js, subjects, data)
        lab_a = FakeLab(nc, subjects, "lab-a", "x86-1", ack_wait=1.0)
        lab_b = FakeLab(nc, subjects, "lab-b", "x86-2", ack_wait=1.0)
        job = await lab_a.take(X86)
        await lab_a.start(job)
        await lab_a.close()  # gone: no ack, no progress

        again = await lab_b.take(X86)
        assert again.spec.job_id == job.spec.job_id and again.num_delivered == 2
        await lab_b.start(again)
        await lab_b.finish(again, JobResult.PASS)
        await eventually(_job_done(pool, job.spec.job_id), "job done")
        await lab_b.close()

    row = await job_row(pool, job.spec.job_id)
    assert (row["result"], row["attempt"], row["lab"], row["device"]) == (
        "pass", 1, "lab-b", "x86-2")


async def test_plan_timeout_ends_the_job_as_error_timeout(
        js, nc, subjects, nats_config, database_config, storage_config, pool, tmp_path):
    await _lab(js, subjects)
    plans = tmp_path / "plans.toml"
    plans.write_text('[[plans]]\nname = "base"\ntests = ["tests/test_base.py"]\n'
                     'timeout_s = 0.5\n')
    settings = SchedulerSettings(holdoff_s=0.3, plans_file=str(plans), job_overhead_s=0,
                                 max_attempts=1)
    data = factories.firmware([X86])
    async with running(nats_config, database_config, storage_config, scheduler=settings,
                       timeouts=TimeoutSettings(heartbeat_timeout_s=60, max_sleep_s=1,
                                                infra_retry=QUICK_RETRY)):
        await factories.publish_firmware(js, subjects, data)
        lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        job = await lab.take(X86)
        await lab.start(job)
        await lab.progress(job)  # alive, but never finishes
        await eventually(_job_done(pool, job.spec.job_id), "job ended by the timeout service")
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware done")
        await lab.close()

    row = await job_row(pool, job.spec.job_id)
    assert (row["result"], row["error_code"], row["attempt"]) == ("error", "timeout", 1)
    finished = await stored_events(js, subjects, "job.finished")
    assert [(e.data.job_id, e.data.error_code) for e in finished] == [
        (job.spec.job_id, ErrorCode.TIMEOUT)]
    cancelled = await stored_events(js, subjects, "job.cancelled")
    assert [(e.data.job_id, e.data.attempt) for e in cancelled] == [(job.spec.job_id, 1)]


async def test_lost_lab_is_retried_on_another_lab_and_attempts_stay_visible(
        js, nc, subjects, nats_config, database_config, storage_config, pool):
    await _lab(js, subjects)
    data = factories.firmware([X86])
    async with running(nats_config, database_config, storage_config, scheduler=FAST,
                       timeouts=TimeoutSettings(heartbeat_timeout_s=0.5, max_sleep_s=1,
                                                infra_retry=QUICK_RETRY)):
        await factories.publish_firmware(js, subjects, data)
        lab_a = FakeLab(nc, subjects, "lab-a", "x86-1")  # long ack wait: no redelivery
        lab_b = FakeLab(nc, subjects, "lab-b", "x86-2")
        first = await lab_a.take(X86)
        await lab_a.start(first)  # ... and nothing more

        second = await lab_b.take(X86)
        assert (second.spec.job_id, second.spec.attempt) == (first.spec.job_id, 2)
        await lab_b.start(second)
        await lab_b.finish(second, JobResult.PASS)
        await eventually(_job_done(pool, first.spec.job_id), "job done")
        await lab_a.close()
        await lab_b.close()

    row = await job_row(pool, first.spec.job_id)
    assert (row["result"], row["attempt"], row["lab"]) == ("pass", 2, "lab-b")
    async with pool.acquire() as conn:
        attempts = await conn.fetch("SELECT attempt FROM job_attempts WHERE job_id = $1 "
                                    "ORDER BY attempt", first.spec.job_id)
    assert [a["attempt"] for a in attempts] == [1, 2]
    finished = await stored_events(js, subjects, "job.finished")
    lost = [e for e in finished if e.data.error_code == ErrorCode.LAB_LOST]
    assert [(e.data.attempt, e.data.lab) for e in lost] == [(1, "lab-a")]
    # Attempt 1's message was withdrawn from the queue: no lab runs it again.
    assert (await js.stream_info(subjects.jobs_stream)).state.messages == 0


async def test_infrastructure_errors_retry_up_to_three_attempts(
        js, nc, subjects, nats_config, database_config, storage_config, pool):
    await _lab(js, subjects)
    data = factories.firmware([X86])
    async with running(nats_config, database_config, storage_config, scheduler=FAST):
        await factories.publish_firmware(js, subjects, data)
        lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        attempts = []
        for _ in range(3):
            job = await lab.take(X86)
            attempts.append(job.spec.attempt)
            await lab.start(job)
            await lab.finish(job, JobResult.ERROR, ErrorCode.BOOT_FAILED)
        await eventually(_job_done(pool, job.spec.job_id), "job done")
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware done")
        await lab.close()

    assert attempts == [1, 2, 3]
    row = await job_row(pool, job.spec.job_id)
    assert (row["result"], row["error_code"], row["attempt"]) == ("error", "boot_failed", 3)


async def test_test_failure_is_not_retried(js, nc, subjects, nats_config, database_config,
                                           storage_config, pool):
    await _lab(js, subjects)
    data = factories.firmware([X86])
    async with running(nats_config, database_config, storage_config, scheduler=FAST):
        await factories.publish_firmware(js, subjects, data)
        lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        job = await lab.run(X86, JobResult.FAIL)
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware done")
        await lab.close()
    row = await job_row(pool, job.spec.job_id)
    assert (row["result"], row["attempt"]) == ("fail", 1)


async def test_firmware_timeout_forces_unfinished_jobs_done(
        js, nc, subjects, nats_config, database_config, storage_config, pool):
    await _lab(js, subjects)
    await factories.announce_lab(js, subjects, "lab-c", [("r1", "ramips/mt7621/r1", [])])
    data = factories.firmware([X86, "ramips/mt7621/r1"])
    settings = SchedulerSettings(holdoff_s=0.2, firmware_timeout_s=1.5)
    async with running(nats_config, database_config, storage_config, scheduler=settings,
                       timeouts=TimeoutSettings(max_sleep_s=1, infra_retry=QUICK_RETRY)):
        await factories.publish_firmware(js, subjects, data)
        lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        job = await lab.take(X86)
        await lab.start(job)  # runs, heartbeats, never ends; the ramips job is never taken
        await lab.progress(job)
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware timed out")
        await lab.close()

    codes = {r["device_type"]: (r["result"], r["error_code"])
             for r in await firmware_jobs(pool, data.firmware_id)}
    assert codes == {X86: ("error", "timeout"),
                     "ramips/mt7621/r1": ("error", "no_healthy_device")}
    done = [e for e in await stored_events(js, subjects, "firmware.state")
            if e.data.state == "done"]
    assert [e.data.reason for e in done] == ["timeout"]
    assert (await js.stream_info(subjects.jobs_stream)).state.messages == 0


async def test_timers_survive_a_restart_of_the_timeout_service(
        js, nc, subjects, nats_config, database_config, storage_config, pool):
    await _lab(js, subjects)
    data = factories.firmware([X86])
    settings = SchedulerSettings(holdoff_s=0.2, max_attempts=1)
    timeouts = TimeoutSettings(heartbeat_timeout_s=1.0, max_sleep_s=30, infra_retry=QUICK_RETRY)
    lab = FakeLab(nc, subjects, "lab-a", "x86-1")
    async with running(nats_config, database_config, storage_config, scheduler=settings,
                       timeouts=timeouts):
        await factories.publish_firmware(js, subjects, data)
        job = await lab.take(X86)
        await lab.start(job)

        async def is_running():
            return (await job_row(pool, job.spec.job_id))["state"] == "running"
        await eventually(is_running, "job running")
    # Everything stopped while the job's deadline passes; a new timeout service
    # finds the deadline in the database.
    async with running(nats_config, database_config, storage_config, timeouts=timeouts,
                       with_scheduler=False):
        await eventually(_job_done(pool, job.spec.job_id), "job ended after restart")
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware done")
    await lab.close()
    row = await job_row(pool, job.spec.job_id)
    assert (row["result"], row["error_code"]) == ("error", "lab_lost")


async def test_lab_that_lost_its_job_to_redelivery_no_longer_speaks_for_it(
        js, nc, subjects, nats_config, database_config, storage_config, pool):
    """Lab A stalls past the ack wait, JetStream gives the attempt to lab B; A wakes up.

    B holds the attempt now (as in the results service): A's late heartbeat
    and result change nothing, B's result is the job's.
    """
    await _lab(js, subjects)
    data = factories.firmware([X86])
    async with running(nats_config, database_config, storage_config, scheduler=SHORT_ACK_WAIT,
                       timeouts=TimeoutSettings(takeover_after_s=0.9)):
        await factories.publish_firmware(js, subjects, data)
        lab_a = FakeLab(nc, subjects, "lab-a", "x86-1", ack_wait=1.0)
        lab_b = FakeLab(nc, subjects, "lab-b", "x86-2", ack_wait=1.0)
        job = await lab_a.take(X86)
        await lab_a.start(job)
        again = await lab_b.take(X86)
        assert again.num_delivered == 2
        await lab_b.start(again)
        await lab_a.progress(job)
        await lab_a.finish(job, JobResult.FAIL, ack=False)
        await lab_b.finish(again, JobResult.PASS)
        await eventually(_job_done(pool, job.spec.job_id), "job done")
        await lab_a.close()
        await lab_b.close()

    row = await job_row(pool, job.spec.job_id)
    assert (row["result"], row["attempt"], row["lab"], row["device"]) == (
        "pass", 1, "lab-b", "x86-2")


async def test_hostile_lab_events_are_rejected_not_retried(js, nc, subjects, pool):
    """An attempt number PostgreSQL cannot hold, or a subject naming no lab, can never
    be handled: terminate it at once instead of failing max_deliver times."""
    lifecycle = Lifecycle(pool, Dispatcher(nc, js, subjects), subjects)
    handler = LifecycleHandler(lifecycle, subjects, DeadlineLoop(lifecycle))
    event = JobStarted.build(JobStartedData(job_id="wrtci:x", attempt=2**31, lab="lab-a",
                                            device="d"), source="lab/lab-a")
    meta = MsgMeta(subject=subjects.lab_event("lab-a", "job.started"), stream_seq=1,
                   num_delivered=1)
    with pytest.raises(Reject, match="attempt"):
        await handler.handle(event, meta)
    bad_token = MsgMeta(subject=f"{subjects.prefix}.lab.%%.job.started", stream_seq=2,
                        num_delivered=1)
    with pytest.raises(Reject):
        await handler.handle(event, bad_token)
