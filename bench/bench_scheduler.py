"""Schedule one snapshot of 2,000 profiles against a registry of 1,000 device types.

Starts nats-server and PostgreSQL as local processes in a temp dir, announces
the device types in the labs KV bucket (20 labs x 50 devices), runs the
scheduler in this process and publishes one ``firmware.discovered`` event.
Prints jobs/s and the latency from the firmware event to each job being
stored on its JOBS subject (p50 / p99; JetStream's own timestamps), for
three snapshots (the median is the RESULT), then the same event again (no
new job).

    python bench/bench_scheduler.py [--profiles 2000] [--device-types 1000]
"""

from __future__ import annotations

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
from common import options

from tests import factories
from wrtci.core.config import LoggingConfig, NatsConfig
from wrtci.core.runtime import EventPublisher, connect_nats
from wrtci.proto import topology
from wrtci.proto.events import FirmwareDiscovered
from wrtci.proto.model import PriorityClass
from wrtci.services import db
from wrtci.services.config import DatabaseConfig
from wrtci.services.db.migrate import migrate
from wrtci.services.firmware_store import record_firmware
from wrtci.services.scheduler.service import Config, SchedulerApp, SchedulerSettings
from wrtci.services.stack.servers import NatsServer, PostgresServer

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


async def _fan_out(js, subjects, data, expected: int) -> tuple[float, float, float]:
    """Jobs/s and event -> job latencies (p50, p99 ms) of one firmware event.

    Timed by the server: the time JetStream stored the event and each job
    (nothing in this process, which also runs the scheduler, takes part).
    """
    first = (await js.stream_info(subjects.jobs_stream)).state.last_seq + 1
    event = FirmwareDiscovered.build(data, source="wrtci/trigger", subject=data.firmware_id,
                                     id=f"firmware.discovered:{data.firmware_id}")
    ack = await EventPublisher(js, subjects).publish(event)

    async def all_stored() -> None:  # the server's count: nothing to wait on but polling
        while True:
            info = await js.stream_info(subjects.jobs_stream)
            if info.state.last_seq >= first + expected - 1:
                return
            await asyncio.sleep(0.02)
    await asyncio.wait_for(all_stored(), 300)
    at = (await js.get_msg(subjects.events_stream, ack.seq)).time
    stored = [(await js.get_msg(subjects.jobs_stream, seq)).time
              for seq in range(first, first + expected)]
    latencies = sorted((t - at).total_seconds() * 1000 for t in stored)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return expected / (latencies[-1] / 1000), q[49], q[98]


async def bench(profiles: int, device_types: int, labs: int, rounds: int) -> None:
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
        await asyncio.wait_for(app.job_consumers.idle.wait(), 600)
        print(f"job consumers of {len(app.job_consumers.ready)} device types "
              f"({len(app.job_consumers.ready) * 5} consumers) ready "
              f"in {time.perf_counter() - started:.2f} s")

        runs = []
        for run in range(rounds):
            data = factories.firmware([_profile(i) for i in range(profiles)],
                                      priority_class=PriorityClass.SNAPSHOT,
                                      tag=f"r3000{run}-bench")
            # As in production, the trigger has recorded the firmware before announcing it.
            async with app.pool.acquire() as conn:
                await record_firmware(conn, data)
            runs.append(await _fan_out(js, subjects, data, device_types))
            rate, p50, p99 = runs[-1]
            print(f"snapshot {run + 1}: {profiles} profiles -> {device_types} jobs: "
                  f"{rate:.0f} jobs/s; firmware event -> job stored p50 {p50:.0f} ms, "
                  f"p99 {p99:.0f} ms")
        rate, p50, p99 = sorted(runs)[len(runs) // 2]
        print(f"RESULT fanout_jobs_per_s={rate:.0f}")
        print(f"RESULT event_to_job_p50_ms={p50:.0f}")
        print(f"RESULT event_to_job_p99_ms={p99:.0f}")

        t1 = time.perf_counter()
        before = (await js.stream_info(subjects.jobs_stream)).state.messages
        await factories.publish_firmware(js, subjects, data, event_id="bench-repeat")
        await _until_intake_idle(js, subjects)
        info = await js.stream_info(subjects.jobs_stream)
        print(f"same firmware event again: handled in {time.perf_counter() - t1:.2f} s, "
              f"{info.state.messages - before} jobs added to the queue")
        await nc.close()
    finally:
        stop.set()
        if app is not None:
            await app.close()
        nats_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    args = options(__doc__, profiles=2000, device_types=1000, labs=20,
                   rounds=(3, "snapshots; the median is kept")).parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(bench(args.profiles, args.device_types, args.labs, args.rounds))


if __name__ == "__main__":
    main()
