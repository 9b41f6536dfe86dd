"""Lab registrations in the database, and taking a revoked lab's jobs back.

``wrtci lab add`` records which device types a lab may run (the identity
check in ``services.identity`` reads it); ``wrtci lab revoke`` marks it
revoked and ends the attempts it holds, so that their jobs are queued again
for another lab at once rather than after the consumer's ack wait.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg

from wrtci.proto.model import ErrorCode
from wrtci.services.lifecycle import Lifecycle

log = logging.getLogger(__name__)


async def register_lab(conn: asyncpg.Connection, name: str, public_key: str,
                       device_types: list[str]) -> None:
    await conn.execute(
        """
        INSERT INTO lab_registrations (name, public_key, device_types)
        VALUES ($1, $2, $3)
        ON CONFLICT (name) DO UPDATE
           SET public_key = EXCLUDED.public_key, device_types = EXCLUDED.device_types,
               created_at = now(), revoked_at = NULL
        """,
        name, public_key, sorted(set(device_types)),
    )


async def revoke_lab(conn: asyncpg.Connection, name: str) -> bool:
    status = await conn.execute(
        "UPDATE lab_registrations SET revoked_at = coalesce(revoked_at, now()) WHERE name = $1",
        name)
    return status.endswith(" 1")


async def registered_labs(conn: asyncpg.Connection) -> dict[str, dict]:
    rows = await conn.fetch(
        "SELECT name, device_types, created_at, revoked_at FROM lab_registrations")
    return {r["name"]: dict(r) for r in rows}


async def requeue_held_jobs(lifecycle: Lifecycle, lab: str) -> list[tuple[str, str]]:
    """End every attempt ``lab`` holds as ``lab_lost``; returns (job id, outcome) pairs.

    The attempt counts as an infrastructure error, so the job is queued again
    (a new attempt, on any lab with the device type) unless it used up its
    attempts; at once, not after the infrastructure backoff: a revoked lab is
    not an outage that may pass. The central ``job.cancelled`` tells the lab to
    stop, should it still be connected.
    """
    async with lifecycle.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, attempt FROM jobs WHERE state = 'running' AND lab = $1", lab)
    ended = []
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for row in rows:
        outcome = await lifecycle.end_attempt(
            row["id"], row["attempt"], ErrorCode.LAB_LOST,
            f"lab {lab} was revoked at {now}", lab=lab, retry_delay_s=0.0)
        if outcome is not None:
            ended.append((row["id"], outcome))
            log.warning("job of a revoked lab requeued",
                        extra={"job_id": row["id"], "attempt": row["attempt"], "lab": lab,
                               "outcome": outcome})
    return ended
