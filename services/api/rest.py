"""``/api/v1``: the read side as JSON.

GET /api/v1/firmware?channel=&state=&source=&limit=&offset=   newest first
GET /api/v1/firmware/{id}                 firmware, its summary and its jobs
GET /api/v1/jobs/{id}                     job, every attempt with its tests, incidents
GET /api/v1/jobs/{id}/attempts/{n}/log?stream=console   the log (livelog.py)
GET /api/v1/labs , /api/v1/labs/{lab}     labs, devices, health (+ recent health reports)
GET /api/v1/regressions?firmware=&device_type=&open=   regressions
GET /api/v1/flaky?device_type=&all=       flaky tests

Ids hold ``/`` and ``:``; clients percent-encode them as one path segment
(either form is accepted).
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import nats.errors
from aiohttp import web
from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError

from proto.model import FirmwareState, SourceKind
from proto.records import LabRecord, decode_record
from services.api import queries
from services.api.app import (
    ApiContext,
    ApiError,
    bool_param,
    choice_param,
    context,
    int_param,
    json_response,
    page_param,
    paginated,
    text_param,
)
from services.results.summary import FirmwareSummary, firmware_summary

log = logging.getLogger(__name__)

FIRMWARE_STATES = frozenset(s.value for s in FirmwareState)
SOURCE_KINDS = frozenset(s.value for s in SourceKind)


def firmware_filter(request: web.Request) -> queries.FirmwareFilter:
    return queries.FirmwareFilter(
        channel=text_param(request, "channel"),
        state=choice_param(request, "state", FIRMWARE_STATES),
        source=choice_param(request, "source", SOURCE_KINDS))


async def list_firmware(request: web.Request) -> web.Response:
    ctx = context(request)
    where, page = firmware_filter(request), page_param(request)
    async with ctx.db() as conn:
        items, total = await queries.list_firmware(conn, where, page)
    return json_response(paginated(request, items, total, page))


class FirmwareDetail(msgspec.Struct, kw_only=True):
    firmware: queries.FirmwareItem
    summary: FirmwareSummary | None
    jobs: list[queries.JobItem]


async def firmware_detail(ctx: ApiContext, firmware_id: str) -> FirmwareDetail:
    async with ctx.db() as conn:
        firmware = await queries.get_firmware(conn, firmware_id)
        if firmware is None:
            raise ApiError(404, f"no firmware {firmware_id}")
        summary = await firmware_summary(conn, firmware_id)
        jobs = await queries.firmware_jobs(conn, firmware_id)
    return FirmwareDetail(firmware=firmware, summary=summary, jobs=jobs)


async def get_firmware(request: web.Request) -> web.Response:
    return json_response(await firmware_detail(context(request),
                                               request.match_info["firmware_id"]))


async def job_detail(ctx: ApiContext, job_id: str) -> queries.JobDetail:
    async with ctx.db() as conn:
        detail = await queries.job_detail(conn, job_id)
    if detail is None:
        raise ApiError(404, f"no job {job_id}")
    return detail


async def get_job(request: web.Request) -> web.Response:
    return json_response(await job_detail(context(request), request.match_info["job_id"]))


# -- labs ---------------------------------------------------------------------------------


async def heartbeats(ctx: ApiContext) -> dict[str, LabRecord]:
    """The labs KV bucket: an entry exists while its lab heartbeats.

    Best effort: when NATS is slow the page shows what the database knows.
    """
    async def read() -> dict[str, LabRecord]:
        kv = await ctx.js.key_value(ctx.subjects.labs_bucket)
        records = {}
        try:
            keys = await kv.keys()
        except NoKeysError:
            return {}
        for key in keys:
            try:
                entry = await kv.get(key)
            except (NotFoundError, nats.errors.Error):
                continue  # expired between keys() and get()
            if entry.value:
                record = decode_record(entry.value, LabRecord)
                records[record.lab] = record
        return records

    try:
        return await asyncio.wait_for(read(), ctx.section.kv_timeout_s)
    except (TimeoutError, BucketNotFoundError, nats.errors.Error,
            msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("lab heartbeats unavailable", extra={"error": repr(exc)})
        return {}


async def labs_with_heartbeats(ctx: ApiContext, lab: str | None = None) -> list[queries.LabItem]:
    async with ctx.db() as conn:
        labs = await queries.list_labs(conn, lab)
    live = await heartbeats(ctx)
    for item in labs:
        record = live.get(item.name)
        item.heartbeat_at = record.heartbeat_at if record is not None else None
    return labs


async def list_labs(request: web.Request) -> web.Response:
    return json_response({"items": await labs_with_heartbeats(context(request))})


class LabDetail(msgspec.Struct, kw_only=True):
    lab: queries.LabItem
    health: list[queries.HealthItem]


async def lab_detail(ctx: ApiContext, name: str, limit: int) -> LabDetail:
    labs = await labs_with_heartbeats(ctx, name)
    if not labs:
        raise ApiError(404, f"no lab {name}")
    async with ctx.db() as conn:
        health = await queries.device_health(conn, name, limit)
    return LabDetail(lab=labs[0], health=health)


async def get_lab(request: web.Request) -> web.Response:
    limit = int_param(request, "health_limit", 50, 1, 1000)
    return json_response(await lab_detail(context(request), request.match_info["lab"], limit))


# -- regressions and flaky tests ----------------------------------------------------------


async def list_regressions(request: web.Request) -> web.Response:
    ctx = context(request)
    where = queries.RegressionFilter(firmware=text_param(request, "firmware", 500),
                                     device_type=text_param(request, "device_type"),
                                     open_only=bool_param(request, "open"))
    page = page_param(request)
    async with ctx.db() as conn:
        items, total = await queries.list_regressions(conn, where, page)
    return json_response(paginated(request, items, total, page))


async def list_flaky(request: web.Request) -> web.Response:
    ctx = context(request)
    device_type = text_param(request, "device_type")
    include_steady = bool_param(request, "all")
    page = page_param(request)
    async with ctx.db() as conn:
        items, total = await queries.list_flaky(conn, device_type, include_steady, page)
    return json_response(paginated(request, items, total, page))


def add_routes(app: web.Application) -> None:
    get = app.router.add_get
    get("/api/v1/firmware", list_firmware)
    get("/api/v1/firmware/{firmware_id:.+}", get_firmware)
    get("/api/v1/jobs/{job_id:.+}", get_job)
    get("/api/v1/labs", list_labs)
    get("/api/v1/labs/{lab}", get_lab)
    get("/api/v1/regressions", list_regressions)
    get("/api/v1/flaky", list_flaky)
