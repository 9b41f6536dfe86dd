"""Fault tests: a dependency goes away for a few seconds and the daemons catch up.

Each outage uses a private server of its own (the session servers stay up for
every other test), on loopback. Each test reports its counts — jobs lost,
jobs doubled, attempts used — and asserts 0 lost, 0 doubled, no attempt
used up by the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from minio import Minio

from tests import factories
from tests.helpers import eventually
from tests.pipeline import FakeLab, firmware_jobs, running
from tests.servers.trigger_harness import trigger_config
from tests.token_support import add_token
from wrtci.core.config import LoggingConfig, NatsConfig
from wrtci.core.retry import Backoff
from wrtci.core.runtime import connect_nats
from wrtci.proto import topology
from wrtci.proto.model import ErrorCode, JobResult
from wrtci.proto.subjects import Subjects
from wrtci.services import db
from wrtci.services.config import DatabaseConfig, StorageConfig
from wrtci.services.db.migrate import migrate
from wrtci.services.scheduler import service as scheduler_service
from wrtci.services.scheduler.service import SchedulerSettings
from wrtci.services.stack.servers import NatsServer, PostgresServer, S3Server, free_port
from wrtci.services.timeout.service import TimeoutSettings
from wrtci.services.trigger.config import OfficialConfig, WebConfig
from wrtci.services.trigger.service import run as run_trigger

X86 = "x86/64/generic"
ATH = "ath79/generic/tplink_archer-c7-v2"
OUTAGE_S = 3.0
CATCH_UP = 60.0
"""Bound of the wait for catching up: the daemons' backoff is 1, 2, 5, 10 s."""


def report(name: str, **counts: int) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in counts.items()))


async def _jobs_on_stream(js, subjects: Subjects) -> int:
    return (await js.stream_info(subjects.jobs_stream)).state.messages


async def _job_rows(dsn: str, firmware_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT id, device_type, state, attempt, queue_seq FROM jobs "
                                "WHERE checkout_id = $1 ORDER BY id", firmware_id)
    finally:
        await conn.close()


@pytest.fixture
async def private_postgres(traversable_tmp: Path) -> AsyncIterator[tuple[PostgresServer, str]]:
    server = PostgresServer(traversable_tmp / "pg", durable=False).start()
    try:
        admin = await asyncpg.connect(server.dsn())
        await admin.execute('CREATE DATABASE "wrtci"')
        await admin.close()
        conn = await db.connect(DatabaseConfig(dsn=server.dsn("wrtci")))
        await migrate(conn)
        await conn.close()
        yield server, server.dsn("wrtci")
    finally:
        server.stop()


async def test_postgresql_stopped_scheduler_survives_and_catches_up(
        private_postgres, nats_config, js, subjects, storage_config) -> None:
    """The scheduler's registry and intake fail while PostgreSQL is away; they come back."""
    server, dsn = private_postgres
    database = DatabaseConfig(dsn=dsn, max_pool=5)
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, [])])
    config = scheduler_service.Config(nats=nats_config, database=database,
                                      storage=storage_config,
                                      logging=LoggingConfig(format="text"),
                                      scheduler=SchedulerSettings(holdoff_s=600))
    stop = asyncio.Event()
    daemon = asyncio.create_task(scheduler_service.run(config, stop))
    try:
        async def lab_a_known() -> bool:
            conn = await asyncpg.connect(dsn)
            try:
                return bool(await conn.fetchval("SELECT count(*) FROM announced_devices"))
            finally:
                await conn.close()
        await eventually(lab_a_known, "lab-a mirrored")

        server.stop()
        # While PostgreSQL is away: a new lab (the registry cannot write it) and a
        # firmware (the intake cannot record it).
        await factories.announce_lab(js, subjects, "lab-b", [("ath-1", ATH, [])])
        data = factories.firmware([X86, ATH])
        await factories.publish_firmware(js, subjects, data)
        await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for something
        assert not daemon.done(), "the scheduler died of the outage"
        server.start()

        async def both_jobs_queued() -> bool:
            rows = await _job_rows(dsn, data.firmware_id)
            return len(rows) == 2 and all(r["queue_seq"] for r in rows)
        await eventually(both_jobs_queued, "both jobs queued after the outage", CATCH_UP)
        rows = await _job_rows(dsn, data.firmware_id)
        on_stream = await _jobs_on_stream(js, subjects)
        report("postgresql stopped", jobs_expected=2, jobs=len(rows),
               lost=2 - len(rows), doubled=on_stream - 2,
               attempts_used=sum(r["attempt"] - 1 for r in rows))
        assert sorted(r["device_type"] for r in rows) == sorted([X86, ATH])
        assert on_stream == 2
        assert [r["attempt"] for r in rows] == [1, 1]
        assert not daemon.done()
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 30)


