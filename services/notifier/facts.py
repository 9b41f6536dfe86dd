"""What a report says, read from the database.

The per device type numbers come from the results service's
``firmware_summary`` (the same the API and ``wrtci summary`` show); this
module adds what a report needs beyond it: where the firmware came from,
the log lines of each incident and the console logs of the failed jobs.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from wrtci.proto.model import PullRequest
from wrtci.services.db.rows import as_struct, as_structs, columns_of
from wrtci.services.summary import FirmwareSummary, firmware_summary


class IncidentLines(msgspec.Struct, frozen=True, kw_only=True):
    log_key: str | None = None
    lines: list[tuple[int, str]] = []


class FailedJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    device_type: str
    result: str
    error_code: str | None = None
    log_key: str | None = None


class FirmwareFacts(msgspec.Struct, kw_only=True):
    firmware_id: str
    round: int
    state: str
    source_kind: str
    channel: str
    version: str
    revision: str | None
    commit: str | None
    submitter: str | None
    pull_request: PullRequest | None
    summary: FirmwareSummary
    incident_lines: dict[str, IncidentLines]
    """Incident id -> its console log lines."""
    failed_jobs: list[FailedJob]


class Checkout(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    round: int
    done_at: Any


async def checkout_state(conn: asyncpg.Connection, firmware_id: str) -> Checkout | None:
    row = await conn.fetchrow(
        f"SELECT {columns_of(Checkout)} FROM checkouts WHERE id = $1", firmware_id)
    return as_struct(row, Checkout)


async def results_pending(conn: asyncpg.Connection, firmware_id: str) -> int:
    """Jobs whose last attempt the results service has not stored or analysed yet."""
    return await conn.fetchval(
        """SELECT count(*) FROM jobs j
             JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt
            WHERE j.checkout_id = $1
              AND (a.state <> 'done'
                   OR EXISTS (SELECT 1 FROM results_work w
                               WHERE w.job_id = j.id AND w.attempt = j.attempt))""",
        firmware_id)


def _pull_request(misc: dict[str, Any]) -> PullRequest | None:
    raw = misc.get("pull_request")
    if not raw:
        return None
    try:
        return msgspec.convert(raw, PullRequest)
    except msgspec.ValidationError:
        return None


async def load_facts(conn: asyncpg.Connection, firmware_id: str) -> FirmwareFacts | None:
    row = await conn.fetchrow(
        """SELECT state, round, source_kind, channel, version, revision, git_commit_hash, misc
             FROM checkouts WHERE id = $1""", firmware_id)
    summary = await firmware_summary(conn, firmware_id)
    if row is None or summary is None:
        return None
    misc = row["misc"] or {}
    incident_ids = [i.id for d in summary.device_types for i in d.incidents]
    lines: dict[str, IncidentLines] = {}
    for incident in await conn.fetch(
            "SELECT id, misc FROM incidents WHERE id = ANY($1::text[])", incident_ids):
        extra = incident["misc"] or {}
        lines[incident["id"]] = IncidentLines(
            log_key=extra.get("log_key"),
            lines=[(int(line.get("line", 0)), str(line.get("text", "")))
                   for line in extra.get("lines", []) if isinstance(line, dict)])
    failed = as_structs(await conn.fetch(
        f"""SELECT {columns_of(FailedJob, job_id="id")} FROM jobs
             WHERE checkout_id = $1 AND result IN ('fail', 'error')
             ORDER BY device_type, id""", firmware_id), FailedJob)
    submitter = misc.get("submitter")
    return FirmwareFacts(
        firmware_id=firmware_id, round=row["round"], state=row["state"],
        source_kind=row["source_kind"], channel=row["channel"], version=row["version"],
        revision=row["revision"], commit=row["git_commit_hash"],
        submitter=submitter if isinstance(submitter, str) else None,
        pull_request=_pull_request(misc), summary=summary, incident_lines=lines,
        failed_jobs=failed)
