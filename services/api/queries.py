"""What the API reads from PostgreSQL, as msgspec Structs (the JSON and the pages share them).

Read-only: every table here belongs to another service (see the helper brief's
ownership list); the API never writes.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from wrtci.services.db.attempts import AttemptOutcome
from wrtci.services.db.rows import Page, Where, as_struct, as_structs, columns_of, fetch_page
from wrtci.services.summary import INCIDENT_EXPRS, INCIDENTS, IncidentRef, RegressionInfo

# -- firmware ---------------------------------------------------------------------------


class FirmwareFilter(msgspec.Struct, kw_only=True):
    """The REST list's and the web pages' (``web_queries``) filter of firmware."""

    channel: str | None = None
    state: str | None = None
    source: str | None = None
    version: str | None = None
    device_type: str | None = None
    pr_repository: str | None = None
    pr_number: int | None = None
    ids: list[str] | None = None
    verdict: str | None = None
    """Web pages only (``web_queries.firmware_rows``): the computed verdict."""


FIRMWARE_MATCH = {
    "channel": "c.channel = {}", "state": "c.state = {}", "source": "c.source_kind = {}",
    "version": "c.version = {}",
    "device_type": "EXISTS (SELECT 1 FROM jobs d WHERE d.checkout_id = c.id"
                   " AND d.device_type = {})",
    "pr_repository": "c.misc->'pull_request'->>'repository' = {}",
    "pr_number": "(c.misc->'pull_request'->>'number')::bigint = {}",
    "ids": "c.id = ANY({})"}
"""The conditions over ``checkouts c`` of each field but the verdict."""


class FirmwareCheckout(msgspec.Struct, kw_only=True):
    """A firmware as its ``checkouts`` row says."""

    id: str
    version: str
    revision: str | None
    channel: str
    source_kind: str
    priority_class: str
    state: str
    round: int
    created_at: dt.datetime
    holdoff_until: dt.datetime | None
    timeout_at: dt.datetime | None
    done_at: dt.datetime | None
    url: str | None
    submitter: str | None


class FirmwareItem(FirmwareCheckout, kw_only=True):
    """A firmware and where its jobs are (the ``firmware_progress`` view)."""

    jobs: int
    queued: int
    running: int
    done: int
    waiting_for_lab: int
    waiting_device_types: list[str]


_FIRMWARE_COLUMNS = ", ".join([
    columns_of(FirmwareCheckout, "c", url="c.misc->>'url'", submitter="c.misc->>'submitter'"),
    columns_of(FirmwareItem, "p", FirmwareCheckout)])


async def list_firmware(conn: asyncpg.Connection, flt: FirmwareFilter,
                        page: Page) -> tuple[list[FirmwareItem], int]:
    """Newest first, with where its jobs are (the ``firmware_progress`` view)."""
    where = Where().match(FIRMWARE_MATCH, flt)
    total = await conn.fetchval(f"SELECT count(*) FROM checkouts c WHERE {where}", *where.args)
    # The page of checkouts first, then the progress of just those (the view
    # aggregates per checkout, and the id predicate is pushed into it).
    rows = await conn.fetch(
        f"""WITH page AS (
                SELECT * FROM checkouts c WHERE {where}
                 ORDER BY c.created_at DESC, c.id DESC
                 LIMIT {where.param(page.limit)} OFFSET {where.param(page.offset)})
            SELECT {_FIRMWARE_COLUMNS}
              FROM page c
              CROSS JOIN LATERAL (SELECT * FROM firmware_progress fp
                                   WHERE fp.checkout_id = c.id) p
             ORDER BY c.created_at DESC, c.id DESC""", *where.args)
    return as_structs(rows, FirmwareItem), total


async def get_firmware(conn: asyncpg.Connection, firmware_id: str) -> FirmwareItem | None:
    row = await conn.fetchrow(
        f"""SELECT {_FIRMWARE_COLUMNS} FROM checkouts c
              JOIN firmware_progress p ON p.checkout_id = c.id
             WHERE c.id = $1""", firmware_id)
    return as_struct(row, FirmwareItem)


# -- jobs -------------------------------------------------------------------------------


class JobItem(AttemptOutcome, kw_only=True):
    """A job, with the outcome of its latest attempt."""

    id: str
    firmware_id: str
    build_id: str
    image_name: str
    device_type: str
    state: str
    attempt: int
    max_attempts: int
    waiting_for_lab: bool
    created_at: dt.datetime


JOB_SOURCE = """
      FROM jobs j
      JOIN builds b ON b.id = j.build_id
      JOIN job_waiting w ON w.job_id = j.id"""
JOB_EXPRS = {"firmware_id": "j.checkout_id", "image_name": "b.image_name",
             "waiting_for_lab": "w.waiting_for_lab"}
"""The columns of a job's fields that are not in ``jobs j`` by their name."""
JOB_COLUMNS = columns_of(JobItem, "j", **JOB_EXPRS)


