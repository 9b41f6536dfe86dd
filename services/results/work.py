"""The analysis loop: drains ``results_work`` (written with the results).

``history`` items update flaky tests and regressions; ``log`` items scan a
failed attempt's console log. The log writer may store the log a little
after job.finished: a missing log is tried again later with a doubling delay,
up to ``log_max_tries``. Replicas share the table (``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import asyncpg

from wrtci.core.retry import sleep_or_stop
from wrtci.services.results.config import ResultsSection
from wrtci.services.results.history import analyse_attempt
from wrtci.services.results.logs import LogTailReader, record_matches
from wrtci.services.results.signatures import SignatureSet

log = logging.getLogger(__name__)

MAX_DELAY_S = 600.0


class LogNotYetStored(Exception):
    pass


class Analyser:
    def __init__(self, pool: asyncpg.Pool, logs: LogTailReader, signatures: SignatureSet,
                 section: ResultsSection) -> None:
        self.pool = pool
        self.logs = logs
        self.signatures = signatures
        self.section = section

    async def run(self, stop: asyncio.Event) -> None:
        """Passes until ``stop``; an outage (database, S3) ends the pass with an error,
        and the daemon's supervisor runs the loop again with backoff, logging it once."""
        while not stop.is_set():
            done = await self.run_due(self.section.work_batch)
            if done == 0:
                await sleep_or_stop(stop, self.section.work_interval_s)

    async def run_due(self, limit: int) -> int:
        """Handle up to ``limit`` due items; returns how many were handled (done or put off)."""
        handled = 0
        while handled < limit and await self._one():
            handled += 1
        return handled

    async def _one(self) -> bool:
        async with self.pool.acquire() as conn:
            item = None
            try:
                async with conn.transaction():
                    item = await conn.fetchrow(
                        """SELECT kind, job_id, attempt, log_key, tries FROM results_work
                            WHERE not_before <= now() ORDER BY not_before
                            LIMIT 1 FOR UPDATE SKIP LOCKED""")
                    if item is None:
                        return False
                    await self._handle(conn, item)
                    await conn.execute(
                        "DELETE FROM results_work WHERE kind = $1 AND job_id = $2 "
                        "AND attempt = $3", item["kind"], item["job_id"], item["attempt"])
                return True
            except Exception as exc:  # any failure puts the item off, never loses it
                await self._put_off(conn, item, exc)
                return True

    async def _handle(self, conn: asyncpg.Connection, item: asyncpg.Record) -> None:
        where = {"job_id": item["job_id"], "attempt": item["attempt"], "work": item["kind"]}
        if item["kind"] == "history":
            await analyse_attempt(conn, item["job_id"], item["attempt"],
                                  window=self.section.flaky_window,
                                  threshold=self.section.flaky_threshold)
            return
        text = await self.logs.read_tail(item["log_key"], self.section.log_max_bytes)
        if text is None:
            raise LogNotYetStored(f"console log {item['log_key']} not in object storage yet")
        matches = await asyncio.to_thread(self.signatures.scan, text)
        count = await record_matches(conn, item["job_id"], item["attempt"], item["log_key"],
                                     matches)
        log.info("console log analysed", extra=where | {
            "incidents": count, "signatures": [m.signature.name for m in matches]})

    async def _put_off(self, conn: asyncpg.Connection, item: asyncpg.Record | None,
                       exc: Exception) -> None:
        if item is None:
            raise exc
        tries = item["tries"] + 1
        where = {"job_id": item["job_id"], "attempt": item["attempt"], "work": item["kind"],
                 "tries": tries}
        key = (item["kind"], item["job_id"], item["attempt"])
        if tries >= self.section.log_max_tries:
            log.error("analysis given up: %s", exc, extra=where)
            await conn.execute("DELETE FROM results_work WHERE kind = $1 AND job_id = $2 "
                               "AND attempt = $3", *key)
            return
        delay = min(MAX_DELAY_S, self.section.log_retry_delay_s * 2 ** (tries - 1))
        level = logging.INFO if isinstance(exc, LogNotYetStored) else logging.WARNING
        log.log(level, "analysis put off: %s", exc, extra=where | {"delay_s": delay},
                exc_info=not isinstance(exc, LogNotYetStored))
        await conn.execute(
            """UPDATE results_work SET tries = $4, last_error = $5,
                   not_before = now() + $6::interval
                WHERE kind = $1 AND job_id = $2 AND attempt = $3""",
            *key, tries, str(exc)[:2000], dt.timedelta(seconds=delay))
