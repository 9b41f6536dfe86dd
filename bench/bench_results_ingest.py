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
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from wrtci.core.config import NatsConfig
from wrtci.core.runtime import EventPublisher, connect_nats
from wrtci.proto import events as ev
from wrtci.proto import topology
from wrtci.proto.model import JobResult, TestResult, TestStatus
from wrtci.proto.subjects import Subjects
from wrtci.services import db
from wrtci.services.batch_consume import consume_batches
from wrtci.services.config import DatabaseConfig
from wrtci.services.db.migrate import migrate
from wrtci.services.results.service import consumer_config
from wrtci.services.results.store import ingest_batch
from wrtci.services.stack.servers import NatsServer, PostgresServer

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
    nats_server = NatsServer(root / "nats").start()
    postgres = PostgresServer(root / "postgres", durable=False).start()
    try:
        admin = await asyncpg.connect(postgres.dsn())
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        db_config = DatabaseConfig(dsn=postgres.dsn("bench"), max_pool=4)
        conn = await db.connect(db_config)
        await migrate(conn)
        await conn.close()
        pool = await db.create_pool(db_config)
        subjects = Subjects("bench")
        nc = await connect_nats(NatsConfig(url=nats_server.url, prefix="bench"), "bench")
        js = nc.jetstream()
        await topology.apply(js, subjects)
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
            js, subjects.events_stream, consumer_config(subjects), handler, stop,
            batch=args.batch, fetch_timeout=0.2))
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
        await nc.close()

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
    finally:
        postgres.stop()
        nats_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--tests", type=int, default=100, help="test results per job")
    parser.add_argument("--batch", type=int, default=500, help="messages per fetch/transaction")
    parser.add_argument("--publishers", type=int, default=8, help="concurrent publishers")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wrtci-bench-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as the postgres user when we are root
    try:
        asyncio.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
