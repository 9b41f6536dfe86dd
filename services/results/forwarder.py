"""Forwards new results to a kcidb-ng REST endpoint, each object at most once.

kcidb-ng contract: ``POST /submit`` (JSON body, ``Authorization: Bearer
<JWT>``) answers ``{"id": ..., "status": "ok"}``; ``GET /status?id=ID``
answers ``{"status": "inprogress" | "ready" | "processed" | "failed" | ...}``.

Every object sent is first given to one batch in ``kcidb_submissions``
(primary key kind + id, so an object is never in two batches). A batch is
posted until the endpoint takes it (5xx, timeouts and connection errors are
retried with a doubling delay; a 4xx or too many tries fail the batch), then
its status is polled until ``processed`` or ``failed``. Nothing is posted
again once the endpoint has answered with a submission id.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from typing import Any

import aiohttp
import asyncpg
import msgspec

from wrtci.core.retry import Backoff, sleep_or_stop
from wrtci.services.kcidb import export as kcidb
from wrtci.services.kcidb.config import KcidbSection
from wrtci.services.kcidb.model import Document

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 600.0
_LOCK_KEY = 0x6B636964  # "kcid": one forwarder at a time among replicas


class TransientError(Exception):
    """Try again later: 5xx, timeout, connection refused."""


class PermanentError(Exception):
    """The endpoint refused the request (4xx): retrying will not help."""


class _Answer(msgspec.Struct):
    id: str | None = None
    status: str | None = None
    message: str | None = None


class KcidbClient:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def _call(self, method: str, path: str, **kwargs: Any) -> _Answer:
        try:
            async with self.session.request(method, self.url + path, headers=self.headers,
                                            **kwargs) as response:
                body = await response.read()
                if response.status >= 500 or response.status == 429:
                    raise TransientError(f"{method} {path}: HTTP {response.status}")
                if response.status >= 400 and response.status != 404:
                    raise PermanentError(f"{method} {path}: HTTP {response.status}: "
                                         f"{body[:300]!r}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientError(f"{method} {path}: {exc!r}") from exc
        try:
            return msgspec.json.decode(body, type=_Answer)
        except msgspec.DecodeError as exc:
            raise TransientError(f"{method} {path}: unreadable answer {body[:200]!r}") from exc

    async def submit(self, document: Document) -> str:
        answer = await self._call("POST", "/submit", data=msgspec.json.encode(document))
        if not answer.id or answer.id == "0" or answer.status == "error":
            raise PermanentError(f"submission refused: {answer.message}")
        return answer.id

    async def status(self, submission_id: str) -> str:
        answer = await self._call("GET", "/status", params={"id": submission_id})
        return answer.status or "unknown"


class Forwarder:
    def __init__(self, pool: asyncpg.Pool, client: KcidbClient, section: KcidbSection) -> None:
        self.pool = pool
        self.client = client
        self.section = section
        self.backoff = Backoff.exponential(section.backoff_s, MAX_BACKOFF_S)
        """Delays of a submission kcidb did not take (kept in the database: next_try_at)."""
        self.exporter = section.exporter()

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every ``interval_s``; a database outage ends the loop with an error, and
        the daemon's supervisor runs it again with backoff (logged once)."""
        while not stop.is_set():
            await self.step()
            await sleep_or_stop(stop, self.section.interval_s)

    async def step(self) -> None:
        """One pass: poll what was submitted, (re)send pending batches, batch new results."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
                return
            try:
                await self._poll(conn)
                await self.enqueue_new(conn)
                await self._send_due(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)

    # -- new objects --------------------------------------------------------------------

    async def enqueue_new(self, conn: asyncpg.Connection) -> str | None:
        """Give results never forwarded (and their parents) to a new batch."""
        limit = self.section.max_objects
        tests = await conn.fetch(
            """SELECT t.id FROM tests t
                WHERE NOT EXISTS (SELECT 1 FROM kcidb_submissions s
                                   WHERE s.kind = 'tests' AND s.object_id = t.id)
                ORDER BY t.ingested_at LIMIT $1""", limit)
        # Finished attempts whose boot test was never sent (a boot failure has no other test).
        attempts = await conn.fetch(
            """SELECT a.job_id, a.attempt FROM job_attempts a
                WHERE a.state = 'done' AND NOT EXISTS (
                      SELECT 1 FROM kcidb_submissions s
                       WHERE s.kind = 'tests'
                         AND s.object_id = a.job_id || ':' || a.attempt || ':boot')
                ORDER BY a.finished_at LIMIT $1""", limit)
        incidents = await conn.fetch(
            """SELECT i.id, i.test_id, i.build_id FROM incidents i
                WHERE NOT EXISTS (SELECT 1 FROM kcidb_submissions s
                                   WHERE s.kind = 'incidents' AND s.object_id = i.id)
                ORDER BY i.id LIMIT $1""", limit)
        if not tests and not incidents and not attempts:
            return None
        selection = await kcidb.select(
            conn, [r["id"] for r in tests] + [r["test_id"] for r in incidents if r["test_id"]],
            [r["build_id"] for r in incidents if r["build_id"]],
            [(r["job_id"], r["attempt"]) for r in attempts])
        batch_id = uuid.uuid4().hex
        rows = [(kind, object_id) for kind in kcidb.KINDS
                for object_id in _object_ids(selection, kind)]
        async with conn.transaction():
            await conn.executemany(
                """INSERT INTO kcidb_submissions (kind, object_id, batch_id)
                   VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
                [(kind, object_id, batch_id) for kind, object_id in rows])
        return batch_id

    # -- sending --------------------------------------------------------------------------

    async def _send_due(self, conn: asyncpg.Connection) -> None:
        batches = await conn.fetch(
            """SELECT batch_id, max(tries) AS tries FROM kcidb_submissions
                WHERE state = 'pending' GROUP BY batch_id
               HAVING max(next_try_at) <= now() ORDER BY min(created_at)""")
        for batch in batches:
            await self._send(conn, batch["batch_id"], batch["tries"])

    async def _send(self, conn: asyncpg.Connection, batch_id: str, tries: int) -> None:
        selection = kcidb.Selection()
        for row in await conn.fetch(
                "SELECT kind, object_id FROM kcidb_submissions WHERE batch_id = $1", batch_id):
            _add(selection, row["kind"], row["object_id"])
        document = await kcidb.load(conn, selection, self.exporter, self.section.minor_version)
        where = {"batch_id": batch_id, "objects": len(selection), "tries": tries + 1}
        try:
            submission_id = await self.client.submit(document)
        except TransientError as exc:
            await self._retry_later(conn, batch_id, tries + 1, str(exc), where)
            return
        except PermanentError as exc:
            log.error("kcidb refused a submission: %s", exc, extra=where)
            await self._set(conn, batch_id, "failed", last_error=str(exc))
            return
        log.info("submitted to kcidb", extra=where | {"submission_id": submission_id})
        await self._set(conn, batch_id, "submitted", submission_id=submission_id)

    async def _retry_later(self, conn: asyncpg.Connection, batch_id: str, tries: int,
                           error: str, where: dict) -> None:
        if tries >= self.section.max_tries:
            log.error("kcidb submission given up: %s", error, extra=where)
            await self._set(conn, batch_id, "failed", last_error=error, tries=tries)
            return
        delay = self.backoff.delay(tries)
        log.warning("kcidb submission will be retried: %s", error,
                    extra=where | {"delay_s": delay})
        await conn.execute(
            """UPDATE kcidb_submissions SET tries = $2, last_error = $3, updated_at = now(),
                   next_try_at = now() + $4::interval WHERE batch_id = $1""",
            batch_id, tries, error[:2000], dt.timedelta(seconds=delay))

    async def _set(self, conn: asyncpg.Connection, batch_id: str, state: str, *,
                   submission_id: str | None = None, last_error: str | None = None,
                   tries: int | None = None) -> None:
        await conn.execute(
            """UPDATE kcidb_submissions
                  SET state = $2, submission_id = coalesce($3, submission_id),
                      last_error = coalesce($4, last_error), tries = coalesce($5, tries),
                      updated_at = now()
                WHERE batch_id = $1""",
            batch_id, state, submission_id, last_error, tries)

    # -- status --------------------------------------------------------------------------

    async def _poll(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            """SELECT DISTINCT batch_id, submission_id FROM kcidb_submissions
                WHERE state = 'submitted'""")
        for row in rows:
            where = {"batch_id": row["batch_id"], "submission_id": row["submission_id"]}
            try:
                status = await self.client.status(row["submission_id"])
            except (TransientError, PermanentError) as exc:
                log.warning("kcidb status unknown for now: %s", exc, extra=where)
                continue
            if status == "processed":
                await self._set(conn, row["batch_id"], "processed")
                log.info("kcidb processed a submission", extra=where)
            elif status == "failed":
                await self._set(conn, row["batch_id"], "failed",
                                last_error="kcidb failed to validate the submission")
                log.error("kcidb failed a submission", extra=where)


def _object_ids(selection: kcidb.Selection, kind: str) -> list[str]:
    if kind == "issues":
        return [f"{issue_id}@{version}" for issue_id, version in sorted(selection.issues)]
    return sorted(getattr(selection, kind))


def _add(selection: kcidb.Selection, kind: str, object_id: str) -> None:
    if kind == "issues":
        issue_id, _, version = object_id.rpartition("@")
        selection.issues.add((issue_id, int(version)))
    else:
        getattr(selection, kind).add(object_id)
