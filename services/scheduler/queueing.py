"""A firmware's new jobs: inserted in slices and queued while the next slices go in.

The job rows are the outbox: a job is published only once its row has
committed, and its ``queue_seq`` stays NULL until its publish is acked, so a
scheduler that dies mid fan-out leaves rows that the redelivered event (or the
start-up rescheduling) publishes, each once (deterministic ``Nats-Msg-Id``).

Each slice is one statement (its own transaction: the firmware's state check,
the jobs, their first attempts), on its own pool connection, up to
``concurrency`` at once; the slices are published in order as they commit,
so JetStream stores the first jobs while PostgreSQL inserts the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import asyncpg

from wrtci.proto.events import JobSpec
from wrtci.services.lifecycle import store
from wrtci.services.lifecycle.dispatch import JobBatch
from wrtci.services.scheduler.fanout import JobDraft, slices


async def insert_and_queue(
    pool: asyncpg.Pool,
    batch: JobBatch,
    firmware_id: str,
    drafts: Sequence[JobDraft],
    spec: Callable[[JobDraft], JobSpec],
    *,
    max_attempts: int,
    concurrency: int = 2,
) -> int:
    """Insert ``drafts`` (new jobs of a firmware) and add those created to ``batch``.

    Returns how many this call created (another replica, or an earlier
    delivery, may have created the others).
    """
    slots = asyncio.Semaphore(max(1, concurrency))

    async def insert(part: Sequence[JobDraft]) -> tuple[Sequence[JobDraft], set[str]]:
        async with slots, pool.acquire() as conn:
            return part, await store.insert_jobs(conn, firmware_id, part, max_attempts)

    tasks = [asyncio.create_task(insert(part)) for part in slices(drafts)]
    created = 0
    try:
        for task in tasks:  # in order: the first slice goes out first
            part, ids = await task
            created += len(ids)
            await batch.add([spec(d) for d in part if d.job_id in ids])
    finally:
        for task in tasks:
            task.cancel()
        # Nothing left running, no exception left unretrieved; a cancellation of
        # this coroutine itself still propagates (gather is cancelled with it).
        await asyncio.gather(*tasks, return_exceptions=True)
    return created
