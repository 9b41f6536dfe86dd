"""Console logs from object storage, and recording what log analysis found."""

from __future__ import annotations

import asyncio

import asyncpg
from minio import Minio
from minio.error import S3Error

from wrtci.services.firmware_store import ORIGIN
from wrtci.services.results.signatures import SignatureMatch
from wrtci.services.storage import is_missing


class LogTailReader:
    """Reads the end of stored logs for analysis (the log writer's LogStore writes them)."""

    def __init__(self, client: Minio, bucket: str, timeout_s: float = 60.0) -> None:
        self.client = client
        self.bucket = bucket
        self.timeout_s = timeout_s

    async def read_tail(self, key: str, max_bytes: int) -> str | None:
        """The last ``max_bytes`` of a log (the end says why it failed); None if absent."""
        return await asyncio.wait_for(asyncio.to_thread(self._read_tail, key, max_bytes),
                                      self.timeout_s)

    def _read_tail(self, key: str, max_bytes: int) -> str | None:
        try:
            size = self.client.stat_object(self.bucket, key).size or 0
            offset = max(0, size - max_bytes)
            response = self.client.get_object(self.bucket, key, offset=offset)
        except S3Error as exc:
            if is_missing(exc):
                return None
            raise
        try:
            # NUL bytes (serial line noise) are not text PostgreSQL can store.
            return response.read().replace(b"\x00", b"").decode("utf-8", errors="replace")
        finally:
            response.close()
            response.release_conn()


async def record_matches(conn: asyncpg.Connection, job_id: str, attempt: int, log_key: str,
                         matches: list[SignatureMatch]) -> int:
    """One KCIDB issue per signature, one incident per (attempt, signature)."""
    if not matches:
        return 0
    job = await conn.fetchrow("SELECT build_id FROM jobs WHERE id = $1", job_id)
    if job is None:
        return 0
    # Link to the first failed test of the attempt; a job that never got to
    # run tests (boot failure) links its incident to the build.
    failed_test = await conn.fetchval(
        """SELECT id FROM tests WHERE job_id = $1 AND attempt = $2
               AND status IN ('FAIL', 'ERROR')
           ORDER BY (status = 'FAIL') DESC, id LIMIT 1""", job_id, attempt)
    await conn.executemany(
        """INSERT INTO issues (id, version, origin, report_subject, culprit_code,
                               culprit_tool, culprit_harness, comment, misc)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $4, $8)
           ON CONFLICT (id, version) DO NOTHING""",
        [(m.signature.issue_id, m.signature.version, ORIGIN, m.signature.title,
          m.signature.culprit == "code", m.signature.culprit == "tool",
          m.signature.culprit == "harness",
          {"logspec": {"signature": m.signature.name, "pattern": m.signature.pattern}})
         for m in matches],
    )
    await conn.executemany(
        """INSERT INTO incidents (id, origin, issue_id, issue_version, build_id, test_id,
                                  present, comment, misc)
           VALUES ($1, $2, $3, $4, $5, $6, true, $7, $8)
           ON CONFLICT (id) DO NOTHING""",
        [(incident_id(job_id, attempt, m.signature.name), ORIGIN, m.signature.issue_id,
          m.signature.version, None if failed_test else job["build_id"], failed_test,
          m.signature.title,
          {"job_id": job_id, "attempt": attempt, "log_key": log_key, "excerpt": m.excerpt,
           "lines": [{"line": line.number, "text": line.text} for line in m.lines]})
         for m in matches],
    )
    return len(matches)


def incident_id(job_id: str, attempt: int, signature: str) -> str:
    return f"{job_id}:{attempt}:logspec:{signature}"
