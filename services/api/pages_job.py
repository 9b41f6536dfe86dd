"""The job page: verdict, stage, tests, incidents, artifacts and the console log viewer.

While the attempt runs, the log shown is the log so far from the LOGS stream
and ``wrtci.js`` follows ``…/log/live`` from the position it was rendered at:
new lines appear without a reload, and the stage with them.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from wrtci.proto.storage import job_log_key
from wrtci.services.api import queries
from wrtci.services.api import web_queries as wq
from wrtci.services.api.ansi import log_lines
from wrtci.services.api.app import ApiContext, ApiError, context, known_params, path_int
from wrtci.services.api.html import Markup, element, join, link, render, table
from wrtci.services.api.layout import page
from wrtci.services.api.livelog import read_live
from wrtci.services.api.logs import log_key
from wrtci.services.api.widgets import firmware_link, job_verdict, where
from wrtci.services.weblinks import (
    device_type_href,
    job_href,
    log_page_href,
    path_part,
    raw_log_href,
)

INLINE_LOG_BYTES = 1024 * 1024
"""The job page shows at most this much of a log (the end); the raw link has it all."""
ARTIFACTS = ("pytest.log", "junit.xml", "results.json")


class ShownLog:
    def __init__(self, text: str, skipped: int = 0, live: bool = False,
                 position: object = None) -> None:
        self.text, self.skipped, self.live, self.position = text, skipped, live, position


async def _log(ctx: ApiContext, job_id: str, attempt: queries.AttemptItem,
               stream: str = "console") -> ShownLog | None:
    if attempt.state == "done":
        stored = await ctx.logs.read_tail(
            log_key(job_id, attempt.attempt, stream, attempt.log_key), INLINE_LOG_BYTES)
        if stored is not None:
            return ShownLog(*stored)
    if attempt.lab is None:
        return None
    live = await read_live(ctx, job_id, attempt.attempt, attempt.lab, stream, INLINE_LOG_BYTES)
    return ShownLog(live.text, live=attempt.state != "done" and not live.final,
                    position=live.position)


def _viewer(job_id: str, attempt: int, shown: ShownLog | None, stream: str) -> Markup:
    if shown is None:
        return element("p", "no log yet: the job has not started on a device")
    note = ""
    if shown.skipped:
        note = element("p", f"the first {shown.skipped} bytes are not shown here; the raw "
                            "log has everything (line numbers count from this point)")
    lines = shown.text.count("\n") + (0 if shown.text.endswith("\n") or not shown.text else 1)
    attrs = {"id": "log", "class_": "log"}
    if shown.live:
        live = f"/api/v1/jobs/{path_part(job_id)}/attempts/{attempt}/log/live"
        if stream != "console":
            live += f"?stream={path_part(stream)}"
        attrs.update({"data-live": live, "data-after": str(shown.position or ""),
                      "data-next-line": str(lines + 1),
                      "data-partial": "0" if shown.text.endswith("\n") or not shown.text
                      else "1"})
    status = element("p", join(["log: ", element(
        "span", "live (updates by itself)" if shown.live else "complete", id="live-status")]))
    return join([note, status, element("div", log_lines(shown.text), **attrs)])


def _artifact_links(job_id: str, attempt: queries.AttemptItem, names: set[str]) -> Markup:
    if attempt.lab is None and attempt.state != "done" and not names:
        return element("p", "no logs yet")  # links would lead nowhere
    n = attempt.attempt
    items = [link(log_page_href(job_id, n), "console log"),
             link(raw_log_href(job_id, n), "raw console log")]
    items += [link(raw_log_href(job_id, n, name), name) for name in ARTIFACTS
              if name in names or name == "pytest.log"]
    items += [link(raw_log_href(job_id, n, name), name) for name in sorted(names)
              if name not in ARTIFACTS and name != "console.log"]
    return element("p", join(items, " · "))


def _tests(attempt: queries.AttemptItem) -> Markup:
    if not attempt.tests:
        return element("p", "no test results")
    return table(["test", "status", "duration", "excerpt"], [
        (element("code", t.path), element("span", t.status, class_=f"s-{t.status.lower()}"),
         f"{t.duration:.1f} s" if t.duration is not None else "",
         element("code", t.log_excerpt or "")) for t in attempt.tests])


async def job_page(request: web.Request) -> web.Response:
    known_params(request)
    ctx = context(request)
    job_id = request.match_info["job_id"]
    async with ctx.db() as conn:
        detail = await queries.job_detail(conn, job_id)
        if detail is None:
            raise ApiError(404, f"no job {job_id}")
        (row,) = await wq.job_rows(conn, "j.id = $1", job_id)
        labels = await wq.firmware_labels(conn, {row.firmware_id})
    job = detail.job
    latest = detail.attempts[-1] if detail.attempts else None
    stage = ""
    if latest is not None and latest.state == "running":
        # The lab started it: the job row may not say so yet (the scheduler's view).
        row = msgspec.structs.replace(row, state="running", waiting_for_lab=False)
    if latest is not None and latest.state == "running" and latest.lab:
        stage = latest.stage or "started"  # the live feed moves it on
    facts = table(["firmware", "device type", "verdict", "stage", "attempt", "lab / device",
                   "started", "finished"],
                  [(firmware_link(job.firmware_id, labels),
                    link(device_type_href(job.device_type), job.device_type), job_verdict(row),
                    element("span", stage or job.state, id="stage", class_="stage"),
                    f"{job.attempt} of {job.max_attempts}", where(job.lab, job.device),
                    job.started_at or "", job.finished_at or "")])
    sections = [facts]
    if job.error_message:
        sections.append(element("p", f"error: {job.error_message}"))
    if row.waiting_for_lab:
        sections.append(element("p", f"waiting: no lab with device type {job.device_type} "
                                     "is online"))
    for attempt in reversed(detail.attempts):
        names = await ctx.logs.names(job_log_key(job_id, attempt.attempt, "x")[:-1])
        sections.append(render(
            "<h2>Attempt $n: $result</h2><p>$where$error</p>$links$tests",
            n=attempt.attempt, result=attempt.result or attempt.state,
            where=where(attempt.lab, attempt.device) or "no device yet",
            error="".join(f" · {x}" for x in (attempt.error_code, attempt.error_message) if x),
            links=_artifact_links(job_id, attempt, names), tests=_tests(attempt)))
        if attempt is latest:
            sections.append(element("h2", "Console log", id="console"))
            sections.append(_viewer(job_id, attempt.attempt,
                                    await _log(ctx, job_id, attempt), "console"))
    if detail.incidents:
        sections.append(element("h2", "Incidents"))
        sections.append(table(["issue", "attempt", "excerpt"], [
            (i.title or i.issue_id, i.attempt, element("code", i.excerpt or ""))
            for i in detail.incidents]))
    title = f"{job.image_name} on {job.device_type}"
    return page(title, join(sections), subtitle=f"{labels.get(job.firmware_id, '')} · {job_id}")


async def console_page(request: web.Request) -> web.Response:
    """One attempt's log (``?stream=pytest.log`` for another stream) in the viewer."""
    known_params(request, "stream")
    ctx = context(request)
    job_id = request.match_info["job_id"]
    number = path_int(request, "attempt")
    stream = request.query.get("stream", "console")
    if stream not in ("console", *ARTIFACTS):
        raise ApiError(400, f"stream must be one of console, {', '.join(ARTIFACTS)}")
    async with ctx.db() as conn:
        detail = await queries.job_detail(conn, job_id)
    if detail is None:
        raise ApiError(404, f"no job {job_id}")
    attempt = next((a for a in detail.attempts if a.attempt == number), None)
    if attempt is None:
        raise ApiError(404, f"no attempt {number} of job {job_id}")
    body = join([
        element("p", join([link(job_href(job_id), "back to the job"), " · ",
                           link(raw_log_href(job_id, number, stream), "raw")])),
        _viewer(job_id, number, await _log(ctx, job_id, attempt, stream), stream)])
    return page(f"{stream} · attempt {number} of {detail.job.image_name}", body,
                subtitle=job_id)


def add_routes(app: web.Application) -> None:
    # The console route first: a job id may itself contain "/".
    app.router.add_get(r"/jobs/{job_id:.+}/attempts/{attempt:\d+}/console", console_page)
    app.router.add_get("/jobs/{job_id:.+}", job_page)
