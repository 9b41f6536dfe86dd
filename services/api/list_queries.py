"""The REST list endpoints' queries: jobs, devices and tests, filtered and paginated.

Filters are exact matches (None: any); every list is in a stable order so
``offset`` pages never skip or repeat a row while nothing is added.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from wrtci.services.api.queries import JOB_COLUMNS, JOB_SOURCE, DeviceItem, JobItem
from wrtci.services.db.rows import Page, Where, columns_of, fetch_page


class JobFilter(msgspec.Struct, kw_only=True):
    firmware: str | None = None
    device_type: str | None = None
    state: str | None = None
    result: str | None = None
    lab: str | None = None
    device: str | None = None


_JOB_MATCH = {"firmware": "j.checkout_id = {}", "device_type": "j.device_type = {}",
              "state": "j.state = {}", "result": "j.result = {}", "lab": "j.lab = {}",
              "device": "j.device = {}"}


async def list_jobs(conn: asyncpg.Connection, flt: JobFilter,
                    page: Page) -> tuple[list[JobItem], int]:
    """Newest first."""
    return await fetch_page(conn, JobItem, columns=JOB_COLUMNS, source=JOB_SOURCE,
                            count_source="FROM jobs j", where=Where().match(_JOB_MATCH, flt),
                            order="j.created_at DESC, j.id", page=page)


class DeviceFilter(msgspec.Struct, kw_only=True):
    lab: str | None = None
    device_type: str | None = None
    state: str | None = None
    health: str | None = None


class DeviceListItem(DeviceItem, kw_only=True):
    """A device as ``/labs`` lists it, and what it is doing."""

    lab_online: bool
    current_job: str | None
    """The job running on the device, if any."""


_DEVICE_MATCH = {"lab": "d.lab = {}", "device_type": "d.device_type = {}",
                 "state": "d.state = {}", "health": "d.health = {}"}


async def list_devices(conn: asyncpg.Connection, flt: DeviceFilter,
                       page: Page) -> tuple[list[DeviceListItem], int]:
    """Every device of every lab, by lab and name."""
    return await fetch_page(
        conn, DeviceListItem,
        columns=columns_of(
            DeviceListItem, "d", lab_online="l.online",
            current_job="""(SELECT j.id FROM jobs j WHERE j.lab = d.lab AND j.device = d.name
                                AND j.state = 'running' ORDER BY j.started_at DESC LIMIT 1)"""),
        source="FROM devices d JOIN labs l ON l.name = d.lab",
        count_source="FROM devices d", where=Where().match(_DEVICE_MATCH, flt),
        order="d.lab, d.name", page=page)


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


_TEST_MATCH = {"firmware": "j.checkout_id = {}", "job": "t.job_id = {}",
               "device_type": "t.device_type = {}", "path": "t.path = {}",
               "status": "t.status = {}", "latest": "t.attempt = j.attempt"}


async def list_tests(conn: asyncpg.Connection, flt: TestFilter,
                     page: Page) -> tuple[list[TestItem], int]:
    """Newest job first, then by attempt and path."""
    return await fetch_page(
        conn, TestItem,
        columns=columns_of(TestItem, "t", firmware_id="j.checkout_id"),
        source="FROM tests t JOIN jobs j ON j.id = t.job_id",
        where=Where().match(_TEST_MATCH, flt),
        order="j.created_at DESC, t.job_id, t.attempt DESC, t.path, t.id", page=page)
