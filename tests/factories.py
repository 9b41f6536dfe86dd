"""Test data the way the other services produce it: firmware, images, lab records."""

from __future__ import annotations

import datetime as dt
import hashlib

import asyncpg
from nats.js import JetStreamContext

from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import FirmwareDiscovered, FirmwareDiscoveredData, LabDevice
from wrtci.proto.model import DeviceHealth, Image, PriorityClass, SourceKind
from wrtci.proto.records import LabRecord, encode_record
from wrtci.proto.subjects import Subjects
from wrtci.services.firmware_store import record_firmware

CHANNEL_OF = {
    PriorityClass.PR: "pr", PriorityClass.CUSTOM: "custom", PriorityClass.SNAPSHOT: "snapshot",
    PriorityClass.STABLE: "stable", PriorityClass.OLDSTABLE: "oldstable",
}


def image(firmware_id: str, device_type: str, image_type: str = "sysupgrade",
          filesystem: str | None = "squashfs", *, url: str | None = "default",
          object_key: str | None = None) -> Image:
    """An image for ``target/subtarget/profile`` (profile ``*``: any profile)."""
    target, subtarget, profile = device_type.split("/")
    profile_or_none = None if profile == "*" else profile
    name = f"openwrt-{target}-{subtarget}-{profile}-{filesystem or 'x'}-{image_type}.bin"
    if url == "default":
        url = f"https://downloads.example.org/{target}/{subtarget}/{name}"
    return Image(
        id=f"{firmware_id}:{device_type}:{name}", target=target, subtarget=subtarget,
        profile=profile_or_none, name=name, type=image_type, filesystem=filesystem,
        sha256=hashlib.sha256(name.encode()).hexdigest(), size=1000, url=url,
        object_key=object_key,
    )


def firmware(
    device_types: list[str],
    *,
    priority_class: PriorityClass = PriorityClass.SNAPSHOT,
    source_kind: SourceKind = SourceKind.OFFICIAL,
    tag: str = "r1000-abcdef",
    images: list[Image] | None = None,
    plans: list[str] | None = None,
) -> FirmwareDiscoveredData:
    """A firmware with one sysupgrade image per device type (unless ``images`` given)."""
    channel = CHANNEL_OF[priority_class]
    firmware_id = f"wrtci:{source_kind.value}:{channel}:{tag}"
    return FirmwareDiscoveredData(
        firmware_id=firmware_id, source_kind=source_kind, priority_class=priority_class,
        channel=channel, version="SNAPSHOT" if channel == "snapshot" else "24.10.0",
        revision=tag,
        images=images if images is not None else [image(firmware_id, d) for d in device_types],
        plans=plans,
    )


async def insert_firmware(pool: asyncpg.Pool, data: FirmwareDiscoveredData) -> None:
    """The checkout and build rows, as the trigger writes them."""
    async with pool.acquire() as conn:
        await record_firmware(conn, data)


async def publish_firmware(js: JetStreamContext, subjects: Subjects,
                           data: FirmwareDiscoveredData, event_id: str | None = None) -> None:
    """The ``firmware.discovered`` event, as the trigger publishes it."""
    event = FirmwareDiscovered.build(data, source="wrtci/trigger", subject=data.firmware_id,
                                     id=event_id or f"firmware.discovered:{data.firmware_id}")
    await EventPublisher(js, subjects).publish(event)


async def announce_lab(
    js: JetStreamContext, subjects: Subjects, lab: str,
    devices: list[tuple[str, str, list[str]]],
    *, heartbeat_at: dt.datetime | None = None,
) -> LabRecord:
    """A lab's registry entry: (device name, device type, features) per device."""
    record = LabRecord(
        lab=lab, heartbeat_at=heartbeat_at or dt.datetime.now(dt.UTC),
        devices=[LabDevice(name=name, device_type=device_type, features=features,
                           health=DeviceHealth.HEALTHY) for name, device_type, features in devices],
    )
    kv = await js.key_value(subjects.labs_bucket)
    await kv.put(subjects.lab_key(lab), encode_record(record))
    return record
