"""The lab daemon running jobs through NATS with a small suite (no device boots).

The suite checkout is a tiny openwrt-tests-shaped directory: the daemon runs
it exactly as it runs the real suite (pytest + labgrid plugin subprocess).
"""

from __future__ import annotations

import asyncio
import os
import signal

import msgspec

from tests.helpers import eventually_succeeds, read_object
from tests.lab_helpers import (
    FAKE_FIRMWARE,
    cancel_job,
    device_status,
    fake_job,
    job_spec,
    lab_config,
    lab_process_with_job,
    publish_job,
    run_one_job,
    running_lab,
    running_log_writer,
    sha256_of,
    signal_while_testing,
    stream_events,
)
from wrtci.proto import events as ev
from wrtci.proto import topology
from wrtci.proto.control import LabAction, LabControlReply, LabControlRequest
from wrtci.proto.model import DeviceState, ErrorCode, JobResult, TestPlan, TestStatus
from wrtci.proto.storage import job_log_key


def _object(storage_config, key: str) -> str:
    return read_object(storage_config, key).decode()


async def _jobs_left(js, subjects) -> int:
    info = await js.stream_info(subjects.jobs_stream)
    return info.state.messages


async def test_job_runs_suite_reports_results_and_stores_logs(
        js, nc, subjects, events, lab1, nats_config, storage_config, fake_firmware_url):
    plans = [TestPlan(name="base", tests=["tests/test_fake.py"], keyword="not hang")]
    spec = fake_job("wrtci:job:ok", fake_firmware_url, plans=plans)
    async with running_log_writer(nats_config, storage_config), running_lab(lab1):
        await publish_job(nc, subjects, spec)
        await events.wait_for(lambda e: e.of(ev.JobFinished))
        [finished] = events.of(ev.JobFinished)
        data = finished.data
        assert data.result is JobResult.PASS, data
        assert {t.path: t.status for t in data.tests} == {
            "base.test_fake.test_firmware_is_the_verified_image": TestStatus.PASS,
            "base.test_fake.test_prints": TestStatus.PASS,
            "base.test_fake.test_sleeps": TestStatus.PASS,
        }
        assert data.log_key == job_log_key(spec.job_id, 1, "console")
        assert {a.name for a in data.artifacts} == {"pytest.log", "junit.xml"}
        # named by the lab and the run, keyed with the lab's secret (event_ids.py)
        assert finished.id.startswith(f"job.finished:lab1:{spec.job_id}:1:1:")
        # the log writer stores the pytest output and the junit file
        pytest_key = job_log_key(spec.job_id, 1, "pytest.log")

        text = await eventually_succeeds(
            lambda: asyncio.to_thread(_object, storage_config, pytest_key), "the pytest log")
        assert "3 passed, 1 deselected" in text
        junit_key = next(a.object_key for a in data.artifacts if a.name == "junit.xml")
        junit = await asyncio.wait_for(asyncio.to_thread(_object, storage_config, junit_key), 10)
        assert "test_firmware_is_the_verified_image" in junit
    started = events.of(ev.JobStarted)
    assert [e.id.rsplit(":", 1)[0] for e in started] == [f"job.started:lab1:{spec.job_id}:1:1"]
    assert await _jobs_left(js, subjects) == 0  # acked


async def test_plan_paths_missing_from_the_suite_are_reported_as_miss(
        js, nc, subjects, events, lab1, fake_firmware_url, tmp_path):
    plans = [TestPlan(name="base", tests=["tests/test_fake.py", "tests/test_ssh.py"],
                      keyword="not hang"),
             TestPlan(name="system", tests=["tests/test_lan.py"])]
    spec = fake_job("wrtci:job:miss", fake_firmware_url, plans=plans)
    data = await run_one_job(nc, subjects, events, lab1, spec)
    statuses = {t.path: t.status for t in data.tests}
    assert statuses["base.test_ssh"] is TestStatus.MISS
    assert statuses["system.test_lan"] is TestStatus.MISS
    assert statuses["base.test_fake.test_prints"] is TestStatus.PASS
    assert data.result is JobResult.PASS, data
    # only the plan with something to run started pytest
    assert [p.name for p in (tmp_path / "work").rglob("junit.xml")
            if "health-check" not in p.parts] == ["junit.xml"]


async def test_wrong_sha256_is_an_error_and_runs_no_test(
        js, nc, subjects, events, lab1, file_server, tmp_path):
    base_url, www = file_server
    (www / "fw.bin").write_bytes(b"tampered")
    spec = job_spec("wrtci:job:badsum", f"{base_url}/fw.bin", sha256_of(FAKE_FIRMWARE),
                    tests=["tests/test_fake.py"])
    data = await run_one_job(nc, subjects, events, lab1, spec)
    assert data.result is JobResult.ERROR
    assert data.error_code is ErrorCode.CHECKSUM_MISMATCH
    assert data.tests == []
    assert not [p for p in (tmp_path / "work" / "runs").rglob("junit.xml")
                if "health-check" not in p.parts]
    assert not list((tmp_path / "work" / "cache").rglob("fw.bin"))  # nothing unverified kept
    assert await _jobs_left(js, subjects) == 0


