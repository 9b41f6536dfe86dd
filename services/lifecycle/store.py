"""The scheduler's SQL: announced devices, jobs and their attempts.

Every write is keyed by a deterministic id and guarded by the state it
expects (``WHERE state <> 'done' AND attempt = $n``), so handling the same
message twice — or in two replicas at once — changes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg
import msgspec

from wrtci.proto.events import JobSpec
from wrtci.proto.model import Image, TestPlan
from wrtci.proto.records import LabRecord
from wrtci.services.db.rows import fetch_row, fetch_rows
from wrtci.services.scheduler.fanout import JobDraft

# -- announced devices ---------------------------------------------------------------


async def record_lab(conn: asyncpg.Connection, record: LabRecord, ttl_s: float) -> None:
    """The devices of one lab's registry entry, online until heartbeat + TTL."""
    expires = record.heartbeat_at + dt.timedelta(seconds=ttl_s)
    await conn.executemany(
        """
        INSERT INTO announced_devices (lab, device, device_type, features, heartbeat_at,
                                       expires_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (lab, device) DO UPDATE
           SET device_type = EXCLUDED.device_type, features = EXCLUDED.features,
               heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at
         WHERE announced_devices.heartbeat_at <= EXCLUDED.heartbeat_at
        """,
        [(record.lab, d.name, d.device_type, sorted(set(d.features)), record.heartbeat_at,
          expires) for d in record.devices],
    )


async def lab_gone(conn: asyncpg.Connection, lab: str) -> None:
    """The lab removed its entry: its devices are offline from now on."""
    await conn.execute(
        "UPDATE announced_devices SET expires_at = least(expires_at, now()) WHERE lab = $1", lab
    )


async def known_device_types(
    conn: asyncpg.Connection, seen_since: dt.datetime
) -> dict[str, frozenset[str]]:
    """Device type -> features of any of its devices announced since ``seen_since``."""
    rows = await conn.fetch(
        """
        SELECT device_type, array_agg(DISTINCT f) FILTER (WHERE f IS NOT NULL) AS features
        FROM announced_devices LEFT JOIN LATERAL unnest(features) AS f ON true
        WHERE heartbeat_at >= $1
        GROUP BY device_type
        """,
        seen_since,
    )
    return {r["device_type"]: frozenset(r["features"] or ()) for r in rows}


