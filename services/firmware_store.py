"""Record a firmware (KCIDB checkout) and its images (builds) in the database.

The trigger calls this when it discovers a firmware, and the scheduler calls
it again for every ``firmware.discovered`` event it handles: whichever comes
first writes the rows, the other changes nothing. So the order in which the
services see a firmware never matters.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from wrtci.proto.events import FirmwareDiscoveredData
from wrtci.proto.model import Image, PriorityClass, PullRequest, SourceKind

ORIGIN = "wrtci"
"""The namespace of stored ids (``wrtci:...``), fixed: ids are keys across tables and
streams. The KCIDB origin is configured (``[kcidb] origin``) and applied at export."""


def _checkout_misc(data: FirmwareDiscoveredData) -> dict[str, Any]:
    misc: dict[str, Any] = {}
    if data.pull_request is not None:
        misc["pull_request"] = msgspec.to_builtins(data.pull_request)
    if data.submitter:
        misc["submitter"] = data.submitter
    if data.url:
        misc["url"] = data.url
    if data.plans is not None:
        misc["plans"] = list(data.plans)
    return misc


class Recorded(msgspec.Struct, frozen=True):
    checkout_created: bool
    """This call created the checkout row."""
    new_builds: int
    """Builds this call added (images seen for the first time)."""


async def _recorded(conn: asyncpg.Connection, data: FirmwareDiscoveredData) -> bool:
    """The checkout and every image of ``data`` are in the database."""
    if await conn.fetchval("SELECT 1 FROM checkouts WHERE id = $1", data.firmware_id) is None:
        return False
    ids = list({image.id for image in data.images})
    found = await conn.fetchval("SELECT count(*) FROM builds WHERE id = ANY($1::text[])", ids)
    return found == len(ids)


async def record_firmware(conn: asyncpg.Connection, data: FirmwareDiscoveredData) -> Recorded:
    """Upsert the checkout and its builds in one transaction.

    An existing checkout keeps its state: recording a firmware again never
    moves it back to ``running``; new images of it (a target published
    later) are added. Recorded already (by the trigger, usually): two reads.
    """
    if await _recorded(conn, data):
        return Recorded(checkout_created=False, new_builds=0)
    async with conn.transaction():
        created = await conn.fetchval(
            """
            INSERT INTO checkouts (id, origin, tree_name, git_repository_url, git_commit_hash,
                                   git_repository_branch, misc, source_kind, priority_class,
                                   channel, version, revision, state, start_time)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'running', now())
            ON CONFLICT (id) DO NOTHING
            RETURNING true
            """,
            data.firmware_id, ORIGIN, data.tree_name, data.git_repository_url,
            data.git_commit_hash, data.git_branch, _checkout_misc(data),
            data.source_kind.value, data.priority_class.value, data.channel, data.version,
            data.revision,
        )
        new_builds = 0
        if data.images:
            inserted = await conn.fetch(
                """
                INSERT INTO builds (id, checkout_id, origin, architecture, config_name, target,
                                    subtarget, profile, image_name, image_type, filesystem,
                                    sha256, size, url, object_key, status, start_time)
                SELECT * , 'PASS', now() FROM unnest(
                    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                    $13::bigint[], $14::text[], $15::text[])
                ON CONFLICT (id) DO NOTHING
                RETURNING id
                """,
                *zip(*[
                    (image.id, data.firmware_id, ORIGIN, image.architecture, image.profile,
                     image.target, image.subtarget, image.profile, image.name, image.type,
                     image.filesystem, image.sha256, image.size, image.url, image.object_key)
                    for image in data.images
                ], strict=True),
            )
            new_builds = len(inserted)
    return Recorded(checkout_created=bool(created), new_builds=new_builds)


async def load_open_firmware(conn: asyncpg.Connection) -> list[FirmwareDiscoveredData]:
    """Firmware that still takes new jobs (``running``/``available``), as recorded."""
    checkouts = await conn.fetch(
        """SELECT id, tree_name, git_repository_url, git_commit_hash, git_repository_branch,
                  misc, source_kind, priority_class, channel, version, revision
           FROM checkouts WHERE state IN ('running', 'available') ORDER BY created_at""")
    builds = await conn.fetch(
        """SELECT checkout_id, id, target, subtarget, profile, image_name, image_type,
                  filesystem, sha256, size, url, object_key, architecture
           FROM builds WHERE checkout_id = ANY($1::text[]) ORDER BY id""",
        [c["id"] for c in checkouts])
    images: dict[str, list[Image]] = {}
    for b in builds:
        images.setdefault(b["checkout_id"], []).append(Image(
            id=b["id"], target=b["target"], subtarget=b["subtarget"], profile=b["profile"],
            name=b["image_name"], type=b["image_type"], filesystem=b["filesystem"],
            sha256=b["sha256"], size=b["size"], url=b["url"], object_key=b["object_key"],
            architecture=b["architecture"]))
    firmware = []
    for c in checkouts:
        misc = c["misc"] or {}
        pull_request = misc.get("pull_request")
        firmware.append(FirmwareDiscoveredData(
            firmware_id=c["id"], source_kind=SourceKind(c["source_kind"]),
            priority_class=PriorityClass(c["priority_class"]), channel=c["channel"],
            version=c["version"], revision=c["revision"], images=images.get(c["id"], []),
            tree_name=c["tree_name"] or "openwrt", git_repository_url=c["git_repository_url"],
            git_commit_hash=c["git_commit_hash"], git_branch=c["git_repository_branch"],
            pull_request=msgspec.convert(pull_request, PullRequest) if pull_request else None,
            submitter=misc.get("submitter"), url=misc.get("url"), plans=misc.get("plans")))
    return firmware
