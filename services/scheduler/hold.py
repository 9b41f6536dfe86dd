"""Holding queued jobs back from the labs: ``wrtci drain`` and ``wrtci resume``.

A drain pauses the scheduler (no new firmware is fanned out) and every job
consumer of the JOBS stream (JetStream consumer pause, nats-server 2.11+):
a lab's fetch then gets nothing, so no device starts a new job, while the
jobs already running go on and ack as usual. Queued jobs stay in the stream
and start when ``wrtci resume`` lifts the pause. The labs need no change and
no extra permission: the server holds the jobs.

Lifting the pause publishes no job, so the release sends each resumed
consumer that holds jobs the wake-up labs hear (``Subjects.job_wake``): their
idle devices take the jobs at once, not at their next safety poll.

The pause is kept in the consumer's config (``pause_until``), so a scheduler
or lab that re-applies a consumer does not lift it; a job consumer created
while drained (a new device type) is paused by the scheduler's watch of the
switch (:func:`keep_jobs_held`) and by every round of ``drain --wait``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from wrtci.core.retry import sleep_or_stop
from wrtci.proto.subjects import Subjects

log = logging.getLogger(__name__)

HELD_UNTIL = "9999-01-01T00:00:00Z"
"""Paused until resumed: JetStream's pause is a time, so a far one."""
JOB_CONSUMER_PREFIX = "job-"
"""``Subjects.job_consumer`` names."""
KEEP_HELD_EVERY_S = 5.0


class JobsInFlight(msgspec.Struct, kw_only=True):
    consumers: int
    """Job consumers (priority x device type) on the JOBS stream."""
    paused: int
    taken: int
    """Jobs a lab has taken and not finished (the consumers' unacknowledged messages)."""
    waiting: int
    """Jobs queued in the stream that no lab has taken."""


async def job_consumers(js: JetStreamContext, subjects: Subjects) -> list[ConsumerInfo]:
    found: list[ConsumerInfo] = []
    while True:
        page = await js.consumers_info(subjects.jobs_stream, offset=len(found))
        found.extend(page)
        if not page:
            break
    return [c for c in found if (c.name or "").startswith(JOB_CONSUMER_PREFIX)]


async def hold_jobs(js: JetStreamContext, subjects: Subjects) -> JobsInFlight:
    """Pause every job consumer not paused yet; returns what is in flight."""
    consumers = await job_consumers(js, subjects)
    for info in consumers:
        if not info.paused:
            await js.pause_consumer(subjects.jobs_stream, info.name, HELD_UNTIL)
            log.info("job consumer paused", extra={"consumer": info.name})
    return _in_flight(consumers, paused=len(consumers))


async def release_jobs(nc: Client, js: JetStreamContext, subjects: Subjects) -> JobsInFlight:
    """Resume the job consumers a drain paused (a pause of another kind stays), and
    wake the labs' idle devices for the jobs they held (through ``nc``, the
    connection ``js`` is on)."""
    consumers = await job_consumers(js, subjects)
    for info in consumers:
        if info.paused and _held_by_drain(info):
            await js.resume_consumer(subjects.jobs_stream, info.name)
            log.info("job consumer resumed", extra={"consumer": info.name})
            if info.num_pending or info.num_redelivered:
                await _wake(nc, subjects, info)
    return _in_flight(consumers, paused=0)


async def _wake(nc: Client, subjects: Subjects, info: ConsumerInfo) -> None:
    """The wake-up of a job publish, for the jobs a resumed consumer holds."""
    try:
        priority, device_type = subjects.parse_job(info.config.filter_subject or "")
    except ValueError:  # not one of ours: its labs find the jobs by their safety poll
        log.warning("resumed job consumer without a job subject: labs not woken",
                    extra={"consumer": info.name})
        return
    await nc.publish(subjects.job_wake(priority, device_type))


def _held_by_drain(info: ConsumerInfo) -> bool:
    until = info.config.pause_until if info.config else None
    return bool(until) and until.startswith(HELD_UNTIL[:4])


def _in_flight(consumers: list[ConsumerInfo], paused: int) -> JobsInFlight:
    return JobsInFlight(consumers=len(consumers), paused=paused,
                        taken=sum(c.num_ack_pending or 0 for c in consumers),
                        waiting=sum(c.num_pending or 0 for c in consumers))


async def keep_jobs_held(nc: Client, js: JetStreamContext, subjects: Subjects,
                         is_held: Callable[[], bool], stop: asyncio.Event,
                         every_s: float = KEEP_HELD_EVERY_S) -> None:
    """The job consumers follow the switch: paused while jobs are held (also those that
    appear meanwhile, checked every ``every_s``), resumed once when the hold ends."""
    was_held: bool | None = None
    while True:
        held = is_held()
        if held:
            await hold_jobs(js, subjects)
        elif was_held is not False:  # at start, and once after a hold
            await release_jobs(nc, js, subjects)
        was_held = held
        if await sleep_or_stop(stop, every_s):
            return