async def test_hanging_suite_is_killed_at_the_plan_timeout(
        js, nc, subjects, events, lab1, fake_suite, fake_firmware_url):
    spec = fake_job("wrtci:job:hang", fake_firmware_url,
                    plans=[TestPlan(name="base", tests=["tests/test_fake.py::test_hang"],
                                    timeout_s=3)])
    data = await run_one_job(nc, subjects, events, lab1, spec)
    assert data.result is JobResult.ERROR and data.error_code is ErrorCode.TIMEOUT
    # the whole process group is gone: no pytest of this suite is left running
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, str(fake_suite))]
    assert leftovers == []


async def test_cancelled_running_job_is_stopped_and_reported(
        js, nc, subjects, events, lab1, fake_suite, fake_firmware_url):
    spec = fake_job("wrtci:job:cancel", fake_firmware_url,
                    plans=[TestPlan(name="base", tests=["tests/test_fake.py::test_hang"],
                                    timeout_s=600)])
    async with running_lab(lab1):
        await publish_job(nc, subjects, spec)
        await events.wait_for(lambda e: [p for p in e.of(ev.JobProgress) if p.data.stage == "test"])
        await cancel_job(js, subjects, spec, "by alice")
        await asyncio.wait_for(events.wait_for(lambda e: e.of(ev.JobFinished)), 60)
    data = events.of(ev.JobFinished)[0].data
    assert (data.result, data.error_code, data.error_message) == (
        JobResult.ERROR, ErrorCode.CANCELLED, "by alice")
    assert data.log_key is not None  # the log of a cancelled job is kept too
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, str(fake_suite))]
    assert leftovers == []
    assert await _jobs_left(js, subjects) == 0


