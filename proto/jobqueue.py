"""A lab's side of the JOBS queue: take the next job, highest priority first.

Every lab with a device of a type pulls from the same durable consumers, one
per priority, which central services create (``topology.ensure_job_consumers``);
a lab only binds to them. An idle device costs (almost) nothing:

* **wake-up**: a core NATS subscription on the device type's wake-up subjects
  (``Subjects.wakes_of_type``) hears that jobs of a priority are waiting:
  central services send one per priority and device type for each batch of
  jobs they queue (:mod:`wrtci.proto.jobwake`), and ``wrtci resume`` for the
  jobs a drain held. It is only a signal: the jobs are then *fetched* from the consumers,
  so each goes to exactly one device. One wake-up is enough for many jobs: a
  device that took a job lets the next waiting device look (a backlog), until
  a look finds nothing.
* **priority**: a fetch asks the consumers highest priority first (``no_wait``
  pull requests, answered at once), so a PR job is taken before an older
  snapshot job. A wake-up alone asks only the priorities it announced, with a
  short wait: the wake-up can overtake the stream storing the job (always so
  in a cluster). A device that just took a job asks every priority again
  (with the short wait on a woken one while its wake-ups announced more jobs
  than the lab took: a wake-up says how many jobs it stands for).
* **safety poll**: jobs that come back without a new publish — naked with a
  delay, or redelivered after a lab stopped acking — are seen by a slow poll of
  every priority, paced to ``max_idle_rate`` requests/s per device type (the
  lab's own ``nak(delay)`` schedules one right when its delay ends). Each
  device type's poll has a random phase: devices started together (a lab, a
  fleet) never poll together.
* **reconnect**: wake-ups sent while the lab's connection was away are lost;
  the lab calls :meth:`JobQueue.look_again` when it is back (its reconnected
  callback), which asks every priority at once.
* **requests**: pull requests go through one reply subscription per queue
  (:mod:`wrtci.proto.jobpull`), so a look costs one message each way.

After a fetch that found a job, the next call asks again at once (more may be
waiting); after one that found nothing, the device waits for a signal.

The lab daemon uses it like this::

    queue = JobQueue(nc, subjects)
    job = await queue.next_job("x86/64/generic", wait=1.0)  # None when nothing came
    if job is not None:
        ...; await job.in_progress(); ...; await job.ack()
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections.abc import Iterable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from wrtci.core.swallow import logged
from wrtci.proto.events import DecodeError, JobCreated, JobSpec, decode_as
from wrtci.proto.jobpull import JS_API, Puller, PullFailed
from wrtci.proto.jobwake import jobs_announced
from wrtci.proto.subjects import PRIORITIES_HIGH_FIRST, Priority, Subjects
from wrtci.proto.topology import JOB_ACK_WAIT

log = logging.getLogger(__name__)

MAX_IDLE_RATE = 0.15
"""NATS requests per second an idle device type may cost (the safety poll). The
budget is 0.2; a quarter is kept back for the random phase of the polls and for
a wake-up for a job another device took."""
WAKEUP_WAIT = 0.25
"""How long the woken priority's pull request waits for the job to be stored."""
RETRY_FIRST = 0.5
"""First wait after the consumers were missing or NATS did not answer (doubles)."""


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
        self.announced: dict[int, int] = {}
        """Priority -> jobs its wake-ups announced that this lab has not taken yet."""
        self.backlog = False
        """The last fetch found a job: more may wait."""
        self.next_poll = first_poll
        self.fetches = 0
        self.timers: list[float] = []
        """Looks scheduled for when naked jobs are back (a heap of loop times)."""
        self.retry_s = RETRY_FIRST
        self.unavailable_logged = False
        self.changed = asyncio.Event()
        self.subs: list[Subscription] = []
        self.waiting = 0
        """Devices of this type inside ``next_job``."""
        self.late: list[tuple[Priority, Msg]] = []
        """Jobs whose pull request was given up before they came: a device takes them."""

    def due(self, now: float) -> bool:
        return (bool(self.hinted) or self.backlog or bool(self.late) or now >= self.next_poll
                or bool(self.timers and self.timers[0] <= now))

    def took(self, priority: int) -> None:
        """A job of ``priority`` taken: while its wake-ups announced more, the next
        look at it waits a moment for them too (they may still be on the way to
        the consumer, as the first one was)."""
        left = self.announced.get(priority, 0) - 1
        if left > 0:
            self.announced[priority] = left
            self.hinted.add(priority)
        else:
            self.announced.pop(priority, None)

    def next_look(self) -> float:
        return min(self.next_poll, self.timers[0]) if self.timers else self.next_poll

    def notify(self) -> None:
        """Wake every device waiting on this type (they look at ``due`` again)."""
        self.changed.set()
        self.changed = asyncio.Event()


