"""Operators through the CLI: pause / drain / resume, retry and cancel."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from tests import factories
from tests.helpers import PROJECT_ROOT, eventually, run_cli
from tests.pipeline import (
    FAST,
    WAIT,
    X86,
    FakeLab,
    firmware_in,
    firmware_jobs,
    firmware_state,
    job_row,
    running,
    stored_events,
)
from wrtci.proto.model import JobResult


async def _cli(*args: str, config) -> str:
    """``wrtci ARGS`` in a subprocess, without blocking the services of this test."""
    return (await asyncio.to_thread(run_cli, *args, "--config", str(config))).stdout


async def _lab(js, subjects):
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, [])])


@contextlib.asynccontextmanager
async def _one_firmware(js, subjects, nats_config, database_config, storage_config):
    """lab-a's one x86 device online, the services running, one x86 firmware published."""
    await _lab(js, subjects)
    data = factories.firmware([X86])
    async with running(nats_config, database_config, storage_config, scheduler=FAST):
        await factories.publish_firmware(js, subjects, data)
        yield data


async def _queued(js, subjects, count):
    async def check():
        return (await js.stream_info(subjects.jobs_stream)).state.messages == count
    return check


async def test_pause_drain_resume(js, nc, subjects, nats_config, database_config, storage_config,
                                  pool, site_config_file):
    await _lab(js, subjects)
    first = factories.firmware([X86], tag="r1")
    second = factories.firmware([X86], tag="r2")
    async with running(nats_config, database_config, storage_config,
                       scheduler=FAST) as pipeline:
        await factories.publish_firmware(js, subjects, first)
        lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        job = await lab.take(X86)
        await lab.start(job)

        # drain: pauses, then waits for the running job.
        drain = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wrtci.services.cli.main", "scheduler", "drain",
            "--config", str(site_config_file), "--timeout", str(WAIT),
            cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

        async def paused():
            return pipeline.scheduler.switch.paused
        await eventually(paused, "scheduler paused")
        # New firmware while paused waits in the stream.
        await factories.publish_firmware(js, subjects, second)
        status = await _cli("scheduler", "status", config=site_config_file)
        assert "paused (drain)" in status and "1 running" in status
        assert "1 firmware events not yet scheduled" in status
        assert drain.returncode is None  # still draining

        await lab.finish(job, JobResult.PASS)
        out, err = await asyncio.wait_for(drain.communicate(), WAIT)
        assert drain.returncode == 0, err.decode()
        assert "drained" in out.decode()
        assert await firmware_jobs(pool, second.firmware_id) == []

        await _cli("scheduler", "resume", config=site_config_file)
        job2 = await lab.take(X86)
        assert job2.spec.firmware_id == second.firmware_id
        await lab.close()
    status = await _cli("scheduler", "status", config=site_config_file)
    assert status.startswith("scheduler running")


async def test_pause_keeps_firmware_events_until_resume(js, subjects, nats_config,
                                                        database_config, storage_config, pool,
                                                        site_config_file):
    await _lab(js, subjects)
    await _cli("scheduler", "pause", "--reason", "upgrade", config=site_config_file)
    data = factories.firmware([X86])
    async with running(nats_config, database_config, storage_config,
                       scheduler=FAST) as pipeline:
        assert pipeline.scheduler.switch.paused
        await factories.publish_firmware(js, subjects, data)
        status = await _cli("scheduler", "status", config=site_config_file)
        assert "paused (upgrade)" in status and "1 firmware events not yet scheduled" in status
        await _cli("scheduler", "resume", config=site_config_file)
        await eventually(await _queued(js, subjects, 1), "job queued after resume")


async def test_cancel_a_queued_job_removes_it_from_the_queue(
        js, subjects, nats_config, database_config, storage_config, pool, site_config_file):
    async with _one_firmware(js, subjects, nats_config, database_config,
                             storage_config) as data:
        await eventually(await _queued(js, subjects, 1), "job queued")
        [row] = await firmware_jobs(pool, data.firmware_id)
        out = await _cli("job", "cancel", row["id"], "--reason", "wrong image",
                         config=site_config_file)
        assert "requested" in out
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware done")

    row = await job_row(pool, row["id"])
    assert (row["result"], row["error_code"], row["error_message"]) == (
        "error", "cancelled", "wrong image")
    assert (await js.stream_info(subjects.jobs_stream)).state.messages == 0
    cancelled = await stored_events(js, subjects, "job.cancelled")
    assert [e.data.job_id for e in cancelled] == [row["id"]]


async def test_cancel_a_firmware_stops_its_running_job(
        js, nc, subjects, nats_config, database_config, storage_config, pool, site_config_file):
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, []),
                                                         ("r1", "ramips/mt7621/r1", [])])
    data = factories.firmware([X86, "ramips/mt7621/r1"])
    async with running(nats_config, database_config, storage_config, scheduler=FAST):
        await factories.publish_firmware(js, subjects, data)
        lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        job = await lab.take(X86)
        await lab.start(job)
        await _cli("firmware", "cancel", data.firmware_id, config=site_config_file)
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware done")
        # The lab hears about it (the lab daemon stops the job on job.cancelled).
        cancelled = await stored_events(js, subjects, "job.cancelled")
        assert (job.spec.job_id, 1) in [(e.data.job_id, e.data.attempt) for e in cancelled]
        await lab.finish(job, JobResult.PASS)  # too late: ignored
        await lab.close()
    results = {r["device_type"]: (r["result"], r["error_code"])
               for r in await firmware_jobs(pool, data.firmware_id)}
    assert results == {X86: ("error", "cancelled"),
                       "ramips/mt7621/r1": ("error", "cancelled")}


async def test_retry_of_a_failed_job_reopens_the_done_firmware(
        js, nc, subjects, nats_config, database_config, storage_config, pool, site_config_file):
    async with _one_firmware(js, subjects, nats_config, database_config,
                             storage_config) as data:
        lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        job = await lab.run(X86, JobResult.FAIL)
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware done")

        await _cli("firmware", "retry", data.firmware_id, config=site_config_file)
        again = await lab.take(X86)
        assert (again.spec.job_id, again.spec.attempt) == (job.spec.job_id, 2)
        assert await firmware_state(pool, data.firmware_id) == "closing"
        await lab.start(again)
        await lab.finish(again, JobResult.PASS)
        await eventually(firmware_in(pool, data.firmware_id, "done"), "firmware done again")
        await lab.close()

    row = await job_row(pool, job.spec.job_id)
    assert (row["result"], row["attempt"]) == ("pass", 2)
    states = [(e.id, e.data.state) for e in await stored_events(js, subjects, "firmware.state")]
    fid = data.firmware_id
    assert states == [(f"firmware.state:{fid}:available", "available"),
                      (f"firmware.state:{fid}:done", "done"),
                      (f"firmware.state:{fid}:closing:r1", "closing"),
                      (f"firmware.state:{fid}:done:r1", "done")]


async def test_daemons_check_their_dependencies(site_config_file):
    for service in ("scheduler", "timeout"):
        result = await asyncio.to_thread(run_cli, "run", service, "--config",
                                         str(site_config_file), "--check")
        assert result.stdout.strip() == f"{service}: ok"
