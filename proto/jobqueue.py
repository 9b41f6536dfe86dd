"""A lab's side of the JOBS queue: take the next job, highest priority first.

Every lab with a device of a type pulls from the same durable consumers, one
per priority, which central services create (``topology.ensure_job_consumers``);
a lab only binds to them. An idle device costs (almost) nothing:

* **wake-up**: a core NATS subscription on the device type's job subjects
  (``Subjects.jobs_of_type``) sees every job the scheduler queues for it. It
  is only a signal: the job itself is then *fetched* from the consumers, so
  exactly one device gets it.
* **priority**: a fetch asks the consumers highest priority first (``no_wait``
  pull requests, answered at once), so a PR job is taken before an older
  snapshot job. A wake-up alone asks only the priorities it announced, with a
  short wait: the wake-up can overtake the stream storing the job (always so
  in a cluster). A device that just took a job asks every priority again.
* **safety poll**: jobs that come back without a new publish — naked with a
  delay, or redelivered after a lab stopped acking — are seen by a slow poll of
  every priority, paced to ``max_idle_rate`` requests/s per device type (the
  lab's own ``nak(delay)`` schedules one right when its delay ends, and one
  comes an ack wait after start-up, when a dead predecessor's jobs are back).

After a fetch that found a job, the next call asks again at once (more may be
waiting); after one that found nothing, the device waits for a signal.

The lab daemon uses it like this::

    queue = JobQueue(js, subjects)
    job = await queue.next_job("x86/64/generic", wait=1.0)  # None when nothing came
    if job is not None:
        ...; await job.in_progress(); ...; await job.ack()
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import random
from collections.abc import Iterable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from wrtci.proto.events import DecodeError, JobCreated, JobSpec, decode_as
from wrtci.proto.subjects import PRIORITIES_HIGH_FIRST, Priority, Subjects
from wrtci.proto.topology import JOB_ACK_WAIT

log = logging.getLogger(__name__)

MAX_IDLE_RATE = 0.2
"""NATS requests per second an idle device type may cost (the safety poll)."""
WAKEUP_WAIT = 0.25
"""How long the woken priority's pull request waits for the job to be stored."""
REQUEST_TIMEOUT = 5.0
RETRY_FIRST = 0.5
"""First wait after the consumers were missing or NATS did not answer (doubles)."""

_NO_MESSAGE = {"404", "408", "409"}
"""Pull answers without a job: none waiting, request expired, consumer busy/deleted."""


class QueuedJob:
    """A job taken from the queue; the lab acks it when the job is over."""

    def __init__(self, msg: Msg, event: JobCreated, priority: Priority,
                 queue: JobQueue | None = None) -> None:
        self.msg = msg
        self.event = event
        self.priority = priority
        self._queue = queue

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
        if self._queue is not None:
            self._queue.job_returned(self.spec.device_type, delay)


class _DeviceType:
    """What one lab knows about one device type's queue."""

    def __init__(self, name: str, first_poll: float) -> None:
        self.name = name
        self.hinted: set[int] = set()
        """Priorities a wake-up announced since the last fetch."""
        self.backlog = False
        """The last fetch found a job: more may wait."""
        self.next_poll = first_poll
        self.fetches = 0
        self.timers: list[float] = []
        """Looks scheduled for when naked jobs are back (a heap of loop times)."""
        self.retry_s = RETRY_FIRST
        self.unavailable_logged = False
        self.changed = asyncio.Event()
        self.sub: Subscription | None = None

    def due(self, now: float) -> bool:
        return (bool(self.hinted) or self.backlog or now >= self.next_poll
                or bool(self.timers and self.timers[0] <= now))

    def next_look(self) -> float:
        return min(self.next_poll, self.timers[0]) if self.timers else self.next_poll

    def notify(self) -> None:
        """Wake every device waiting on this type (they look at ``due`` again)."""
        self.changed.set()
        self.changed = asyncio.Event()


class _Unavailable(Exception):
    """The consumer does not exist (yet) or NATS did not answer."""


