"""The log writer: console logs and artifacts from the LOGS stream into object storage.

Labs stream each job's console log (and small text artifacts such as
``junit.xml``) as ordered ``log.chunk`` events; this service assembles each
(job, attempt, stream) and writes it at ``proto.storage.job_log_key`` when the
final chunk arrives. While a job runs, the console log so far is rewritten
every ``partial_interval_s`` for people watching. Chunks are acked as soon as
they are seen: the LOGS stream keeps them for days, and a final chunk whose
log is not complete in memory (after a restart, or out of order) rebuilds it
from the stream. So the service keeps no state of its own and replicas may
share the consumer.

Memory is bounded (``services/logs/buffer.py``): chunk text beyond
``memory_bytes`` goes to spill files under ``spill_dir`` up to
``spill_bytes``; beyond that it is dropped, counted, and the stored log is
marked as truncated. Each writer's figures are in the control bucket
(``wrtci logs status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path

import asyncpg
import msgspec
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from wrtci.core.retry import sleep_or_stop
from wrtci.core.runtime import Daemon, check_all, check_nats
from wrtci.core.swallow import logged
from wrtci.proto.events import DecodeError, LogChunk, LogChunkData, decode
from wrtci.proto.limits import Size
from wrtci.proto.records import LogWriterRecord, encode_record
from wrtci.proto.storage import health_log_key, job_log_key, parse_health_log_id
from wrtci.proto.subjects import Subjects
from wrtci.proto.topology import service_consumer
from wrtci.services import db
from wrtci.services.config import ServiceConfig
from wrtci.services.consume import MsgMeta, Pull, Reject, Retry, consume
from wrtci.services.identity import attempt_holder, count_rejection
from wrtci.services.logs.assembler import Assembler, LogKey, RunLog
from wrtci.services.logs.buffer import ChunkBuffer
from wrtci.services.logs.health import DeviceUnknown, HealthDevices
from wrtci.services.logs.store import LogStore
from wrtci.services.storage import content_type

log = logging.getLogger(__name__)


class LogsSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    durable: str = "logs-writer"
    partial_interval_s: float = 5.0
    """How often the console log of a running job is rewritten for live viewing."""
    forget_after_s: float = 3600.0
    """A log that got no chunk for this long (a run that was handed back) is dropped."""
    rebuild_timeout_s: float = 30.0
    check_holder: bool = True
    """Store a chunk only if its lab holds the job attempt in the job record.
    Off only for a log writer without a wrtci database (tests of a lab alone);
    the sender must still be the lab named in the subject."""
    memory_bytes: Size = 256 * 1024 * 1024
    """Chunk text kept in memory, all logs together; beyond it chunks spill to disk."""
    spill_dir: str = ""
    """Where chunks spill (empty: ``wrtci-logs-spill`` in the system's temp directory)."""
    spill_bytes: Size = 4 * 1024 * 1024 * 1024
    """Bytes on disk at most; chunks beyond it are dropped and counted (0: no spilling)."""

    def buffer(self) -> ChunkBuffer:
        spill_dir = Path(self.spill_dir or Path(tempfile.gettempdir()) / "wrtci-logs-spill")
        return ChunkBuffer(self.memory_bytes, spill_dir if self.spill_bytes else None,
                           self.spill_bytes)


STATUS_KEY_PREFIX = "logs-writer."


def writer_name() -> str:
    """This writer's name in the control bucket: host and process."""
    return re.sub(r"[^-_a-zA-Z0-9]", "_", f"{socket.gethostname()}-{os.getpid()}")


class Config(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    logs: LogsSection = msgspec.field(default_factory=LogsSection)


HOLDER_CACHE_S = 5.0
"""A chunk's sender, once seen to hold its attempt, is not asked again this long."""


class LogWriter:
    def __init__(self, js: JetStreamContext, subjects: Subjects, store: LogStore,
                 section: LogsSection, pool: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        """The job record, to check that a chunk's lab holds its attempt."""
        self.holders: dict[tuple[str, int, str], float] = {}
        self.js = js
        self.subjects = subjects
        self.store = store
        self.section = section
        self.buffer = section.buffer()
        self.assembler = Assembler(self.buffer)
        self.dirty: set[LogKey] = set()
        self.seen_at: dict[LogKey, float] = {}
        self.finished: dict[LogKey, tuple[int, float]] = {}
        """Logs already stored (run, when): a late duplicate must not reopen them."""
        self.write_lock = asyncio.Lock()
        self.written = 0
        self.health_devices = HealthDevices(js, subjects)

    async def handle(self, event, meta: MsgMeta) -> None:
        if not isinstance(event, LogChunk):
            raise Reject(f"not a log chunk: {event.kind}")
        chunk = event.data
        await self.authorise(chunk, meta)
        key = Assembler.key(chunk)
        done = self.finished.get(key)
        if done is not None:
            # Stored already: a late duplicate, or a rerun of an attempt whose
            # result is recorded (the services keep an attempt's first report,
            # by its state) — the stored log matches that result.
            return
        self.assembler.add(chunk)
        self.seen_at[key] = time.monotonic()
        run_log = self.assembler.run_log(key, chunk.run)
        if run_log is None:  # add() above keeps every chunk it accepts
            raise RuntimeError(f"log {key} run {chunk.run}: chunk not kept")
        if run_log.final_seq is None:
            self.dirty.add(key)
            return
        if not run_log.complete:
            rebuilt = await self.rebuild(meta.subject, key, chunk.run)
            if rebuilt is None or not rebuilt.complete:
                raise Retry(f"log {key} run {chunk.run} has gaps; waiting for chunks", 2.0,
                            grow=True)
            run_log = rebuilt
        async with self.write_lock:
            await self.write(key, run_log, final=True)
            self.finished[key] = (chunk.run, time.monotonic())
            self.assembler.forget(key)
            self.dirty.discard(key)
            self.seen_at.pop(key, None)

    async def authorise(self, chunk: LogChunkData, meta: MsgMeta) -> None:
        """Only the lab holding the attempt writes its log; anything else is refused."""
        try:
            lab = self.subjects.lab_of_subject(meta.subject)
        except ValueError as exc:
            raise self._reject(str(exc)) from exc
        if chunk.lab != lab:
            raise self._reject(f"log chunk of lab {chunk.lab!r} published by lab {lab!r}")
        try:
            health = parse_health_log_id(chunk.job_id)
            if health is not None:  # a health check's log: the lab's own device only
                await self.health_devices.authorise(chunk, lab, health[0])
                return
        except (ValueError, DeviceUnknown) as exc:
            raise self._reject(str(exc)) from exc
        if self.pool is None:
            return
        key = (chunk.job_id, chunk.attempt, lab)
        now = time.monotonic()
        if now - self.holders.get(key, -HOLDER_CACHE_S) < HOLDER_CACHE_S:
            return
        async with self.pool.acquire() as conn:
            holder = await attempt_holder(conn, chunk.job_id, chunk.attempt)
        if holder.exists and holder.lab == lab:
            if len(self.holders) > 10_000:
                self.holders.clear()
            self.holders[key] = now
            return
        if holder.current and holder.state == "queued":
            raise Retry(f"job {chunk.job_id} #{chunk.attempt} not started yet", 2.0, grow=True)
        if not holder.exists:
            raise self._reject(f"log chunk for unknown job attempt {chunk.job_id} "
                               f"#{chunk.attempt} from lab {lab!r}")
        raise self._reject(f"log chunk for job attempt {chunk.job_id} #{chunk.attempt} "
                           f"held by lab {holder.lab!r}, not {lab!r}")

    @staticmethod
    def _reject(reason: str) -> Reject:
        count_rejection("logs", "log.chunk")
        return Reject(reason)

    async def write(self, key: LogKey, run_log: RunLog, *, final: bool = False) -> bool:
        """Store the log; a partial one (``final=False``) only while no complete log is
        stored: another replica may have stored it (this one got a chunk again)."""
        health = parse_health_log_id(key.job_id) if key.lab else None
        object_key = (health_log_key(key.lab, health[0], health[1], key.stream) if health
                      else job_log_key(key.job_id, key.attempt, key.stream))
        if not final and await self.store.is_final(object_key):
            return False
        truncated = run_log.truncated_bytes
        size = await self.store.put_log(object_key, run_log, content_type(key.stream),
                                        dropped_bytes=truncated, final=final)
        self.written += 1
        where = {"job_id": key.job_id, "attempt": key.attempt, "stream": key.stream,
                 "key": object_key, "bytes": size}
        if final and truncated:
            self.buffer.stats.truncated_logs += 1
            log.warning("log stored truncated: %d bytes missing", truncated,
                        extra=where | {"dropped_here": run_log.dropped,
                                       "dropped_by_lab": run_log.lab_dropped})
        else:
            log.info("log stored" if final else "partial log stored", extra=where)
        return True

    async def rebuild(self, subject: str, key: LogKey, run: int) -> RunLog | None:
        """Every chunk of this log's run, read back from the LOGS stream.

        What memory held of this log is let go first: the stream has all of it,
        and holding both would count the log twice against the buffer's bounds.
        """
        self.assembler.forget(key)
        sub = await self.js.subscribe(subject, ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.ALL,
                                      stream=self.subjects.logs_stream)
        try:
            deadline = time.monotonic() + self.section.rebuild_timeout_s
            while time.monotonic() < deadline:
                msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
                with contextlib.suppress(DecodeError):
                    event = decode(msg.data)
                    if isinstance(event, LogChunk) and event.data.run == run \
                            and Assembler.key(event.data) == key:
                        self.assembler.add(event.data)
                if msg.metadata.num_pending == 0:
                    break
        except TimeoutError:
            log.warning("rebuild of %s timed out", key, extra={"job_id": key.job_id})
        finally:
            await sub.unsubscribe()
        # What was read stays: later chunks complete it in memory.
        return self.assembler.run_log(key, run)

    async def flush_partials(self) -> None:
        """Live view: the console log so far, for logs that changed."""
        now = time.monotonic()
        for key in list(self.dirty):
            self.dirty.discard(key)
            latest = self.assembler.latest(key)
            if latest is None or key.stream != "console":
                continue
            run, run_log = latest
            if not run_log.contiguous():
                continue
            try:
                async with self.write_lock:
                    if key in self.finished:
                        continue
                    if not await self.write(key, run_log):  # stored complete elsewhere
                        self.finished[key] = (run, time.monotonic())
                        self.assembler.forget(key)
                        self.seen_at.pop(key, None)
            except Exception as exc:  # the next round or the final chunk writes it
                log.warning("partial log not written: %r", exc, extra={"job_id": key.job_id})
        for key, seen in list(self.seen_at.items()):
            if now - seen > self.section.forget_after_s:
                self.assembler.forget(key)
                self.seen_at.pop(key, None)
                self.dirty.discard(key)
        for key, (_, at) in list(self.finished.items()):
            if now - at > self.section.forget_after_s:
                del self.finished[key]

    def close(self) -> None:
        """Let every buffered chunk go, and the spill directory with it."""
        self.assembler.forget_all()
        self.buffer.close()


    def record(self, name: str) -> LogWriterRecord:
        figures = msgspec.structs.asdict(self.buffer.stats)
        for held in ("memory_bytes", "spilled_bytes"):
            figures[held] = max(0, figures[held])
        return LogWriterRecord(
            **figures, writer=name, memory_limit=self.buffer.memory_limit,
            spill_limit=self.buffer.spill_limit, updated_at=dt.datetime.now(dt.UTC))


class StatusReporter:
    """Logs the buffer's figures when they change and puts them in the control bucket."""

    def __init__(self, writer: LogWriter, name: str) -> None:
        self.writer = writer
        self.name = name
        self.key = STATUS_KEY_PREFIX + name
        self.last: tuple[int, ...] | None = None

    async def report(self) -> None:
        record = self.writer.record(self.name)
        figures = (record.memory_bytes, record.spilled_bytes, record.dropped_bytes,
                   record.truncated_logs)
        if figures == self.last:
            return
        level = logging.WARNING if self.last and figures[2] > self.last[2] else logging.INFO
        log.log(level, "log buffer: %d bytes in memory, %d spilled, %d dropped",
                *figures[:3], extra={"truncated_logs": record.truncated_logs,
                                     "dropped_chunks": record.dropped_chunks})
        kv = await self.writer.js.key_value(self.writer.subjects.control_bucket)
        await kv.put(self.key, encode_record(record))
        self.last = figures

    async def remove(self) -> None:
        kv = None  # stopping: NATS may be gone
        with logged("control bucket not opened", log, level=logging.DEBUG):
            kv = await self.writer.js.key_value(self.writer.subjects.control_bucket)
        if kv is not None:
            with logged("log writer status not removed", log, level=logging.DEBUG):
                await kv.delete(self.key)


async def _partials(writer: LogWriter, reporter: StatusReporter, stop: asyncio.Event,
                    interval: float) -> None:
    while not await sleep_or_stop(stop, interval):
        await writer.flush_partials()
        try:
            await reporter.report()
        except Exception as exc:  # figures are for people; the logs go on
            log.info("log buffer figures not published: %r", exc)
    await writer.flush_partials()


async def run(config: Config, stop: asyncio.Event) -> None:
    subjects = config.nats.subjects
    async with Daemon("logs", stop) as daemon:
        nc = await daemon.connect_nats(config.nats)
        pool = await db.open_pool(daemon, config.database) if config.logs.check_holder else None
        js = nc.jetstream()
        writer = LogWriter(js, subjects, LogStore(config.storage), config.logs, pool)
        reporter = StatusReporter(writer, writer_name())
        daemon.exits.callback(writer.close)
        daemon.exits.push_async_callback(reporter.remove)
        pull = Pull(subjects.logs_stream, service_consumer(config.logs.durable,
                                                           [subjects.all_logs()]), batch=100)
        daemon.loop("partials", lambda stop: _partials(writer, reporter, stop,
                                                       config.logs.partial_interval_s))
        daemon.loop("chunks", lambda stop: consume(js, pull, writer.handle, stop))
        await daemon.serve()


async def check(config: Config) -> None:
    await check_all(nats=check_nats(config.nats), storage=LogStore(config.storage).check())
