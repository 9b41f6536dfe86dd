"""The web pages: server-rendered HTML, every value escaped (``html``).

This module: the firmware list (with verdicts and filters), the firmware x
device-type matrix of a channel, the firmware page; and every page's route.
The job page is in ``pages_job``, the fleet in ``pages_fleet``, regressions,
flaky tests and pull requests in ``pages_results``. Bad input is a 4xx error
page (``app.errors``); a query parameter a page does not take is refused.
"""

from __future__ import annotations

from aiohttp import web

from wrtci.proto.model import SourceKind
from wrtci.services.api import pages_fleet, pages_job, pages_results
from wrtci.services.api import web_queries as wq
from wrtci.services.api.app import (
    ApiError,
    choice_param,
    context,
    int_param,
    known_params,
    page_param,
    text_param,
)
from wrtci.services.api.html import Markup, counts, element, join, link, render, table
from wrtci.services.api.layout import SCRIPT_PATH, page, script
from wrtci.services.api.widgets import (
    filter_form,
    firmware_link,
    firmware_verdict,
    fw_row_link,
    job_verdict,
    pager,
    select,
    text_input,
    where,
)
from wrtci.services.summary import firmware_summary
from wrtci.services.weblinks import device_type_href, job_href

SOURCES = frozenset(s.value for s in SourceKind)
VERDICT_CHOICES = [(v, wq.VERDICT_LABELS[v]) for v in wq.VERDICTS]


# -- firmware list --------------------------------------------------------------------


async def firmware_list_page(request: web.Request) -> web.Response:
    known_params(request, "channel", "source", "version", "device_type", "verdict",
                 "limit", "offset")
    ctx = context(request)
    flt = wq.FirmwareFilter(
        channel=text_param(request, "channel"),
        source=choice_param(request, "source", SOURCES),
        version=text_param(request, "version"),
        device_type=text_param(request, "device_type"),
        verdict=choice_param(request, "verdict", frozenset(wq.VERDICTS)))
    paging = page_param(request)
    async with ctx.db() as conn:
        items, total = await wq.firmware_rows(conn, flt, paging)
        channels = await wq.channels(conn)
    form = filter_form("/", [
        select("channel", [(c, c) for c in channels], flt.channel),
        select("source", [(s, s.replace("_", " ")) for s in sorted(SOURCES)], flt.source),
        text_input("version", flt.version), text_input("device_type", flt.device_type),
        select("verdict", VERDICT_CHOICES, flt.verdict)])
    rows = [(fw_row_link(f), firmware_verdict(f), f.channel, f.source_kind.replace("_", " "),
             f.submitter or "", f.created_at) for f in items]
    body = join([
        form,
        table(["firmware", "verdict", "channel", "source", "submitter", "created"], rows)
        if rows else element("p", "no firmware matches"),
        pager(request, len(items), total, paging.limit, paging.offset),
    ])
    return page("Firmware", body)


# -- matrix ---------------------------------------------------------------------------


async def matrix_page(request: web.Request) -> web.Response:
    known_params(request, "channel", "limit")
    ctx = context(request)
    count = int_param(request, "limit", 10, 1, 50)
    async with ctx.db() as conn:
        channels = await wq.channels(conn)
        channel = text_param(request, "channel") or (
            "snapshot" if "snapshot" in channels else (channels[0] if channels else None))
        if channel is not None and channel not in channels:
            raise ApiError(404, f"no firmware in channel {channel}")
        firmware, _ = (await wq.firmware_rows(conn, wq.FirmwareFilter(channel=channel),
                                              wq.Page(limit=count, offset=0))
                       if channel else ([], 0))
        jobs = await wq.job_rows(conn, "j.checkout_id = ANY($1)", [f.id for f in firmware],
                                 limit=5000)
    form = filter_form("/matrix", [select("channel", [(c, c) for c in channels], channel)])
    if not firmware:
        return page("Matrix", join([form, element("p", "no firmware yet")]))
    cells: dict[tuple[str, str], list[wq.JobRow]] = {}
    for job in jobs:
        cells.setdefault((job.device_type, job.firmware_id), []).append(job)
    head = join([element("th", "device type")] + [
        element("th", join([fw_row_link(f), Markup("<br>"), firmware_verdict(f)]),
                class_="fw") for f in firmware])
    body = []
    for device_type in sorted({j.device_type for j in jobs}):
        row = [element("th", link(device_type_href(device_type), device_type))]
        for f in firmware:
            here = cells.get((device_type, f.id), [])
            row.append(element("td", join(
                (link(job_href(j.id), job_verdict(j)) for j in here), Markup("<br>"))
                if here else "-"))
        body.append(element("tr", join(row)))
    grid = render('<table class="matrix"><thead><tr>$head</tr></thead><tbody>$body</tbody>'
                  "</table>", head=head, body=join(body))
    return page(f"Matrix · {channel}", join([
        form, element("p", "one row per device type, one column per firmware (newest "
                           "first); each cell links the job"), grid]))


