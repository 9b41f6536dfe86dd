"""``/dashboard/api/``: single builds and tests, hardware (device types), issues; the routes.

See ``dashboard`` for the shapes and the tree endpoints.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import unquote_plus

import msgspec
from aiohttp import web

from wrtci.services.api import dashboard_data as data
from wrtci.services.api.app import ApiError, context, json_response
from wrtci.services.api.dashboard import (
    EXPORTER,
    MAX_BODY,
    _origin,
    _params,
    _timestamp,
    _tree_results,
    _View,
    counts,
    exporter_for,
    list_handlers,
    tree_commits,
    tree_list,
    tree_summary,
)
from wrtci.services.api.dashboard_report import tree_report
from wrtci.services.kcidb.export import Exporter

PREFIX = "/dashboard/api"


# -- one build or test ------------------------------------------------------------------


async def _owner_results(request: web.Request, kind: str) -> tuple[_View, str]:
    _params(request, ())
    exporter = exporter_for(request)
    object_id = request.match_info["object_id"]
    stored = exporter.stored(object_id)
    async with context(request).db() as conn:
        if kind == "build":
            checkout = await conn.fetchval("SELECT checkout_id FROM builds WHERE id = $1",
                                           stored)
        else:
            key = stored.removesuffix(":boot").rpartition(":")[0] \
                if stored.endswith(":boot") else None
            checkout = await conn.fetchval(
                "SELECT j.checkout_id FROM jobs j WHERE j.id = $1 OR j.id = "
                "(SELECT job_id FROM tests WHERE id = $2)", key, stored)
        if checkout is None:
            raise ApiError(404, f"no {kind} {object_id}")
        results = await data.results(conn, exporter, [checkout])
    return _View(results), object_id


async def one_build(request: web.Request) -> web.Response:
    view, build_id = await _owner_results(request, "build")
    for item in view.builds_list():
        if item["id"] == build_id:
            return json_response(item)
    raise ApiError(404, f"no build {build_id}")


async def one_test(request: web.Request) -> web.Response:
    view, test_id = await _owner_results(request, "test")
    for item in view.tests_list(view.r.document.tests):
        if item["id"] == test_id:
            return json_response(item)
    raise ApiError(404, f"no test {test_id} (tests of superseded attempts are in the export)")


def _issues_of(view: _View, object_id: str) -> list[dict[str, Any]]:
    issues, _explained = view._issues({object_id})
    return issues


async def build_issues(request: web.Request) -> web.Response:
    view, build_id = await _owner_results(request, "build")
    return json_response(_issues_of(view, build_id))


async def test_issues(request: web.Request) -> web.Response:
    view, test_id = await _owner_results(request, "test")
    return json_response(_issues_of(view, test_id))


# -- hardware: device types ---------------------------------------------------------------


class HardwareBody(msgspec.Struct, kw_only=True):
    origin: str | None = None
    startTimestampInSeconds: str | int | None = None
    endTimestampInSeconds: str | int | None = None
    selectedCommits: dict[str, Any] = {}
    filter: dict[str, Any] = {}


def _window(start: str | int | None, end: str | int | None) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    until = _timestamp(end, "endTimestampInSeconds", now)
    since = _timestamp(start, "startTimestampInSeconds", until - dt.timedelta(days=7))
    if since > until:
        raise ApiError(400, "startTimestampInSeconds is after endTimestampInSeconds")
    return since, until


async def hardware_list(request: web.Request) -> web.Response:
    params = _params(request, {"origin", "startTimestampInSeconds", "endTimestampInSeconds"})
    exporter = _origin(request, params.get("origin"))
    since, until = _window(params.get("startTimestampInSeconds"),
                           params.get("endTimestampInSeconds"))
    items = []
    async with context(request).db() as conn:
        for device_type, checkouts in (await data.device_types(conn, since, until)).items():
            view = _View(await data.results(conn, exporter, checkouts, device_type))
            items.append({
                "hardware": device_type, "platform": device_type,
                "test_status_summary": counts(t.status for t in view.r.tests),
                "boot_status_summary": counts(t.status for t in view.r.boots),
                "build_status_summary": counts(b.status for b in view.r.document.builds)})
    return json_response({"hardware": items})


async def _hardware_view(request: web.Request) -> tuple[str, _View]:
    _params(request, ())
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, f"body is over {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    try:
        body = msgspec.json.decode(raw, type=HardwareBody) if raw.strip() else HardwareBody()
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"bad JSON body: {exc}") from None
    exporter: Exporter = _origin(request, body.origin)
    since, until = _window(body.startTimestampInSeconds, body.endTimestampInSeconds)
    name = unquote_plus(request.match_info["name"])
    async with context(request).db() as conn:
        checkouts = (await data.device_types(conn, since, until)).get(name)
        if checkouts is None:
            raise ApiError(404, f"no results for hardware {name!r} in this time window")
        view = _View(await data.results(conn, exporter, checkouts, name))
    return name, view


async def hardware_summary(request: web.Request) -> web.Response:
    name, view = await _hardware_view(request)
    return json_response({"summary": view.summary(), "filters": view.filters(),
                          "common": {"trees": [], "compatibles": [name]}})


# -- issues -----------------------------------------------------------------------------


def _issue_item(exporter: Exporter, row: data.IssueRow) -> dict[str, Any]:
    return {"id": exporter.id(row.id), "version": row.version, "origin": exporter.origin,
            "comment": row.comment or row.report_subject, "report_url": row.report_url,
            "culprit_code": row.culprit_code, "culprit_tool": row.culprit_tool,
            "culprit_harness": row.culprit_harness, "categories": [],
            "field_timestamp": row.first_seen, "incidents_info": {
                "incidentsCount": row.incidents}}


async def issue_list(request: web.Request) -> web.Response:
    params = _params(request, {"filter_origin", "startTimestampInSeconds",
                               "endTimestampInSeconds", "interval_in_days"})
    exporter = _origin(request, params.get("filter_origin"))
    since, until = _window(params.get("startTimestampInSeconds"),
                           params.get("endTimestampInSeconds"))
    async with context(request).db() as conn:
        rows = await data.issues(conn, since, until)
    return json_response({"issues": [_issue_item(exporter, r) for r in rows], "extras": {},
                          "filters": {"origins": [exporter.origin], "culprits": [],
                                      "categories": []}})


async def one_issue(request: web.Request) -> web.Response:
    params = _params(request, {"version"})
    exporter = exporter_for(request)
    issue_id = request.match_info["issue_id"]
    async with context(request).db() as conn:
        rows = await data.issues(conn, None, None, exporter.stored(issue_id))
    if params.get("version"):
        rows = [r for r in rows if str(r.version) == params["version"]]
    if not rows:
        raise ApiError(404, f"no issue {issue_id}")
    return json_response(_issue_item(exporter, rows[-1]))


async def issue_extras(request: web.Request) -> web.Response:
    _params(request, ())
    return json_response({"issues": {}})


def add_routes(app: web.Application, exporter: Exporter) -> None:
    app[EXPORTER] = exporter
    get, post = app.router.add_get, app.router.add_post
    get(f"{PREFIX}/tree", tree_list)
    get(f"{PREFIX}/tree/", tree_list)
    get(f"{PREFIX}/tree-report", tree_report)
    get(f"{PREFIX}/tree-report/", tree_report)
    for tail, handler in (("summary", tree_summary), *list_handlers(_tree_results),
                          ("commits", tree_commits)):
        get(f"{PREFIX}/tree/{{commit}}/{tail}", handler)
    get(f"{PREFIX}/build/{{object_id:.+}}/issues", build_issues)
    get(f"{PREFIX}/test/{{object_id:.+}}/issues", test_issues)
    get(f"{PREFIX}/build/{{object_id:.+}}", one_build)
    get(f"{PREFIX}/test/{{object_id:.+}}", one_test)
    get(f"{PREFIX}/hardware/", hardware_list)
    get(f"{PREFIX}/hardware", hardware_list)
    for tail, handler in (("summary", hardware_summary), *list_handlers(_hardware_view)):
        post(f"{PREFIX}/hardware/{{name:.+}}/{tail}", handler)
    post(f"{PREFIX}/issue/extras/", issue_extras)
    get(f"{PREFIX}/issue/", issue_list)
    get(f"{PREFIX}/issue", issue_list)
    get(f"{PREFIX}/issue/{{issue_id:.+}}", one_issue)
