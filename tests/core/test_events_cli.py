"""`wrtci events`: the event log the way `nats stream view` shows it, with filters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys

from tests.helpers import PROJECT_ROOT, eventually, run_cli
from tests.samples import sample_events
from wrtci.core.runtime import EventPublisher
from wrtci.proto import events as ev


async def _publish_samples(js, subjects) -> list[ev.CloudEvent]:
    publisher = EventPublisher(js, subjects)
    published = [e for e in sample_events() if not isinstance(e, ev.LogChunk)]
    for event in published:
        await publisher.publish(event)
    return published


async def test_past_events_as_json(js, subjects, site_config_file) -> None:
    published = await _publish_samples(js, subjects)
    result = run_cli("events", "--json", "--config", str(site_config_file))
    lines = result.stdout.splitlines()
    assert [ev.decode(line.encode()) for line in lines] == published
    assert all(json.loads(line)["specversion"] == "1.0" for line in lines)


async def test_filters(js, subjects, site_config_file) -> None:
    await _publish_samples(js, subjects)
    cfg = ["--config", str(site_config_file)]

    by_type = run_cli("events", "--type", "job.finished", *cfg).stdout.splitlines()
    assert len(by_type) == 1 and "job.finished" in by_type[0] and "job=job1" in by_type[0]

    family = run_cli("events", "--type", "firmware", *cfg).stdout.splitlines()
    assert len(family) == 4 and all(" firmware." in line for line in family)

    by_job = run_cli("events", "--job", "job1", *cfg).stdout.splitlines()
    assert len(by_job) == 7  # created, started, progress, finished, cancelled, 2 requests

    by_device = run_cli("events", "--device", "x86-64-1", "--json", *cfg).stdout.splitlines()
    kinds = {ev.decode(line.encode()).kind for line in by_device}
    assert kinds == {"job.started", "job.progress", "job.finished", "device.health"}

    by_firmware = run_cli("events", "--firmware", "fw1", *cfg).stdout.splitlines()
    # state, cancel and retry requests, job.created, and then job1's own six events
    assert len(by_firmware) == 10


async def test_follow_shows_new_events_live(js, subjects, site_config_file) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrtci.services.cli.main", "events", "--follow", "--new", "--json",
        "--config", str(site_config_file),
        stdout=asyncio.subprocess.PIPE, cwd=PROJECT_ROOT,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
    )
    try:
        # --new: only what comes after it subscribed. Publish until one is printed
        # (no sleep guessing when its subscription is ready); it must be one of ours.
        published = []

        async def printed():
            event = ev.JobCancelled.build(
                ev.JobCancelledData(job_id=f"live-{len(published)}"), source="t")
            published.append(event)
            await EventPublisher(js, subjects).publish(event)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(proc.stdout.readline(), 0.3)
            return None

        line = await eventually(printed, "the follower prints a live event", within_s=20)
        assert ev.decode(line) in published
    finally:
        proc.terminate()
        await proc.wait()


def test_empty_stream_prints_nothing(js, site_config_file) -> None:
    assert run_cli("events", "--config", str(site_config_file)).stdout == ""
