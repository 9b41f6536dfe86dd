"""Putting a job's log back together from its chunks (no network I/O).

Chunks of one (job, attempt, stream) may arrive twice or out of order; the
``seq`` decides. A job handed back and run again starts its log over under a
new ``run`` number: the run that sends the final chunk is the log. Chunk text
is kept by a :class:`~services.logs.buffer.ChunkBuffer` (memory, then disk,
within bounds).
"""

from __future__ import annotations

import msgspec

from wrtci.proto.events import LogChunkData
from wrtci.proto.storage import HEALTH_LOG_PREFIX
from wrtci.services.logs.buffer import ChunkBuffer, RunLogStorage


class LogKey(msgspec.Struct, frozen=True):
    job_id: str
    attempt: int
    stream: str
    lab: str = ""
    """Only for a health check's log (stored under its lab); a job's log is the
    job attempt's whichever lab sends it."""


class RunLog(RunLogStorage):
    """The chunks of one run of one stream."""

    def __init__(self, buffer: ChunkBuffer) -> None:
        super().__init__(buffer)
        self.final_seq: int | None = None
        self.lab_dropped = 0
        """Bytes the lab dropped while NATS was away (its final chunk says)."""

    def add(self, chunk: LogChunkData) -> bool:
        """Store the chunk; False if it was a duplicate."""
        if chunk.seq in self.pieces:
            return False
        self.pieces[chunk.seq] = self.buffer.place(
            self, chunk.text.encode("utf-8", errors="replace"))
        if chunk.final:
            self.final_seq = chunk.seq
            self.lab_dropped = chunk.dropped_bytes
        return True

    @property
    def complete(self) -> bool:
        return self.final_seq is not None and self.contiguous() > self.final_seq

    @property
    def truncated_bytes(self) -> int:
        """Bytes missing from the stored log: dropped here or by the lab."""
        return self.dropped + self.lab_dropped

    def text(self) -> str:
        """The log as far as it is known without gaps."""
        return self.data().decode("utf-8", errors="replace")


class Assembler:
    """Every log being written, keyed by (job, attempt, stream) and run."""

    def __init__(self, buffer: ChunkBuffer | None = None) -> None:
        self.buffer = buffer or ChunkBuffer()
        self.logs: dict[LogKey, dict[int, RunLog]] = {}

    @staticmethod
    def key(chunk: LogChunkData) -> LogKey:
        if chunk.job_id.startswith(HEALTH_LOG_PREFIX):
            return LogKey(chunk.job_id, chunk.attempt, chunk.stream, chunk.lab)
        return LogKey(chunk.job_id, chunk.attempt, chunk.stream)

    def add(self, chunk: LogChunkData) -> bool:
        runs = self.logs.setdefault(self.key(chunk), {})
        run_log = runs.get(chunk.run)
        if run_log is None:
            run_log = runs[chunk.run] = RunLog(self.buffer)
        return run_log.add(chunk)

    def run_log(self, key: LogKey, run: int) -> RunLog | None:
        return self.logs.get(key, {}).get(run)

    def latest(self, key: LogKey) -> tuple[int, RunLog] | None:
        runs = self.logs.get(key)
        if not runs:
            return None
        run = max(runs)
        return run, runs[run]

    def forget(self, key: LogKey) -> None:
        for run_log in self.logs.pop(key, {}).values():
            run_log.release()

    def forget_all(self) -> None:
        for key in list(self.logs):
            self.forget(key)
