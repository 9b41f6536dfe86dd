"""`wrtci nats apply` and `wrtci db migrate` are idempotent."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest
from nats.js.api import RetentionPolicy

from tests.helpers import run_cli
from wrtci.core.config import dump_config
from wrtci.proto import topology
from wrtci.services.cli.common import CliConfig
from wrtci.services.db.migrate import available_migrations


@pytest.fixture
def apply_config(tmp_path, nats_config):
    path = tmp_path / "wrtci.toml"
    path.write_bytes(dump_config(CliConfig(nats=nats_config)))
    return path


async def test_nats_apply_twice_changes_nothing(apply_config, nc, subjects) -> None:
    first = run_cli("nats", "apply", "--config", str(apply_config))
    assert first.stdout.count("created") == 7, first.stdout
    assert f"created    kv {subjects.secrets_bucket}" in first.stdout
    js = nc.jetstream()
    before = {s: await js.stream_info(s) for s in
              (subjects.events_stream, subjects.jobs_stream, subjects.logs_stream,
               f"KV_{subjects.labs_bucket}")}

    second = run_cli("nats", "apply", "--config", str(apply_config))
    assert second.stdout.count("unchanged") == 7, second.stdout
    assert "created" not in second.stdout and "updated" not in second.stdout
    for name, info in before.items():
        after = await js.stream_info(name)
        assert after.config == info.config
        assert after.created == info.created

    jobs = before[subjects.jobs_stream].config
    assert jobs.retention == RetentionPolicy.WORK_QUEUE
    assert jobs.subjects == [f"{subjects.prefix}.job.*.*"]
    events = before[subjects.events_stream].config
    assert events.retention == RetentionPolicy.LIMITS and events.duplicate_window > 0
    labs_kv = before[f"KV_{subjects.labs_bucket}"].config
    assert labs_kv.max_age == topology.LAB_HEARTBEAT_TTL
    secrets_kv = (await js.stream_info(f"KV_{subjects.secrets_bucket}")).config
    assert not secrets_kv.allow_direct and secrets_kv.max_msgs_per_subject == 1


async def test_apply_updates_a_drifted_stream(js, subjects) -> None:
    drifted = dataclasses.replace(topology.streams(subjects)[0], max_age=30 * topology.DAY)
    await js.update_stream(drifted)
    changes = await topology.apply(js, subjects)
    assert changes[f"stream {subjects.events_stream}"] is topology.Change.UPDATED
    info = await js.stream_info(subjects.events_stream)
    assert info.config.max_age == topology.EVENTS_MAX_AGE
    again = await topology.apply(js, subjects)
    assert set(again.values()) == {topology.Change.UNCHANGED}


async def test_db_migrate_twice_changes_nothing(tmp_path, empty_database_config) -> None:
    path = tmp_path / "wrtci.toml"
    path.write_bytes(dump_config(CliConfig(database=empty_database_config)))

    first = run_cli("db", "migrate", "--config", str(path))
    assert "applied    0001_initial" in first.stdout

    conn = await asyncpg.connect(empty_database_config.dsn)
    try:
        schema_before = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2")
        second = run_cli("db", "migrate", "--config", str(path))
        assert "nothing to do" in second.stdout and "applied " not in second.stdout
        schema_after = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2")
        assert schema_after == schema_before
        tables = {r["table_name"] for r in schema_after}
        assert {"checkouts", "builds", "tests", "issues", "incidents", "jobs",
                "job_attempts", "labs", "devices", "device_health"} <= tables
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
            available_migrations())
    finally:
        await conn.close()


async def test_kcidb_columns_and_constraints(pool) -> None:
    async with pool.acquire() as conn:
        columns = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tests'")}
        assert {"id", "build_id", "origin", "path", "status", "start_time", "duration",
                "log_url", "log_excerpt", "misc", "environment_comment",
                "output_files"} <= columns
        await conn.execute(
            "INSERT INTO checkouts (id, origin, source_kind, priority_class, channel, version)"
            " VALUES ('wrtci:fw1', 'wrtci', 'official', 'stable', 'stable', '23.05.5')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO checkouts (id, origin, source_kind, priority_class, channel, version)"
                " VALUES ('other:fw2', 'wrtci', 'official', 'stable', 'stable', '23.05.5')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE checkouts SET state = 'finished' WHERE id = 'wrtci:fw1'")


async def test_nats_apply_creates_the_job_consumers_of_announced_device_types(
        apply_config, js, subjects) -> None:
    """Labs only bind to job consumers: apply creates them for every announced type."""
    from tests import factories

    await factories.announce_lab(js, subjects, "lab-a", [("dut", "x86/64/generic", [])])
    result = run_cli("nats", "apply", "--config", str(apply_config),
                     "--device-type", "ath79/generic/extra")
    assert result.returncode == 0, result.stderr
    for device_type in ("x86/64/generic", "ath79/generic/extra"):
        for priority in topology.Priority:
            name = subjects.job_consumer(priority, device_type)
            info = await js.consumer_info(subjects.jobs_stream, name)
            assert info.config.filter_subject == subjects.job(priority, device_type)
