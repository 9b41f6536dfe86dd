"""Schedule one snapshot of 2,000 profiles against a registry of 1,000 device types.

Starts nats-server and PostgreSQL as local processes in a temp dir, announces
the device types in the labs KV bucket (20 labs x 50 devices), runs the
scheduler in this process and publishes one ``firmware.discovered`` event.
Prints jobs/s and the latency from the firmware event to each job's arrival
on its JOBS subject (p50 / p99), then the same event again (no new job).

    python bench/bench_scheduler.py [--profiles 2000] [--device-types 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from core.config import LoggingConfig, NatsConfig
from core.runtime import connect_nats
from proto import topology
from proto.model import PriorityClass
from services import db
from services.config import DatabaseConfig
from services.db.migrate import migrate
from services.scheduler.service import Config, SchedulerApp, SchedulerSettings
from services.stack.servers import NatsServer, PostgresServer
from tests import factories

FEATURES = [["online", "opkg"], ["wifi"], ["wan_port", "online", "apk"], ["hwsim"], []]


def _profile(i: int) -> str:
    return f"t{i % 40}/s{i % 3}/profile-{i}"


async def _until_intake_idle(js, subjects) -> None:
    """The scheduler has handled every firmware event (acked: nothing pending)."""
    while True:
        info = await js.consumer_info(subjects.events_stream, "scheduler-intake")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.05)


async def bench(profiles: int, device_types: int, labs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="wrtci-bench-"))
    os.chmod(root, 0o755)
    nats_server = NatsServer(root / "nats").start()
    postgres = PostgresServer(root / "pg", durable=False).start()
    stop = asyncio.Event()
    app = None
    try:
        admin = await asyncpg.connect(postgres.dsn())
        await admin.execute('CREATE DATABASE "bench"')
        await admin.close()
        database = DatabaseConfig(dsn=postgres.dsn("bench"), max_pool=10)
        conn = await db.connect(database)
        await migrate(conn)
        await conn.close()
        nats_config = NatsConfig(url=nats_server.url, prefix="bench")
        subjects = nats_config.subjects
        nc = await connect_nats(nats_config, "bench")
        js = nc.jetstream()
        await topology.apply(js, subjects)

        per_lab = device_types // labs
        for lab in range(labs):
            await factories.announce_lab(js, subjects, f"lab-{lab}", [
                (f"dut-{i}", _profile(i), FEATURES[i % len(FEATURES)])
                for i in range(lab * per_lab, (lab + 1) * per_lab)])

        app = SchedulerApp(Config(nats=nats_config, database=database,
                                  logging=LoggingConfig(level="WARNING"),
                                  scheduler=SchedulerSettings(holdoff_s=600)))
        started = time.perf_counter()
        await app.start(stop)
        print(f"registry of {device_types} device types in {labs} labs loaded "
              f"in {time.perf_counter() - started:.2f} s")

        data = factories.firmware([_profile(i) for i in range(profiles)],
                                  priority_class=PriorityClass.SNAPSHOT, tag="r30000-bench")
        arrivals: list[float] = []
        all_in = asyncio.Event()
        expected = device_types

        async def on_job(msg) -> None:
            arrivals.append(time.perf_counter())
            if len(arrivals) >= expected:
                all_in.set()

        sub = await nc.subscribe(subjects.all_jobs(), cb=on_job)
        t0 = time.perf_counter()
        await factories.publish_firmware(js, subjects, data)
        await asyncio.wait_for(all_in.wait(), 300)
        elapsed = arrivals[-1] - t0
        latencies_ms = sorted((t - t0) * 1000 for t in arrivals)
        q = statistics.quantiles(latencies_ms, n=100)
        print(f"snapshot with {profiles} profiles -> {len(arrivals)} jobs in {elapsed:.2f} s: "
              f"{len(arrivals) / elapsed:.0f} jobs/s")
        print(f"firmware event -> job on its subject: p50 {q[49]:.0f} ms, p99 {q[98]:.0f} ms, "
              f"max {latencies_ms[-1]:.0f} ms")

        before = len(arrivals)
        t1 = time.perf_counter()
        await factories.publish_firmware(js, subjects, data, event_id="bench-repeat")
        await _until_intake_idle(js, subjects)
        info = await js.stream_info(subjects.jobs_stream)
        print(f"same firmware event again: handled in {time.perf_counter() - t1:.2f} s, "
              f"{info.state.messages} jobs in the queue, {len(arrivals) - before} published again")
        await sub.unsubscribe()
        await nc.close()
    finally:
        stop.set()
        if app is not None:
            await app.close()
        nats_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--device-types", type=int, default=1000)
    parser.add_argument("--labs", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(bench(args.profiles, args.device_types, args.labs))


if __name__ == "__main__":
    main()
