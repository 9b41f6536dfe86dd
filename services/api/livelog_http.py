"""HTTP of the live console log: ``GET …/log`` and the ``GET …/log/live`` event stream.

See ``livelog`` for how logs are read from the LOGS stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time

import msgspec
from aiohttp import web

from wrtci.services.api import params
from wrtci.services.api.app import ApiContext, ApiError, context, path_int
from wrtci.services.api.livelog import (
    DB_CHECK_S,
    KEEPALIVE_S,
    MAX_VIEWERS,
    Attempt,
    Ordered,
    Position,
    attempt_row,
    chunk_of,
    messages,
    read_live,
    stage_of,
)
from wrtci.services.api.logs import log_key

_json = msgspec.json.Encoder()


# -- HTTP ---------------------------------------------------------------------------------


async def _attempt(request: web.Request) -> tuple[str, int, Attempt]:
    job_id = request.match_info["job_id"]
    attempt = path_int(request, "attempt")
    async with context(request).db() as conn:
        row = await attempt_row(conn, job_id, attempt)
    if row is None:
        raise ApiError(404, f"no attempt {attempt} of job {job_id}")
    return job_id, attempt, row


async def get_log(request: web.Request) -> web.StreamResponse:
    """The stored log of a finished attempt; the log so far of a running one."""
    stream = params.LOG.parse(request)["stream"]
    ctx = context(request)
    job_id, attempt, row = await _attempt(request)
    if row.state == "done":
        key = log_key(job_id, attempt, stream, row.log_key)
        response = await ctx.logs.stream(request, key, stream)
        if response is not None:
            return response
    if row.lab is None:
        raise ApiError(404, f"no {stream} log yet for attempt {attempt} of job {job_id}")
    # Running, or done a moment before the log writer stored the object.
    live = await read_live(ctx, job_id, attempt, row.lab, stream)
    if live.position is None and row.state == "done":
        raise ApiError(404, f"no {stream} log stored for attempt {attempt} of job {job_id}")
    headers = {"X-Wrtci-Log": "complete" if live.final else "live",
               "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
               "Content-Security-Policy": "default-src 'none'; sandbox"}
    if live.position is not None:
        headers["X-Wrtci-Log-Position"] = str(live.position)
    text = live.text + ("\n[wrtci: live view cut; the whole log is stored when the job ends]\n"
                        if live.cut else "")
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers=headers)


class Viewers:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.active: set[Follow] = set()

    async def close(self, app: web.Application) -> None:
        """On shutdown: end every live stream now (browsers reconnect to another replica)."""
        for follow in list(self.active):
            follow.close()


VIEWERS: web.AppKey[Viewers] = web.AppKey("live_log_viewers", Viewers)


def _event(kind: str, data: object, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: ".encode() + _json.encode(data) + b"\n\n"


async def live_log(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the log as it grows, the stage, the end."""
    query = params.LIVE_LOG.parse(request)
    ctx = context(request)
    stream = query["stream"]
    after = Position.parse(request.headers.get("Last-Event-ID") or query["after"])
    job_id, attempt, row = await _attempt(request)
    viewers = request.app[VIEWERS]
    if viewers.count >= viewers.limit:
        raise ApiError(503, "too many live log viewers, try again later")
    viewers.count += 1
    try:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"})
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")
        follow = Follow(ctx, response, job_id, attempt, stream)
        viewers.active.add(follow)
        try:
            with contextlib.suppress(ConnectionResetError):  # the viewer left
                await follow.run(row, after)
        finally:
            viewers.active.discard(follow)
        return response
    finally:
        viewers.count -= 1


class Follow:
    """One viewer's stream: log chunks and stages into one queue, out as events."""

    def __init__(self, ctx: ApiContext, response: web.StreamResponse, job_id: str,
                 attempt: int, stream: str) -> None:
        self.ctx, self.response = ctx, response
        self.job_id, self.attempt, self.stream = job_id, attempt, stream
        self.queue: asyncio.Queue[tuple] = asyncio.Queue(maxsize=1000)
        self.checked = self.last_write = time.monotonic()
        self.tasks: list[asyncio.Task] = []
        self.closing = False

    def close(self) -> None:
        self.closing = True
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(("shutdown",))

    async def _row(self) -> Attempt | None:
        async with self.ctx.db() as conn:
            return await attempt_row(conn, self.job_id, self.attempt)

    async def run(self, row: Attempt, after: Position | None) -> None:
        while row.lab is None:  # queued: no lab has started it yet
            if row.state == "done" or self.closing:
                await self.response.write(_event("end", {"state": row.state}))
                return
            await self.response.write(b": waiting for a lab\n\n")
            await asyncio.sleep(DB_CHECK_S)
            row = await self._row() or row
        if row.stage:  # the stored stage at once; the stream's newer ones follow
            await self.queue.put(("stage", row.stage))
        self.tasks = [asyncio.create_task(self._logs(row.lab, after)),
                      asyncio.create_task(self._stages(row.lab, row.stage_at or row.started_at))]
        try:
            while not self.closing and await self._step(await self.queue.get(), row.lab):
                pass
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _logs(self, lab: str, after: Position | None) -> None:
        order = Ordered(after)
        subject = self.ctx.subjects.log_chunk(lab, self.job_id)
        async for data in messages(self.ctx, self.ctx.subjects.logs_stream, subject,
                                    follow=True):
            chunk = chunk_of(data, self.job_id, self.attempt, lab, self.stream) if data else None
            for step in order.add(chunk) if chunk else [("tick",)]:
                await self.queue.put(step)
            if order.final:
                await self.queue.put(("final",))
                return

    async def _stages(self, lab: str, since: dt.datetime | None) -> None:
        subject = self.ctx.subjects.lab_event(lab, "job.progress")
        since = since or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        async for data in messages(self.ctx, self.ctx.subjects.events_stream, subject,
                                    follow=True, start=since):
            stage = stage_of(data, self.job_id, self.attempt)
            if stage:
                await self.queue.put(("stage", stage))

    async def _step(self, step: tuple, lab: str) -> bool:
        """Send what ``step`` says; False when the stream is over."""
        kind, now = step[0], time.monotonic()
        if kind == "text":
            await self.response.write(_event("text", step[2], str(step[1])))
        elif kind == "reset":
            await self.response.write(_event("reset", {"run": step[1]}))
        elif kind == "stage":
            await self.response.write(_event("stage", step[1]))
        elif kind == "final":
            await self.response.write(_event("end", {"state": "final"}))
            return False
        elif now - self.last_write >= KEEPALIVE_S:
            await self.response.write(b": keepalive\n\n")
        else:
            if now - self.checked >= DB_CHECK_S:
                self.checked = now
                current = await self._row()
                if current is None or current.state == "done" or current.lab != lab:
                    # Over without a final chunk (lab lost), or handed to another lab.
                    state = current.state if current is not None else "gone"
                    await self.response.write(_event("end", {"state": state}))
                    return False
            return True
        self.last_write = now
        return True


def add_routes(app: web.Application) -> None:
    app[VIEWERS] = Viewers(MAX_VIEWERS)
    app.on_shutdown.append(app[VIEWERS].close)
    # Before ``/api/v1/jobs/{job_id}``: a job id may itself contain "/".
    app.router.add_get(r"/api/v1/jobs/{job_id:.+}/attempts/{attempt:\d+}/log/live", live_log)
    app.router.add_get(r"/api/v1/jobs/{job_id:.+}/attempts/{attempt:\d+}/log", get_log)