# -- one firmware ---------------------------------------------------------------------


async def firmware_page(request: web.Request) -> web.Response:
    known_params(request)
    ctx = context(request)
    firmware_id = request.match_info["firmware_id"]
    async with ctx.db() as conn:
        found, _ = await wq.firmware_rows(conn, wq.FirmwareFilter(ids=[firmware_id]),
                                          wq.Page(limit=1, offset=0))
        if not found:
            raise ApiError(404, f"no firmware {firmware_id}")
        fw = found[0]
        summary = await firmware_summary(conn, firmware_id)
        jobs = await wq.job_rows(conn, "j.checkout_id = $1", firmware_id, limit=1000)
        previous = await wq.previous_firmware(conn, fw)
        reasons = await wq.no_job_reasons(conn, firmware_id) if not jobs else []
        referenced = {previous} if previous else set()
        for dtype in summary.device_types if summary else []:
            referenced |= {r.last_passing_checkout_id for r in dtype.regressions + dtype.fixed}
        labels = await wq.firmware_labels(conn, referenced - {None})
    pr = (link(fw.pr_url, f"{fw.pr_repository} #{fw.pr_number}") if fw.pr_url else "")
    facts = table(["verdict", "version", "revision", "channel", "source", "submitter",
                   "pull request", "state", "created"],
                  [(firmware_verdict(fw), fw.version, fw.revision, fw.channel,
                    fw.source_kind.replace("_", " "), fw.submitter or "", pr, fw.state,
                    fw.created_at)])
    sections = [facts]
    if previous:
        sections.append(render("<p>previous firmware of the channel: $link</p>",
                               link=firmware_link(previous, labels)))
    if summary is not None and summary.tests:
        sections.append(render("<p>tests: $tests</p>", tests=counts(summary.tests)))
    by_type = {d.device_type: d for d in summary.device_types} if summary else {}
    sections.append(element("h2", "Verdict per device type"))
    if jobs:
        sections.append(table(["device type", "verdict", "tests", "job", "lab / device"], [
            (link(device_type_href(j.device_type), j.device_type), job_verdict(j),
             counts(by_type[j.device_type].tests) if j.device_type in by_type else "",
             link(job_href(j.id), j.image_name), where(j.lab, j.device))
            for j in sorted(jobs, key=lambda j: j.device_type)]))
    else:
        sections.append(element("p", "no jobs, because:"))
        sections.append(element("ul", join(element("li", r) for r in reasons)))
    changes = _changes(by_type, labels)
    sections.append(element("h2", "Regressions and fixes against the previous firmware"))
    sections.append(changes or element("p", "none"))
    incidents = [(d.device_type, i) for d in by_type.values() for i in d.incidents]
    if incidents:
        sections.append(element("h2", "Incidents"))
        images = {j.id: j.image_name for j in jobs}
        sections.append(table(["device type", "issue", "job"], [
            (link(device_type_href(dt), dt), i.title or i.issue_id,
             link(job_href(i.job_id), images.get(i.job_id, "the job")) if i.job_id else "")
            for dt, i in incidents]))
    return page(wq.firmware_label(fw), join(sections), subtitle=fw.id)


def _changes(by_type, labels: dict[str, str]) -> Markup:
    rows = []
    for device_type, dtype in sorted(by_type.items()):
        for kind, items in (("regression", dtype.regressions),
                            ("flaky failure", dtype.flaky_failures), ("fixed", dtype.fixed)):
            for r in items:
                rows.append((element("span", kind, class_="regression" if kind ==
                                     "regression" else ""),
                             link(device_type_href(device_type), device_type),
                             element("code", r.path),
                             firmware_link(r.last_passing_checkout_id, labels)))
    return table(["change", "device type", "test", "last passed on"], rows) if rows else Markup()


async def labs_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/fleet")


def add_routes(app: web.Application) -> None:
    get = app.router.add_get
    get("/", firmware_list_page)
    get("/matrix", matrix_page)
    get("/firmware/{firmware_id:.+}", firmware_page)
    pages_job.add_routes(app)
    pages_fleet.add_routes(app)
    pages_results.add_routes(app)
    get("/labs", labs_redirect)
    get(SCRIPT_PATH, script)