def _cmdline_has(pid: str, needle: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return needle.encode() in handle.read()
    except OSError:
        return False


async def test_sigterm_hands_the_job_back_and_it_runs_again_once(
        js, nc, subjects, events, nats_config, fake_suite, fake_firmware_url, tmp_path):
    spec = fake_job("wrtci:job:sigterm", fake_firmware_url,
                    tests=["tests/test_fake.py::test_sleeps"])
    config = lab_config(nats_config, tmp_path / "work", fake_suite, shutdown_grace_s=0.5,
                        env={"FAKE_SLEEP": "4"})
    async with lab_process_with_job(nc, subjects, config, spec, tmp_path / "lab-1.log") as lab:
        assert await signal_while_testing(lab, events, signal.SIGTERM) == 0
    handed_back = [p for p in events.of(ev.JobProgress) if p.data.stage == "handed_back"]
    assert handed_back and "shutting down" in handed_back[0].data.message
    assert events.of(ev.JobFinished) == []
    assert events.of(ev.LabOffline)
    # another daemon (here: a restart) picks the job up at once and finishes it
    async with running_lab(config):
        await events.wait_for(lambda e: e.of(ev.JobFinished))
    finished = await stream_events(js, subjects.events_stream,
                                   subjects.lab_event("lab1", "job.finished"))
    assert len(finished) == 1 and finished[0].data.result is JobResult.PASS
    assert await _jobs_left(js, subjects) == 0


async def test_killed_daemon_job_is_redelivered_after_the_ack_wait(
        js, nc, subjects, events, nats_config, fake_suite, fake_firmware_url, tmp_path):
    spec = fake_job("wrtci:job:kill9", fake_firmware_url, tests=["tests/test_fake.py::test_sleeps"])
    config = lab_config(nats_config, tmp_path / "work", fake_suite, job_ack_wait_s=4,
                        env={"FAKE_SLEEP": "30"})
    async with lab_process_with_job(nc, subjects, config, spec, tmp_path / "lab-1.log") as lab:
        await signal_while_testing(lab, events, signal.SIGKILL)
    fast = lab_config(nats_config, tmp_path / "work2", fake_suite, job_ack_wait_s=4,
                      env={"FAKE_SLEEP": "0"})
    async with running_lab(fast):
        await events.wait_for(lambda e: e.of(ev.JobFinished), within_s=60)
    [finished] = events.of(ev.JobFinished)
    assert finished.data.result is JobResult.PASS
    chunks = [c for c in events.of(ev.LogChunk) if c.data.stream == "pytest.log"]
    assert {c.data.run for c in chunks} == {1, 2}  # the rerun is the second delivery
    assert await _jobs_left(js, subjects) == 0



async def test_result_that_cannot_be_published_at_shutdown_leaves_the_job_for_redelivery(
        js, nc, subjects, events, nats_config, fake_suite, fake_firmware_url, tmp_path):
    # The EVENTS stream refuses job.finished (gone) and the daemon is asked to
    # stop: it tries within the shutdown grace, then exits without acking, so
    # the job runs again once results can be stored.
    spec = fake_job("wrtci:job:noevents", fake_firmware_url,
                    tests=["tests/test_fake.py::test_prints"])
    quick = msgspec.structs.replace(nats_config, request_timeout_s=1.0)
    config = lab_config(quick, tmp_path / "work", fake_suite, shutdown_grace_s=2,
                        job_ack_wait_s=4)
    async with running_lab(config) as daemon:
        await publish_job(nc, subjects, spec, ack_wait=4)
        await events.wait_for(lambda e: e.of(ev.JobStarted))
        await js.delete_stream(subjects.events_stream)
        await events.wait_for(lambda e: any(c.data.final and c.data.stream == "junit.xml"
                                            for c in e.of(ev.LogChunk)))
        daemon.stop.set()  # leaving running_lab waits for the daemon to end
    await topology.apply(js, subjects)
    assert await _jobs_left(js, subjects) == 1  # not acked: it comes back
    tried = len(events.of(ev.JobFinished))  # seen on the wire, refused by JetStream
    async with running_lab(config):
        await events.wait_for(lambda e: len(e.of(ev.JobFinished)) > tried)
    [finished] = await stream_events(js, subjects.events_stream,
                                     subjects.lab_event("lab1", "job.finished"))
    assert finished.data.result is JobResult.PASS
    assert await _jobs_left(js, subjects) == 0


async def test_job_cancelled_just_before_the_lab_started_it_does_not_run(
        js, nc, subjects, events, lab1, fake_firmware_url, tmp_path):
    # The scheduler withdraws a job from the queue and announces job.cancelled;
    # a lab that fetched the message a moment before must not run it.
    spec = fake_job("wrtci:job:early-cancel", fake_firmware_url,
                    tests=["tests/test_fake.py::test_prints"])
    async with running_lab(lab1):
        await cancel_job(js, subjects, spec, "by bob")
        await publish_job(nc, subjects, spec)  # (the message the lab had already taken)
        await events.wait_for(lambda e: e.of(ev.JobFinished))
    data = events.of(ev.JobFinished)[0].data
    assert (data.result, data.error_code, data.error_message) == (
        JobResult.ERROR, ErrorCode.CANCELLED, "by bob")
    assert not [p for p in (tmp_path / "work").rglob("junit.xml")
                if "health-check" not in p.parts]  # no test of the job ran
    assert await _jobs_left(js, subjects) == 0


async def test_status_answers_while_a_health_check_request_waits_for_a_running_job(
        js, nc, subjects, events, nats_config, fake_suite, fake_firmware_url, tmp_path):
    spec = fake_job("wrtci:job:busy", fake_firmware_url, tests=["tests/test_fake.py::test_hang"])
    config = lab_config(nats_config, tmp_path / "work", fake_suite,
                        health_image=str(tmp_path / "missing.cpio.gz"))
    control = subjects.lab_control("lab1")
    async with running_lab(config):
        await publish_job(nc, subjects, spec)
        await events.wait_for(lambda e: any(p.data.stage == "test"
                                            for p in e.of(ev.JobProgress)))
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox, max_msgs=1)
        await nc.publish(control, msgspec.json.encode(LabControlRequest(
            action=LabAction.HEALTH_CHECK, device="dut1")), reply=inbox)
        await nc.flush()  # the daemon gets the check request first, then:
        status = await device_status(nc, subjects)  # not queued behind the check request
        assert status.state is DeviceState.BUSY
        await cancel_job(js, subjects, spec, "done")
        answer = await replies.next_msg(timeout=60)
        reply = msgspec.json.decode(answer.data, type=LabControlReply)
    # the check ran once the job was over (and failed: its image is missing)
    assert reply.message == "health check done"
    assert reply.devices[0].check_passed is False


BIG_FAILURES = '''
import pytest

@pytest.mark.parametrize("n", range(400))
def test_fails_loudly(n):
    raise AssertionError("x" * 8000)
'''


async def test_results_too_big_for_one_message_are_trimmed_not_retried_for_ever(
        js, nc, subjects, events, lab1, fake_suite, fake_firmware_url):
    # 400 failures with long tracebacks: JobFinished would be far over NATS's
    # 1 MB max payload, and publishing it can never succeed.
    (fake_suite / "tests" / "test_big.py").write_text(BIG_FAILURES)
    spec = fake_job("wrtci:job:big", fake_firmware_url, tests=["tests/test_big.py"])
    data = await run_one_job(nc, subjects, events, lab1, spec)
    assert data.result is JobResult.FAIL
    assert len(data.tests) == 400 and {t.status for t in data.tests} == {TestStatus.FAIL}
    assert all(len(t.message or "") <= 1000 for t in data.tests)
    assert "xxxx" in data.tests[0].message  # cut down, not dropped
    assert await _jobs_left(js, subjects) == 0
