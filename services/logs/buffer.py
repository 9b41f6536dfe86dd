"""Where the log writer keeps chunks until a log is stored: memory, then disk, within bounds.

The writer holds the chunks of every running job's log until its final chunk
arrives and the log is stored (while S3 is away, until it is back). So that
an outage, or one endless console, cannot grow the process without bound,
chunk text lives in memory up to ``memory_bytes`` (all logs together), then
in one spill file per log under ``spill_dir`` up to ``spill_bytes``. A chunk
that fits in neither is dropped: its place in the log is kept (the log still
completes) and counted, and the stored log says so — a marker line where the
text is missing, and the object's ``wrtci-dropped-bytes`` metadata.

Spill files live in a directory of this process's own, locked while it runs;
one left by a writer that was killed is removed by the next writer to start.
The LOGS stream stays the source of truth: nothing here needs to survive.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import itertools
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from wrtci.proto.records import LogBufferFigures

log = logging.getLogger(__name__)

CHUNK_OVERHEAD = 128
"""Bytes of memory a chunk costs beyond its text (its record and index entry)."""

DROPPED_HEADER = "wrtci-dropped-bytes"
"""Object metadata (``x-amz-meta-wrtci-dropped-bytes``) on a log that is not complete."""


def dropped_marker(size: int) -> bytes:
    return (f"\n[wrtci: {size} bytes of this log were dropped here: the log writer's "
            "buffer was full]\n").encode()


class Spilled(msgspec.Struct, frozen=True):
    offset: int
    size: int


class Dropped(msgspec.Struct, frozen=True):
    size: int


Piece = bytes | Spilled | Dropped


class SpillFile:
    """One log's chunks on disk, appended in arrival order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0

    def append(self, data: bytes) -> Spilled:
        with open(self.path, "ab") as handle:
            handle.write(data)
        spilled = Spilled(self.size, len(data))
        self.size += len(data)
        return spilled

    def read(self, piece: Spilled) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(piece.offset)
            data = handle.read(piece.size)
        if len(data) != piece.size:
            raise OSError(f"spill file {self.path} is shorter than expected")
        return data

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class SpillDir:
    """This process's directory under ``root``, held by a lock while it lives."""

    STALE_UNLOCKED_S = 60.0

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="writer-", dir=root))
        self._lock = open(self.path / ".lock", "w")  # noqa: SIM115 - held for the process
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._names = itertools.count()
        removed = remove_stale(root, keep=self.path)
        if removed:
            log.info("removed %d spill directories of writers that are gone", removed,
                     extra={"spill_dir": str(root)})

    def new_file(self) -> SpillFile:
        return SpillFile(self.path / f"{next(self._names)}.spill")

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()


