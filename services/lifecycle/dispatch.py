"""Put job attempts on the JOBS stream (for labs) and on EVENTS (for people).

Once jobs are stored, the labs with devices of their type are woken: one
wake-up per (priority, device type) per publish or batch, however many jobs
it queued (``jobwake.wake_labs``; a woken lab takes jobs until none is left).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

from wrtci.core.publisher import EventPublisher, msg_id
from wrtci.core.swallow import logged
from wrtci.proto.events import JobCreated, JobSpec, encode
from wrtci.proto.jobwake import wake_labs
from wrtci.proto.routing import event_subject
from wrtci.proto.subjects import Subjects
from wrtci.services.config import StorageConfig
from wrtci.services.storage import minio_client

log = logging.getLogger(__name__)

SOURCE = "wrtci/scheduler"

Presigner = Callable[[str], str]
"""Object key -> a URL a lab can download from."""


def job_created_id(job_id: str, attempt: int) -> str:
    """Event id of an attempt (its keyed ``Nats-Msg-Id``: publishing twice queues once)."""
    return f"job.created:{job_id}:{attempt}"


def minio_presigner(config: StorageConfig) -> Presigner:
    """Presigned GET URLs; computed locally (region given), no request to the server."""
    client = minio_client(config)
    expiry = dt.timedelta(seconds=config.presign_expiry_s)

    def presign(object_key: str) -> str:
        return client.presigned_get_object(config.bucket, object_key, expires=expiry)

    return presign


class Dispatcher:
    """``nc`` and ``js`` on it: jobs and their acks, and the labs' wake-ups go through
    the connection, withdrawals through JetStream."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        subjects: Subjects,
        presign: Presigner | None = None,
        *,
        concurrency: int = 64,
        timeout: float = 10.0,
    ) -> None:
        self.nc = nc
        self.js = js
        self.subjects = subjects
        self.presign = presign
        self.events = EventPublisher(js, subjects, timeout)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._subjects: dict[tuple[int, str], str] = {}
        """(priority, device type) -> job subject: escaping the name costs more than
        a look-up, and a snapshot has a job for every device type."""

    def _with_url(self, spec: JobSpec) -> JobSpec:
        image = spec.image
        if image.url or not image.object_key:
            return spec
        if self.presign is None:
            raise RuntimeError(f"job {spec.job_id}: image {image.object_key} needs object "
                               "storage to presign its URL, and none is configured")
        image = msgspec.structs.replace(image, url=self.presign(image.object_key))
        return msgspec.structs.replace(spec, image=image)

    async def publish(self, spec: JobSpec) -> int:
        """Queue one attempt; returns its JOBS stream sequence (the same when repeated)."""
        spec = self._with_url(spec)
        event = JobCreated.build(spec, source=SOURCE, subject=spec.job_id,
                                 id=job_created_id(spec.job_id, spec.attempt))
        async with self._slots:
            ack = await self.events.publish(
                event, self.subjects.job(spec.priority, spec.device_type))
            await self.events.publish(event)
        await self.wake([(spec.priority, spec.device_type)])
        log.info("job queued", extra={"job_id": spec.job_id, "attempt": spec.attempt,
                                      "device_type": spec.device_type,
                                      "priority": spec.priority, "duplicate": ack.duplicate})
        return ack.seq

    async def wake(self, queued: Sequence[tuple[int, str]]) -> None:
        """Wake the labs for stored jobs of these (priority, device type)s. Best effort:
        a lab that misses it finds the jobs by its safety poll."""
        # NATS away: the jobs are stored, only the signal is lost.
        with logged("labs not woken", log, wakes=len(set(queued))):
            await wake_labs(self.nc, self.subjects, queued)

    def job_subject(self, priority: int, device_type: str) -> str:
        key = (priority, device_type)
        subject = self._subjects.get(key)
        if subject is None:
            subject = self._subjects[key] = self.subjects.job(priority, device_type)
        return subject

    def batch(self) -> JobBatch:
        """Jobs queued as they come, pipelined (see :class:`JobBatch`)."""
        return JobBatch(self)

    async def publish_all(self, specs: Sequence[JobSpec]) -> list[tuple[str, int, int]]:
        """Queue many at once; (job id, attempt, sequence) of each."""
        if not specs:
            return []
        batch = self.batch()
        await batch.add(specs)
        return await batch.close()

    async def withdraw(self, queue_seq: int | None) -> bool:
        """Take a queued attempt off the JOBS stream; False if a lab had acked it already."""
        if queue_seq is None:
            return False
        with contextlib.suppress(APIError):  # gone: acked by a lab, or deleted before
            return bool(await self.js.delete_msg(self.subjects.jobs_stream, queue_seq))
        return False


class _PubAck(msgspec.Struct):
    """JetStream's answer to a publish (the fields fan-out reads)."""

    seq: int = 0
    duplicate: bool = False
    error: dict | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode


class JobBatch:
    """Many attempts queued with many publishes in flight (a firmware's fan-out).

    :meth:`add` sends jobs without waiting for their acks, then lets the client
    write them out, so the server stores the first ones while the caller
    prepares (inserts) the next; :meth:`close` sends their ``job.created``
    events, after every job, waits for every ack, then wakes the labs once per
    (priority, device type). At most ``MAX_IN_FLIGHT``
    publishes wait for their ack; a batch whose acks do not all come within the
    timeout fails (what was not acked stays unpublished in the database, and is
    published again with the same ``Nats-Msg-Id``).

    Leaner than one ``publish_async`` per message (a future, a token and a JSON
    parse each, about three times the CPU): the acks come to one wildcard
    inbox, ``<inbox>.<index>``, and land in a list.
    """

    MAX_IN_FLIGHT = 4096
    YIELD_EVERY = 250
    """Publishes between two chances for the client to write them to the socket."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.nc = dispatcher.nc
        self.time = dt.datetime.now(dt.UTC)
        self.specs: list[JobSpec] = []
        self.events: list[JobCreated] = []
        self.payloads: list[bytes] = []
        self.acks: list[_PubAck | None] = []
        self.inbox = self.nc.new_inbox()
        self._sub = None
        self._key: bytes | None = None
        self._received = 0
        self._error: Exception | None = None
        self._progress = asyncio.Event()
        """Set by every ack while the batch waits for room or for the last ack."""

    async def _on_ack(self, msg) -> None:
        try:
            index = int(msg.subject[len(self.inbox) + 1:])
            if msg.headers and msg.headers.get("Status") == "503":
                raise NoStreamResponseError
            ack = _decode_ack(msg.data)
            if ack.error is not None:
                raise APIError.from_error(ack.error)
        except Exception as exc:  # a failed publish fails the batch
            self._error = self._error or exc
        else:
            if self.acks[index] is None:
                self.acks[index] = ack
                self._received += 1
        self._progress.set()

    async def _publish(self, subject: str, payload: bytes, event_id: str) -> None:
        if self._key is None:  # the central key (core/publisher.py): read once per batch
            self._key = await self.dispatcher.events.key()
        if self._sub is None:
            self._sub = await self.nc.subscribe(f"{self.inbox}.*", cb=self._on_ack,
                                                pending_msgs_limit=4 * self.MAX_IN_FLIGHT)
        if len(self.acks) - self._received >= self.MAX_IN_FLIGHT:
            async with asyncio.timeout(self.dispatcher.timeout):
                while len(self.acks) - self._received >= self.MAX_IN_FLIGHT:
                    await self._next_ack()
        self.acks.append(None)
        await self.nc.publish(subject, payload, reply=f"{self.inbox}.{len(self.acks) - 1}",
                              headers={"Nats-Msg-Id": msg_id(self._key, subject, event_id)})
        if len(self.acks) % self.YIELD_EVERY == 0:
            await asyncio.sleep(0)

    async def _next_ack(self) -> None:
        """Until the next ack arrives; raises the error of a failed publish."""
        if self._error is None:
            self._progress.clear()
            await self._progress.wait()
        if self._error is not None:
            raise self._error

    async def add(self, specs: Sequence[JobSpec]) -> None:
        """Send these jobs now (their acks are awaited by :meth:`close`)."""
        d = self.dispatcher
        try:
            for spec in specs:
                spec = d._with_url(spec)
                event = JobCreated(id=job_created_id(spec.job_id, spec.attempt), source=SOURCE,
                                   time=self.time, subject=spec.job_id, data=spec)
                payload = encode(event)
                await self._publish(d.job_subject(spec.priority, spec.device_type), payload,
                                    event.id)
                self.specs.append(spec)
                self.events.append(event)
                self.payloads.append(payload)
            await asyncio.sleep(0)
        except BaseException:
            await self.cancel()
            raise

    async def cancel(self) -> None:
        """Stop listening for acks (the caller naks, and retries)."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with logged("job batch ack inbox not unsubscribed", log, level=logging.DEBUG):
                await sub.unsubscribe()

    async def close(self) -> list[tuple[str, int, int]]:
        """Publish the events, wait for every ack; (job id, attempt, sequence) of each job."""
        d, specs, jobs = self.dispatcher, self.specs, len(self.specs)
        try:
            for event, payload in zip(self.events, self.payloads, strict=True):
                await self._publish(event_subject(d.subjects, event), payload, event.id)
            async with asyncio.timeout(d.timeout + jobs / 1000):
                while self._received < len(self.acks):
                    await self._next_ack()
            if self._error is not None:
                raise self._error
        finally:
            await self.cancel()
            # Also when the batch failed: the jobs that are stored are for labs now.
            await d.wake([(s.priority, s.device_type)
                          for s, ack in zip(specs, self.acks, strict=False) if ack is not None])
        queued = self.acks[:jobs]
        for spec, ack in zip(specs, queued, strict=True):
            log.debug("job queued", extra={"job_id": spec.job_id, "attempt": spec.attempt,
                                           "device_type": spec.device_type,
                                           "priority": spec.priority,
                                           "duplicate": ack.duplicate})
        if jobs:
            log.info("jobs queued", extra={"jobs": jobs,
                                           "duplicates": sum(a.duplicate for a in queued)})
        return [(s.job_id, s.attempt, ack.seq) for s, ack in zip(specs, queued, strict=True)]
