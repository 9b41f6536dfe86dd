"""The web pages: server-rendered HTML, no JavaScript, every value escaped (``html``)."""

from __future__ import annotations

from aiohttp import web

from proto.model import SourceKind
from services.api import queries
from services.api.app import context, page_param
from services.api.html import (
    Markup,
    counts,
    element,
    escape,
    join,
    link,
    path_part,
    query,
    render,
    table,
)
from services.api.rest import (
    FIRMWARE_STATES,
    firmware_detail,
    firmware_filter,
    job_detail,
    labs_with_heartbeats,
)
from services.summary import DeviceTypeSummary

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
code, .id { font-family: monospace; font-size: .9em; }
.s-pass, .r-pass { color: #176f2c; } .s-fail, .r-fail { color: #b00020; font-weight: bold; }
.s-error, .r-error { color: #b35900; } .s-skip, .s-miss, .r-skip { color: #666; }
.regression { color: #b00020; }
"""
# The pages run no script at all: a CSP says so, so an escaping slip could not run one either.
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
           "X-Content-Type-Options": "nosniff"}


def firmware_href(firmware_id: str) -> str:
    return f"/firmware/{path_part(firmware_id)}"


def job_href(job_id: str) -> str:
    return f"/jobs/{path_part(job_id)}"


def log_href(job_id: str, attempt: int) -> str:
    return f"/api/v1/jobs/{path_part(job_id)}/attempts/{attempt}/log"


def page(title: str, body: Markup, status: int = 200,
         headers: dict[str, str] | None = None) -> web.Response:
    text = render(
        """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title · wrtci</title>
<style>$style</style></head>
<body><nav><a href="/">Firmware</a><a href="/labs">Labs</a></nav>
<h1>$title</h1>
$body
</body></html>
""", title=title, style=Markup(STYLE), body=body)
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={**HEADERS, **(headers or {})})


def error_page(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return page(f"Error {status}", element("p", message), status, headers)


def result_of(state: str, result: str | None) -> Markup:
    return element("span", result or state, class_=f"r-{result or state}")


# -- firmware list --------------------------------------------------------------------


def _select(name: str, choices: list[str], current: str | None) -> Markup:
    options = [element("option", "any", value="")] + [
        Markup(f'<option value="{escape(c)}"{" selected" if c == current else ""}>'
               f"{escape(c)}</option>") for c in choices]
    return element("select", join(options), name=name)


async def firmware_list_page(request: web.Request) -> web.Response:
    ctx = context(request)
    where, paging = firmware_filter(request), page_param(request)
    async with ctx.db() as conn:
        items, total = await queries.list_firmware(conn, where, paging)
    form = render(
        """<form method="get" action="/">channel <input name="channel" value="$channel">
 state $state source $source <button>Filter</button></form>""",
        channel=where.channel or "",
        state=_select("state", sorted(FIRMWARE_STATES), where.state),
        source=_select("source", sorted(s.value for s in SourceKind), where.source))
    rows = [(link(firmware_href(f.id), f.id), f.version, f.revision, f.channel, f.source_kind,
             f.state, f"{f.done}/{f.jobs} done, {f.running} running, {f.queued} queued"
             + (f", {f.waiting_for_lab} waiting for a lab" if f.waiting_for_lab else ""),
             f.created_at) for f in items]
    filters = {"channel": where.channel, "state": where.state, "source": where.source}
    nav = []
    if paging.offset > 0:
        previous = max(0, paging.offset - paging.limit)
        nav.append(link("/?" + query(**filters, offset=previous, limit=paging.limit),
                        "newer"))
    if paging.offset + len(items) < total:
        nav.append(link("/?" + query(**filters, offset=paging.offset + len(items),
                                     limit=paging.limit), "older"))
    body = join([
        form,
        element("p", f"{total} firmware"),
        table(["firmware", "version", "revision", "channel", "source", "state", "jobs",
               "created"], rows),
        element("p", join(nav, " · ")),
    ])
    return page("Firmware", body)


# -- one firmware ---------------------------------------------------------------------


def _regression_list(summary: DeviceTypeSummary) -> Markup:
    items = [element("li", render(
        '<span class="regression">REGRESSION</span> <code>$path</code> '
        "(last passed on $last)", path=r.path,
        last=link(firmware_href(r.last_passing_checkout_id), r.last_passing_checkout_id)))
        for r in summary.regressions]
    items += [element("li", render("flaky failure <code>$path</code>", path=r.path))
              for r in summary.flaky_failures]
    items += [element("li", render("fixed <code>$path</code>", path=r.path))
              for r in summary.fixed]
    items += [element("li", render(
        "incident: $title $where", title=i.title or i.issue_id,
        where=link(job_href(i.job_id), "job") if i.job_id else ""))
        for i in summary.incidents]
    return element("ul", join(items)) if items else Markup("")


def _jobs_table(jobs: list[queries.JobItem]) -> Markup:
    rows = [(link(job_href(j.id), j.image_name), result_of(j.state, j.result),
             j.error_code, f"{j.attempt}/{j.max_attempts}",
             f"{j.lab or ''} {j.device or ''}".strip() or
             ("waiting for a lab" if j.waiting_for_lab else ""),
             link(log_href(j.id, j.attempt), "console log") if j.state != "queued" else "")
            for j in jobs]
    return table(["job", "result", "error", "attempt", "lab / device", "log"], rows)


async def firmware_page(request: web.Request) -> web.Response:
    detail = await firmware_detail(context(request), request.match_info["firmware_id"])
    fw = detail.firmware
    facts = table(["version", "revision", "channel", "source", "state", "created", "done"],
                  [(fw.version, fw.revision, fw.channel, fw.source_kind, fw.state,
                    fw.created_at, fw.done_at)])
    sections = [facts]
    if fw.url:
        sections.append(element("p", link(fw.url, fw.url)))
    summary = detail.summary
    if summary is not None:
        sections.append(render("<p>tests: $tests</p>", tests=counts(summary.tests)))
        by_type = {d.device_type: d for d in summary.device_types}
    else:
        by_type = {}
    device_types = sorted({j.device_type for j in detail.jobs} | set(by_type))
    for device_type in device_types:
        dtype = by_type.get(device_type, DeviceTypeSummary(device_type=device_type))
        jobs = [j for j in detail.jobs if j.device_type == device_type]
        sections.append(render(
            "<h2>$device_type</h2><p>tests: $tests · jobs: $jobs</p>$notes$table",
            device_type=device_type, tests=counts(dtype.tests), jobs=counts(dtype.jobs),
            notes=_regression_list(dtype), table=_jobs_table(jobs)))
    if not device_types:
        sections.append(element("p", "no jobs yet"))
    return page(f"Firmware {fw.id}", join(sections))


# -- one job ----------------------------------------------------------------------------


def _attempt_section(job_id: str, attempt: queries.AttemptItem) -> Markup:
    facts = render(
        "<h2>Attempt $n: $result</h2><p>$error $where · queued $queued · started $started"
        " · finished $finished · $log</p>",
        n=attempt.attempt, result=result_of(attempt.state, attempt.result),
        error=" ".join(x for x in (attempt.error_code or "", attempt.error_message or "") if x),
        where=f"{attempt.lab or '-'} / {attempt.device or '-'}", queued=attempt.queued_at,
        started=attempt.started_at or "-", finished=attempt.finished_at or "-",
        log=link(log_href(job_id, attempt.attempt), "console log"))
    rows = [(element("code", t.path),
             element("span", t.status, class_=f"s-{t.status.lower()}"),
             f"{t.duration:.1f} s" if t.duration is not None else "",
             element("code", t.log_excerpt or "")) for t in attempt.tests]
    tests = table(["test", "status", "duration", "excerpt"], rows) if rows else element(
        "p", "no test results")
    return join([facts, tests])


async def job_page(request: web.Request) -> web.Response:
    detail = await job_detail(context(request), request.match_info["job_id"])
    job = detail.job
    facts = table(
        ["firmware", "device type", "image", "state", "result", "error", "attempt"],
        [(link(firmware_href(job.firmware_id), job.firmware_id), job.device_type,
          job.image_name, job.state, result_of(job.state, job.result),
          " ".join(x for x in (job.error_code or "", job.error_message or "") if x),
          f"{job.attempt}/{job.max_attempts}")])
    sections = [facts]
    if job.waiting_for_lab:
        sections.append(element("p", "waiting: no lab with this device type is online"))
    sections += [_attempt_section(job.id, a) for a in reversed(detail.attempts)]
    if detail.incidents:
        sections.append(element("h2", "Incidents"))
        sections.append(table(["issue", "attempt", "excerpt"], [
            (i.title or i.issue_id, i.attempt, element("code", i.excerpt or ""))
            for i in detail.incidents]))
    return page(f"Job {job.id}", join(sections))


# -- labs -------------------------------------------------------------------------------


async def labs_page(request: web.Request) -> web.Response:
    labs = await labs_with_heartbeats(context(request))
    sections = []
    for lab in labs:
        status = "online" if lab.online else "offline"
        heartbeat = (render("heartbeat $at", at=lab.heartbeat_at) if lab.heartbeat_at
                     else "no heartbeat")
        sections.append(render(
            "<h2>$name</h2><p>$status · $heartbeat · version $version · last seen $seen</p>"
            "$devices", name=lab.name, status=status, heartbeat=heartbeat,
            version=lab.version or "-", seen=lab.last_seen or "-",
            devices=table(["device", "type", "state", "health", "failures", "features",
                           "updated"],
                          [(d.name, d.device_type, d.state, d.health, d.consecutive_failures,
                            ", ".join(d.features), d.updated_at) for d in lab.devices])))
    if not sections:
        sections.append(element("p", "no lab has connected yet"))
    return page("Labs", join(sections))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", firmware_list_page)
    app.router.add_get("/firmware/{firmware_id:.+}", firmware_page)
    app.router.add_get("/jobs/{job_id:.+}", job_page)
    app.router.add_get("/labs", labs_page)