def remove_stale(root: Path, keep: Path) -> int:
    """Remove the spill directories whose writer is gone (their lock is free)."""
    removed = 0
    for path in root.glob("writer-*"):
        if path == keep or not path.is_dir():
            continue
        lock = path / ".lock"
        try:
            with open(lock, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer's
        except FileNotFoundError:  # just made by a writer starting now, or left half made
            try:
                if time.time() - path.stat().st_mtime < SpillDir.STALE_UNLOCKED_S:
                    continue
            except FileNotFoundError:
                continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


class ChunkBuffer:
    """The bounds shared by every log in the writer, and what was dropped."""

    def __init__(self, memory_bytes: int = 2**62, spill_dir: Path | None = None,
                 spill_bytes: int = 0) -> None:
        self.memory_limit = memory_bytes
        self.spill_root = spill_dir
        self.spill_limit = spill_bytes if spill_dir is not None else 0
        self.stats = LogBufferFigures()
        self._spill_dir: SpillDir | None = None

    def _dir(self) -> SpillDir:
        if self._spill_dir is None:
            if self.spill_root is None:
                raise RuntimeError("log buffer: spilling to disk with no spill directory")
            self._spill_dir = SpillDir(self.spill_root)
        return self._spill_dir

    def place(self, owner: RunLogStorage, data: bytes) -> Piece:
        """Keep ``data`` in memory, else on disk, else drop it (counted)."""
        stats = self.stats
        stats.memory_bytes += CHUNK_OVERHEAD
        if stats.memory_bytes + len(data) <= self.memory_limit:
            stats.memory_bytes += len(data)
            return data
        if stats.spilled_bytes + len(data) <= self.spill_limit:
            try:
                if owner.spill is None:
                    owner.spill = self._dir().new_file()
                piece = owner.spill.append(data)
            except OSError as exc:  # a full or broken disk: count it as dropped
                log.error("log chunk not spilled to disk: %r", exc)
            else:
                stats.spilled_bytes += len(data)
                return piece
        stats.dropped_bytes += len(data)
        stats.dropped_chunks += 1
        return Dropped(len(data))

    def release(self, owner: RunLogStorage) -> None:
        for piece in owner.pieces.values():
            self.stats.memory_bytes -= CHUNK_OVERHEAD
            if isinstance(piece, bytes):
                self.stats.memory_bytes -= len(piece)
        owner.pieces.clear()
        if owner.spill is not None:
            self.stats.spilled_bytes -= owner.spill.size
            owner.spill.delete()
            owner.spill = None

    def close(self) -> None:
        if self._spill_dir is not None:
            self._spill_dir.close()
            self._spill_dir = None


class RunLogStorage:
    """The pieces of one log by ``seq``; the base of :class:`~services.logs.assembler.RunLog`."""

    def __init__(self, buffer: ChunkBuffer) -> None:
        self.buffer = buffer
        self.pieces: dict[int, Piece] = {}
        self.spill: SpillFile | None = None

    def contiguous(self) -> int:
        """How many pieces from seq 0 on are present without a gap."""
        count = 0
        while count in self.pieces:
            count += 1
        return count

    @property
    def dropped(self) -> int:
        return sum(p.size for p in self.pieces.values() if isinstance(p, Dropped))

    def parts(self) -> list[bytes | Spilled]:
        """The log as far as it is known without gaps; dropped runs become one marker."""
        parts: list[bytes | Spilled] = []
        gap = 0
        for seq in range(self.contiguous()):
            piece = self.pieces[seq]
            if isinstance(piece, Dropped):
                gap += piece.size
                continue
            if gap:
                parts.append(dropped_marker(gap))
                gap = 0
            parts.append(piece)
        if gap:
            parts.append(dropped_marker(gap))
        return parts

    def reader(self) -> tuple[PartsReader, int]:
        """A file-like reader over the log and its length, reading spilled parts lazily."""
        parts = self.parts()
        length = sum(len(p) if isinstance(p, bytes) else p.size for p in parts)
        return PartsReader(parts, self.spill), length

    def data(self) -> bytes:
        reader, _ = self.reader()
        return reader.read()

    def release(self) -> None:
        self.buffer.release(self)


class PartsReader(io.RawIOBase):
    """``read(n)`` over in-memory and spilled parts, as the S3 client reads a stream."""

    def __init__(self, parts: list[bytes | Spilled], spill: SpillFile | None) -> None:
        super().__init__()
        self._parts: Iterator[bytes | Spilled] = iter(parts)
        self._spill = spill
        self._current = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        for part in self._parts:
            if isinstance(part, Spilled):
                if self._spill is None:
                    raise RuntimeError("log buffer: a spilled part with no spill directory")
                part = self._spill.read(part)
            if part:
                self._current, self._offset = part, 0
                return True
        return False

    def read(self, size: int | None = -1) -> bytes:
        out = bytearray()
        while size is None or size < 0 or len(out) < size:
            if self._offset >= len(self._current) and not self._next():
                break
            want = len(self._current) - self._offset
            if size is not None and size >= 0:
                want = min(want, size - len(out))
            out += self._current[self._offset:self._offset + want]
            self._offset += want
        return bytes(out)

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
