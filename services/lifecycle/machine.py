"""KernelCI's node life for firmware and jobs, applied to the database.

Firmware: ``running -> available -> closing -> done``. It is ``available``
with a holdoff once its jobs are queued; after the holdoff it is ``done`` when
every job is done, else ``closing`` until the last one is. When its timeout
passes, the firmware and its unfinished jobs are forced to ``done``. The move to
``done`` publishes a ``firmware.state`` event with a deterministic id, inside the
transaction that makes it: a repeat is deduplicated, a failure rolls it back.

Jobs: ``queued -> running -> done``. An infrastructure error is retried as a
new attempt (on any lab with the device type) until ``max_attempts``; only the
last attempt's result is the job's result.

The scheduler (retry, cancel) and the timeout service (events, deadlines) drive it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import asyncpg

from wrtci.core.retry import Backoff
from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import (
    FirmwareStateChanged,
    FirmwareStateData,
    JobCancelled,
    JobCancelledData,
    JobFinished,
    JobFinishedData,
)
from wrtci.proto.limits import storable_text
from wrtci.proto.model import ErrorCode, FirmwareState, JobResult
from wrtci.proto.subjects import Subjects
from wrtci.services.lifecycle import store
from wrtci.services.lifecycle.dispatch import Dispatcher
from wrtci.services.lifecycle.rules import INFRA_RETRY, Transition, decide_firmware, state_event_id
from wrtci.services.outbox import Outbox, stage_event

log = logging.getLogger(__name__)

SOURCE = "wrtci/lifecycle"


class Lifecycle:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dispatcher: Dispatcher,
        subjects: Subjects,
        *,
        heartbeat_timeout_s: float = 300.0,
        max_attempts: int = 3,
        firmware_timeout_s: float = 24 * 3600.0,
        infra_retry: Backoff = INFRA_RETRY,
        on_timers_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.pool = pool
        self.dispatcher = dispatcher
        self.subjects = subjects
        self.events: EventPublisher = dispatcher.events
        self.outbox = Outbox(pool, self.events)
        """Events decided in a transaction go out only after it committed."""
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_attempts = max_attempts
        self.firmware_timeout_s = firmware_timeout_s
        self.infra_retry = infra_retry
        self.on_timers_changed = on_timers_changed

    # -- firmware ----------------------------------------------------------------

    async def _stage_state(self, conn: asyncpg.Connection, firmware_id: str,
                           state: FirmwareState, previous: FirmwareState, reason: str,
                           round_: int) -> None:
        event = FirmwareStateChanged.build(
            FirmwareStateData(firmware_id=firmware_id, state=state, previous=previous,
                              reason=reason),
            source=SOURCE, subject=firmware_id, id=state_event_id(firmware_id, state, round_),
        )
        await stage_event(conn, event, self.subjects.event(event.kind))
        log.info("firmware %s", state.value, extra={"firmware_id": firmware_id,
                                                    "reason": reason, "round": round_})

    async def mark_available(self, firmware_id: str, holdoff_s: float) -> bool:
        """Its jobs are queued: ``running -> available`` with holdoff and timeout."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """
                UPDATE checkouts SET state = 'available',
                       holdoff_until = now() + make_interval(secs => $2),
                       timeout_at = coalesce(timeout_at, now() + make_interval(secs => $3)),
                       updated_at = now()
                 WHERE id = $1 AND state = 'running'
                RETURNING round
                """,
                firmware_id, holdoff_s, self.firmware_timeout_s,
            )
            if row is None:
                return False
            await self._stage_state(conn, firmware_id, FirmwareState.AVAILABLE,
                                    FirmwareState.RUNNING, "jobs queued", row["round"])
        await self.outbox.flush()
        self.on_timers_changed()
        return True

    async def advance_firmware(
        self, firmware_id: str, *, force_done: str | None = None
    ) -> FirmwareState | None:
        """Apply the rules once; ``force_done`` (a reason) ends it now. Returns the new state."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT state, holdoff_until, timeout_at, round, now() AS now "
                "FROM checkouts WHERE id = $1 FOR UPDATE",
                firmware_id,
            )
            if row is None:
                return None
            state = FirmwareState(row["state"])
            open_jobs = await store.open_jobs(conn, firmware_id)
            if force_done and state is not FirmwareState.DONE:
                move: Transition | None = Transition(FirmwareState.DONE, force_done)
            else:
                move = decide_firmware(state, holdoff_until=row["holdoff_until"],
                                       timeout_at=row["timeout_at"], open_jobs=len(open_jobs),
                                       now=row["now"])
            if move is None:
                return None
            if move.state is FirmwareState.DONE:
                for job in open_jobs:
                    code = ErrorCode.TIMEOUT if job.state == "running" else (
                        ErrorCode.NO_HEALTHY_DEVICE)
                    if force_done == "cancelled":
                        code = ErrorCode.CANCELLED
                    await self._end_for_good(conn, job, code, f"firmware {move.reason}")
            await conn.execute(
                """
                UPDATE checkouts SET state = $2, updated_at = now(),
                       done_at = CASE WHEN $2 = 'done' THEN now() ELSE done_at END
                 WHERE id = $1
                """,
                firmware_id, move.state.value,
            )
            await self._stage_state(conn, firmware_id, move.state, state, move.reason,
                                    row["round"])
        await self.outbox.flush()
        return move.state

    async def _reopen(self, conn: asyncpg.Connection, firmware_id: str) -> None:
        """A manual retry on a done firmware: back to ``closing``, a new round."""
        row = await conn.fetchrow(
            """
            UPDATE checkouts SET state = 'closing', round = round + 1, done_at = NULL,
                   timeout_at = now() + make_interval(secs => $2), updated_at = now()
             WHERE id = $1 AND state = 'done'
            RETURNING round
            """,
            firmware_id, self.firmware_timeout_s,
        )
        if row is not None:
            await self._stage_state(conn, firmware_id, FirmwareState.CLOSING,
                                    FirmwareState.DONE, "retry requested", row["round"])

    # -- jobs: what labs report ------------------------------------------------------

    async def job_started(self, job_id: str, attempt: int, lab: str, device: str) -> bool:
        changed = await self._mark_running(store.mark_started, job_id, attempt, lab, device)
        if not changed:
            log.info("start of an old or finished attempt ignored",
                     extra={"job_id": job_id, "attempt": attempt, "lab": lab})
        return changed

    async def job_progress(self, job_id: str, attempt: int, lab: str, device: str) -> bool:
        return await self._mark_running(store.mark_progress, job_id, attempt, lab, device)

    async def _mark_running(self, mark, job_id: str, attempt: int, lab: str,
                            device: str) -> bool:
        """``mark`` (store.mark_started or mark_progress) the attempt alive: its heartbeat
        deadline moves, and the timers are told."""
        async with self.pool.acquire() as conn:
            changed = await mark(conn, job_id, attempt, lab, device, self.heartbeat_timeout_s)
        if changed:
            self.on_timers_changed()
        return changed

    async def job_finished(self, data: JobFinishedData) -> str:
        """An attempt ended: retry it, or end the job. Returns what happened."""
        async with self.pool.acquire() as conn, conn.transaction():
            job = await store.lock_job(conn, data.job_id)
            if job is None:
                log.warning("finish of an unknown job ignored", extra={"job_id": data.job_id})
                return "unknown"
            if job.state == "done" or job.attempt != data.attempt:
                log.info("finish of an old or finished attempt ignored",
                         extra={"job_id": data.job_id, "attempt": data.attempt,
                                "current_attempt": job.attempt})
                return "ignored"
            if job.state == "running" and job.lab and data.lab and data.lab != job.lab:
                # The attempt was redelivered to another lab, which started it:
                # only that lab's result counts (the results service agrees).
                log.warning("finish from a lab that no longer holds the attempt ignored",
                            extra={"job_id": data.job_id, "attempt": data.attempt,
                                   "lab": data.lab, "holder": job.lab})
                return "ignored"
            outcome = await self._attempt_ended(conn, job, data)
        if outcome == "done":
            await self.advance_firmware(job.checkout_id)
        return outcome

    async def _attempt_ended(self, conn: asyncpg.Connection, job: store.JobRow,
                             data: JobFinishedData, *, retry_delay_s: float | None = None) -> str:
        code = data.error_code
        retry = (data.result is JobResult.ERROR and code is not None and code.retryable
                 and data.attempt < job.max_attempts
                 and await store.firmware_state(conn, job.checkout_id) != "done")
        if retry:
            delay = retry_delay_s
            if delay is None:
                delay = self.infra_retry.delay(data.attempt)
            await self._queue_attempt(conn, job.id, data.attempt + 1, delay_s=delay)
            log.info("infrastructure error, job retried after a delay",
                     extra={"job_id": job.id, "attempt": data.attempt + 1,
                            "error_code": code and code.value, "delay_s": round(delay, 1)})
            return "retried"
        await store.finish(conn, job.id, data.attempt, result=data.result.value,
                           error_code=code.value if code else None,
                           error_message=storable_text(data.error_message), lab=data.lab or None,
                           device=data.device or None, log_key=data.log_key)
        log.info("job done", extra={"job_id": job.id, "attempt": data.attempt,
                                    "result": data.result.value})
        return "done"

    async def _queue_attempt(self, conn: asyncpg.Connection, job_id: str, attempt: int,
                             max_attempts: int | None = None, delay_s: float = 0.0) -> None:
        await store.requeue(conn, job_id, attempt, max_attempts, delay_s)
        if delay_s > 0:  # the timers publish it when due (publish_due_retries)
            self.on_timers_changed()
            return
        await self._publish_current(conn, job_id, attempt)

    async def _publish_current(self, conn: asyncpg.Connection, job_id: str,
                               attempt: int) -> None:
        spec = await store.job_spec(conn, job_id)
        if spec is None:  # the caller holds the row's lock, so it exists
            raise LookupError(f"job {job_id} has no spec")
        seq = await self.dispatcher.publish(spec)
        await store.set_queue_seqs(conn, [(job_id, attempt, seq)])

    # -- jobs: ended by wrtci itself ----------------------------------------------------

    async def _announce_end(self, conn: asyncpg.Connection, job: store.JobRow,
                            code: ErrorCode, message: str) -> None:
        """Tell the results service (central job.finished) and the lab (job.cancelled)."""
        await self.dispatcher.withdraw(job.queue_seq)
        finished = JobFinished.build(
            JobFinishedData(job_id=job.id, attempt=job.attempt, lab=job.lab or "",
                            device=job.device or "", result=JobResult.ERROR, error_code=code,
                            error_message=message, finished_at=dt.datetime.now(dt.UTC)),
            source=SOURCE, subject=job.id, id=f"job.finished:{job.id}:{job.attempt}:{code}",
        )
        await stage_event(conn, finished, self.subjects.event("job.finished"))
        cancelled = JobCancelled.build(
            JobCancelledData(job_id=job.id, attempt=job.attempt, reason=message),
            source=SOURCE, subject=job.id, id=f"job.cancelled:{job.id}:{job.attempt}:{code}",
        )
        await stage_event(conn, cancelled, self.subjects.event(cancelled.kind))

    async def _end_for_good(self, conn: asyncpg.Connection, job: store.JobRow,
                            code: ErrorCode, message: str) -> None:
        if await store.finish(conn, job.id, job.attempt, result=JobResult.ERROR.value,
                              error_code=code.value, error_message=message):
            await self._announce_end(conn, job, code, message)
            log.info("job ended", extra={"job_id": job.id, "attempt": job.attempt,
                                         "error_code": code.value})

    async def expire_overdue(self) -> int:
        """End running attempts past their deadline (retried like any infra error)."""
        async with self.pool.acquire() as conn:
            overdue = await store.overdue_jobs(conn)
        for item in overdue:
            code = ErrorCode.TIMEOUT if item.plan_timed_out else ErrorCode.LAB_LOST
            message = ("plan timeout passed" if item.plan_timed_out
                       else "no progress from the lab before the deadline")
            if await self.end_attempt(item.id, item.attempt, code, message) is not None:
                log.warning("job attempt timed out", extra={"job_id": item.id,
                                                            "attempt": item.attempt,
                                                            "error_code": code.value})
        return len(overdue)

    async def end_attempt(self, job_id: str, attempt: int, code: ErrorCode, message: str, *,
                          lab: str | None = None, retry_delay_s: float | None = None) -> str | None:
        """End a running attempt here (retried like any infrastructure error).

        ``lab``: only if that lab holds it. None if the attempt was not running.
        ``retry_delay_s``: instead of the infrastructure backoff (0: queued again now).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            job = await store.lock_job(conn, job_id)
            if job is None or job.state != "running" or job.attempt != attempt:
                return None
            if lab is not None and job.lab != lab:
                return None
            await self._announce_end(conn, job, code, message)
            outcome = await self._attempt_ended(conn, job, JobFinishedData(
                job_id=job.id, attempt=job.attempt, lab=job.lab or "",
                device=job.device or "", result=JobResult.ERROR, error_code=code,
                error_message=message), retry_delay_s=retry_delay_s)
        await self.outbox.flush()
        if outcome == "done":
            await self.advance_firmware(job.checkout_id)
        return outcome

    # -- operators: retry and cancel ------------------------------------------------------

    async def cancel_job(self, job_id: str, reason: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            job = await store.lock_job(conn, job_id)
            if job is None or job.state == "done":
                return False
            await self._end_for_good(conn, job, ErrorCode.CANCELLED, reason)
        await self.outbox.flush()
        await self.advance_firmware(job.checkout_id)
        return True

    async def cancel_firmware(self, firmware_id: str, reason: str) -> bool:
        state = await self.advance_firmware(firmware_id, force_done="cancelled")
        log.info("firmware cancelled", extra={"firmware_id": firmware_id, "reason": reason})
        return state is not None

    async def retry_job(self, job_id: str) -> bool:
        """A new attempt of a done job, with a fresh budget of automatic retries."""
        async with self.pool.acquire() as conn, conn.transaction():
            job = await store.lock_job(conn, job_id)
            if job is None or job.state != "done":
                return False
            await self._reopen(conn, job.checkout_id)
            attempt = job.attempt + 1
            await self._queue_attempt(conn, job_id, attempt,
                                      max_attempts=attempt + self.max_attempts - 1)
        await self.outbox.flush()
        log.info("job retry requested", extra={"job_id": job_id, "attempt": attempt})
        return True

    async def retry_firmware(self, firmware_id: str) -> int:
        """Retry every job of the firmware that failed or errored."""
        async with self.pool.acquire() as conn:
            job_ids = await store.jobs_to_retry(conn, firmware_id)
        retried = 0
        for job_id in job_ids:
            retried += await self.retry_job(job_id)
        return retried

    # -- timers -------------------------------------------------------------------------

    async def publish_due_retries(self) -> int:
        """Publish the delayed retries whose time has come; returns how many."""
        async with self.pool.acquire() as conn:
            due = await store.due_retries(conn)
        published = 0
        for job_id in due:
            async with self.pool.acquire() as conn, conn.transaction():
                job = await store.lock_job(conn, job_id)
                if job is None or job.state != "queued" or job.queue_seq is not None:
                    continue  # another replica published it, or it was cancelled
                await self._publish_current(conn, job_id, job.attempt)
                published += 1
            log.info("delayed retry queued", extra={"job_id": job_id, "attempt": job.attempt})
        return published

    async def due_firmware(self) -> list[str]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT id FROM checkouts
                 WHERE state <> 'done'
                   AND ((state = 'available' AND holdoff_until <= now())
                        OR timeout_at <= now())
                """
            )
        return [r["id"] for r in rows]

    async def seconds_to_next_deadline(self) -> float | None:
        """Seconds until the next timer (job deadline, holdoff, firmware timeout) is due."""
        async with self.pool.acquire() as conn:
            return await conn.fetchval(
                """
                SELECT extract(epoch FROM min(t) - now())::float8 FROM (
                    SELECT min(deadline_at) AS t FROM jobs WHERE state = 'running'
                    UNION ALL
                    SELECT min(not_before) FROM jobs
                     WHERE state = 'queued' AND queue_seq IS NULL
                    UNION ALL
                    SELECT min(holdoff_until) FROM checkouts WHERE state = 'available'
                    UNION ALL
                    SELECT min(timeout_at) FROM checkouts WHERE state <> 'done'
                ) AS timers
                """
            )