async def device_types_online(conn: asyncpg.Connection, device_types: Sequence[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT device_type FROM announced_devices "
        "WHERE device_type = ANY($1) AND expires_at > now()",
        list(device_types),
    )
    return {r["device_type"] for r in rows}


# -- firmware ------------------------------------------------------------------------


async def firmware_state(conn: asyncpg.Connection, firmware_id: str) -> str | None:
    return await conn.fetchval("SELECT state FROM checkouts WHERE id = $1", firmware_id)


# -- jobs ----------------------------------------------------------------------------


_INSERT_JOBS = """
WITH firmware AS (
    SELECT 1 FROM checkouts WHERE id = $2 AND state IN ('running', 'available') FOR SHARE
), plans AS (  -- the distinct plan lists, each parsed once
    SELECT array_agg(p::jsonb ORDER BY n) AS a FROM unnest($6::text[]) WITH ORDINALITY u(p, n)
), created AS (
    INSERT INTO jobs (id, checkout_id, build_id, device_type, plans, priority, max_attempts,
                      timeout_s)
    SELECT t.id, $2, t.build_id, t.device_type, (SELECT a FROM plans)[t.plans], t.priority, $3,
           t.timeout_s
    FROM unnest($1::text[], $4::text[], $5::text[], $9::integer[], $7::integer[],
                $8::double precision[]) AS t(id, build_id, device_type, plans, priority, timeout_s)
    WHERE EXISTS (SELECT FROM firmware)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), attempts AS (
    INSERT INTO job_attempts (job_id, attempt, state)
    SELECT id, 1, 'queued' FROM created
    ON CONFLICT DO NOTHING
)
SELECT id FROM created
"""


async def insert_jobs(
    conn: asyncpg.Connection, firmware_id: str, drafts: Sequence[JobDraft], max_attempts: int
) -> set[str]:
    """New jobs (attempt 1, queued) and their first attempt rows; existing ones stay.

    Returns the ids of the jobs this call created.

    Only while the firmware is ``running`` or ``available``: the share lock
    waits for (and then sees) the timeout service closing or ending it, which
    takes the row ``FOR UPDATE``; and a firmware cannot be declared done while
    jobs are being added to it.

    One statement, so one round trip and its own transaction (or the caller's):
    the firmware's state check, the jobs (unnest, not executemany: a snapshot
    has 1,000s) and their attempts. Fan-out calls it per slice of a firmware's
    jobs and publishes each slice while the next is inserted.
    """
    if not drafts:
        return set()
    # The few distinct plan lists once each (1-based index per job): most device
    # types share theirs, and PostgreSQL parses each jsonb value it is sent.
    plans: dict[str, int] = {}
    plan_index = [plans.setdefault(msgspec.json.encode(d.plans).decode(), len(plans) + 1)
                  for d in drafts]
    created = await conn.fetch(
        _INSERT_JOBS,
        [d.job_id for d in drafts], firmware_id, max_attempts,
        [d.image.id for d in drafts], [d.device_type for d in drafts], list(plans),
        [d.priority for d in drafts], [d.timeout_s for d in drafts], plan_index,
    )
    return {r["id"] for r in created}


async def firmware_jobs(conn: asyncpg.Connection, firmware_id: str) -> tuple[set[str], list[str]]:
    """The ids of a firmware's jobs, and those queued but not on the JOBS stream yet."""
    rows = await conn.fetch(
        "SELECT id, state = 'queued' AND queue_seq IS NULL"
        " AND (not_before IS NULL OR not_before <= now()) AS unpublished"
        " FROM jobs WHERE checkout_id = $1 ORDER BY id",
        firmware_id,
    )
    return {r["id"] for r in rows}, [r["id"] for r in rows if r["unpublished"]]


def new_job_spec(draft: JobDraft, firmware_id: str, version: str | None,
                 revision: str | None) -> JobSpec:
    """The spec of a job just inserted from ``draft`` (what ``job_spec`` would read)."""
    return JobSpec(
        job_id=draft.job_id, attempt=1, firmware_id=firmware_id,
        device_type=draft.device_type,
        image=msgspec.structs.replace(draft.image, architecture=None), plans=draft.plans,
        priority=draft.priority, timeout_s=draft.timeout_s, firmware_version=version,
        firmware_revision=revision,
    )


_SPEC_SQL = """
SELECT j.id, j.attempt, j.checkout_id, j.device_type, j.plans, j.priority, j.timeout_s,
       c.version, c.revision,
       b.id AS build_id, b.target, b.subtarget, b.profile, b.image_name, b.image_type,
       b.filesystem, b.sha256, b.size, b.url, b.object_key
FROM jobs j
JOIN builds b ON b.id = j.build_id
JOIN checkouts c ON c.id = j.checkout_id
"""


def _spec(row: asyncpg.Record) -> JobSpec:
    image = Image(id=row["build_id"], target=row["target"], subtarget=row["subtarget"],
                  profile=row["profile"], name=row["image_name"], type=row["image_type"],
                  filesystem=row["filesystem"], sha256=row["sha256"], size=row["size"],
                  url=row["url"], object_key=row["object_key"])
    return JobSpec(
        job_id=row["id"], attempt=row["attempt"], firmware_id=row["checkout_id"],
        device_type=row["device_type"], image=image,
        plans=msgspec.convert(row["plans"], list[TestPlan]), priority=row["priority"],
        timeout_s=row["timeout_s"], firmware_version=row["version"],
        firmware_revision=row["revision"],
    )


async def job_specs(conn: asyncpg.Connection, job_ids: Sequence[str]) -> list[JobSpec]:
    rows = await conn.fetch(_SPEC_SQL + " WHERE j.id = ANY($1::text[]) ORDER BY j.id",
                            list(job_ids))
    return [_spec(r) for r in rows]


async def job_spec(conn: asyncpg.Connection, job_id: str) -> JobSpec | None:
    row = await conn.fetchrow(_SPEC_SQL + " WHERE j.id = $1", job_id)
    return _spec(row) if row else None


async def due_retries(conn: asyncpg.Connection) -> list[str]:
    """Jobs whose delayed retry is due and not yet published."""
    rows = await conn.fetch(
        "SELECT id FROM jobs WHERE state = 'queued' AND queue_seq IS NULL "
        "AND not_before <= now() ORDER BY not_before")
    return [r["id"] for r in rows]


async def set_queue_seqs(
    conn: asyncpg.Connection, published: Sequence[tuple[str, int, int]]
) -> None:
    """(job id, attempt, JOBS stream sequence) of published attempts."""
    if not published:
        return
    ids, attempts, seqs = zip(*published, strict=True)
    await conn.execute(
        """
        UPDATE jobs SET queue_seq = t.seq, not_before = NULL
        FROM unnest($1::text[], $2::integer[], $3::bigint[]) AS t(id, attempt, seq)
        WHERE jobs.id = t.id AND jobs.attempt = t.attempt
        """,
        list(ids), list(attempts), list(seqs),
    )


class JobRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    checkout_id: str
    state: str
    attempt: int
    max_attempts: int
    lab: str | None
    device: str | None
    queue_seq: int | None
    result: str | None


_JOB_ROWS = f"SELECT {', '.join(JobRow.__struct_fields__)} FROM jobs"


async def lock_job(conn: asyncpg.Connection, job_id: str) -> JobRow | None:
    """The job row, locked until the end of the transaction."""
    return await fetch_row(conn, JobRow, f"{_JOB_ROWS} WHERE id = $1 FOR UPDATE", job_id)


async def requeue(
    conn: asyncpg.Connection, job_id: str, attempt: int, max_attempts: int | None = None,
    delay_s: float = 0.0,
) -> None:
    """Make ``attempt`` the job's current attempt, queued and not yet published.

    With ``delay_s``, it is published only when that time has passed (``due_retries``).
    """
    await conn.execute(
        """
        UPDATE jobs SET attempt = $2, state = 'queued',
               not_before = CASE WHEN $4::float8 > 0
                                 THEN now() + make_interval(secs => $4::float8) END,
               max_attempts = coalesce($3, max_attempts), result = NULL, error_code = NULL,
               error_message = NULL, lab = NULL, device = NULL, log_key = NULL,
               started_at = NULL, finished_at = NULL, deadline_at = NULL,
               last_progress_at = NULL, queue_seq = NULL, updated_at = now()
         WHERE id = $1
        """,
        job_id, attempt, max_attempts, float(delay_s),
    )
    await conn.execute(
        "INSERT INTO job_attempts (job_id, attempt, state) VALUES ($1, $2, 'queued') "
        "ON CONFLICT DO NOTHING",
        job_id, attempt,
    )


async def finish(
    conn: asyncpg.Connection,
    job_id: str,
    attempt: int,
    *,
    result: str,
    error_code: str | None,
    error_message: str | None,
    lab: str | None = None,
    device: str | None = None,
    log_key: str | None = None,
) -> bool:
    """End the job with this attempt's result; False if it had ended already."""
    status = await conn.execute(
        """
        UPDATE jobs SET state = 'done', result = $3, error_code = $4, error_message = $5,
               lab = coalesce($6, lab), device = coalesce($7, device),
               log_key = coalesce($8, log_key), finished_at = now(), deadline_at = NULL,
               updated_at = now()
         WHERE id = $1 AND attempt = $2 AND state <> 'done'
        """,
        job_id, attempt, result, error_code, error_message, lab, device, log_key,
    )
    return status.endswith(" 1")


async def mark_started(
    conn: asyncpg.Connection, job_id: str, attempt: int, lab: str, device: str,
    heartbeat_timeout_s: float,
) -> bool:
    """The attempt runs on ``lab``/``device`` (again, if another lab took it over)."""
    status = await conn.execute(
        """
        UPDATE jobs SET state = 'running', lab = $3, device = $4, started_at = now(),
               last_progress_at = now(),
               deadline_at = least(now() + make_interval(secs => timeout_s),
                                   now() + make_interval(secs => $5)),
               updated_at = now()
         WHERE id = $1 AND attempt = $2 AND state <> 'done'
        """,
        job_id, attempt, lab, device, heartbeat_timeout_s,
    )
    return status.endswith(" 1")


async def mark_progress(
    conn: asyncpg.Connection, job_id: str, attempt: int, lab: str, device: str,
    heartbeat_timeout_s: float,
) -> bool:
    """A heartbeat: push the no-progress deadline, never past the plan timeout.

    Only from the lab holding the attempt (its ``job.started`` was accepted):
    one that lost it to a redelivery must not take it back, nor keep it alive.
    """
    status = await conn.execute(
        """
        UPDATE jobs SET state = 'running', lab = $3, device = $4,
               started_at = coalesce(started_at, now()), last_progress_at = now(),
               deadline_at = least(coalesce(started_at, now()) + make_interval(secs => timeout_s),
                                   now() + make_interval(secs => $5)),
               updated_at = now()
         WHERE id = $1 AND attempt = $2 AND state = 'running' AND lab = $3
        """,
        job_id, attempt, lab, device, heartbeat_timeout_s,
    )
    return status.endswith(" 1")


class OverdueJob(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    attempt: int
    lab: str | None
    device: str | None
    plan_timed_out: bool


async def overdue_jobs(conn: asyncpg.Connection) -> list[OverdueJob]:
    return await fetch_rows(conn, OverdueJob, """
        SELECT id, attempt, lab, device,
               started_at + make_interval(secs => timeout_s) <= now() AS plan_timed_out
        FROM jobs WHERE state = 'running' AND deadline_at <= now()
        """)


async def open_jobs(conn: asyncpg.Connection, firmware_id: str) -> list[JobRow]:
    return await fetch_rows(
        conn, JobRow,
        f"{_JOB_ROWS} WHERE checkout_id = $1 AND state <> 'done' ORDER BY id FOR UPDATE",
        firmware_id)


async def jobs_to_retry(conn: asyncpg.Connection, firmware_id: str) -> list[str]:
    """Jobs of a firmware that ended without passing."""
    rows = await conn.fetch(
        "SELECT id FROM jobs WHERE checkout_id = $1 AND state = 'done' "
        "AND result IN ('fail', 'error') ORDER BY id",
        firmware_id,
    )
    return [r["id"] for r in rows]