async def firmware_jobs(conn: asyncpg.Connection, firmware_id: str) -> list[JobItem]:
    rows = await conn.fetch(f"SELECT {JOB_COLUMNS} {JOB_SOURCE} WHERE j.checkout_id = $1 "
                            "ORDER BY j.device_type, j.id", firmware_id)
    return as_structs(rows, JobItem)


async def get_job(conn: asyncpg.Connection, job_id: str) -> JobItem | None:
    return as_struct(await conn.fetchrow(f"SELECT {JOB_COLUMNS} {JOB_SOURCE} WHERE j.id = $1",
                                         job_id), JobItem)


class JobTest(msgspec.Struct, kw_only=True):
    id: str
    path: str
    status: str
    duration: float | None
    start_time: dt.datetime | None
    log_excerpt: str | None
    comment: str | None


class AttemptItem(AttemptOutcome, kw_only=True):
    attempt: int
    state: str
    queued_at: dt.datetime
    stage: str | None = None
    """The lab's last reported stage (download, flash, boot, test, upload)."""
    tests: list[JobTest] = []


class IncidentItem(IncidentRef, frozen=True, kw_only=True):
    attempt: int | None
    excerpt: str | None


_INCIDENT_COLUMNS = columns_of(IncidentItem, "i", **INCIDENT_EXPRS,
                               attempt="(i.misc->>'attempt')::int",
                               excerpt="i.misc->>'excerpt'")


class JobDetail(msgspec.Struct, kw_only=True):
    job: JobItem
    attempts: list[AttemptItem]
    incidents: list[IncidentItem]


async def job_detail(conn: asyncpg.Connection, job_id: str) -> JobDetail | None:
    job = await get_job(conn, job_id)
    if job is None:
        return None
    attempts = as_structs(await conn.fetch(
        f"""SELECT {columns_of(AttemptItem, tests=None)}
              FROM job_attempts WHERE job_id = $1 ORDER BY attempt""", job_id), AttemptItem)
    by_attempt = {a.attempt: a for a in attempts}
    for row in await conn.fetch(
            f"""SELECT attempt, {columns_of(JobTest)}
                  FROM tests WHERE job_id = $1 ORDER BY attempt, path, id""", job_id):
        attempt = by_attempt.get(row["attempt"])
        if attempt is not None:
            values = dict(row)
            del values["attempt"]
            attempt.tests.append(msgspec.convert(values, JobTest))
    incidents = as_structs(await conn.fetch(
        f"""SELECT {_INCIDENT_COLUMNS} FROM {INCIDENTS}
            WHERE i.misc->>'job_id' = $1 ORDER BY i.id""", job_id), IncidentItem)
    return JobDetail(job=job, attempts=attempts, incidents=incidents)


async def attempt_log_key(conn: asyncpg.Connection, job_id: str,
                          attempt: int) -> tuple[bool, str | None]:
    """(the attempt exists, the console log key the results service recorded)."""
    row = await conn.fetchrow(
        "SELECT log_key FROM job_attempts WHERE job_id = $1 AND attempt = $2", job_id, attempt)
    return (row is not None, row["log_key"] if row is not None else None)


# -- labs and devices -------------------------------------------------------------------


class DeviceItem(msgspec.Struct, kw_only=True):
    lab: str
    name: str
    device_type: str
    features: list[str]
    state: str
    health: str
    consecutive_failures: int
    updated_at: dt.datetime