class JobQueue:
    """Wake-up subscriptions and pull requests on the central job consumers."""

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        *,
        ack_wait: float = JOB_ACK_WAIT,
        priorities: Iterable[Priority] = PRIORITIES_HIGH_FIRST,
        max_idle_rate: float = MAX_IDLE_RATE,
        nc: Client | None = None,
    ) -> None:
        """``ack_wait``: the ack wait central services created the consumers with."""
        self.js = js
        self.nc: Client = nc if nc is not None else js._nc  # nats-py keeps it there
        self.subjects = subjects
        self.ack_wait = ack_wait
        self.priorities = tuple(sorted(priorities, reverse=True))
        if max_idle_rate <= 0:
            raise ValueError("max_idle_rate must be positive")
        self.poll_interval = len(self.priorities) / max_idle_rate
        """A safety poll asks every priority once: this keeps it within max_idle_rate."""
        self._api = getattr(js, "_prefix", "$JS.API")
        self._types: dict[str, _DeviceType] = {}
        self.requests = 0
        """Pull requests sent so far (for benchmarks)."""

    # -- the lab's calls -----------------------------------------------------------

    async def next_job(self, device_type: str, *, wait: float = 1.0) -> QueuedJob | None:
        """The next job for ``device_type``, highest priority first; None after ``wait`` s.

        Sends requests only when a job was announced, the last fetch found one,
        or the safety poll is due: calling it in a loop while idle is cheap.
        """
        state = await self._state(device_type)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait)
        while True:
            now = loop.time()
            if state.due(now):
                # Only a wake-up: ask just the announced priorities. Any higher one
                # waiting would have woken this idle device before (a naked job is
                # the poll's: that, like a backlog, asks every priority).
                full = (state.backlog or now >= state.next_poll
                        or bool(state.timers and state.timers[0] <= now))
                hinted, state.hinted = state.hinted, set()
                state.backlog = False
                if full:
                    state.next_poll = now + self._poll_after(state)
                while state.timers and state.timers[0] <= now:
                    heapq.heappop(state.timers)
                state.fetches += 1
                job = await self._fetch(state, hinted, full)
                if job is not None:
                    state.backlog = True
                    state.notify()  # another idle device of this type may take the next
                    return job
                continue  # a wake-up may have come in meanwhile
            if now >= deadline:
                return None
            changed = state.changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(deadline, state.next_look()) - now)

    def _poll_after(self, state: _DeviceType) -> float:
        """Seconds to the next safety poll.

        The first comes one ack wait after start-up: jobs a predecessor of this
        lab held when it died are back in the queue by then.
        """
        # Spread (never shortened): labs started together must not poll together.
        interval = self.poll_interval * random.uniform(1.0, 1.25)
        if state.fetches == 0:
            return min(interval, self.ack_wait + 0.1)
        return interval

    def job_returned(self, device_type: str, delay: float | None) -> None:
        """A job of ours was naked: look again when it is back in the queue."""
        state = self._types.get(device_type)
        if state is None:
            return
        if not delay:
            state.backlog = True
        else:
            heapq.heappush(state.timers, asyncio.get_running_loop().time() + delay + 0.05)
        state.notify()

    async def close(self) -> None:
        for state in self._types.values():
            if state.sub is not None:
                with contextlib.suppress(Exception):  # closing: the connection may be gone
                    await state.sub.unsubscribe()
            state.notify()
        self._types.clear()

    # -- inside --------------------------------------------------------------------

    async def _state(self, device_type: str) -> _DeviceType:
        state = self._types.get(device_type)
        if state is None:
            state = _DeviceType(device_type, first_poll=0.0)
            self._types[device_type] = state

            async def wake(msg: Msg) -> None:
                try:
                    priority, _ = self.subjects.parse_job(msg.subject)
                except ValueError:
                    return
                state.hinted.add(int(priority))
                state.notify()

            state.sub = await self.nc.subscribe(self.subjects.jobs_of_type(device_type),
                                                cb=wake)
        return state

    async def _fetch(self, state: _DeviceType, hinted: set[int],
                     full: bool) -> QueuedJob | None:
        """Ask each priority's consumer (or the hinted ones) for one job, highest first."""
        try:
            for priority in self.priorities:
                if not full and int(priority) not in hinted:
                    continue
                expires = WAKEUP_WAIT if int(priority) in hinted else None
                msg = await self._pull(priority, state.name, expires)
                if msg is None:
                    continue
                try:
                    event = decode_as(msg.data, JobCreated)
                except DecodeError as exc:
                    log.error("malformed job message terminated: %s", exc,
                              extra={"subject": msg.subject, "device_type": state.name})
                    await msg.term()
                    continue
                return QueuedJob(msg, event, priority, self)
        except _Unavailable as exc:
            # Consumers are created centrally when the scheduler sees the device
            # type: wait for them (and for NATS), asking again with backoff.
            if not state.unavailable_logged:
                log.warning("job queue not available yet: %s", exc,
                            extra={"device_type": state.name})
                state.unavailable_logged = True
            state.next_poll = asyncio.get_running_loop().time() + state.retry_s
            state.retry_s = min(state.retry_s * 2, self.poll_interval)
            return None
        if state.unavailable_logged:
            log.info("job queue available", extra={"device_type": state.name})
        state.unavailable_logged = False
        state.retry_s = RETRY_FIRST
        return None

    async def _pull(self, priority: Priority, device_type: str,
                    expires: float | None) -> Msg | None:
        """One pull request for one message: at once (``no_wait``) or within ``expires``."""
        consumer = self.subjects.job_consumer(priority, device_type)
        subject = f"{self._api}.CONSUMER.MSG.NEXT.{self.subjects.jobs_stream}.{consumer}"
        if expires is None:
            body = {"batch": 1, "no_wait": True}
        else:
            body = {"batch": 1, "expires": int(expires * 1e9)}
        self.requests += 1
        # A reply inbox of its own: JetStream delivers the job under its original
        # subject, which nats-py's request() cannot match to the request.
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, max_msgs=1)
        try:
            await self.nc.publish(subject, json.dumps(body).encode(), reply=inbox)
            msg = await sub.next_msg(timeout=(expires or 0.0) + REQUEST_TIMEOUT)
        except (TimeoutError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError,
                nats.errors.ConnectionReconnectingError) as exc:
            raise _Unavailable(f"{consumer}: {type(exc).__name__}") from None
        finally:
            with contextlib.suppress(Exception):  # gone with max_msgs, or connection closed
                await sub.unsubscribe()
        if msg.headers and msg.headers.get("Status") == "503":
            raise _Unavailable(f"no consumer {consumer}")
        status = msg.headers.get("Status") if msg.headers else None
        if status in _NO_MESSAGE:
            return None
        if status is not None:
            raise _Unavailable(f"{consumer}: status {status} {msg.headers.get('Description')}")
        return msg


async def fetch_next_job(
    queue: JobQueue, device_type: str, *, wait: float = 1.0
) -> QueuedJob | None:
    """Function form of :meth:`JobQueue.next_job`."""
    return await queue.next_job(device_type, wait=wait)
