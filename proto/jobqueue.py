"""A lab's side of the JOBS queue: take the next job, highest priority first.

Every lab with a device of a type pulls from the same durable consumers
(``topology.job_consumer``), one per priority. Central services create them
(``topology.ensure_job_consumers``); a lab only binds to them, and waits while
one does not exist yet (its NATS permissions allow no consumer creation).
:class:`JobQueue` keeps a pull subscription per (priority, device type) and
asks them in priority order, so a PR job is taken before a snapshot job even
when the snapshot job is older.

The lab daemon uses it like this::

    queue = JobQueue(js, subjects)
    job = await queue.next_job("x86/64/generic")   # None when nothing waits
    if job is not None:
        ...; await job.in_progress(); ...; await job.ack()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

from proto.events import DecodeError, JobCreated, JobSpec, decode_as
from proto.subjects import PRIORITIES_HIGH_FIRST, Priority, Subjects
from proto.topology import JOB_ACK_WAIT

log = logging.getLogger(__name__)


class QueuedJob:
    """A job taken from the queue; the lab acks it when the job is over."""

    def __init__(self, msg: Msg, event: JobCreated, priority: Priority) -> None:
        self.msg = msg
        self.event = event
        self.priority = priority

    @property
    def spec(self) -> JobSpec:
        return self.event.data

    @property
    def num_delivered(self) -> int:
        """2 or more: another lab took this job before and went away."""
        return self.msg.metadata.num_delivered

    async def in_progress(self) -> None:
        """Keep the job: call more often than the consumer's ack wait."""
        await self.msg.in_progress()

    async def ack(self) -> None:
        await self.msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        """Hand the job back at once (or after ``delay``) for another device."""
        await self.msg.nak(delay=delay)


class JobQueue:
    """Pull subscriptions on the job consumers, kept open between calls."""

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        *,
        ack_wait: float = JOB_ACK_WAIT,
        priorities: Iterable[Priority] = PRIORITIES_HIGH_FIRST,
    ) -> None:
        self.js = js
        self.subjects = subjects
        self.ack_wait = ack_wait
        self.priorities = tuple(sorted(priorities, reverse=True))
        self._subs: dict[tuple[int, str], JetStreamContext.PullSubscription] = {}
        self._missing: set[tuple[int, str]] = set()

    async def _subscription(
        self, priority: Priority, device_type: str
    ) -> JetStreamContext.PullSubscription:
        key = (int(priority), device_type)
        sub = self._subs.get(key)
        if sub is None:
            sub = await self.js.pull_subscribe_bind(
                self.subjects.job_consumer(priority, device_type), self.subjects.jobs_stream
            )
            self._subs[key] = sub
        return sub

    async def next_job(self, device_type: str, *, wait: float = 1.0) -> QueuedJob | None:
        """The next job for ``device_type``, highest priority first; None if none waits.

        Each priority is long-polled for a share of ``wait``: a job that
        arrives is taken at once, an empty queue costs about ``wait`` seconds
        per call (no busy loop), and a higher priority is always asked first.
        """
        per_priority = max(0.05, wait / len(self.priorities))
        for priority in self.priorities:
            sub = await self._subscription(priority, device_type)
            try:
                [msg] = await sub.fetch(1, timeout=per_priority)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except ServiceUnavailableError:
                # No such consumer yet: the scheduler creates it once it has
                # seen this device type announced. Wait, do not create it.
                if key_missing := (int(priority), device_type) not in self._missing:
                    self._missing.add((int(priority), device_type))
                log.log(logging.INFO if key_missing else logging.DEBUG,
                        "job consumer not created yet; waiting",
                        extra={"device_type": device_type, "priority": int(priority)})
                await asyncio.sleep(per_priority)
                continue
            self._missing.discard((int(priority), device_type))
            try:
                event = decode_as(msg.data, JobCreated)
            except DecodeError as exc:
                log.error("malformed job message terminated: %s", exc,
                          extra={"subject": msg.subject, "device_type": device_type})
                await msg.term()
                continue
            return QueuedJob(msg, event, priority)
        return None

    async def close(self) -> None:
        for sub in self._subs.values():
            with contextlib.suppress(Exception):  # closing: the connection may be gone
                await sub.unsubscribe()
        self._subs.clear()


async def fetch_next_job(
    queue: JobQueue, device_type: str, *, wait: float = 1.0
) -> QueuedJob | None:
    """Function form of :meth:`JobQueue.next_job`."""
    return await queue.next_job(device_type, wait=wait)
