"""``/api/v1``: the read side as JSON.

GET /api/v1/openapi.json                  this API described as OpenAPI 3.1
GET /api/v1/firmware?channel=&state=&source=&limit=&offset=   newest first
GET /api/v1/firmware/{id}                 firmware, its summary and its jobs
GET /api/v1/jobs?firmware=&device_type=&state=&result=&lab=&device=&limit=&offset=
GET /api/v1/jobs/{id}                     job, every attempt with its tests, incidents
GET /api/v1/devices?lab=&device_type=&state=&health=&limit=&offset=
GET /api/v1/tests?firmware=&job=&device_type=&path=&status=&latest=&limit=&offset=
GET /api/v1/jobs/{id}/attempts/{n}/log?stream=console   the log (livelog_http.py)
GET /api/v1/labs , /api/v1/labs/{lab}     labs, devices, health (+ recent health reports)
GET /api/v1/regressions?firmware=&device_type=&open=   regressions
GET /api/v1/flaky?device_type=&all=       flaky tests

Ids hold ``/`` and ``:``; clients percent-encode them as one path segment
(either form is accepted). The query parameters are declared in ``params`` (one
table per endpoint, which the OpenAPI document lists too); one an endpoint does
not know is a 400 (a typo would otherwise silently show everything).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import msgspec
import nats.errors
from aiohttp import web
from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError

from wrtci.proto.records import LabRecord, decode_record
from wrtci.proto.topology import LAB_HEARTBEAT_TTL
from wrtci.services.api import list_queries, openapi, params, queries
from wrtci.services.api.app import (
    ApiContext,
    ApiError,
    context,
    json_response,
    known_params,
    page_param,
    paginated,
)
from wrtci.services.summary import FirmwareSummary, firmware_summary

log = logging.getLogger(__name__)


async def _paged(request: web.Request, lister, where) -> web.Response:
    page = page_param(request)
    async with context(request).db() as conn:
        items, total = await lister(conn, where, page)
    return json_response(paginated(request, items, total, page))


async def list_firmware(request: web.Request) -> web.Response:
    return await _paged(request, queries.list_firmware, params.FIRMWARE.parse(request))


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
    known_params(request)
    return json_response(await firmware_detail(context(request),
                                               request.match_info["firmware_id"]))


async def job_detail(ctx: ApiContext, job_id: str) -> queries.JobDetail:
    async with ctx.db() as conn:
        detail = await queries.job_detail(conn, job_id)
    if detail is None:
        raise ApiError(404, f"no job {job_id}")
    return detail


async def get_job(request: web.Request) -> web.Response:
    known_params(request)
    return json_response(await job_detail(context(request), request.match_info["job_id"]))


# -- labs ---------------------------------------------------------------------------------


async def heartbeats(ctx: ApiContext) -> dict[str, LabRecord] | None:
    """The labs KV bucket: an entry exists while its lab heartbeats.

    None when it cannot be read in time: the caller then shows what the
    database knows.
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
        return None


async def labs_with_heartbeats(ctx: ApiContext, lab: str | None = None) -> list[queries.LabItem]:
    """Labs from the database; online when their heartbeat is fresh.

    A lab that stops without saying so (power cut, crash) never sends
    lab.offline: its heartbeat entry expiring is what tells. An entry older than
    the bucket's TTL counts as expired too (as for the scheduler). Only when the
    bucket cannot be read does the last lab.online/offline event decide.
    """
    async with ctx.db() as conn:
        labs = await queries.list_labs(conn, lab)
    live = await heartbeats(ctx)
    if live is None:
        return labs
    horizon = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=LAB_HEARTBEAT_TTL)
    for item in labs:
        record = live.get(item.name)
        item.heartbeat_at = record.heartbeat_at if record is not None else None
        item.online = item.heartbeat_at is not None and item.heartbeat_at > horizon
    return labs


async def list_labs(request: web.Request) -> web.Response:
    known_params(request)
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
    limit = params.LAB.parse(request)["health_limit"]
    return json_response(await lab_detail(context(request), request.match_info["lab"], limit))


# -- regressions and flaky tests ----------------------------------------------------------


async def list_regressions(request: web.Request) -> web.Response:
    return await _paged(request, queries.list_regressions, params.REGRESSIONS.parse(request))


async def list_flaky(request: web.Request) -> web.Response:
    return await _paged(request, queries.list_flaky, params.FLAKY.parse(request))


# -- lists: jobs, devices, tests ------------------------------------------------------------


async def list_jobs(request: web.Request) -> web.Response:
    return await _paged(request, list_queries.list_jobs, params.JOBS.parse(request))


async def list_devices(request: web.Request) -> web.Response:
    return await _paged(request, list_queries.list_devices, params.DEVICES.parse(request))


async def list_tests(request: web.Request) -> web.Response:
    return await _paged(request, list_queries.list_tests, params.TESTS.parse(request))


async def get_openapi(request: web.Request) -> web.Response:
    known_params(request)
    return json_response(openapi.document())


def add_routes(app: web.Application) -> None:
    get = app.router.add_get
    get("/api/v1/openapi.json", get_openapi)
    get("/api/v1/jobs", list_jobs)
    get("/api/v1/devices", list_devices)
    get("/api/v1/tests", list_tests)
    get("/api/v1/firmware", list_firmware)
    get("/api/v1/firmware/{firmware_id:.+}", get_firmware)
    get("/api/v1/jobs/{job_id:.+}", get_job)
    get("/api/v1/labs", list_labs)
    get("/api/v1/labs/{lab}", get_lab)
    get("/api/v1/regressions", list_regressions)
    get("/api/v1/flaky", list_flaky)
