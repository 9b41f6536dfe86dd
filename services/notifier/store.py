"""The ``notifications`` table: claim a delivery, then record how it went.

One row per (firmware, round, channel) — see migration 0005 for why this
makes a report go out once even with redeliveries and several replicas.
"""

from __future__ import annotations

import datetime as dt
import enum

import asyncpg
import msgspec


class Channel(enum.StrEnum):
    MAIL = "mail"
    GITHUB_STATUS = "github_status"
    GITHUB_COMMENT = "github_comment"


class Claimed(msgspec.Struct, frozen=True):
    attempts: int
    """This try's number (1 for the first)."""


class Busy(msgspec.Struct, frozen=True):
    """Not ours to send now: ``wait_s`` until it may be tried (by anyone) again."""

    wait_s: float
    held: bool = False
    """Another replica is sending it (rather than: put off after a failure)."""


class Finished(msgspec.Struct, frozen=True):
    state: str
    """sent or failed: nothing left to do."""


Claim = Claimed | Busy | Finished


class Delivery(msgspec.Struct, frozen=True):
    firmware_id: str
    round: int
    channel: Channel


async def claim(pool: asyncpg.Pool, delivery: Delivery, target: str, lease_s: float) -> Claim:
    """Take the delivery for ``lease_s`` if it is due and nobody else holds it."""
    key = (delivery.firmware_id, delivery.round, delivery.channel.value)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO notifications (firmware_id, round, channel, target)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""", *key, target)
        row = await conn.fetchrow(
            """SELECT state, attempts, lease_until, next_try_at, now() AS now
                 FROM notifications WHERE firmware_id = $1 AND round = $2 AND channel = $3
                  FOR UPDATE""", *key)
        state, now = row["state"], row["now"]
        if state in ("sent", "failed"):
            return Finished(state)
        if state == "sending" and row["lease_until"] > now:
            return Busy(_seconds(row["lease_until"] - now), held=True)
        if state == "pending" and row["next_try_at"] > now:
            return Busy(_seconds(row["next_try_at"] - now))
        attempts = await conn.fetchval(
            """UPDATE notifications
                  SET state = 'sending', attempts = attempts + 1, target = $4,
                      lease_until = now() + make_interval(secs => $5), updated_at = now()
                WHERE firmware_id = $1 AND round = $2 AND channel = $3
            RETURNING attempts""", *key, target, lease_s)
        return Claimed(attempts)


def _seconds(delta: dt.timedelta) -> float:
    return max(delta.total_seconds(), 0.0)


async def mark_sent(pool: asyncpg.Pool, delivery: Delivery, detail: str | None) -> None:
    await pool.execute(
        """UPDATE notifications
              SET state = 'sent', detail = $4, last_error = NULL, lease_until = NULL,
                  sent_at = now(), updated_at = now()
            WHERE firmware_id = $1 AND round = $2 AND channel = $3""",
        delivery.firmware_id, delivery.round, delivery.channel.value, detail)


async def mark_failed(pool: asyncpg.Pool, delivery: Delivery, error: str) -> None:
    """For good: a permanent error, or the last allowed try."""
    await pool.execute(
        """UPDATE notifications
              SET state = 'failed', last_error = $4, lease_until = NULL, updated_at = now()
            WHERE firmware_id = $1 AND round = $2 AND channel = $3""",
        delivery.firmware_id, delivery.round, delivery.channel.value, error)


async def put_off(pool: asyncpg.Pool, delivery: Delivery, error: str, delay_s: float) -> None:
    """A temporary failure: free the claim, due again after ``delay_s``."""
    await pool.execute(
        """UPDATE notifications
              SET state = 'pending', last_error = $4, lease_until = NULL, updated_at = now(),
                  next_try_at = now() + make_interval(secs => $5)
            WHERE firmware_id = $1 AND round = $2 AND channel = $3""",
        delivery.firmware_id, delivery.round, delivery.channel.value, error, delay_s)