@pytest.fixture
async def private_s3(traversable_tmp: Path) -> AsyncIterator[S3Server]:
    server = S3Server(traversable_tmp / "s3").start()
    yield server
    server.stop()


def _bucket(server: S3Server, bucket: str) -> None:
    client = Minio(server.endpoint, access_key=server.access_key,
                   secret_key=server.secret_key, secure=False, region=server.region)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)


async def _upload(url: str, name: str, content: bytes, token: str) -> int:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("device_type", X86)
    form.add_field("file", content, filename=name, content_type="application/octet-stream")
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/api/v1/firmware", data=form,
            headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status


async def test_s3_stopped_upload_gets_503_then_succeeds(
        private_s3, nats_config, js, subjects, database_config, pool,
        traversable_tmp) -> None:
    """urllib3's MaxRetryError (S3 not answering) is an infrastructure error: 503."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    _bucket(private_s3, bucket)
    storage = StorageConfig(endpoint=private_s3.endpoint, access_key=private_s3.access_key,
                            secret_key=private_s3.secret_key, bucket=bucket, timeout_s=2.0)
    token = "outage-token"
    await add_token(pool, "alice", token, ["upload"])
    port = free_port()
    config = trigger_config(
        nats_config, database_config, storage,
        official=OfficialConfig(enabled=False),
        web=WebConfig(port=port, max_upload_bytes=1024 * 1024, spool_dir=str(traversable_tmp)))
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_trigger(config, stop))
    url = f"http://127.0.0.1:{port}"
    name = "openwrt-24.10.0-x86-64-generic-initramfs-rootfs.cpio.gz"
    content = os.urandom(50_000)
    try:
        async def listening() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as session, \
                        session.get(f"{url}/healthz") as resp:
                    return resp.status == 200
            return False
        await eventually(listening, "trigger listening")
        private_s3.stop()
        during = await _upload(url, name, content, token)
        private_s3.start()  # moto keeps nothing: the bucket comes back empty
        _bucket(private_s3, bucket)
        after = await _upload(url, name, content, token)
        async with pool.acquire() as conn:
            recorded = await conn.fetchval(
                "SELECT count(*) FROM checkouts WHERE source_kind = 'upload'")
        report("s3 stopped", upload_during=during, upload_after=after, recorded=recorded,
               lost=1 - recorded, doubled=max(0, recorded - 1))
        assert (during, after, recorded) == (503, 201, 1)
        assert not daemon.done()
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 30)


async def test_infrastructure_errors_wait_before_the_next_attempt(
        js, nc, subjects, nats_config, database_config, storage_config, pool) -> None:
    """Four jobs fail their download at once (S3 away): each retry waits; none is used up."""
    device_types = [f"x86/64/dut{i}" for i in range(4)]
    await factories.announce_lab(js, subjects, "lab-a",
                                 [(f"d{i}", d, []) for i, d in enumerate(device_types)])
    data = factories.firmware(device_types)
    lab = FakeLab(nc, subjects, "lab-a")
    delay = Backoff(steps_s=(1.5,), jitter=0.0)
    async with running(nats_config, database_config, storage_config,
                       scheduler=SchedulerSettings(holdoff_s=600, max_attempts=3),
                       timeouts=TimeoutSettings(infra_retry=delay, max_sleep_s=1)):
        await factories.publish_firmware(js, subjects, data)
        for device_type in device_types:
            job = await lab.take(device_type)
            await lab.start(job)
            await lab.finish(job, JobResult.ERROR, ErrorCode.DOWNLOAD_FAILED)

        async def all_held_back() -> bool:
            rows = await firmware_jobs(pool, data.firmware_id)
            return all(r["attempt"] == 2 and r["state"] == "queued" for r in rows)
        await eventually(all_held_back, "second attempts queued")
        async with pool.acquire() as conn:
            held = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE checkout_id = $1 AND queue_seq IS NULL "
                "AND not_before > now()", data.firmware_id)
        assert held == 4, "a retry was published without its delay"
        # The outage is over: the second attempts pass.
        for device_type in device_types:
            job = await lab.take(device_type)
            assert job.spec.attempt == 2
            await lab.start(job)
            await lab.finish(job)

        async def all_done() -> bool:
            rows = await firmware_jobs(pool, data.firmware_id)
            return all(r["state"] == "done" for r in rows)
        await eventually(all_done, "jobs done")
    await lab.close()
    rows = await firmware_jobs(pool, data.firmware_id)
    report("infra retry delay", jobs=len(rows), lost=4 - len(rows),
           passed=sum(r["result"] == "pass" for r in rows),
           attempts_used_up=sum(r["attempt"] >= 3 for r in rows))
    assert [(r["result"], r["attempt"]) for r in rows] == [("pass", 2)] * 4


@pytest.fixture
async def private_nats(traversable_tmp: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(traversable_tmp / "nats" / "store").start()
    yield server
    server.stop()


async def test_nats_restarted_jobs_flow_on(private_nats, database_config, storage_config,
                                           pool) -> None:
    """The scheduler and timeout services reconnect after a NATS restart and go on."""
    subjects = Subjects(f"t{uuid.uuid4().hex[:10]}")
    nats_config = NatsConfig(url=private_nats.url, prefix=subjects.prefix)
    nc = await connect_nats(nats_config, "wrtci-test")
    js = nc.jetstream()
    await topology.apply(js, subjects)
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, [])])
    lab = FakeLab(nc, subjects, "lab-a", "x86-1")
    first = factories.firmware([X86], tag="r1-before")
    second = factories.firmware([X86], tag="r2-after")
    try:
        async with running(nats_config, database_config, storage_config,
                           scheduler=SchedulerSettings(holdoff_s=0.5)):
            await factories.publish_firmware(js, subjects, first)
            job = await lab.take(X86)
            await lab.start(job)
            await lab.finish(job)
            private_nats.stop()
            await asyncio.sleep(1.0)  # the outage itself
            private_nats.start()
            await factories.publish_firmware(js, subjects, second)
            job = await lab.take(X86, limit=CATCH_UP)
            await lab.start(job)
            await lab.finish(job)

            async def both_done() -> bool:
                rows = [*(await firmware_jobs(pool, first.firmware_id)),
                        *(await firmware_jobs(pool, second.firmware_id))]
                return len(rows) == 2 and all(r["state"] == "done" for r in rows)
            await eventually(both_done, "both jobs done after the restart", CATCH_UP)
        rows = [*(await firmware_jobs(pool, first.firmware_id)),
                *(await firmware_jobs(pool, second.firmware_id))]
        on_stream = (await js.stream_info(subjects.jobs_stream)).state.messages
        report("nats restarted", jobs=len(rows), lost=2 - len(rows),
               doubled=sum(r["attempt"] > 1 for r in rows), jobs_left_on_stream=on_stream)
        assert [(r["result"], r["attempt"]) for r in rows] == [("pass", 1), ("pass", 1)]
    finally:
        await lab.close()
        await nc.close()
