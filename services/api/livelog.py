"""Console logs while the job runs: read from the LOGS stream, not from storage.

The lab sends its console (and ``pytest.log``) as numbered chunks about once a
second on ``<prefix>.lab.<lab>.logs.<job>``; the log writer stores the object
only when the final chunk arrives. So for a running attempt the API reads the
chunks itself, from the subject of the lab that holds the attempt (chunks any
other lab sends for the job are never read):

- ``GET …/attempts/{n}/log`` answers with the log so far (``X-Wrtci-Log: live``)
  while the attempt runs, and with the stored object once it is done;
- ``GET …/attempts/{n}/log/live`` is a Server-Sent-Events stream: ``text``
  events (id ``RUN.SEQ``, data the JSON string of the chunk) as chunks arrive,
  ``reset`` when the lab starts the job over (a new run), ``stage`` when the
  lab reports a stage, ``end`` when the attempt is over. ``?after=RUN.SEQ`` or
  ``Last-Event-ID`` resumes after what the client already has.

Each viewer costs one ordered (ephemeral, flow-controlled) consumer per stream
read, gone when the viewer leaves; a semaphore bounds the number of viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import AsyncIterator

import asyncpg
import msgspec
from aiohttp import web
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from proto.events import DecodeError, JobProgress, LogChunk, LogChunkData, decode
from services.api.app import (
    ApiContext,
    ApiError,
    context,
    known_params,
    path_int,
)
from services.api.logs import STREAM_NAME, log_key

log = logging.getLogger(__name__)

MAX_LIVE_BYTES = 32 * 1024 * 1024
"""A live read keeps at most this much of a log in memory (the stored object has it all)."""
MAX_VIEWERS = 200
KEEPALIVE_S = 15.0
TICK_S = 1.0
DB_CHECK_S = 2.0
_POSITION = re.compile(r"^(\d{1,9})\.(\d{1,9})$")
_json = msgspec.json.Encoder()


class Position(msgspec.Struct, frozen=True):
    """The last chunk a reader has: ``run`` and ``seq``."""

    run: int
    seq: int

    def __str__(self) -> str:
        return f"{self.run}.{self.seq}"

    @classmethod
    def parse(cls, raw: str | None) -> Position | None:
        if not raw:
            return None
        match = _POSITION.match(raw)
        if match is None:
            raise ApiError(400, "after must be RUN.SEQ, e.g. 1.42")
        return cls(int(match[1]), int(match[2]))


class Ordered:
    """Chunks of one stream in ``seq`` order, latest run only (pure logic).

    ``add`` returns what a reader should do: ``("reset", run)`` when a newer
    run starts, then ``("text", Position, text)`` for each chunk now in order.
    Duplicates and older runs give nothing; a chunk after a gap waits for it.
    """

    def __init__(self, after: Position | None = None) -> None:
        self.run = after.run if after else None
        self.next_seq = after.seq + 1 if after else 0
        self.waiting: dict[int, LogChunkData] = {}
        self.final = False

    def add(self, chunk: LogChunkData) -> list[tuple]:
        out: list[tuple] = []
        if self.run is None or chunk.run > self.run:
            if self.run is not None:
                out.append(("reset", chunk.run))
            self.run, self.next_seq, self.waiting, self.final = chunk.run, 0, {}, False
        if chunk.run < self.run or chunk.seq < self.next_seq:
            return out
        self.waiting[chunk.seq] = chunk
        while self.next_seq in self.waiting:
            ready = self.waiting.pop(self.next_seq)
            out.append(("text", Position(ready.run, ready.seq), ready.text))
            self.final = self.final or ready.final
            self.next_seq += 1
        return out


class Attempt(msgspec.Struct, kw_only=True):
    state: str
    lab: str | None
    log_key: str | None
    started_at: dt.datetime | None


async def attempt_row(conn: asyncpg.Connection, job_id: str, attempt: int) -> Attempt | None:
    row = await conn.fetchrow(
        """SELECT state, lab, log_key, started_at FROM job_attempts
            WHERE job_id = $1 AND attempt = $2""", job_id, attempt)
    return None if row is None else msgspec.convert(dict(row), Attempt)


# -- reading the streams ------------------------------------------------------------------


async def _messages(ctx: ApiContext, stream: str, subject: str, *, follow: bool,
                    start: dt.datetime | None = None) -> AsyncIterator[bytes | None]:
    """The stored messages of ``subject`` in order; then (``follow``) new ones as they
    come, with ``None`` after each quiet ``TICK_S``. Without ``follow`` it ends at the
    last message the stream had when the read began."""
    last = None
    if not follow:
        try:
            last = (await ctx.js.get_last_msg(stream, subject)).seq
        except NotFoundError:
            return
    if start is None:
        sub = await ctx.js.subscribe(subject, stream=stream, ordered_consumer=True,
                                     deliver_policy=DeliverPolicy.ALL)
    else:
        sub = await ctx.js.subscribe(subject, stream=stream, ordered_consumer=True,
                                     config=ConsumerConfig(
                                         deliver_policy=DeliverPolicy.BY_START_TIME,
                                         opt_start_time=start.isoformat()))
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=TICK_S)
            except TimeoutError:
                if not follow:
                    return  # the stream lost messages (limits) since get_last_msg
                yield None
                continue
            yield msg.data
            if last is not None and msg.metadata.sequence.stream >= last:
                return
    finally:
        await sub.unsubscribe()


def _chunk(data: bytes, job_id: str, attempt: int, lab: str,
           stream: str) -> LogChunkData | None:
    try:
        event = decode(data)
    except DecodeError:
        return None
    if not isinstance(event, LogChunk):
        return None
    chunk = event.data
    if (chunk.job_id, chunk.attempt, chunk.lab, chunk.stream) != (job_id, attempt, lab, stream):
        return None
    return chunk


class LiveText(msgspec.Struct, kw_only=True):
    text: str
    position: Position | None
    final: bool
    cut: bool = False


async def read_live(ctx: ApiContext, job_id: str, attempt: int, lab: str,
                    stream: str = "console", max_bytes: int = MAX_LIVE_BYTES) -> LiveText:
    """The log so far from the LOGS stream (latest run, up to ``max_bytes``)."""
    order, parts, size, position, cut = Ordered(), [], 0, None, False
    subject = ctx.subjects.log_chunk(lab, job_id)
    async for data in _messages(ctx, ctx.subjects.logs_stream, subject, follow=False):
        chunk = _chunk(data, job_id, attempt, lab, stream) if data else None
        if chunk is None:
            continue
        for step in order.add(chunk):
            if step[0] == "reset":
                parts, size, cut = [], 0, False
            elif size + len(step[2]) <= max_bytes:
                parts.append(step[2])
                size += len(step[2])
                position = step[1]
            else:
                cut = True
    return LiveText(text="".join(parts), position=position, final=order.final, cut=cut)


async def current_stage(ctx: ApiContext, job_id: str, attempt: int, lab: str,
                        since: dt.datetime | None) -> str | None:
    """The stage of the latest ``job.progress`` the lab sent for this attempt."""
    stage = None
    subject = ctx.subjects.lab_event(lab, "job.progress")
    async for data in _messages(ctx, ctx.subjects.events_stream, subject, follow=False,
                                start=since or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)):
        stage = _stage_of(data, job_id, attempt) or stage
    return stage


def _stage_of(data: bytes | None, job_id: str, attempt: int) -> str | None:
    if not data:
        return None
    try:
        event = decode(data)
    except DecodeError:
        return None
    if isinstance(event, JobProgress) and (event.data.job_id, event.data.attempt) == (
            job_id, attempt):
        return event.data.stage
    return None


# -- HTTP ---------------------------------------------------------------------------------


def _stream_param(request: web.Request) -> str:
    stream = request.query.get("stream", "console")
    if not STREAM_NAME.match(stream):
        raise ApiError(400, "stream must be a file name such as console or junit.xml")
    return stream


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
    known_params(request, "stream")
    ctx = context(request)
    stream = _stream_param(request)
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


VIEWERS: web.AppKey[Viewers] = web.AppKey("live_log_viewers", Viewers)


def _event(kind: str, data: object, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: ".encode() + _json.encode(data) + b"\n\n"


async def live_log(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the log as it grows, the stage, the end."""
    known_params(request, "stream", "after")
    ctx = context(request)
    stream = _stream_param(request)
    after = Position.parse(request.headers.get("Last-Event-ID")
                           or request.query.get("after"))
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
        with contextlib.suppress(ConnectionResetError):  # the viewer left
            await Follow(ctx, response, job_id, attempt, stream).run(row, after)
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

    async def _row(self) -> Attempt | None:
        async with self.ctx.db() as conn:
            return await attempt_row(conn, self.job_id, self.attempt)

    async def run(self, row: Attempt, after: Position | None) -> None:
        while row.lab is None:  # queued: no lab has started it yet
            if row.state == "done":
                await self.response.write(_event("end", {"state": row.state}))
                return
            await self.response.write(b": waiting for a lab\n\n")
            await asyncio.sleep(DB_CHECK_S)
            row = await self._row() or row
        tasks = [asyncio.create_task(self._logs(row.lab, after)),
                 asyncio.create_task(self._stages(row.lab, row.started_at))]
        try:
            while await self._step(await self.queue.get(), row.lab):
                pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _logs(self, lab: str, after: Position | None) -> None:
        order = Ordered(after)
        subject = self.ctx.subjects.log_chunk(lab, self.job_id)
        async for data in _messages(self.ctx, self.ctx.subjects.logs_stream, subject,
                                    follow=True):
            chunk = _chunk(data, self.job_id, self.attempt, lab, self.stream) if data else None
            for step in order.add(chunk) if chunk else [("tick",)]:
                await self.queue.put(step)
            if order.final:
                await self.queue.put(("final",))
                return

    async def _stages(self, lab: str, since: dt.datetime | None) -> None:
        subject = self.ctx.subjects.lab_event(lab, "job.progress")
        since = since or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        async for data in _messages(self.ctx, self.ctx.subjects.events_stream, subject,
                                    follow=True, start=since):
            stage = _stage_of(data, self.job_id, self.attempt)
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
    # Before ``/api/v1/jobs/{job_id}``: a job id may itself contain "/".
    app.router.add_get(r"/api/v1/jobs/{job_id:.+}/attempts/{attempt:\d+}/log/live", live_log)
    app.router.add_get(r"/api/v1/jobs/{job_id:.+}/attempts/{attempt:\d+}/log", get_log)
