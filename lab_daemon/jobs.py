"""Running the jobs the device loop takes: place, suite, keepalive, result, ack.

Also keeps the cancellations of jobs that are not (yet) running here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from pathlib import Path

import nats.errors
from nats.aio.msg import Msg

from wrtci.core.retry import Backoff, retry_call, wait_or_stop
from wrtci.core.swallow import logged
from wrtci.lab_daemon.context import LabContext
from wrtci.lab_daemon.device import Device
from wrtci.lab_daemon.job import INFRASTRUCTURE_ERRORS, JobExecution, fit_results
from wrtci.lab_daemon.logstream import ChunkSender
from wrtci.lab_daemon.suite_env import SuiteEnvError
from wrtci.proto import events as ev
from wrtci.proto.jobqueue import QueuedJob
from wrtci.proto.model import DeviceState, JobResult

log = logging.getLogger(__name__)

CANCEL_MEMORY = 1000
TIMINGS_KEPT = 100
FINISH_RETRY = Backoff.exponential(1.0, 10.0)
S = DeviceState


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Jobs:
    def __init__(self, ctx: LabContext, max_payload: int) -> None:
        self.ctx = ctx
        self.max_payload = max_payload
        self.executions: dict[str, JobExecution] = {}
        """Running jobs by job id, for cancel requests."""
        self.cancelled: collections.OrderedDict[tuple[str, int], str] = \
            collections.OrderedDict()
        """Recent cancels of jobs not running here (yet): a job fetched just
        before its cancel arrived must not run (the newest CANCEL_MEMORY kept)."""
        self.timings: collections.deque[dict[str, float]] = collections.deque(
            maxlen=TIMINGS_KEPT)
        """Monotonic marks of the last jobs (taken, pytest_start, pytest_end,
        published): the lab's own overhead, read by bench/bench_lab_overhead.py."""

    # -- cancellations -------------------------------------------------------------

    def on_cancelled(self, event: ev.JobCancelled) -> None:
        execution = self.executions.get(event.data.job_id)
        if execution is None:
            # Only a cancel naming its attempt is kept: a later retry is a new attempt.
            if event.data.attempt is not None:
                self.cancelled[(event.data.job_id, event.data.attempt)] = (
                    event.data.reason or "cancelled")
                while len(self.cancelled) > CANCEL_MEMORY:
                    self.cancelled.popitem(last=False)
            return
        if event.data.attempt is not None and event.data.attempt != execution.spec.attempt:
            return
        log.info("job cancelled while running: %s", event.data.reason,
                 extra={"job_id": event.data.job_id, "device": execution.device.name})
        execution.cancel(event.data.reason)

    # -- running -------------------------------------------------------------------

    def new_sender(self) -> ChunkSender:
        """A job's log sender (``LabContext.new_sender``)."""
        return self.ctx.new_sender()

    async def run(self, device: Device, job: QueuedJob) -> None:
        """Run the job with the device's place held (released however the job ends)."""
        taken = time.monotonic()
        try:
            suite = await self.ctx.suite.current()
        except SuiteEnvError as exc:
            # Not this job's fault: someone else (or we, once fixed) runs it; the
            # check that follows takes the device out of the pool with the reason.
            await job.nak(delay=self.ctx.lab.place_check_s)
            log.error("job handed back: %s", exc, extra={"job_id": job.spec.job_id,
                                                          "device": device.name})
            device.check_requested = True
            return
        if not await device.place.acquire():
            # Taken since we looked: another device, or this one later, runs the job.
            await job.nak(delay=self.ctx.lab.place_check_s)
            log.info("job handed back: the place is not free",
                     extra={"job_id": job.spec.job_id, "device": device.name})
            return
        try:
            await self._run_acquired(device, job, suite.python, suite.revision, taken)
        finally:
            await device.place.release()

    async def _run_acquired(self, device: Device, job: QueuedJob, python: str,
                            suite_revision: str | None, taken: float) -> None:
        ctx, spec, msg = self.ctx, job.spec, job.msg
        run = job.num_delivered or 1
        ids = {"job_id": spec.job_id, "attempt": spec.attempt, "run": run,
               "device": device.name}
        await ctx.presence.move(device, S.BUSY)
        device.current_job = spec.job_id
        sender = self.new_sender().start()
        stage_changed = asyncio.Event()
        execution = JobExecution(lab=ctx.lab, device=device.config, spec=spec, run=run,
                                 cache=ctx.cache, sender=sender, python=python,
                                 suite_revision=suite_revision,
                                 wanted_image=device.wanted_image,
                                 on_stage=lambda stage: stage_changed.set())
        execution.marks["taken"] = taken
        self.executions[spec.job_id] = execution
        reason = self.cancelled.pop((spec.job_id, spec.attempt), None)
        if reason is not None:
            execution.cancel(reason)
        keepalive = asyncio.create_task(self._keepalive(msg, execution, device, stage_changed))
        next_state = S.IDLE
        try:
            await ctx.presence.publish(ev.JobStarted.build(
                ev.JobStartedData(job_id=spec.job_id, attempt=spec.attempt, lab=ctx.lab.name,
                                  device=device.name,
                                  deadline=_now() + dt.timedelta(seconds=spec.timeout_s)),
                source=ctx.source, id=ctx.ids.started(spec.job_id, spec.attempt, run),
                subject=spec.job_id))
            log.info("job started", extra=ids)
            finished = await self._execute_or_hand_back(execution, msg, ids)
            if finished is None:
                return
            if await self._finish(msg, finished, run, ids):
                execution.marks["published"] = time.monotonic()
                self.timings.append(dict(execution.marks))
            if finished.result is JobResult.PASS and execution.image is not None \
                    and not device.config.health_image and not ctx.lab.health.image:
                self._keep_for_checks(device, execution.image)
            if finished.error_code in INFRASTRUCTURE_ERRORS and execution.device_in_doubt:
                next_state = S.CHECKING
        finally:
            self.executions.pop(spec.job_id, None)
            keepalive.cancel()
            # Chunks still waiting for NATS (it was away at the end of the job) go first.
            await sender.close(within_s=min(30.0, max(0.0, ctx.grace_left())))
            device.current_job = None
            if next_state is S.CHECKING:
                device.check_requested = True
            await ctx.presence.move(device, S.IDLE)

    def _keep_for_checks(self, device: Device, image: Path) -> None:
        """Health checks boot the last image that passed: eviction must not take it."""
        cache = self.ctx.cache
        if image == device.last_good_image or not cache.hold(image):
            return
        if device.last_good_image is not None:
            cache.release(device.last_good_image)
        device.last_good_image = image

    async def _execute_or_hand_back(self, execution: JobExecution, msg: Msg,
                                    ids: dict) -> ev.JobFinishedData | None:
        """The job's result; or None when shutdown handed the job back."""
        ctx = self.ctx
        task = asyncio.create_task(execution.execute())
        if not await wait_or_stop(task, ctx.stop):
            log.info("shutdown: waiting up to %.0f s for the running job",
                     ctx.grace_left(), extra=ids)
            await asyncio.wait({task}, timeout=max(0.0, ctx.grace_left()))
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        reason = (f"lab {ctx.lab.name} shutting down; job handed back after "
                  f"{ctx.lab.shutdown_grace_s:.0f} s grace")
        with logged("job.progress 'handed_back' not published", log, **ids):
            await ctx.presence.publish(ev.JobProgress.build(ev.JobProgressData(
                job_id=execution.spec.job_id, attempt=execution.spec.attempt,
                lab=ctx.lab.name, device=execution.device.name, stage="handed_back",
                message=reason), source=ctx.source, subject=execution.spec.job_id,
                id=ctx.ids.fresh("job.progress")), attempts=1)
        await msg.nak()
        log.warning("job handed back: %s", reason, extra=ids)
        return None

    async def _finish(self, msg: Msg, data: ev.JobFinishedData, run: int, ids: dict) -> bool:
        """Publish job.finished until JetStream has it, then (only then) ack the job.

        While stopping, only within the shutdown grace: then the job is left
        unacked and JetStream redelivers it after the ack wait. A resend has
        the same id (JetStream drops the copy); a rerun (the next delivery) is
        a new report, which the services ignore once the attempt is done.
        """
        ctx = self.ctx

        def build(data: ev.JobFinishedData) -> ev.JobFinished:
            return ev.JobFinished.build(data, source=ctx.source,
                                        id=ctx.ids.finished(data.job_id, data.attempt, run),
                                        subject=data.job_id)

        # (headers and the subject count against the limit too: keep a margin)
        data = fit_results(data, lambda d: len(ev.encode(build(d))), self.max_payload - 4096)
        try:
            await retry_call("NATS (job.finished)", ctx.presence.publisher.publish, build(data),
                             stop=ctx.grace_over(), backoff=FINISH_RETRY, logger=log)
        except Exception as exc:  # keep the job until the result is safe
            log.error("shutdown: job.finished not persisted within the grace; "
                      "the job is left for redelivery: %r", exc, extra=ids)
            return False
        try:
            await msg.ack_sync(timeout=ctx.config.nats.request_timeout_s)
        except (nats.errors.Error, TimeoutError) as exc:
            # Redelivery reruns the job; the services ignore its report, the attempt is done.
            log.warning("job ack not confirmed: %r", exc, extra=ids)
        log.info("job finished", extra=ids | {"result": str(data.result),
                                              "error_code": str(data.error_code or ""),
                                              "suite_revision": data.suite_revision})
        return True

    async def _keepalive(self, msg: Msg, execution: JobExecution, device: Device,
                         stage_changed: asyncio.Event) -> None:
        """In-progress acks and JobProgress heartbeats while the job runs."""
        ctx = self.ctx
        interval = min(ctx.lab.progress_interval_s, ctx.lab.job_ack_wait_s / 4)
        spec = execution.spec
        ids = {"job_id": spec.job_id, "attempt": spec.attempt, "device": device.name}
        while True:
            # Not acked for the ack wait, JetStream hands the job to another lab:
            # this line is the trace of why it ran twice.
            with logged("in-progress ack failed; JetStream may give the job to another lab",
                        log, **ids):
                await msg.in_progress()
            with logged("job.progress heartbeat not published", log, **ids):
                await ctx.presence.publisher.publish(ev.JobProgress.build(ev.JobProgressData(
                    job_id=spec.job_id, attempt=spec.attempt, lab=ctx.lab.name,
                    device=device.name, stage=execution.stage),
                    source=ctx.source, id=ctx.ids.fresh("job.progress"), subject=spec.job_id))
            stage_changed.clear()
            with contextlib.suppress(TimeoutError):  # the next heartbeat is due
                await asyncio.wait_for(stage_changed.wait(), interval)
