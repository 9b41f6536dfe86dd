"""Console logs out of the lab: ordered chunks on the lab's LOGS subject.

Each (job, attempt, run, stream) numbers its chunks from 0. One sender task
publishes them strictly in order and resends a chunk until JetStream acks it
(``core.retry``), keeping the same ``seq`` and event id: a chunk published
twice is dropped by JetStream's dedupe on ``Nats-Msg-Id`` (and ignored by the
log writer, which keys on ``seq``).

While NATS is away chunks wait: in memory up to ``memory_bytes``, then in a
spill file (under ``spill_dir``, unlinked at once so nothing is left behind)
up to ``spill_bytes``. A chunk that fits in neither is dropped before it gets
a ``seq`` (so the log has no gap the writer would wait for): the next chunk
that fits starts with a marker line saying how many bytes are missing there,
and the stream's final chunk — always sent — carries the stream's total in
``dropped_bytes``, which the log writer records on the stored log.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from wrtci.core.retry import Backoff, retry_call
from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import LogChunk, LogChunkData, decode_as, encode

log = logging.getLogger(__name__)

ITEM_OVERHEAD = 256
"""Bytes of memory a queued chunk costs beyond its text."""
_LENGTH = 4
"""A spilled chunk is its length (4 bytes, big-endian) and its encoded event."""


def chunk_id(job_id: str, attempt: int, run: int, stream: str, seq: int) -> str:
    """A chunk's id without the lab's key (the lab daemon passes ``EventIds.chunk``)."""
    return f"log:{job_id}:{attempt}:{run}:{stream}:{seq}"


def dropped_marker(size: int) -> str:
    return (f"\n[wrtci-lab: {size} bytes of this log were dropped here: NATS was away "
            "longer than the lab's log buffer holds]\n")


class ChunkSender:
    """Publishes queued chunks in order, each until acknowledged, within a bound.

    The queue is a head in memory and, once memory is full, a tail in the
    spill file (read back in order): a chunk goes to memory only while
    nothing waits on disk, so the order is kept and memory holds no index.
    """

    def __init__(self, publisher: EventPublisher, source: str,
                 retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0), *,
                 memory_bytes: int = 8 * 1024 * 1024, spill_dir: Path | None = None,
                 spill_bytes: int = 256 * 1024 * 1024,
                 event_id: Callable[[str, int, int, str, int], str] = chunk_id) -> None:
        self.publisher = publisher
        self.event_id = event_id
        """(job, attempt, run, stream, seq) -> the chunk's id (see ``event_ids.py``)."""
        self.source = source
        self.backoff = Backoff(steps_s=tuple(retry_delays), jitter=0.0)
        self.memory_limit = memory_bytes
        self.spill_dir = spill_dir
        self.spill_limit = spill_bytes
        self._items: deque[LogChunk] = deque()
        self._memory = 0
        self._spill: BinaryIO | None = None
        self._spill_size = 0
        self._spill_read = 0
        self._spilled_items = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.bytes_sent = 0
        self.dropped_bytes = 0
        self.dropped_chunks = 0

    def start(self) -> ChunkSender:
        self._task = asyncio.create_task(self._run(), name="log-sender")
        return self

    def _event(self, data: LogChunkData) -> LogChunk:
        return LogChunk.build(
            data, source=self.source,
            id=self.event_id(data.job_id, data.attempt, data.run, data.stream, data.seq),
            subject=data.job_id)

    def _fits_memory(self, text_bytes: int) -> bool:
        return not self._spilled_items and \
            self._memory + text_bytes + ITEM_OVERHEAD <= self.memory_limit

    def _fits_disk(self, payload_bytes: int) -> bool:
        return self._spill_size + _LENGTH + payload_bytes <= self.spill_limit

    def room(self, text_bytes: int) -> bool:
        """Whether a chunk with this much text would be kept (in memory or on disk)."""
        # An event's envelope (ids, names, time) is well under ITEM_OVERHEAD bytes.
        return self._fits_memory(text_bytes) or self._fits_disk(text_bytes + ITEM_OVERHEAD)

    def put(self, data: LogChunkData, *, force: bool = False,
            log_bytes: int | None = None) -> bool:
        """Queue the chunk; False if it was dropped because the buffer is full.

        ``force`` (a stream's final chunk) queues it whatever the bound — one
        chunk per stream, and without it the log would never be closed.
        ``log_bytes``: what a drop loses of the log (the text without a marker line).
        """
        event = self._event(data)
        text_bytes = len(data.text.encode())
        if self._fits_memory(text_bytes) or (force and not self._spilled_items):
            self._memory += text_bytes + ITEM_OVERHEAD
            self._items.append(event)
            self._queued()
            return True
        payload = encode(event)
        if self._fits_disk(len(payload)) or force:
            try:
                self._write_spill(payload)
                self._queued()
                return True
            except OSError as exc:  # a full disk: the chunk is dropped, counted below
                log.error("log chunk not spilled to disk: %r", exc)
                if force:  # the final chunk goes anyway; the writer reorders by seq
                    self._memory += text_bytes + ITEM_OVERHEAD
                    self._items.append(event)
                    self._queued()
                    return True
        if not self.dropped_chunks:
            log.warning("log buffer full while NATS is away: dropping log text",
                        extra={"job_id": data.job_id, "memory_bytes": self._memory,
                               "spilled_bytes": self._spill_size})
        self.dropped_chunks += 1
        self.dropped_bytes += text_bytes if log_bytes is None else log_bytes
        return False

    def _queued(self) -> None:
        self._idle.clear()
        self._wakeup.set()

    def _write_spill(self, payload: bytes) -> None:
        if self._spill is None:
            if self.spill_dir is not None:
                self.spill_dir.mkdir(parents=True, exist_ok=True)
            # Unlinked at once: nothing is left behind, however the lab ends.
            self._spill = tempfile.TemporaryFile(dir=self.spill_dir, prefix="log-chunks-")  # noqa: SIM115
        self._spill.seek(self._spill_size)
        self._spill.write(len(payload).to_bytes(_LENGTH, "big") + payload)
        self._spill_size += _LENGTH + len(payload)
        self._spilled_items += 1

    def _peek_spill(self) -> tuple[LogChunk, int]:
        """The oldest spilled chunk and where the next one starts."""
        if self._spill is None:
            raise RuntimeError("log stream: no spilled chunk to read")
        self._spill.seek(self._spill_read)
        size = int.from_bytes(self._spill.read(_LENGTH), "big")
        event = decode_as(self._spill.read(size), LogChunk)
        return event, self._spill_read + _LENGTH + size

    @property
    def backlog(self) -> int:
        return len(self._items) + self._spilled_items

    @property
    def buffered(self) -> tuple[int, int]:
        """Bytes queued in memory and in the spill file now."""
        return self._memory, self._spill_size - self._spill_read

    async def _run(self) -> None:
        while True:
            while not self.backlog:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            on_disk = not self._items
            try:
                event, next_read = self._peek_spill() if on_disk else (self._items[0], 0)
            except (OSError, ValueError) as exc:  # the spill file is unreadable
                self._lose_spill(exc)
                continue
            await retry_call("NATS (log chunks)", self.publisher.publish, event,
                             stop=self._stop, backoff=self.backoff, logger=log)
            if on_disk:
                self._spill_read = next_read
                self._spilled_items -= 1
                if not self._spilled_items:  # all sent: the file starts over
                    self._spill_size = self._spill_read = 0
                    self._spill.truncate(0)  # type: ignore[union-attr]
            else:
                self._items.popleft()
                self._memory -= len(event.data.text.encode()) + ITEM_OVERHEAD
            self.sent += 1
            self.bytes_sent += len(event.data.text)

    def _lose_spill(self, exc: BaseException) -> None:
        lost = self._spill_size - self._spill_read
        log.error("spilled log chunks unreadable, dropped: %r", exc,
                  extra={"chunks": self._spilled_items, "bytes": lost})
        self.dropped_chunks += self._spilled_items
        self.dropped_bytes += lost
        self._spilled_items = self._spill_size = self._spill_read = 0
        with contextlib.suppress(OSError):
            self._spill.truncate(0)  # type: ignore[union-attr]

    async def drain(self, within_s: float) -> bool:
        """Wait until every queued chunk is acknowledged; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), within_s)
            return True
        except TimeoutError:
            return False

    async def close(self, within_s: float = 0.0) -> None:
        """Stop sending once the backlog is acknowledged, or after ``within_s``."""
        if within_s > 0 and not await self.drain(within_s):
            log.error("log chunks dropped: not acknowledged within %.0f s", within_s,
                      extra={"backlog": self.backlog})
        if self.dropped_bytes:
            log.warning("log text dropped while NATS was away: %d bytes in %d chunks",
                        self.dropped_bytes, self.dropped_chunks)
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._spill is not None:
            self._spill.close()
            self._spill = None


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
        self.dropped_bytes = 0
        """Text of this stream the sender had no room for (NATS away too long)."""
        self._gap = 0
        """Bytes dropped since the last chunk that was queued: its marker is owed."""

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
        size = len(text.encode())
        marker = dropped_marker(self._gap) if self._gap else ""
        if final and not self.sender.room(len(marker.encode()) + size):
            # The final chunk is always sent (it closes the log); its text may not fit.
            self._gap += size
            self.dropped_bytes += size
            self.sender.dropped_bytes += size
            marker, text = dropped_marker(self._gap), ""
        data = LogChunkData(
            job_id=self.job_id, attempt=self.attempt, lab=self.lab, device=self.device,
            seq=self.seq, text=marker + text, final=final, stream=self.stream, run=self.run,
            dropped_bytes=self.dropped_bytes if final else 0)
        if not self.sender.put(data, force=final, log_bytes=size):
            self._gap += size
            self.dropped_bytes += size
            return
        self._gap = 0
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
