"""SQL of the ingestion: load + lock the attempts of a batch, write its plan.

Everything of one batch is one transaction with a handful of statements:
the attempts are updated with one ``executemany``, tests go in through COPY
into a temp table and one ``INSERT ... ON CONFLICT DO NOTHING`` (so a
redelivered result is a no-op), the rest are multi-row upserts.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from wrtci.proto.subjects import Subjects
from wrtci.services.batch_consume import Delivery, Verdict
from wrtci.services.db.rows import fetch_rows
from wrtci.services.firmware_store import ORIGIN
from wrtci.services.results.ingest import Attempt, BatchPlan, job_keys

TEST_COLUMNS = (
    "id", "build_id", "origin", "path", "status", "duration", "log_excerpt", "comment",
    "start_time", "job_id", "attempt", "device_type", "lab", "device",
)


async def load_attempts(conn: asyncpg.Connection, keys: set[tuple[str, int]]) -> list[Attempt]:
    """The attempts named by a batch, locked (in a stable order) until commit."""
    if not keys:
        return []
    ordered = sorted(keys)
    return await fetch_rows(
        conn, Attempt,
        """SELECT a.job_id, a.attempt, a.state, a.lab, a.device, a.result, a.error_code,
                  a.error_message, a.log_key, a.started_at, a.finished_at,
                  a.suite_revision, a.stage, a.stage_at, j.build_id, j.device_type,
                  CASE WHEN j.attempt = a.attempt AND j.state <> 'queued' THEN j.lab END
                      AS holder
             FROM job_attempts a
             JOIN jobs j ON j.id = a.job_id
             JOIN unnest($1::text[], $2::int[]) AS k(job_id, attempt)
               ON k.job_id = a.job_id AND k.attempt = a.attempt
            ORDER BY a.job_id, a.attempt
              FOR UPDATE OF a""",
        [k[0] for k in ordered], [k[1] for k in ordered],
    )


async def ingest_batch(
    pool: asyncpg.Pool,
    subjects: Subjects,
    deliveries: Sequence[Delivery],
) -> list[Verdict]:
    """Apply a batch of events in one transaction; one verdict per delivery."""
    async with pool.acquire() as conn, conn.transaction():
        attempts = await load_attempts(conn, job_keys(deliveries))
        plan = BatchPlan(subjects, attempts)
        verdicts = [plan.apply(delivery) for delivery in deliveries]
        await write_plan(conn, plan)
    return verdicts


async def write_plan(conn: asyncpg.Connection, plan: BatchPlan) -> None:
    await _write_attempts(conn, plan.changed_attempts())
    await _write_tests(conn, plan)
    await _write_labs(conn, plan)
    await _write_devices(conn, plan)
    await _write_health(conn, plan)
    if plan.work:
        await conn.executemany(
            """INSERT INTO results_work (kind, job_id, attempt, log_key)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            [(w.kind, w.job_id, w.attempt, w.log_key) for w in plan.work],
        )


async def _write_attempts(conn: asyncpg.Connection, attempts: list[Attempt]) -> None:
    if not attempts:
        return
    await conn.executemany(
        """UPDATE job_attempts
              SET state = $3, lab = $4, device = $5, result = $6, error_code = $7,
                  error_message = $8, log_key = $9, started_at = $10, finished_at = $11,
                  suite_revision = $12, stage = $13, stage_at = $14
            WHERE job_id = $1 AND attempt = $2""",
        [(a.job_id, a.attempt, a.state, a.lab, a.device, a.result, a.error_code,
          a.error_message, a.log_key, a.started_at, a.finished_at, a.suite_revision,
          a.stage, a.stage_at)
         for a in attempts],
    )


async def _write_tests(conn: asyncpg.Connection, plan: BatchPlan) -> None:
    if not plan.tests:
        return
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS tests_in "
        "(LIKE tests INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    await conn.copy_records_to_table(
        "tests_in", columns=TEST_COLUMNS,
        records=[(t.id, t.build_id, ORIGIN, t.path, t.status, t.duration, t.log_excerpt,
                  t.comment, t.start_time, t.job_id, t.attempt, t.device_type,
                  t.lab, t.device) for t in plan.tests],
    )
    columns = ", ".join(TEST_COLUMNS)
    await conn.execute(
        f"INSERT INTO tests ({columns}) SELECT {columns} FROM tests_in "
        "ON CONFLICT (id) DO NOTHING"
    )


async def _write_labs(conn: asyncpg.Connection, plan: BatchPlan) -> None:
    if not plan.labs:
        return
    # Only a newer event moves a lab's online flag (events may arrive out of order).
    await conn.executemany(
        """INSERT INTO labs (name, online, version, last_seen)
           VALUES ($1, coalesce($2, false), $3, $4)
           ON CONFLICT (name) DO UPDATE SET
               online = CASE WHEN $2::boolean IS NOT NULL
                              AND (labs.last_seen IS NULL OR labs.last_seen <= $4)
                             THEN $2 ELSE labs.online END,
               version = coalesce($3, labs.version),
               last_seen = greatest(labs.last_seen, $4)""",
        [(lab.name, lab.online, lab.version, lab.at) for lab in plan.labs],
    )


async def _write_devices(conn: asyncpg.Connection, plan: BatchPlan) -> None:
    if not plan.devices:
        return
    await conn.executemany(
        """INSERT INTO devices (lab, name, device_type, features, state, health,
                                consecutive_failures, updated_at)
           VALUES ($1, $2, $3, coalesce($4, '{}'::text[]), $5, $6, coalesce($7, 0), $8)
           ON CONFLICT (lab, name) DO UPDATE SET
               -- features come only with lab.online; state and health from the
               -- newest event (events may arrive out of order)
               features = coalesce($4, devices.features),
               device_type = CASE WHEN devices.updated_at <= $8
                                  THEN EXCLUDED.device_type ELSE devices.device_type END,
               state = CASE WHEN devices.updated_at <= $8
                            THEN EXCLUDED.state ELSE devices.state END,
               health = CASE WHEN devices.updated_at <= $8
                             THEN EXCLUDED.health ELSE devices.health END,
               consecutive_failures = CASE WHEN devices.updated_at <= $8
                   THEN coalesce($7, devices.consecutive_failures)
                   ELSE devices.consecutive_failures END,
               updated_at = greatest(devices.updated_at, $8)""",
        [(d.lab, d.name, d.device_type, d.features, d.state, d.health,
          d.consecutive_failures, d.at) for d in plan.devices],
    )


async def _write_health(conn: asyncpg.Connection, plan: BatchPlan) -> None:
    if not plan.health:
        return
    await conn.executemany(
        """INSERT INTO device_health (event_id, lab, device, device_type, health, state,
                                      check_passed, consecutive_failures, message, at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (event_id) DO NOTHING""",
        [(h.event_id, h.lab, h.device, h.device_type, h.health, h.state, h.check_passed,
          h.consecutive_failures, h.message, h.at) for h in plan.health],
    )
