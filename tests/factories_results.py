"""Rows the trigger and the scheduler would write, and helpers to feed the results service.

The results service never creates firmware, builds, jobs or attempts; its
tests create them here the way their owners do, then publish lab events on
the real NATS subjects and let the real ingestion loop consume them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import asyncpg
from nats.js import JetStreamContext

from tests.helpers import consumer_caught_up, eventually
from wrtci.core.runtime import EventPublisher
from wrtci.proto import events as ev
from wrtci.proto.events import encode
from wrtci.proto.model import JobResult, TestResult, TestStatus
from wrtci.proto.routing import event_subject
from wrtci.proto.subjects import Subjects
from wrtci.services.batch_consume import consume_batches
from wrtci.services.consume import Pull
from wrtci.services.results.service import consumer_config, ingest_handler

T0 = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)
SHA = "f5c77659a33bd43cba105cf2f75e56d054fa9e0b9a73dc9f2a5bcb0e126ff7d5"
DEVICE_TYPE = "x86/64/generic"
_seq = itertools.count(1)


class Factory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def firmware(self, version: str = "SNAPSHOT", *, revision: str | None = None,
                       channel: str = "snapshot", source_kind: str = "official",
                       created_at: dt.datetime | None = None) -> str:
        revision = revision or f"r{next(_seq)}-abcdef"
        firmware_id = f"wrtci:{source_kind}:{channel}:{version}:{revision}"
        await self.pool.execute(
            """INSERT INTO checkouts (id, origin, tree_name, git_repository_url,
                   git_commit_hash, source_kind, priority_class, channel, version, revision,
                   created_at, start_time)
               VALUES ($1, 'wrtci', 'openwrt', 'https://git.openwrt.org/openwrt/openwrt.git',
                       $2, $3, $4, $5, $6, $7, $8, $8)""",
            firmware_id, revision.split("-")[-1], source_kind, channel, channel, version,
            revision, created_at or T0 + dt.timedelta(hours=next(_seq)))
        return firmware_id

    async def build(self, firmware_id: str, device_type: str = DEVICE_TYPE) -> str:
        target, subtarget, profile = device_type.split("/")
        image = f"openwrt-{target}-{subtarget}-{profile}-ext4-combined.img.gz"
        build_id = f"{firmware_id}:{device_type}:{image}"
        await self.pool.execute(
            """INSERT INTO builds (id, checkout_id, origin, target, subtarget, profile,
                   image_name, image_type, sha256, url)
               VALUES ($1, $2, 'wrtci', $3, $4, $5, $6, 'combined', $7, $8)
               ON CONFLICT DO NOTHING""",
            build_id, firmware_id, target, subtarget, profile, image, SHA,
            f"https://downloads.openwrt.org/snapshots/targets/{target}/{subtarget}/{image}")
        return build_id

    async def job(self, firmware_id: str, device_type: str = DEVICE_TYPE,
                  attempts: int = 1) -> str:
        build_id = await self.build(firmware_id, device_type)
        job_id = f"{build_id}:{device_type}:{next(_seq)}"
        await self.pool.execute(
            """INSERT INTO jobs (id, checkout_id, build_id, device_type, priority, timeout_s,
                                 state, attempt)
               VALUES ($1, $2, $3, $4, 5, 900, 'queued', $5)""",
            job_id, firmware_id, build_id, device_type, attempts)
        for attempt in range(1, attempts + 1):
            await self.add_attempt(job_id, attempt)
        return job_id

    async def add_attempt(self, job_id: str, attempt: int) -> None:
        await self.pool.execute(
            "INSERT INTO job_attempts (job_id, attempt, state) VALUES ($1, $2, 'queued')",
            job_id, attempt)


# -- events ------------------------------------------------------------------------------


def started(job_id: str, attempt: int = 1, lab: str = "lab-a", device: str = "dut-1",
            at: dt.datetime = T0) -> ev.JobStarted:
    return ev.JobStarted.build(ev.JobStartedData(job_id=job_id, attempt=attempt, lab=lab,
                                                 device=device),
                               source=f"wrtci/lab/{lab}", time=at,
                               id=f"started:{job_id}:{attempt}:{lab}")


def finished(job_id: str, tests: dict[str, str] | None = None, *, attempt: int = 1,
             lab: str = "lab-a", device: str = "dut-1", result: JobResult | None = None,
             log_key: str | None = None, event_id: str | None = None,
             **extra) -> ev.JobFinished:
    tests = tests or {}
    results = [TestResult(path=path, status=TestStatus(status), duration_s=1.0,
                          log_excerpt=f"{path}: {status}") for path, status in tests.items()]
    if result is None:
        result = JobResult.FAIL if any(s != "PASS" for s in tests.values()) else JobResult.PASS
    return ev.JobFinished.build(
        ev.JobFinishedData(job_id=job_id, attempt=attempt, lab=lab, device=device,
                           result=result, tests=results, log_key=log_key,
                           started_at=T0, finished_at=T0 + dt.timedelta(minutes=3), **extra),
        source=f"wrtci/lab/{lab}", time=T0 + dt.timedelta(minutes=3),
        id=event_id or f"finished:{job_id}:{attempt}:{lab}")


async def publish(js: JetStreamContext, subjects: Subjects, *events: ev.CloudEvent,
                  subject: str | None = None, dedupe: bool = True) -> None:
    """Publish as a lab would; ``dedupe=False`` skips Nats-Msg-Id (a redelivery)."""
    publisher = EventPublisher(js, subjects)
    for event in events:
        if dedupe:
            await publisher.publish(event, subject=subject)
        else:
            await js.publish(subject or event_subject(subjects, event), encode(event))


async def ingest_all(js: JetStreamContext, subjects: Subjects, pool: asyncpg.Pool,
                     limit_s: float = 20.0, batch: int = 100) -> None:
    """Run the real ingestion loop until its consumer has nothing left."""
    config = consumer_config(subjects)
    stop = asyncio.Event()
    task = asyncio.create_task(consume_batches(
        js, Pull(subjects.events_stream, config, batch=batch, fetch_timeout=0.2),
        ingest_handler(pool, subjects), stop))
    async def drained() -> bool:
        if task.done():
            task.result()
        return await consumer_caught_up(js, subjects.events_stream, config.durable_name)

    try:
        await eventually(drained, "the ingestion consumer drained", within_s=limit_s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
