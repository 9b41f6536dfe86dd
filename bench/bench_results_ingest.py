"""Results ingestion, end to end: test results published as job.finished events -> rows.

Starts nats-server and PostgreSQL (non-durable, like the tests) in a temp dir,
creates the jobs the scheduler would, runs the real batched ingestion loop,
publishes ``--jobs`` job.finished events of ``--tests`` results each from a
lab's subject while the loop runs, and prints rows/s (first publish -> last
commit) and the lag of each result (event published -> its row committed).

    python bench/bench_results_ingest.py               # 1000 jobs x 100 tests
    python bench/bench_results_ingest.py --jobs 10000 --tests 10 --batch 500
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from common import options, servers, work_dir

from wrtci.core.runtime import EventPublisher
from wrtci.proto import events as ev
from wrtci.proto.model import JobResult, TestResult, TestStatus
from wrtci.services import db
from wrtci.services.batch_consume import consume_batches
from wrtci.services.consume import Pull
from wrtci.services.results.service import consumer_config
from wrtci.services.results.store import ingest_batch

DEVICE_TYPE = "x86/64/generic"
SHA = "0" * 64


async def prepare_database(pool: asyncpg.Pool, jobs: int) -> tuple[str, list[str]]:
    firmware = f"wrtci:official:snapshot:SNAPSHOT:r{uuid.uuid4().hex[:8]}"
    build = f"{firmware}:{DEVICE_TYPE}:combined"
    await pool.execute(
        """INSERT INTO checkouts (id, origin, source_kind, priority_class, channel, version)
           VALUES ($1, 'wrtci', 'official', 'snapshot', 'snapshot', 'SNAPSHOT')""", firmware)
    await pool.execute(
        """INSERT INTO builds (id, checkout_id, origin, target, subtarget, profile,
               image_name, image_type, sha256)
           VALUES ($1, $2, 'wrtci', 'x86', '64', 'generic', 'combined.img.gz', 'combined', $3)""",
        build, firmware, SHA)
    job_ids = [f"{build}:job{i}" for i in range(jobs)]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "jobs", columns=("id", "checkout_id", "build_id", "device_type", "priority",
                             "timeout_s"),
            records=[(j, firmware, build, DEVICE_TYPE, 5, 900.0) for j in job_ids])
        await conn.copy_records_to_table(
            "job_attempts", columns=("job_id", "attempt", "state"),
            records=[(j, 1, "queued") for j in job_ids])
    return firmware, job_ids


def finished_event(job_id: str, tests: int, index: int) -> ev.JobFinished:
    results = [TestResult(path=f"suite.test_module_{n // 20}.test_case_{n}",
                          status=TestStatus.PASS if (n + index) % 17 else TestStatus.FAIL,
                          duration_s=0.25, log_excerpt=None) for n in range(tests)]
    now = dt.datetime.now(dt.UTC)
    return ev.JobFinished.build(
        ev.JobFinishedData(job_id=job_id, attempt=1, lab="bench-lab", device=f"dut-{index % 8}",
                           result=JobResult.FAIL, tests=results, started_at=now,
                           finished_at=now),
        source="wrtci/lab/bench-lab", id=f"finished:{job_id}:1", time=now)


async def run(args: argparse.Namespace, root: Path) -> None:
    async with servers(root, postgres=True, max_pool=4) as local:
        pool = await db.create_pool(local.database)
        js, subjects = local.js, local.nats.subjects
        _, job_ids = await prepare_database(pool, args.jobs)

        lags: list[float] = []
        rows = 0
        committed = asyncio.Event()
        last_commit = 0.0

        async def handler(deliveries):
            nonlocal rows, last_commit
            verdicts = await ingest_batch(pool, subjects, deliveries)
            now = time.time()
            last_commit = now
            for delivery in deliveries:
                count = len(delivery.event.data.tests)  # type: ignore[attr-defined]
                lags.extend([now - delivery.event.time.timestamp()] * count)
                rows += count
            if rows >= args.jobs * args.tests:
                committed.set()
            return verdicts

        stop = asyncio.Event()
        loop_task = asyncio.create_task(consume_batches(
            js, Pull(subjects.events_stream, consumer_config(subjects), batch=args.batch,
                     fetch_timeout=0.2), handler, stop))
        publisher = EventPublisher(js, subjects, timeout=30)
        start = time.time()
        # Labs publish concurrently: a few publishers in flight at once.
        queue = list(enumerate(job_ids))

        async def lab_publisher():
            while queue:
                index, job_id = queue.pop()
                await publisher.publish(finished_event(job_id, args.tests, index))

        await asyncio.gather(*(lab_publisher() for _ in range(args.publishers)))
        published = time.time()
        await asyncio.wait_for(committed.wait(), 600)
        stop.set()
        await loop_task
        stored = await pool.fetchval("SELECT count(*) FROM tests")
        await pool.close()

        total = args.jobs * args.tests
        elapsed = last_commit - start
        lags.sort()
        print(f"results ingested:  {stored} rows from {args.jobs} job.finished events "
              f"({args.tests} tests each), batch {args.batch}")
        print(f"publishing took:   {published - start:.2f} s")
        print(f"end to end:        {elapsed:.2f} s  ->  {total / elapsed:,.0f} rows/s")
        print(f"lag published->committed: p50 {statistics.median(lags) * 1000:.0f} ms, "
              f"p99 {lags[int(len(lags) * 0.99) - 1] * 1000:.0f} ms, "
              f"max {lags[-1] * 1000:.0f} ms")
        if stored != total:
            print(f"MISMATCH: expected {total} rows", file=sys.stderr)
            sys.exit(1)


def main() -> None:
    args = options(__doc__, jobs=1000, tests=(100, "test results per job"),
                   batch=(500, "messages per fetch/transaction"),
                   publishers=(8, "concurrent publishers")).parse_args()
    with work_dir() as root:
        asyncio.run(run(args, root))


if __name__ == "__main__":
    main()