class JobQueue:
    """Wake-up subscriptions and pull requests on the central job consumers."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        ack_wait: float = JOB_ACK_WAIT,
        priorities: Iterable[Priority] = PRIORITIES_HIGH_FIRST,
        max_idle_rate: float = MAX_IDLE_RATE,
        api: str = JS_API,
    ) -> None:
        """``nc``: the lab's connection (wake-up subscriptions and pull requests go
        through it). ``ack_wait``: the ack wait central services created the consumers
        with. ``api``: the JetStream API prefix (another for a JetStream domain)."""
        self.nc = nc
        self.api = api
        self.subjects = subjects
        self.ack_wait = ack_wait
        self.priorities = tuple(sorted(priorities, reverse=True))
        if max_idle_rate <= 0:
            raise ValueError("max_idle_rate must be positive")
        self.max_idle_rate = max_idle_rate
        self.poll_interval = len(self.priorities) / max_idle_rate
        """A safety poll asks every priority once: this keeps it within max_idle_rate."""
        self._puller = Puller(nc, subjects.jobs_stream, api=api, on_late=self._late_job)
        self._types: dict[str, _DeviceType] = {}
        self._consumers: dict[str, tuple[_DeviceType, Priority]] = {}

    @property
    def requests(self) -> int:
        """Pull requests sent so far (for tests and benchmarks)."""
        return self._puller.requests

    @property
    def timeouts(self) -> int:
        """Pull requests given up for want of an answer (for benchmarks)."""
        return self._puller.timeouts

    def waiting(self, device_type: str) -> int:
        """Devices of ``device_type`` inside :meth:`next_job` now."""
        state = self._types.get(device_type)
        return state.waiting if state is not None else 0

    # -- the lab's calls -----------------------------------------------------------

    async def next_job(self, device_type: str, *, wait: float = 1.0) -> QueuedJob | None:
        """The next job for ``device_type``, highest priority first; None after ``wait`` s.

        Sends requests only when a job was announced, the last fetch found one,
        or the safety poll is due: calling it in a loop while idle is cheap.
        """
        state = await self._state(device_type)
        state.waiting += 1
        try:
            return await self._next_job(state, wait)
        finally:
            state.waiting -= 1

    async def _next_job(self, state: _DeviceType, wait: float) -> QueuedJob | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait)
        while True:
            now = loop.time()
            while state.late:
                state.late.sort(key=lambda late: late[0])
                priority, msg = state.late.pop()
                job = await self._job(state, priority, msg)
                if job is not None:
                    return job
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
                    state.took(int(job.priority))
                    state.notify()  # another idle device of this type may take the next
                    return job
                continue  # a wake-up may have come in meanwhile
            if now >= deadline:
                return None
            changed = state.changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(deadline, state.next_look()) - now)

    def _poll_after(self, state: _DeviceType) -> float:
        """Seconds to the next safety poll: one interval, stretched at random.

        After the start-up look the first comes within one to two intervals (a
        random phase: device types and labs started together never poll
        together), and no later than one ack wait, when jobs a dead predecessor
        of this lab held are back in the queue. Never shorter than an interval:
        an idle device stays within ``max_idle_rate``.
        """
        if state.fetches == 0:
            return min(self.poll_interval * random.uniform(1.0, 2.0), self.ack_wait + 0.1)
        return self.poll_interval * random.uniform(1.0, 1.1)

    def look_again(self) -> None:
        """Ask every priority of every device type now, as after a fetch that found a job.

        For the lab's NATS connection coming back (its reconnected callback): the
        wake-ups of jobs published while it was away went to no one, and without
        this only the safety poll would find those jobs.
        """
        for state in self._types.values():
            state.backlog = True
            state.retry_s = RETRY_FIRST
            state.notify()

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
            for sub in state.subs:
                # closing: the connection may be gone
                with logged("wake-up subscription not unsubscribed", log, level=logging.DEBUG):
                    await sub.unsubscribe()
            state.notify()
            for _, msg in state.late:
                # not handed back: the job waits out its ack wait
                with logged("late job not handed back at close", log):
                    await msg.nak()
        self._types.clear()
        self._consumers.clear()
        await self._puller.close()

    def _late_job(self, consumer: str, msg: Msg) -> bool:
        """A job came after its pull request was given up: a waiting device takes it
        (False: none waits, the puller hands it back)."""
        state, priority = self._consumers.get(consumer, (None, None))
        if state is None or priority is None or not state.waiting:
            return False
        state.late.append((priority, msg))
        state.notify()
        return True

    # -- inside --------------------------------------------------------------------

    async def _state(self, device_type: str) -> _DeviceType:
        state = self._types.get(device_type)
        if state is None:
            state = _DeviceType(device_type, first_poll=0.0)
            self._types[device_type] = state
            for priority in self.priorities:
                self._consumers[self.subjects.job_consumer(priority, device_type)] = (
                    state, priority)

            async def wake(msg: Msg) -> None:
                try:
                    priority, _ = self.subjects.parse_job_or_wake(msg.subject)
                except ValueError:
                    return
                state.hinted.add(int(priority))
                state.announced[int(priority)] = jobs_announced(
                    msg.data, state.announced.get(int(priority), 0))
                state.notify()

            state.subs = [await self.nc.subscribe(self.subjects.wakes_of_type(device_type),
                                                  cb=wake)]
        return state

    async def _fetch(self, state: _DeviceType, hinted: set[int],
                     full: bool) -> QueuedJob | None:
        """Ask each priority's consumer (or the hinted ones) for one job, highest first."""
        try:
            for priority in self.priorities:
                if not full and int(priority) not in hinted:
                    continue
                expires = WAKEUP_WAIT if int(priority) in hinted else None
                consumer = self.subjects.job_consumer(priority, state.name)
                msg = await self._puller.pull(consumer, expires)
                if msg is None and expires is not None:  # the rest went to other devices
                    state.announced.pop(int(priority), None)
                job = None if msg is None else await self._job(state, priority, msg)
                if job is not None:
                    return job
        except PullFailed as exc:
            # Consumers are created centrally when the scheduler sees the device
            # type: wait for them (and for NATS), asking again with backoff.
            if not state.unavailable_logged:
                log.warning("job queue not available yet: %s" if exc.missing else
                            "job queue: NATS did not answer a pull request: %s", exc,
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

    async def _job(self, state: _DeviceType, priority: Priority, msg: Msg) -> QueuedJob | None:
        try:
            event = decode_as(msg.data, JobCreated)
        except DecodeError as exc:
            log.error("malformed job message terminated: %s", exc,
                      extra={"subject": msg.subject, "device_type": state.name})
            await msg.term()
            return None
        return QueuedJob(msg, event, priority, self)
