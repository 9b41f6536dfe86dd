"""Record a firmware once and announce it once, whoever sees it and how often.

Every source hands over a :class:`FirmwareDiscoveredData`. Recording
(``firmware_store.record_firmware``, which the scheduler uses too) is one
transaction (the checkout and all its builds, ``ON CONFLICT DO NOTHING``), so
a firmware is either fully recorded or not at all. The announcement comes
after the commit, with a deterministic event id as ``Nats-Msg-Id``, and is
marked in ``trigger_announcements`` after the publish returned:

- crash between commit and publish: the next scan finds no mark and publishes;
- two replicas at once: both insert (one wins, the other does nothing), both
  may publish, JetStream keeps one message (same ``Nats-Msg-Id``);
- a rescan long after (beyond the stream's dedupe window): the mark says it
  was published, nothing is sent.

The trigger's cancel requests for superseded pull-request firmware
(``pr_cancel``) are published and marked the same way.
"""

from __future__ import annotations

import logging

import asyncpg
import minio.error
import msgspec
import nats.errors
import urllib3.exceptions

from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import CloudEvent, FirmwareDiscovered, FirmwareDiscoveredData
from wrtci.services.firmware_store import record_firmware

log = logging.getLogger(__name__)

EVENT_SOURCE = "/wrtci/trigger"

INFRASTRUCTURE_ERRORS = (nats.errors.Error, asyncpg.PostgresError, asyncpg.InterfaceError,
                         OSError, TimeoutError, urllib3.exceptions.HTTPError,
                         minio.error.ServerError)
"""What storing, recording or announcing can fail with when NATS, PostgreSQL or S3 is
away (the minio client raises urllib3's MaxRetryError when S3 does not answer)."""


class Outcome(msgspec.Struct, frozen=True):
    recorded: bool
    """The checkout row is new (this call created it)."""
    new_builds: int
    published: bool
    """This call published the event (it had not been marked as published)."""


def _with_architecture(data: FirmwareDiscoveredData,
                       architecture: str | None) -> FirmwareDiscoveredData:
    if architecture is None:
        return data
    images = [image if image.architecture else msgspec.structs.replace(
        image, architecture=architecture) for image in data.images]
    return msgspec.structs.replace(data, images=images)


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
    also_marks: tuple[str, ...] = (),
) -> Outcome:
    data = _with_architecture(data, architecture)
    async with pool.acquire() as conn:
        recorded = await record_firmware(conn, data)
    created, new_builds = recorded.checkout_created, recorded.new_builds
    ids = {"firmware_id": data.firmware_id, "event_id": event_id,
           "source_kind": str(data.source_kind), "images": len(data.images)}
    if created or new_builds:
        log.info("firmware recorded", extra={**ids, "new_builds": new_builds})
    event = FirmwareDiscovered.build(data, source=f"{EVENT_SOURCE}/{data.source_kind}",
                                     id=event_id, subject=data.firmware_id)
    published = await publish_once(pool, publisher, event, data.firmware_id, also_marks)
    if published:
        log.info("firmware announced", extra=ids)
    return Outcome(created, new_builds, published=published)


async def publish_once(pool: asyncpg.Pool, publisher: EventPublisher, event: CloudEvent,
                       checkout_id: str, also_marks: tuple[str, ...] = ()) -> bool:
    """Publish ``event`` about a recorded firmware unless it is marked as published.

    The mark comes after the publish returned (see the module's docstring);
    False: it was already marked, nothing was sent. ``also_marks`` are ids of
    announcements this one stands for, marked in the same statement.
    """
    if await is_announced(pool, event.id):
        return False
    await publisher.publish(event)
    await pool.execute(
        "INSERT INTO trigger_announcements (event_id, checkout_id) "
        "SELECT unnest($1::text[]), $2 ON CONFLICT (event_id) DO NOTHING",
        [event.id, *also_marks], checkout_id,
    )
    return True
