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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
import msgspec
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from core.retry import sleep_or_stop
from core.runtime import Daemon, check_all, check_nats
from proto.events import DecodeError, LogChunk, LogChunkData, decode
from proto.storage import job_log_key
from proto.subjects import Subjects
from proto.topology import service_consumer
from services import db
from services.config import ServiceConfig
from services.consume import MsgMeta, Reject, Retry, consume
from services.identity import attempt_holder, count_rejection
from services.logs.assembler import Assembler, LogKey, RunLog
from services.logs.store import LogStore, content_type

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
        self.assembler = Assembler()
        self.dirty: set[LogKey] = set()
        self.seen_at: dict[LogKey, float] = {}
        self.finished: dict[LogKey, tuple[int, float]] = {}
        """Logs already stored (run, when): a late duplicate must not reopen them."""
        self.write_lock = asyncio.Lock()
        self.written = 0

    async def handle(self, event, meta: MsgMeta) -> None:
        if not isinstance(event, LogChunk):
            raise Reject(f"not a log chunk: {event.kind}")
        chunk = event.data
        await self.authorise(chunk, meta)
        key = Assembler.key(chunk)
        done = self.finished.get(key)
        if done is not None:
            # Stored already: a late duplicate, or a rerun whose job.finished
            # JetStream dropped as a duplicate — the stored log matches that result.
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
                raise Retry(f"log {key} run {chunk.run} has gaps; waiting for chunks", 2.0)
            run_log = rebuilt
        async with self.write_lock:
            await self.write(key, run_log)
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
            raise Retry(f"job {chunk.job_id} #{chunk.attempt} not started yet", 2.0)
        if not holder.exists:
            raise self._reject(f"log chunk for unknown job attempt {chunk.job_id} "
                               f"#{chunk.attempt} from lab {lab!r}")
        raise self._reject(f"log chunk for job attempt {chunk.job_id} #{chunk.attempt} "
                           f"held by lab {holder.lab!r}, not {lab!r}")

    @staticmethod
    def _reject(reason: str) -> Reject:
        count_rejection("logs", "log.chunk")
        return Reject(reason)

    async def write(self, key: LogKey, run_log: RunLog) -> None:
        object_key = job_log_key(key.job_id, key.attempt, key.stream)
        size = await self.store.put_text(object_key, run_log.text(), content_type(key.stream))
        self.written += 1
        log.info("log stored", extra={"job_id": key.job_id, "attempt": key.attempt,
                                      "stream": key.stream, "key": object_key, "bytes": size})

    async def rebuild(self, subject: str, key: LogKey, run: int) -> RunLog | None:
        """Every chunk of this job's subject, read back from the LOGS stream."""
        assembler = Assembler()
        sub = await self.js.subscribe(subject, ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.ALL,
                                      stream=self.subjects.logs_stream)
        try:
            deadline = time.monotonic() + self.section.rebuild_timeout_s
            while time.monotonic() < deadline:
                msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
                with contextlib.suppress(DecodeError):
                    event = decode(msg.data)
                    if isinstance(event, LogChunk):
                        assembler.add(event.data)
                if msg.metadata.num_pending == 0:
                    break
        except TimeoutError:
            log.warning("rebuild of %s timed out", key, extra={"job_id": key.job_id})
        finally:
            await sub.unsubscribe()
        for chunk_key, runs in assembler.logs.items():
            if chunk_key == key:
                # Keep what was read: later chunks complete it in memory.
                self.assembler.logs[key] = runs
        return assembler.run_log(key, run)

    async def flush_partials(self) -> None:
        """Live view: the console log so far, for logs that changed."""
        now = time.monotonic()
        for key in list(self.dirty):
            self.dirty.discard(key)
            latest = self.assembler.latest(key)
            if latest is None or key.stream != "console":
                continue
            _, run_log = latest
            if not run_log.contiguous():
                continue
            try:
                async with self.write_lock:
                    if key in self.finished:
                        continue
                    await self.write(key, run_log)
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


async def _partials(writer: LogWriter, stop: asyncio.Event, interval: float) -> None:
    while not await sleep_or_stop(stop, interval):
        await writer.flush_partials()
    await writer.flush_partials()


async def run(config: Config, stop: asyncio.Event) -> None:
    subjects = config.nats.subjects
    async with Daemon("logs", stop) as daemon:
        nc = await daemon.connect_nats(config.nats)
        pool = await db.open_pool(daemon, config.database) if config.logs.check_holder else None
        js = nc.jetstream()
        writer = LogWriter(js, subjects, LogStore(config.storage), config.logs, pool)
        consumer = service_consumer(config.logs.durable, [subjects.all_logs()])
        daemon.loop("partials", lambda stop: _partials(writer, stop,
                                                       config.logs.partial_interval_s))
        daemon.loop("chunks", lambda stop: consume(js, subjects.logs_stream, consumer,
                                                   writer.handle, stop, batch=100))
        await daemon.serve()


async def check(config: Config) -> None:
    await check_all(nats=check_nats(config.nats), storage=LogStore(config.storage).check())
