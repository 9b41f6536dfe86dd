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

Each viewer costs an ordered (ephemeral) consumer per stream read, gone when
the viewer leaves; ``MAX_VIEWERS`` bounds them; shutdown ends every stream.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import AsyncIterator

import asyncpg
import msgspec
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from wrtci.proto.events import DecodeError, JobProgress, LogChunk, LogChunkData, decode
from wrtci.services.api.app import (
    ApiContext,
    ApiError,
)
from wrtci.services.db.rows import columns_of, fetch_row

log = logging.getLogger(__name__)

MAX_LIVE_BYTES = 32 * 1024 * 1024
"""A live read keeps at most this much of a log in memory (the stored object has it all)."""
MAX_VIEWERS = 200
KEEPALIVE_S = 15.0
TICK_S = 1.0
DB_CHECK_S = 2.0
_POSITION = re.compile(r"^(\d{1,9})\.(\d{1,9})$")



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
    stage: str | None = None
    """As the results service stored it from the lab's job.progress events."""
    stage_at: dt.datetime | None = None


async def attempt_row(conn: asyncpg.Connection, job_id: str, attempt: int) -> Attempt | None:
    return await fetch_row(conn, Attempt, f"""SELECT {columns_of(Attempt)} FROM job_attempts
                                              WHERE job_id = $1 AND attempt = $2""",
                           job_id, attempt)


# -- reading the streams ------------------------------------------------------------------


async def messages(ctx: ApiContext, stream: str, subject: str, *, follow: bool,
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


def chunk_of(data: bytes, job_id: str, attempt: int, lab: str,
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
    async for data in messages(ctx, ctx.subjects.logs_stream, subject, follow=False):
        chunk = chunk_of(data, job_id, attempt, lab, stream) if data else None
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


def stage_of(data: bytes | None, job_id: str, attempt: int) -> str | None:
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
