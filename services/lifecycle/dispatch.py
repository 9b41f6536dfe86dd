"""Put job attempts on the JOBS stream (for labs) and on EVENTS (for people)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError

from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import JobCreated, JobSpec, encode
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
    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        presign: Presigner | None = None,
        *,
        concurrency: int = 64,
        timeout: float = 10.0,
    ) -> None:
        self.js = js
        self.subjects = subjects
        self.presign = presign
        self.events = EventPublisher(js, subjects, timeout)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)

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
        log.info("job queued", extra={"job_id": spec.job_id, "attempt": spec.attempt,
                                      "device_type": spec.device_type,
                                      "priority": spec.priority, "duplicate": ack.duplicate})
        return ack.seq

    async def publish_all(self, specs: Sequence[JobSpec]) -> list[tuple[str, int, int]]:
        """Queue many at once; (job id, attempt, sequence) of each.

        Pipelined (``publish_async``): every job goes out before any ack is
        awaited, the jobs before their ``job.created`` events, so a lab can
        start on the first job while the rest are still being written.
        """
        if not specs:
            return []
        specs = [self._with_url(spec) for spec in specs]
        events = [JobCreated.build(spec, source=SOURCE, subject=spec.job_id,
                                   id=job_created_id(spec.job_id, spec.attempt))
                  for spec in specs]
        payloads = [encode(event) for event in events]
        job_subjects = [self.subjects.job(s.priority, s.device_type) for s in specs]
        event_subjects = [event_subject(self.subjects, event) for event in events]
        job_acks = [await self.js.publish_async(
            subject, payload, headers=await self.events.headers(subject, event.id))
            for subject, event, payload in zip(job_subjects, events, payloads, strict=True)]
        event_acks = [await self.js.publish_async(
            subject, payload, headers=await self.events.headers(subject, event.id))
            for subject, event, payload in zip(event_subjects, events, payloads, strict=True)]
        try:
            acks = await asyncio.wait_for(asyncio.gather(*job_acks, *event_acks),
                                          self.timeout + len(specs) / 1000)
        finally:
            for future in (*job_acks, *event_acks):
                future.cancel()  # those not done: given up (the caller naks, and retries)
        queued = acks[:len(specs)]
        for spec, ack in zip(specs, queued, strict=True):
            log.debug("job queued", extra={"job_id": spec.job_id, "attempt": spec.attempt,
                                           "device_type": spec.device_type,
                                           "priority": spec.priority,
                                           "duplicate": ack.duplicate})
        log.info("jobs queued", extra={"jobs": len(specs),
                                       "duplicates": sum(bool(a.duplicate) for a in queued)})
        return [(s.job_id, s.attempt, ack.seq) for s, ack in zip(specs, queued, strict=True)]

    async def withdraw(self, queue_seq: int | None) -> bool:
        """Take a queued attempt off the JOBS stream; False if a lab had acked it already."""
        if queue_seq is None:
            return False
        with contextlib.suppress(APIError):  # gone: acked by a lab, or deleted before
            return bool(await self.js.delete_msg(self.subjects.jobs_stream, queue_seq))
        return False
