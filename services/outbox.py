"""Publish events only for transactions that committed (a transactional outbox).

A handler that changes rows and announces the change stages the event with
:func:`stage_event` inside its transaction, and calls :meth:`Outbox.flush` after the
commit. A rolled-back transaction announces nothing; a crash after the commit
leaves the event staged for the next flush (at start-up and on every timer
round of the timeout service). Events keep their deterministic ids, so a
staged event published twice is stored once by JetStream.
"""

from __future__ import annotations

import logging

import asyncpg

from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import CloudEvent, encode

log = logging.getLogger(__name__)


async def stage_event(conn: asyncpg.Connection, event: CloudEvent, subject: str) -> None:
    """Stage ``event`` in the caller's transaction (the same event twice: once)."""
    await conn.execute(
        "INSERT INTO event_outbox (event_id, subject, payload) VALUES ($1, $2, $3) "
        "ON CONFLICT (event_id) DO NOTHING",
        event.id, subject, encode(event),
    )


class Outbox:
    def __init__(self, pool: asyncpg.Pool, publisher: EventPublisher, batch: int = 200) -> None:
        self.pool = pool
        self.publisher = publisher
        self.batch = batch

    async def flush(self) -> int:
        """Publish what is staged, oldest first; returns how many were published.

        A failed publish stops the flush (order matters: a firmware's
        ``available`` goes out before its ``done``); the rows stay for the next one.
        """
        published = 0
        while True:
            rows = await self.pool.fetch(
                "SELECT seq, event_id, subject, payload FROM event_outbox ORDER BY seq LIMIT $1",
                self.batch)
            if not rows:
                return published
            for row in rows:
                await self.publisher.publish_payload(row["subject"], bytes(row["payload"]),
                                                     row["event_id"])
                await self.pool.execute("DELETE FROM event_outbox WHERE seq = $1", row["seq"])
                published += 1
