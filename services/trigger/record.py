"""Record a firmware once and announce it once, whoever sees it and how often.

Every source hands over a :class:`FirmwareDiscoveredData`. Recording is one
transaction (the checkout and all its builds, ``ON CONFLICT DO NOTHING``), so
a firmware is either fully recorded or not at all. The announcement comes
after the commit, with a deterministic event id as ``Nats-Msg-Id``, and is
marked in ``trigger_announcements`` after the publish returned:

- crash between commit and publish: the next scan finds no mark and publishes;
- two replicas at once: both insert (one wins, the other does nothing), both
  may publish, JetStream keeps one message (same ``Nats-Msg-Id``);
- a rescan long after (beyond the stream's dedupe window): the mark says it
  was published, nothing is sent.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import msgspec
import nats.errors

from proto.events import FirmwareDiscovered, FirmwareDiscoveredData
from proto.model import Image
from services.runtime import EventPublisher
from services.trigger.images import ORIGIN

log = logging.getLogger(__name__)

EVENT_SOURCE = "/wrtci/trigger"

INFRASTRUCTURE_ERRORS = (nats.errors.Error, asyncpg.PostgresError, OSError, TimeoutError)
"""What recording or announcing can fail with when NATS or PostgreSQL is away."""


class Outcome(msgspec.Struct, frozen=True):
    recorded: bool
    """The checkout row is new (this call created it)."""
    new_builds: int
    published: bool
    """This call published the event (it had not been marked as published)."""


_INSERT_CHECKOUT = """
INSERT INTO checkouts (id, origin, tree_name, git_repository_url, git_commit_hash,
                       git_repository_branch, start_time, misc, source_kind,
                       priority_class, channel, version, revision)
VALUES ($1, $2, $3, $4, $5, $6, now(), $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

_INSERT_BUILD = """
INSERT INTO builds (id, checkout_id, origin, status, architecture, config_name, misc,
                    target, subtarget, profile, image_name, image_type, filesystem,
                    sha256, size, url, object_key)
VALUES ($1, $2, $3, 'PASS', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (id) DO NOTHING
"""


def _checkout_misc(data: FirmwareDiscoveredData) -> dict[str, Any]:
    misc: dict[str, Any] = {}
    if data.url:
        misc["url"] = data.url
    if data.submitter:
        misc["submitter"] = data.submitter
    if data.pull_request:
        misc["pull_request"] = msgspec.to_builtins(data.pull_request)
    return misc


def _build_row(firmware_id: str, image: Image, architecture: str | None) -> tuple:
    return (
        image.id, firmware_id, ORIGIN, architecture, image.profile, {},
        image.target, image.subtarget, image.profile, image.name, image.type,
        image.filesystem, image.sha256, image.size, image.url, image.object_key,
    )


async def record(conn: asyncpg.Connection, data: FirmwareDiscoveredData,
                 architecture: str | None = None) -> tuple[bool, int]:
    """Insert the checkout and its builds in one transaction; (checkout new, new builds)."""
    async with conn.transaction():
        created = await conn.fetchval(
            _INSERT_CHECKOUT,
            data.firmware_id, ORIGIN, data.tree_name, data.git_repository_url,
            data.git_commit_hash, data.git_branch, _checkout_misc(data),
            str(data.source_kind), str(data.priority_class), data.channel, data.version,
            data.revision,
        )
        before = await conn.fetchval(
            "SELECT count(*) FROM builds WHERE checkout_id = $1", data.firmware_id)
        if data.images:
            await conn.executemany(
                _INSERT_BUILD,
                [_build_row(data.firmware_id, image, architecture) for image in data.images],
            )
        after = await conn.fetchval(
            "SELECT count(*) FROM builds WHERE checkout_id = $1", data.firmware_id)
    return created is not None, after - before


async def is_announced(pool: asyncpg.Pool, event_id: str) -> bool:
    return bool(await pool.fetchval(
        "SELECT 1 FROM trigger_announcements WHERE event_id = $1", event_id))


async def record_and_announce(
    pool: asyncpg.Pool,
    publisher: EventPublisher,
    data: FirmwareDiscoveredData,
    *,
    event_id: str,
    architecture: str | None = None,
) -> Outcome:
    async with pool.acquire() as conn:
        created, new_builds = await record(conn, data, architecture)
    ids = {"firmware_id": data.firmware_id, "event_id": event_id,
           "source_kind": str(data.source_kind), "images": len(data.images)}
    if created or new_builds:
        log.info("firmware recorded", extra={**ids, "new_builds": new_builds})
    if await is_announced(pool, event_id):
        return Outcome(created, new_builds, published=False)
    event = FirmwareDiscovered.build(data, source=f"{EVENT_SOURCE}/{data.source_kind}",
                                     id=event_id, subject=data.firmware_id)
    await publisher.publish(event)
    await pool.execute(
        "INSERT INTO trigger_announcements (event_id, checkout_id) VALUES ($1, $2) "
        "ON CONFLICT (event_id) DO NOTHING",
        event_id, data.firmware_id,
    )
    log.info("firmware announced", extra=ids)
    return Outcome(created, new_builds, published=True)
