"""Ingestion through real NATS subjects into real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging

import msgspec

from tests.factories_results import (
    T0,
    Factory,
    finished,
    ingest_all,
    publish,
    started,
)
from wrtci.proto import events as ev
from wrtci.proto.model import DeviceHealth, DeviceState, ErrorCode, JobResult


async def _attempt(pool, job_id, attempt=1):
    return dict(await pool.fetchrow(
        "SELECT * FROM job_attempts WHERE job_id = $1 AND attempt = $2", job_id, attempt))


async def _tests(pool, job_id):
    rows = await pool.fetch("SELECT path, status, lab, device, build_id, id FROM tests "
                            "WHERE job_id = $1 ORDER BY path", job_id)
    return [dict(r) for r in rows]


async def test_duplicate_and_out_of_order_events_give_exact_rows(js, subjects, pool):
    factory = Factory(pool)
    firmware = await factory.firmware()
    job = await factory.job(firmware)
    done = finished(job, {"base.test_shell": "PASS", "base.test_ubus": "FAIL"})
    # finished overtakes started; both are redelivered (no Nats-Msg-Id dedupe).
    await publish(js, subjects, done, started(job), done, dedupe=False)
    await publish(js, subjects, started(job), dedupe=False)
    await ingest_all(js, subjects, pool)

    attempt = await _attempt(pool, job)
    assert (attempt["state"], attempt["result"], attempt["lab"], attempt["device"]) == (
        "done", "fail", "lab-a", "dut-1")
    assert attempt["started_at"] == T0
    tests = await _tests(pool, job)
    assert [(t["path"], t["status"], t["lab"]) for t in tests] == [
        ("base.test_shell", "PASS", "lab-a"), ("base.test_ubus", "FAIL", "lab-a")]
    assert tests[0]["id"] == f"{job}:1:base.test_shell"
    assert tests[0]["id"].startswith("wrtci:")

    # The same results once more, later: nothing changes.
    before = await pool.fetch("SELECT * FROM tests ORDER BY id")
    await publish(js, subjects, done, started(job), dedupe=False)
    await ingest_all(js, subjects, pool)
    assert await pool.fetch("SELECT * FROM tests ORDER BY id") == before
    assert await _attempt(pool, job) == attempt
    assert await pool.fetchval("SELECT count(*) FROM results_work WHERE job_id = $1",
                               job) == 1  # one 'history' item, no log (no log_key)


async def test_result_from_another_lab_is_rejected(js, subjects, pool, caplog):
    factory = Factory(pool)
    firmware = await factory.firmware()
    job = await factory.job(firmware)
    await publish(js, subjects, started(job, lab="lab-a"))
    # lab-b reports, under its own subject scope, for the job lab-a holds
    forged = finished(job, {"base.test_shell": "PASS"}, lab="lab-b")
    # lab-c publishes under its scope an event claiming to be lab-a
    spoofed = finished(job, {"base.test_shell": "PASS"}, lab="lab-a", event_id="spoof")
    unknown = finished("wrtci:no-such-job", {"base.test_shell": "PASS"}, lab="lab-a")
    await publish(js, subjects, forged)
    await publish(js, subjects, spoofed, subject=subjects.lab_event("lab-c", "job.finished"))
    await publish(js, subjects, unknown)
    with caplog.at_level(logging.ERROR, logger="wrtci.services.batch_consume"):
        await ingest_all(js, subjects, pool)

    attempt = await _attempt(pool, job)
    assert (attempt["state"], attempt["lab"], attempt["result"]) == ("running", "lab-a", None)
    assert await _tests(pool, job) == []
    reasons = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(reasons) == 3
    assert any("belongs to lab 'lab-a', not 'lab-b'" in r for r in reasons)
    assert any("lab 'lab-c' published an event for lab 'lab-a'" in r for r in reasons)
    assert any("unknown job attempt" in r for r in reasons)

    # lab-a's own result still goes in.
    await publish(js, subjects, finished(job, {"base.test_shell": "PASS"}))
    await ingest_all(js, subjects, pool)
    assert [t["lab"] for t in await _tests(pool, job)] == ["lab-a"]


async def test_started_for_unknown_attempt_is_rejected_and_late_started_is_ignored(
        js, subjects, pool, caplog):
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    await publish(js, subjects, started(job, attempt=2))  # the scheduler made no attempt 2
    await publish(js, subjects, finished(job, {"t.a": "PASS"}))
    await publish(js, subjects, started(job, lab="lab-b"))  # another lab, after the fact
    with caplog.at_level(logging.ERROR, logger="wrtci.services.batch_consume"):
        await ingest_all(js, subjects, pool)
    assert sum("rejected" in r.getMessage() for r in caplog.records) == 2
    attempt = await _attempt(pool, job)
    assert (attempt["state"], attempt["lab"]) == ("done", "lab-a")


async def test_timeout_verdict_is_final(js, subjects, pool):
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    await publish(js, subjects, started(job))
    timed_out = ev.JobFinished.build(
        ev.JobFinishedData(job_id=job, attempt=1, lab="lab-a", device="dut-1",
                           result=JobResult.ERROR, error_code=ErrorCode.TIMEOUT),
        source="wrtci/timeout", id=f"timeout:{job}:1", time=T0 + dt.timedelta(hours=1))
    await publish(js, subjects, timed_out, subject=subjects.event("job.finished"))
    await publish(js, subjects, finished(job, {"t.a": "PASS"}))  # the lab, too late
    await ingest_all(js, subjects, pool)
    attempt = await _attempt(pool, job)
    assert (attempt["state"], attempt["result"], attempt["error_code"]) == (
        "done", "error", "timeout")
    assert await _tests(pool, job) == []


async def test_timeout_verdict_wins_over_a_lab_result_that_came_first(js, subjects, pool):
    # The timer ended the attempt while the lab's late finish was already on its
    # way: the job record keeps the timeout, so must the attempt's result.
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    await publish(js, subjects, started(job), finished(job, {"t.a": "PASS"}))
    await ingest_all(js, subjects, pool)
    assert (await _attempt(pool, job))["result"] == "pass"
    timed_out = ev.JobFinished.build(
        ev.JobFinishedData(job_id=job, attempt=1, lab="lab-a", device="dut-1",
                           result=JobResult.ERROR, error_code=ErrorCode.TIMEOUT,
                           error_message="plan timeout passed"),
        source="wrtci/timeout", id=f"timeout:{job}:1", time=T0 + dt.timedelta(hours=1))
    central = subjects.event("job.finished")
    await publish(js, subjects, timed_out, subject=central)
    await publish(js, subjects, timed_out, subject=central, dedupe=False)  # once more
    await ingest_all(js, subjects, pool)
    attempt = await _attempt(pool, job)
    assert (attempt["state"], attempt["result"], attempt["error_code"], attempt["lab"]) == (
        "done", "error", "timeout", "lab-a")
    assert [(t["path"], t["status"]) for t in await _tests(pool, job)] == [("t.a", "PASS")]


async def test_device_health_history_and_lab_presence(js, subjects, pool):
    def health(n: int, state: DeviceState, value: DeviceHealth, minutes: int):
        return ev.DeviceHealthChanged.build(
            ev.DeviceHealthData(lab="lab-a", device="dut-1", device_type="x86/64/generic",
                                health=value, state=state, consecutive_failures=n),
            source="wrtci/lab/lab-a", id=f"health-{n}",
            time=T0 + dt.timedelta(minutes=minutes))

    online = ev.LabOnline.build(
        ev.LabOnlineData(lab="lab-a", version="0.1", devices=[ev.LabDevice(
            name="dut-1", device_type="x86/64/generic", features=["wan"])]),
        source="wrtci/lab/lab-a", id="online", time=T0)
    offline = ev.LabOffline.build(ev.LabOfflineData(lab="lab-a"), source="wrtci/lab/lab-a",
                                  id="offline", time=T0 + dt.timedelta(minutes=30))
    newest = health(2, DeviceState.UNHEALTHY, DeviceHealth.UNHEALTHY, 20)
    older = health(1, DeviceState.IDLE, DeviceHealth.WARNING, 10)
    # Out of order: the newest health and the offline come before the rest.
    await publish(js, subjects, newest, offline, online, older)
    await publish(js, subjects, newest, dedupe=False)
    await ingest_all(js, subjects, pool)

    history = await pool.fetch("SELECT event_id, health FROM device_health ORDER BY at")
    assert [(r["event_id"], r["health"]) for r in history] == [
        ("health-1", "warning"), ("health-2", "unhealthy")]
    device = await pool.fetchrow("SELECT * FROM devices WHERE lab = 'lab-a'")
    assert (device["state"], device["health"], device["features"],
            device["consecutive_failures"]) == ("unhealthy", "unhealthy", ["wan"], 2)
    lab = await pool.fetchrow("SELECT * FROM labs WHERE name = 'lab-a'")
    assert (lab["online"], lab["version"]) == (False, "0.1")


async def test_hostile_event_does_not_take_its_batch_down(js, subjects, pool, caplog):
    """One event the database cannot store must not hold back the others in its batch.

    A serial console easily puts NUL bytes into a test's log excerpt (PostgreSQL
    text refuses them), and a lab may send any integer as an attempt number.
    """
    factory = Factory(pool)
    firmware = await factory.firmware()
    good, noisy = await factory.job(firmware), await factory.job(firmware)
    console = finished(noisy, {"base.test_boot": "FAIL"}, error_message="dead\x00beef")
    noisy_test = msgspec.structs.replace(console.data.tests[0],
                                         log_excerpt="U-Boot\x00\x00 2023.07\nStarting kernel")
    console = msgspec.structs.replace(
        console, data=msgspec.structs.replace(console.data, tests=[noisy_test]))
    huge = finished(good, {"t.a": "PASS"}, attempt=2**31, event_id="huge")
    await publish(js, subjects, huge, console, finished(good, {"t.a": "PASS"}))
    with caplog.at_level(logging.ERROR, logger="wrtci.services.batch_consume"):
        await ingest_all(js, subjects, pool)

    assert (await _attempt(pool, good))["result"] == "pass"
    noisy_attempt = await _attempt(pool, noisy)
    assert (noisy_attempt["result"], noisy_attempt["error_message"]) == ("fail", "deadbeef")
    (test,) = await pool.fetch("SELECT log_excerpt FROM tests WHERE job_id = $1", noisy)
    assert test["log_excerpt"] == "U-Boot 2023.07\nStarting kernel"
    # The decoder refuses the attempt number no integer column takes (proto/limits.py).
    assert any("terminated" in r.getMessage() and "attempt" in r.getMessage()
               for r in caplog.records)


async def test_lab_that_takes_over_a_redelivered_attempt_holds_it(js, subjects, pool):
    """DESIGN: a lab that dies lets its job go back to the queue for another lab.

    JetStream redelivers the same attempt; the scheduler's record follows the
    lab that started it last, and so must the results.
    """
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    later = T0 + dt.timedelta(minutes=2)
    lab_b_done = finished(job, {"t.a": "PASS"}, lab="lab-b", device="dut-2")
    await publish(js, subjects, started(job, lab="lab-a"),
                  started(job, lab="lab-b", device="dut-2", at=later), lab_b_done)
    # lab-a's own start, redelivered late, does not take the attempt back
    await publish(js, subjects, started(job, lab="lab-a"), dedupe=False)
    await ingest_all(js, subjects, pool)

    attempt = await _attempt(pool, job)
    assert (attempt["state"], attempt["result"], attempt["lab"], attempt["device"],
            attempt["started_at"]) == ("done", "pass", "lab-b", "dut-2", later)
    assert [(t["path"], t["lab"]) for t in await _tests(pool, job)] == [("t.a", "lab-b")]


def progress(job_id: str, stage: str, at: dt.datetime, *, lab: str = "lab-a",
             device: str = "dut-1", attempt: int = 1) -> ev.JobProgress:
    return ev.JobProgress.build(
        ev.JobProgressData(job_id=job_id, attempt=attempt, lab=lab, device=device,
                           stage=stage),
        source=f"wrtci/lab/{lab}", time=at, id=f"progress:{job_id}:{attempt}:{lab}:{at}")


async def test_the_stage_of_a_running_attempt_is_stored(js, subjects, pool):
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    minute = dt.timedelta(minutes=1)
    # No job.started seen yet: the first progress starts the attempt and says its stage.
    await publish(js, subjects, progress(job, "download", T0))
    await ingest_all(js, subjects, pool)
    attempt = await _attempt(pool, job)
    assert (attempt["state"], attempt["stage"], attempt["stage_at"]) == (
        "running", "download", T0)

    # Heartbeats of the same stage change nothing; a new stage moves it; an older
    # event redelivered late does not move it back; another lab's report is refused.
    await publish(js, subjects, started(job), progress(job, "download", T0 + minute),
                  progress(job, "boot", T0 + 2 * minute),
                  progress(job, "flash", T0 + minute / 2),
                  progress(job, "test", T0 + 3 * minute, lab="lab-b", device="dut-9"))
    await ingest_all(js, subjects, pool)
    attempt = await _attempt(pool, job)
    assert (attempt["stage"], attempt["stage_at"]) == ("boot", T0 + 2 * minute)

    # A lab that takes the redelivered attempt over runs it from the start.
    await publish(js, subjects, started(job, lab="lab-b", device="dut-2", at=T0 + 5 * minute))
    await ingest_all(js, subjects, pool)
    attempt = await _attempt(pool, job)
    assert (attempt["lab"], attempt["stage"]) == ("lab-b", None)
    await publish(js, subjects, progress(job, "flash", T0 + 6 * minute, lab="lab-b",
                                         device="dut-2"))
    await ingest_all(js, subjects, pool)
    assert (await _attempt(pool, job))["stage"] == "flash"

    # Once the attempt is over, progress is no longer news.
    await publish(js, subjects, finished(job, {"t.a": "PASS"}, lab="lab-b", device="dut-2"),
                  progress(job, "upload", T0 + 9 * minute, lab="lab-b", device="dut-2"))
    await ingest_all(js, subjects, pool)
    attempt = await _attempt(pool, job)
    assert (attempt["state"], attempt["stage"]) == ("done", "flash")
