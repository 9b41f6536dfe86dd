"""The lab as others see it: registration, heartbeat, device records, health events."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError

from core.runtime import EventPublisher
from lab_daemon.device import Device
from proto import events as ev
from proto.model import DeviceState
from proto.records import DeviceRecord, LabRecord, decode_record, encode_record
from proto.subjects import Subjects

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Presence:
    def __init__(self, nc: NATS, subjects: Subjects, *, lab: str, source: str,
                 request_timeout_s: float, heartbeat_s: float) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects
        self.lab = lab
        self.source = source
        self.heartbeat_s = heartbeat_s
        self.publisher = EventPublisher(self.js, subjects, timeout=request_timeout_s)

    async def open(self) -> Presence:
        self.devices_kv = await self.js.key_value(self.subjects.devices_bucket)
        self.labs_kv = await self.js.key_value(self.subjects.labs_bucket)
        return self

    async def restore(self, name: str) -> DeviceRecord | None:
        """The device's record from the last run (maintenance and health survive restarts)."""
        try:
            entry = await self.devices_kv.get(self.subjects.device_key(self.lab, name))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return decode_record(entry.value, DeviceRecord)
        except msgspec.DecodeError:
            return None

    async def online(self, devices: list[Device]) -> None:
        for device in devices:
            await self.save(device)
        await self.publish(ev.LabOnline.build(
            ev.LabOnlineData(lab=self.lab, version=VERSION,
                             devices=[d.summary() for d in devices]),
            source=self.source))
        log.info("lab online", extra={"lab": self.lab, "devices": [d.name for d in devices]})
        await self.beat(devices)

    async def offline(self, devices: list[Device]) -> None:
        for device in devices:
            with contextlib.suppress(Exception):
                await self.save(device)
        with contextlib.suppress(Exception):
            await self.publish(ev.LabOffline.build(
                ev.LabOfflineData(lab=self.lab, reason="shutdown"), source=self.source))
            await self.labs_kv.delete(self.subjects.lab_key(self.lab))

    async def heartbeat(self, devices: list[Device]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self.beat(devices)

    async def beat(self, devices: list[Device]) -> None:
        record = LabRecord(lab=self.lab, heartbeat_at=_now(), version=VERSION,
                           devices=[d.summary() for d in devices])
        try:
            await self.labs_kv.put(self.subjects.lab_key(self.lab), encode_record(record))
        except Exception as exc:  # NATS away: the next beat retries
            log.warning("heartbeat failed: %r", exc, extra={"lab": self.lab})

    async def save(self, device: Device) -> None:
        try:
            await self.devices_kv.put(self.subjects.device_key(self.lab, device.name),
                                      encode_record(device.record()))
        except Exception as exc:  # the next change writes it again
            log.warning("device record not saved: %r", exc, extra={"device": device.name})

    async def move(self, device: Device, state: DeviceState) -> None:
        previous = device.machine.move(state)
        log.info("device %s: %s -> %s", device.name, previous, state,
                 extra={"device": device.name, "state": str(state)})
        await self.save(device)

    async def publish(self, event: ev.CloudEvent, attempts: int = 3) -> object:
        for attempt in range(attempts):
            try:
                return await self.publisher.publish(event)
            except Exception as exc:  # retried, then reported
                if attempt == attempts - 1:
                    raise
                log.warning("publish failed, retrying: %r", exc, extra={"event_id": event.id})
                await asyncio.sleep(1 + attempt)
        return None

    async def health_event(self, device: Device, message: str) -> None:
        event = ev.DeviceHealthChanged.build(ev.DeviceHealthData(
            lab=self.lab, device=device.name, device_type=device.device_type,
            health=device.health.health, state=device.state,
            consecutive_failures=device.health.failures,
            check_passed=device.last_check_passed, message=message[-2000:]),
            source=self.source, subject=device.name)
        try:
            await self.publish(event)
        except Exception as exc:  # the KV record still holds the state
            log.error("device health event lost: %r", exc, extra={"device": device.name})
