"""The timeout service: every job and firmware reaches a final state.

- Lab events (``job.started``, ``job.progress`` — the heartbeat —,
  ``job.finished``) move jobs ``queued -> running -> done``; an infrastructure
  error is retried as a new attempt up to the job's ``max_attempts``.
- A running attempt with no progress past its deadline, or past its plan
  timeout, is ended here as ``error`` (``lab_lost`` / ``timeout``): a central
  ``job.finished`` for the results service, a ``job.cancelled`` for the lab.
- Firmware holdoffs and timeouts fire from timers kept in the database.

KernelCI runs this as a polling loop; here events drive it and timers only
cover what no event announces.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from wrtci.core.retry import Backoff
from wrtci.core.runtime import Daemon, check_all, check_nats, run_app
from wrtci.proto.events import (
    CloudEvent,
    FirmwareStateChanged,
    JobFinished,
    JobProgress,
    JobStarted,
)
from wrtci.proto.subjects import Subjects
from wrtci.proto.topology import service_consumer
from wrtci.services.checks import check_database
from wrtci.services.config import ServiceConfig
from wrtci.services.consume import MsgMeta, Pull, Reject, Retry, consume
from wrtci.services.identity import TAKEOVER_AFTER_S, attempt_holder, count_rejection, may_start
from wrtci.services.lifecycle import INFRA_RETRY, Lifecycle
from wrtci.services.lifecycle.app import LifecycleApp
from wrtci.services.timeout.deadlines import DeadlineLoop

log = logging.getLogger(__name__)

CONSUMER = "timeout-lifecycle"
MAX_ATTEMPT = 2**31 - 1
"""Attempt numbers are PostgreSQL integers; a larger one names no attempt."""


class TimeoutSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    heartbeat_timeout_s: float = 300.0
    """A running attempt with no progress for this long is ended as ``lab_lost``.

    Longer than two JOBS ack waits (topology.JOB_ACK_WAIT): a lab that dies is
    first replaced by JetStream's redelivery of its job to another lab."""
    max_sleep_s: float = 60.0
    """Upper bound of a timer sleep (timers set by other replicas)."""
    infra_retry: Backoff = msgspec.field(default_factory=lambda: INFRA_RETRY)
    """Delays before the 2nd, 3rd, ... attempt of a job that ended in an
    infrastructure error: a short outage (S3, downloads server) is over before
    the job's attempts are."""
    takeover_after_s: float = TAKEOVER_AFTER_S
    """Another lab's ``job.started`` takes over an attempt whose holder has been
    silent this long (JetStream redelivers after the job consumer's ack wait)."""


class Config(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    timeout: TimeoutSettings = msgspec.field(default_factory=TimeoutSettings)


def lifecycle_consumer(subjects: Subjects):
    return service_consumer(CONSUMER, [
        subjects.all_lab_events("job.started"),
        subjects.all_lab_events("job.progress"),
        subjects.all_lab_events("job.finished"),
        subjects.event("job.finished"),
        subjects.event("firmware.state"),
    ])


class LifecycleHandler:
    def __init__(self, lifecycle: Lifecycle, subjects: Subjects, deadlines: DeadlineLoop,
                 takeover_after_s: float = TAKEOVER_AFTER_S) -> None:
        self.lifecycle = lifecycle
        self.subjects = subjects
        self.deadlines = deadlines
        self.takeover_after_s = takeover_after_s

    def _reject(self, kind: str, reason: str) -> Reject:
        count_rejection("timeout", kind)
        return Reject(reason)

    def _sender(self, event: JobStarted | JobProgress | JobFinished, meta: MsgMeta) -> str | None:
        """The lab that published ``event`` (None: a central service)."""
        if not 0 < event.data.attempt <= MAX_ATTEMPT:
            raise Reject(f"attempt number {event.data.attempt} out of range")
        # A lab may only speak for itself: its subject scope names it.
        if not meta.subject.startswith(f"{self.subjects.prefix}.lab."):
            return None  # central (the timeout service itself, the API)
        try:
            lab = self.subjects.lab_of_subject(meta.subject)
        except ValueError as exc:  # TokenError: not an escaped lab name
            raise Reject(str(exc)) from exc
        if lab != event.data.lab:
            raise self._reject(event.kind, f"event of lab {event.data.lab!r} "
                                           f"published by lab {lab!r}")
        return lab

    async def _check_holder(self, event: JobProgress | JobFinished, lab: str) -> bool:
        """Only the lab holding the attempt reports on it (old attempts: ignored later).

        False: nobody holds it yet (its ``job.started`` is still on the way).
        """
        async with self.lifecycle.pool.acquire() as conn:
            holder = await attempt_holder(conn, event.data.job_id, event.data.attempt)
        if holder.current and holder.state == "queued":
            if isinstance(event, JobFinished):
                raise Retry("finished before its job.started was handled", 2.0, grow=True)
            return False  # a heartbeat that overtook the start: nothing to push
        if not holder.exists:
            raise self._reject(event.kind, f"unknown job attempt {event.data.job_id} "
                                           f"#{event.data.attempt}")
        if holder.current and holder.state != "done" and holder.lab != lab:
            raise self._reject(event.kind, f"job attempt {event.data.job_id} "
                                           f"#{event.data.attempt} is not held by lab {lab!r} "
                                           f"(holder: {holder.lab!r})")
        return True

    async def handle(self, event: CloudEvent, meta: MsgMeta) -> None:
        if isinstance(event, JobStarted):
            lab = self._sender(event, meta)
            data = event.data
            if lab is not None:
                async with self.lifecycle.pool.acquire() as conn:
                    refused = await may_start(conn, data.job_id, data.attempt, lab,
                                              self.takeover_after_s)
                if refused:
                    raise self._reject(event.kind, refused)
            await self.lifecycle.job_started(data.job_id, data.attempt, data.lab, data.device)
        elif isinstance(event, JobProgress):
            lab = self._sender(event, meta)
            if lab is not None and not await self._check_holder(event, lab):
                return
            data = event.data
            await self.lifecycle.job_progress(data.job_id, data.attempt, data.lab, data.device)
        elif isinstance(event, JobFinished):
            lab = self._sender(event, meta)
            if lab is not None:
                await self._check_holder(event, lab)
            await self.lifecycle.job_finished(event.data)
        elif isinstance(event, FirmwareStateChanged):
            self.deadlines.wake()  # a new holdoff or timeout to wait for


class TimeoutApp(LifecycleApp):
    name = "timeout"
    config: Config

    async def open(self, daemon: Daemon) -> None:
        config, subjects = self.config, self.subjects
        js = await self.open_lifecycle(
            daemon, heartbeat_timeout_s=config.timeout.heartbeat_timeout_s,
            infra_retry=config.timeout.infra_retry, on_timers_changed=self._wake)
        self.deadlines = DeadlineLoop(self.lifecycle, max_sleep_s=config.timeout.max_sleep_s)
        handler = LifecycleHandler(self.lifecycle, subjects, self.deadlines,
                                   config.timeout.takeover_after_s)
        daemon.loop("deadlines", self.deadlines.run)
        daemon.loop("lifecycle", lambda stop: consume(
            js, Pull(subjects.events_stream, lifecycle_consumer(subjects)), handler.handle, stop))
        log.info("timeout service running")

    def _wake(self) -> None:
        self.deadlines.wake()

async def run(config: Config, stop: asyncio.Event) -> None:
    await run_app(TimeoutApp(config), stop)


async def check(config: Config) -> None:
    await check_all(nats=check_nats(config.nats), database=check_database(
        config.database, "SELECT count(*) FROM jobs WHERE state = 'running'"))
