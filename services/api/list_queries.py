"""The REST list endpoints' queries: jobs, devices and tests, filtered and paginated.

Filters are exact matches (None: any); every list is in a stable order so
``offset`` pages never skip or repeat a row while nothing is added.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from wrtci.services.api.queries import _JOB_SELECT, JobItem, Page, as_structs


class JobFilter(msgspec.Struct, kw_only=True):
    firmware: str | None = None
    device_type: str | None = None
    state: str | None = None
    result: str | None = None
    lab: str | None = None
    device: str | None = None


_JOB_WHERE = """($1::text IS NULL OR j.checkout_id = $1)
    AND ($2::text IS NULL OR j.device_type = $2)
    AND ($3::text IS NULL OR j.state = $3) AND ($4::text IS NULL OR j.result = $4)
    AND ($5::text IS NULL OR j.lab = $5) AND ($6::text IS NULL OR j.device = $6)"""


async def list_jobs(conn: asyncpg.Connection, where: JobFilter,
                    page: Page) -> tuple[list[JobItem], int]:
    """Newest first."""
    args = (where.firmware, where.device_type, where.state, where.result, where.lab,
            where.device)
    total = await conn.fetchval(f"SELECT count(*) FROM jobs j WHERE {_JOB_WHERE}", *args)
    rows = await conn.fetch(
        f"{_JOB_SELECT} WHERE {_JOB_WHERE} ORDER BY j.created_at DESC, j.id "
        "LIMIT $7 OFFSET $8", *args, page.limit, page.offset)
    return as_structs(rows, JobItem), total


class DeviceFilter(msgspec.Struct, kw_only=True):
    lab: str | None = None
    device_type: str | None = None
    state: str | None = None
    health: str | None = None


class DeviceListItem(msgspec.Struct, kw_only=True):
    lab: str
    name: str
    device_type: str
    features: list[str]
    state: str
    health: str
    consecutive_failures: int
    updated_at: dt.datetime
    lab_online: bool
    current_job: str | None
    """The job running on the device, if any."""


async def list_devices(conn: asyncpg.Connection, where: DeviceFilter,
                       page: Page) -> tuple[list[DeviceListItem], int]:
    """Every device of every lab, by lab and name."""
    condition = """($1::text IS NULL OR d.lab = $1) AND ($2::text IS NULL OR d.device_type = $2)
        AND ($3::text IS NULL OR d.state = $3) AND ($4::text IS NULL OR d.health = $4)"""
    args = (where.lab, where.device_type, where.state, where.health)
    total = await conn.fetchval(f"SELECT count(*) FROM devices d WHERE {condition}", *args)
    rows = await conn.fetch(
        f"""SELECT d.lab, d.name, d.device_type, d.features, d.state, d.health,
                   d.consecutive_failures, d.updated_at, l.online AS lab_online,
                   (SELECT j.id FROM jobs j WHERE j.lab = d.lab AND j.device = d.name
                       AND j.state = 'running' ORDER BY j.started_at DESC LIMIT 1)
                     AS current_job
              FROM devices d JOIN labs l ON l.name = d.lab
             WHERE {condition} ORDER BY d.lab, d.name LIMIT $5 OFFSET $6""",
        *args, page.limit, page.offset)
    return as_structs(rows, DeviceListItem), total


class TestFilter(msgspec.Struct, kw_only=True):
    __test__ = False

    firmware: str | None = None
    job: str | None = None
    device_type: str | None = None
    path: str | None = None
    status: str | None = None
    latest: bool = False
    """Only each job's latest attempt (what the firmware's verdict counts)."""


class TestItem(msgspec.Struct, kw_only=True):
    __test__ = False

    id: str
    firmware_id: str
    job_id: str
    attempt: int
    device_type: str
    path: str
    status: str
    duration: float | None
    start_time: dt.datetime | None
    lab: str | None
    device: str | None


async def list_tests(conn: asyncpg.Connection, where: TestFilter,
                     page: Page) -> tuple[list[TestItem], int]:
    """Newest job first, then by attempt and path."""
    condition = """($1::text IS NULL OR j.checkout_id = $1) AND ($2::text IS NULL OR t.job_id = $2)
        AND ($3::text IS NULL OR t.device_type = $3) AND ($4::text IS NULL OR t.path = $4)
        AND ($5::text IS NULL OR t.status = $5) AND (NOT $6 OR t.attempt = j.attempt)"""
    args = (where.firmware, where.job, where.device_type, where.path, where.status,
            where.latest)
    source = "FROM tests t JOIN jobs j ON j.id = t.job_id"
    total = await conn.fetchval(f"SELECT count(*) {source} WHERE {condition}", *args)
    rows = await conn.fetch(
        f"""SELECT t.id, j.checkout_id AS firmware_id, t.job_id, t.attempt, t.device_type,
                   t.path, t.status, t.duration, t.start_time, t.lab, t.device
              {source} WHERE {condition}
             ORDER BY j.created_at DESC, t.job_id, t.attempt DESC, t.path, t.id
             LIMIT $7 OFFSET $8""", *args, page.limit, page.offset)
    return as_structs(rows, TestItem), total
