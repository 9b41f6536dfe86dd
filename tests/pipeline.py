"""Running the scheduler and timeout services in a test, and a fake lab for them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from wrtci.core.config import LoggingConfig, NatsConfig
from wrtci.core.retry import Backoff
from wrtci.core.runtime import EventPublisher
from wrtci.proto import topology
from wrtci.proto.events import (
    CloudEvent,
    DecodeError,
    JobFinished,
    JobFinishedData,
    JobProgress,
    JobProgressData,
    JobStarted,
    JobStartedData,
    decode,
)
from wrtci.proto.jobqueue import JobQueue, QueuedJob
from wrtci.proto.model import ErrorCode, JobResult
from wrtci.proto.subjects import Subjects
from wrtci.proto.topology import JOB_ACK_WAIT
from wrtci.services.config import DatabaseConfig, StorageConfig
from wrtci.services.scheduler import service as scheduler_service
from wrtci.services.scheduler.service import SchedulerApp, SchedulerSettings
from wrtci.services.timeout import service as timeout_service
from wrtci.services.timeout.service import TimeoutApp, TimeoutSettings

WAIT = 20.0
"""Bound of every wait for something to happen (a failure, not a speed check)."""
X86 = "x86/64/generic"
FAST = SchedulerSettings(holdoff_s=0.2)
"""A scheduler that batches firmware events for 0.2 s only."""




async def stored_events(js: JetStreamContext, subjects: Subjects,
                        kind: str | None = None) -> list[CloudEvent]:
    """Every event the EVENTS stream holds (after JetStream's deduplication)."""
    info = await js.stream_info(subjects.events_stream)
    events = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(subjects.events_stream, seq)
        except Exception:  # a deleted sequence
            continue
        try:
            event = decode(msg.data)
        except DecodeError:
            continue
        if kind is None or event.kind == kind:
            events.append(event)
    return events


async def job_row(pool: asyncpg.Pool, job_id: str) -> asyncpg.Record:
    async with pool.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)


async def firmware_jobs(pool: asyncpg.Pool, firmware_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM jobs WHERE checkout_id = $1 ORDER BY id",
                                firmware_id)


def firmware_in(pool: asyncpg.Pool, firmware_id: str, state: str) -> Callable[[], Awaitable[bool]]:
    """For ``eventually``: is the firmware in ``state`` now?"""
    async def check() -> bool:
        return await firmware_state(pool, firmware_id) == state
    return check


async def firmware_state(pool: asyncpg.Pool, firmware_id: str) -> str | None:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT state FROM checkouts WHERE id = $1", firmware_id)


QUICK_RETRY = Backoff(steps_s=(0.2,), jitter=0.0)
"""Infrastructure retries in tests: the delay is there, but short."""


class Pipeline:
    def __init__(self, scheduler: SchedulerApp | None, timeout: TimeoutApp | None) -> None:
        self.scheduler = scheduler
        self.timeout = timeout


@contextlib.asynccontextmanager
async def running(
    nats_config: NatsConfig, database_config: DatabaseConfig, storage_config: StorageConfig,
    *, scheduler: SchedulerSettings | None = None, timeouts: TimeoutSettings | None = None,
    with_scheduler: bool = True, with_timeout: bool = True,
) -> AsyncIterator[Pipeline]:
    """The scheduler and timeout services, started as their daemons start them."""
    stop = asyncio.Event()
    logging_config = LoggingConfig(format="text")
    apps: list[SchedulerApp | TimeoutApp] = []
    sched_app = timeout_app = None
    try:
        if with_scheduler:
            sched_app = SchedulerApp(scheduler_service.Config(
                nats=nats_config, database=database_config, storage=storage_config,
                logging=logging_config, scheduler=scheduler or SchedulerSettings()))
            apps.append(sched_app)
            await sched_app.start(stop)
        if with_timeout:
            timeout_app = TimeoutApp(timeout_service.Config(
                nats=nats_config, database=database_config, storage=storage_config,
                logging=logging_config,
                timeout=timeouts or TimeoutSettings(infra_retry=QUICK_RETRY)))
            apps.append(timeout_app)
            await timeout_app.start(stop)
        yield Pipeline(sched_app, timeout_app)
    finally:
        stop.set()
        for app in apps:
            await asyncio.wait_for(app.close(), 15)


class FakeLab:
    """A lab as the scheduler sees it: takes jobs from the queue, reports on them."""

    def __init__(self, nc: Client, subjects: Subjects, name: str,
                 device: str = "dut-1", *, ack_wait: float = JOB_ACK_WAIT,
                 **queue_options) -> None:
        """``nc``: its connection, as a lab's own (the queue pulls through it)."""
        self.name = name
        self.device = device
        self.queue = JobQueue(nc, subjects, ack_wait=ack_wait, **queue_options)
        js = nc.jetstream()
        self.events = EventPublisher(js, subjects)
        self.js, self.subjects, self.ack_wait = js, subjects, ack_wait
        self._consumers: set[str] = set()

    async def take(self, device_type: str, limit: float = WAIT) -> QueuedJob:
        if device_type not in self._consumers:
            # The central side's job (the scheduler does it for announced types):
            # here with this fake lab's ack wait, for the redelivery tests.
            await topology.ensure_job_consumers(self.js, self.subjects, [device_type],
                                                ack_wait=self.ack_wait)
            self._consumers.add(device_type)

        async def loop() -> QueuedJob:
            while True:
                job = await self.queue.next_job(device_type, wait=0.2)
                if job is not None:
                    return job
                await asyncio.sleep(0.05)
        try:
            return await asyncio.wait_for(loop(), limit)
        except TimeoutError:
            raise AssertionError(f"lab {self.name}: no job for {device_type}") from None

    async def start(self, job: QueuedJob) -> None:
        await self.events.publish(JobStarted.build(JobStartedData(
            job_id=job.spec.job_id, attempt=job.spec.attempt, lab=self.name,
            device=self.device), source=f"lab/{self.name}"))

    async def progress(self, job: QueuedJob, stage: str = "test") -> None:
        await self.events.publish(JobProgress.build(JobProgressData(
            job_id=job.spec.job_id, attempt=job.spec.attempt, lab=self.name,
            device=self.device, stage=stage), source=f"lab/{self.name}"))

    async def finish(self, job: QueuedJob, result: JobResult = JobResult.PASS,
                     error_code: ErrorCode | None = None, *, ack: bool = True) -> None:
        await self.events.publish(JobFinished.build(JobFinishedData(
            job_id=job.spec.job_id, attempt=job.spec.attempt, lab=self.name,
            device=self.device, result=result, error_code=error_code),
            source=f"lab/{self.name}",
            id=f"lab-finished:{job.spec.job_id}:{job.spec.attempt}:{self.name}"))
        if ack:
            with contextlib.suppress(Exception):  # withdrawn by wrtci meanwhile
                await job.ack()

    async def run(self, device_type: str, result: JobResult = JobResult.PASS) -> QueuedJob:
        """Take the next job for ``device_type``, start it and finish it with ``result``."""
        job = await self.take(device_type)
        await self.start(job)
        await self.finish(job, result)
        return job

    async def close(self) -> None:
        await self.queue.close()
