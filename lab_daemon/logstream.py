"""Console logs out of the lab: ordered chunks on the lab's LOGS subject.

Each (job, attempt, run, stream) numbers its chunks from 0. One sender task
publishes them strictly in order and retries a chunk until JetStream acks it,
keeping the same ``seq`` and event id: while NATS is away chunks wait in
memory, and a chunk published twice is dropped by JetStream's dedupe on
``Nats-Msg-Id`` (and ignored by the log writer, which keys on ``seq``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from pathlib import Path

from core.runtime import EventPublisher
from proto.events import LogChunk, LogChunkData

log = logging.getLogger(__name__)


def chunk_id(job_id: str, attempt: int, run: int, stream: str, seq: int) -> str:
    return f"log:{job_id}:{attempt}:{run}:{stream}:{seq}"


class ChunkSender:
    """Publishes queued chunks in order, each until acknowledged."""

    def __init__(self, publisher: EventPublisher, source: str,
                 retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)) -> None:
        self.publisher = publisher
        self.source = source
        self.retry_delays = retry_delays
        self._queue: asyncio.Queue[LogChunk] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.bytes_sent = 0

    def start(self) -> ChunkSender:
        self._task = asyncio.create_task(self._run(), name="log-sender")
        return self

    def put(self, data: LogChunkData) -> None:
        event = LogChunk.build(
            data, source=self.source,
            id=chunk_id(data.job_id, data.attempt, data.run, data.stream, data.seq),
            subject=data.job_id)
        self._queue.put_nowait(event)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            failures = 0
            while True:
                try:
                    await self.publisher.publish(event)
                    break
                except Exception as exc:  # any NATS failure: keep and resend
                    delay = self.retry_delays[min(failures, len(self.retry_delays) - 1)]
                    failures += 1
                    log.warning("log chunk not acknowledged, resending: %r", exc,
                                extra={"event_id": event.id, "retry_in_s": delay})
                    await asyncio.sleep(delay)
            self.sent += 1
            self.bytes_sent += len(event.data.text)
            self._queue.task_done()

    async def drain(self, within_s: float) -> bool:
        """Wait until every queued chunk is acknowledged; False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), within_s)
            return True
        except TimeoutError:
            return False

    async def close(self, within_s: float = 0.0) -> None:
        """Stop sending once the backlog is acknowledged, or after ``within_s``."""
        if within_s > 0 and not await self.drain(within_s):
            log.error("log chunks dropped: not acknowledged within %.0f s", within_s,
                      extra={"backlog": self.backlog})
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class LogStream:
    """One numbered stream of text (the console, or an artifact file)."""

    def __init__(self, sender: ChunkSender, *, job_id: str, attempt: int, run: int, lab: str,
                 device: str, stream: str = "console", chunk_chars: int = 64 * 1024) -> None:
        self.sender = sender
        self.job_id = job_id
        self.attempt = attempt
        self.run = run
        self.lab = lab
        self.device = device
        self.stream = stream
        # Characters, not bytes: even escaped as JSON a chunk stays far below
        # NATS's 1 MB payload limit at the default 64 Ki.
        self.chunk_chars = chunk_chars
        self._buffer: list[str] = []
        self._buffered = 0
        self.seq = 0
        self.finished = False

    def write(self, text: str) -> None:
        if self.finished:
            raise RuntimeError(f"log stream {self.stream} of {self.job_id} is finished")
        if not text:
            return
        self._buffer.append(text)
        self._buffered += len(text)
        while self._buffered >= self.chunk_chars:
            joined = "".join(self._buffer)
            self._emit(joined[: self.chunk_chars], final=False)
            rest = joined[self.chunk_chars:]
            self._buffer = [rest] if rest else []
            self._buffered = len(rest)

    def flush(self) -> None:
        if self._buffered:
            self._emit("".join(self._buffer), final=False)
            self._buffer, self._buffered = [], 0

    def finish(self) -> None:
        """Send what is buffered as the final chunk (possibly empty)."""
        if self.finished:
            return
        text = "".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self._emit(text, final=True)
        self.finished = True

    def _emit(self, text: str, final: bool) -> None:
        self.sender.put(LogChunkData(
            job_id=self.job_id, attempt=self.attempt, lab=self.lab, device=self.device,
            seq=self.seq, text=text, final=final, stream=self.stream, run=self.run))
        self.seq += 1


class FileTailer:
    """New text appended to a file since the last poll (the file may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def poll(self, max_bytes: int = 8 * 1024 * 1024) -> str:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(max_bytes)
        except FileNotFoundError:
            return ""
        self.offset += len(data)
        return self._decoder.decode(data)

    def rest(self) -> str:
        text = ""
        while chunk := self.poll():
            text += chunk
        return text + self._decoder.decode(b"", final=True)
