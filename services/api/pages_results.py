"""Regressions, flaky tests and pull requests."""

from __future__ import annotations

import re

from aiohttp import web

from wrtci.services.api import params, queries
from wrtci.services.api import web_queries as wq
from wrtci.services.api.app import (
    ApiError,
    bool_param,
    context,
    known_params,
    page_param,
    path_int,
    text_param,
)
from wrtci.services.api.html import element, join, link, table
from wrtci.services.api.layout import page
from wrtci.services.api.widgets import (
    filter_form,
    firmware_link,
    firmware_verdict,
    fw_row_link,
    pager,
    select,
    text_input,
)
from wrtci.services.weblinks import device_type_href, path_part

_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


async def regressions_page(request: web.Request) -> web.Response:
    known_params(request, "device_type", "open", "limit", "offset")
    ctx = context(request)
    flt = queries.RegressionFilter(device_type=text_param(request, "device_type"),
                                   open_only=bool_param(request, "open"))
    paging = page_param(request)
    async with ctx.db() as conn:
        items, total = await queries.list_regressions(conn, flt, paging)
        labels = await wq.firmware_labels(conn, {r.first_failing_checkout_id for r in items}
                                          | {r.last_passing_checkout_id for r in items}
                                          | {r.fixed_checkout_id for r in items
                                             if r.fixed_checkout_id})
    form = filter_form("/regressions", [
        text_input("device_type", flt.device_type),
        select("open", [("true", "still failing")], "true" if flt.open_only else None)])
    rows = [(element("code", r.path), link(device_type_href(r.device_type), r.device_type),
             firmware_link(r.last_passing_checkout_id, labels),
             firmware_link(r.first_failing_checkout_id, labels),
             firmware_link(r.fixed_checkout_id, labels) if r.fixed_checkout_id
             else element("span", "still failing", class_="regression"),
             "flaky" if r.flaky else "") for r in items]
    body = join([form, table(["test", "device type", "last passed", "first failed", "fixed in",
                              ""], rows) if rows else element("p", "no regressions"),
                 pager(request, len(items), total, paging.limit, paging.offset)])
    return page("Regressions", body)


async def flaky_page(request: web.Request) -> web.Response:
    flt = params.FLAKY.parse(request)
    ctx = context(request)
    paging = page_param(request)
    async with ctx.db() as conn:
        items, total = await queries.list_flaky(conn, flt, paging)
        labels = await wq.firmware_labels(conn, {f.last_checkout_id for f in items
                                                 if f.last_checkout_id})
    form = filter_form("/flaky", [
        text_input("device_type", flt.device_type),
        select("all", [("true", "steady ones too")], "true" if flt.include_steady else None)])
    rows = [(element("code", f.path), link(device_type_href(f.device_type), f.device_type),
             f"{f.score:.2f}", f"{f.flips} of {f.pairs}", f.runs,
             firmware_link(f.last_checkout_id, labels) if f.last_checkout_id else "")
            for f in items]
    body = join([form, table(["test", "device type", "score", "flips", "runs",
                              "last firmware"], rows) if rows else element("p", "no flaky tests"),
                 pager(request, len(items), total, paging.limit, paging.offset)])
    return page("Flaky tests", body)


async def prs_page(request: web.Request) -> web.Response:
    known_params(request)
    async with context(request).db() as conn:
        rows = await conn.fetch(
            """SELECT misc->'pull_request'->>'repository' AS repository,
                      (misc->'pull_request'->>'number')::bigint AS number,
                      (array_agg(misc->'pull_request'->>'title' ORDER BY created_at DESC))[1]
                          AS title,
                      (array_agg(misc->'pull_request'->>'author' ORDER BY created_at DESC))[1]
                          AS author,
                      count(*) AS pushes, max(created_at) AS latest
                 FROM checkouts WHERE misc ? 'pull_request'
                GROUP BY 1, 2 ORDER BY latest DESC LIMIT 500""")
    table_rows = [(link(f"/prs/{path_part(r['repository'].split('/')[0])}/"
                        f"{path_part(r['repository'].split('/')[-1])}/{r['number']}",
                        f"{r['repository']} #{r['number']}"), r["title"] or "",
                   r["author"] or "", r["pushes"], r["latest"]) for r in rows]
    body = (table(["pull request", "title", "author", "pushes", "latest"], table_rows)
            if table_rows else element("p", "no pull request has been tested"))
    return page("Pull requests", body)


async def pr_page(request: web.Request) -> web.Response:
    known_params(request)
    owner, name = request.match_info["owner"], request.match_info["name"]
    if not (_REPOSITORY.match(owner) and _REPOSITORY.match(name)):
        raise ApiError(400, "the repository must be OWNER/NAME")
    number = path_int(request, "number")
    repository = f"{owner}/{name}"
    async with context(request).db() as conn:
        pushes, _ = await wq.firmware_rows(conn, wq.FirmwareFilter(
            pr_repository=repository, pr_number=number), wq.Page(limit=500, offset=0))
    if not pushes:
        raise ApiError(404, f"no firmware of pull request {repository} #{number}")
    latest = pushes[0]
    rows = [(fw_row_link(f), element("code", (f.pr_sha or "")[:12]), firmware_verdict(f),
             f.state, f.created_at) for f in pushes]
    body = join([
        element("p", join([link(latest.pr_url, "on GitHub") if latest.pr_url else "",
                           f" · {len(pushes)} push" + ("es" if len(pushes) != 1 else "")])),
        element("h2", "Firmware of each push (newest first)"),
        table(["firmware", "commit", "verdict", "state", "created"], rows)])
    return page(f"{repository} #{number}: {latest.pr_title or ''}".rstrip(": "), body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/regressions", regressions_page)
    app.router.add_get("/flaky", flaky_page)
    app.router.add_get("/prs", prs_page)
    app.router.add_get(r"/prs/{owner}/{name}/{number:\d+}", pr_page)