class LabItem(msgspec.Struct, kw_only=True):
    name: str
    online: bool
    """Heartbeating now (its entry in the labs KV bucket is fresh); when the bucket
    cannot be read, what the lab's last lab.online / lab.offline event said."""
    version: str | None
    first_seen: dt.datetime
    last_seen: dt.datetime | None
    heartbeat_at: dt.datetime | None = None
    """From the labs KV bucket: set while the lab heartbeats (the entry expires otherwise)."""
    devices: list[DeviceItem] = []


class HealthItem(msgspec.Struct, kw_only=True):
    event_id: str
    lab: str
    device: str
    health: str
    state: str
    check_passed: bool | None
    consecutive_failures: int
    message: str | None
    at: dt.datetime


async def devices(conn: asyncpg.Connection, lab: str | None = None,
                  device_type: str | None = None) -> list[DeviceItem]:
    """By lab and name."""
    where = Where().add("lab = {}", lab).add("device_type = {}", device_type)
    return as_structs(await conn.fetch(
        f"SELECT {columns_of(DeviceItem)} FROM devices WHERE {where} ORDER BY lab, name",
        *where.args),
        DeviceItem)


async def list_labs(conn: asyncpg.Connection, lab: str | None = None) -> list[LabItem]:
    labs = as_structs(await conn.fetch(
        f"""SELECT {columns_of(LabItem, heartbeat_at=None, devices=None)} FROM labs
             WHERE $1::text IS NULL OR name = $1 ORDER BY name""", lab), LabItem)
    by_name = {item.name: item for item in labs}
    for device in await devices(conn, lab=lab):
        if device.lab in by_name:
            by_name[device.lab].devices.append(device)
    return labs


async def device_health(conn: asyncpg.Connection, lab: str, limit: int) -> list[HealthItem]:
    """The latest health reports of a lab's devices, newest first."""
    rows = await conn.fetch(
        f"""SELECT {columns_of(HealthItem)}
              FROM device_health WHERE lab = $1 ORDER BY at DESC, event_id LIMIT $2""",
        lab, limit)
    return as_structs(rows, HealthItem)


# -- regressions and flaky tests --------------------------------------------------------


class RegressionFilter(msgspec.Struct, kw_only=True):
    firmware: str | None = None
    device_type: str | None = None
    open_only: bool = False


class RegressionItem(RegressionInfo, frozen=True, kw_only=True):
    lineage: str
    device_type: str
    first_failing_test_id: str | None
    fixed_test_id: str | None
    detected_at: dt.datetime
    fixed_at: dt.datetime | None


_REGRESSION_MATCH = {
    "firmware": "first_failing_checkout_id = {} OR fixed_checkout_id = {}",
    "device_type": "device_type = {}", "open_only": "fixed_checkout_id IS NULL"}


async def list_regressions(conn: asyncpg.Connection, flt: RegressionFilter,
                           page: Page) -> tuple[list[RegressionItem], int]:
    return await fetch_page(
        conn, RegressionItem, source="FROM regressions",
        where=Where().match(_REGRESSION_MATCH, flt), order="detected_at DESC, id", page=page)


class FlakyFilter(msgspec.Struct, kw_only=True):
    device_type: str | None = None
    include_steady: bool = False
    """Also the tests below the flakiness threshold."""


class FlakyItem(msgspec.Struct, kw_only=True):
    device_type: str
    path: str
    score: float
    flips: int
    pairs: int
    runs: int
    flaky: bool
    last_checkout_id: str | None
    updated_at: dt.datetime


async def list_flaky(conn: asyncpg.Connection, flt: FlakyFilter,
                     page: Page) -> tuple[list[FlakyItem], int]:
    where = Where().add("device_type = {}", flt.device_type).add("flaky",
                                                                 not flt.include_steady)
    return await fetch_page(
        conn, FlakyItem, source="FROM flaky_tests", where=where,
        order="score DESC, device_type, path", page=page)


async def exists(conn: asyncpg.Connection, noun: str, object_id: str) -> bool:
    table = {"job": "jobs", "firmware": "checkouts"}[noun]
    return bool(await conn.fetchval(f"SELECT 1 FROM {table} WHERE id = $1", object_id))
