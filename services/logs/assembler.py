"""Putting a job's log back together from its chunks (pure logic, no I/O).

Chunks of one (job, attempt, stream) may arrive twice or out of order; the
``seq`` decides. A job handed back and run again starts its log over under a
new ``run`` number: the run that sends the final chunk is the log.
"""

from __future__ import annotations

import msgspec

from proto.events import LogChunkData


class LogKey(msgspec.Struct, frozen=True):
    job_id: str
    attempt: int
    stream: str


class RunLog:
    """The chunks of one run of one stream."""

    def __init__(self) -> None:
        self.chunks: dict[int, str] = {}
        self.final_seq: int | None = None

    def add(self, chunk: LogChunkData) -> bool:
        """Store the chunk; False if it was a duplicate."""
        if chunk.seq in self.chunks:
            return False
        self.chunks[chunk.seq] = chunk.text
        if chunk.final:
            self.final_seq = chunk.seq
        return True

    def contiguous(self) -> int:
        """How many chunks from seq 0 on are present without a gap."""
        count = 0
        while count in self.chunks:
            count += 1
        return count

    @property
    def complete(self) -> bool:
        return self.final_seq is not None and self.contiguous() > self.final_seq

    def text(self) -> str:
        """The log as far as it is known without gaps."""
        return "".join(self.chunks[seq] for seq in range(self.contiguous()))

    @property
    def size(self) -> int:
        return sum(len(text) for text in self.chunks.values())


class Assembler:
    """Every log being written, keyed by (job, attempt, stream) and run."""

    def __init__(self) -> None:
        self.logs: dict[LogKey, dict[int, RunLog]] = {}

    @staticmethod
    def key(chunk: LogChunkData) -> LogKey:
        return LogKey(chunk.job_id, chunk.attempt, chunk.stream)

    def add(self, chunk: LogChunkData) -> bool:
        runs = self.logs.setdefault(self.key(chunk), {})
        return runs.setdefault(chunk.run, RunLog()).add(chunk)

    def run_log(self, key: LogKey, run: int) -> RunLog | None:
        return self.logs.get(key, {}).get(run)

    def latest(self, key: LogKey) -> tuple[int, RunLog] | None:
        runs = self.logs.get(key)
        if not runs:
            return None
        run = max(runs)
        return run, runs[run]

    def forget(self, key: LogKey) -> None:
        self.logs.pop(key, None)
