"""The lab as others see it: registration, heartbeat, device records, health events."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import logging

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError

from wrtci.core.retry import Backoff, retry_call, sleep_or_stop
from wrtci.core.runtime import EventPublisher
from wrtci.core.swallow import logged, note
from wrtci.lab_daemon.device import Device
from wrtci.lab_daemon.event_ids import EventIds
from wrtci.lab_daemon.labnet import DeviceProblem
from wrtci.proto import events as ev
from wrtci.proto.model import DeviceHealth, DeviceState
from wrtci.proto.records import DeviceRecord, LabRecord, decode_record, encode_record
from wrtci.proto.subjects import Subjects

log = logging.getLogger(__name__)

PUBLISH_RETRY = Backoff(steps_s=(1.0, 2.0), jitter=0.0)
UNKNOWN_DEVICE_TYPE = "unknown"
"""device_type of a labnet.yaml device whose target is not known (no usable target file)."""


def lab_version() -> str:
    """wrtci's version as installed (the package metadata)."""
    try:
        return importlib.metadata.version("wrtci")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Presence:
    def __init__(self, nc: NATS, subjects: Subjects, *, lab: str, source: str,
                 request_timeout_s: float, heartbeat_s: float, stop: asyncio.Event,
                 ids: EventIds) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=request_timeout_s)  # its KV requests too
        self.subjects = subjects
        self.lab = lab
        self.source = source
        self.heartbeat_s = heartbeat_s
        self.stop = stop
        self.ids = ids
        self.version = lab_version()
        # Its own key: a Nats-Msg-Id no other party can compute (core/publisher.py).
        self.publisher = EventPublisher(self.js, subjects, timeout=request_timeout_s,
                                        key=ids.key)

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
        except msgspec.DecodeError as exc:
            log.warning("stored record of device %s unreadable, starting afresh: %s", name, exc,
                        extra={"device": name})
            return None

    async def online(self, devices: list[Device]) -> None:
        for device in devices:
            await self.save(device)
        await self.publish(ev.LabOnline.build(
            ev.LabOnlineData(lab=self.lab, version=self.version,
                             devices=[d.summary() for d in devices]),
            source=self.source, id=self.ids.fresh("lab.online")))
        log.info("lab online", extra={"lab": self.lab, "devices": [d.name for d in devices],
                                      "version": self.version})
        await self.beat(devices)

    async def offline(self, devices: list[Device]) -> None:
        for device in devices:
            await self.save(device)
        with logged("lab.offline not published", log, lab=self.lab):
            await self.publish(ev.LabOffline.build(
                ev.LabOfflineData(lab=self.lab, reason="shutdown"), source=self.source,
                id=self.ids.fresh("lab.offline")))
        with logged("lab record not deleted (it expires)", log, lab=self.lab):
            await self.labs_kv.delete(self.subjects.lab_key(self.lab))

    async def heartbeat(self, devices: list[Device], stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self.heartbeat_s):
            await self.beat(devices)

    async def beat(self, devices: list[Device]) -> None:
        record = LabRecord(lab=self.lab, heartbeat_at=_now(), version=self.version,
                           devices=[d.summary() for d in devices])
        with logged("heartbeat failed (the next beat retries)", log, lab=self.lab):
            await self.labs_kv.put(self.subjects.lab_key(self.lab), encode_record(record))

    async def save(self, device: Device) -> None:
        with logged("device record not saved (the next change writes it again)", log,
                    device=device.name):
            await self.devices_kv.put(self.subjects.device_key(self.lab, device.name),
                                      encode_record(device.record()))

    async def move(self, device: Device, state: DeviceState) -> None:
        previous = device.machine.move(state)
        log.info("device %s: %s -> %s", device.name, previous, state,
                 extra={"device": device.name, "state": str(state)})
        await self.save(device)

    async def publish(self, event: ev.CloudEvent, attempts: int = 3) -> object:
        """Publish, retried a few times (not once ``stop`` is set); raises the last error."""
        return await retry_call(f"publish {event.kind}", self.publisher.publish, event,
                                stop=self.stop, backoff=PUBLISH_RETRY, attempts=attempts,
                                logger=log)

    async def health_event(self, device: Device, message: str,
                           log_url: str | None = None) -> None:
        event = ev.DeviceHealthChanged.build(ev.DeviceHealthData(
            lab=self.lab, device=device.name, device_type=device.device_type,
            health=device.health.health, state=device.state,
            consecutive_failures=device.health.failures,
            check_passed=device.last_check_passed, message=message[-2000:],
            last_passed_at=device.last_passed_at, log_url=log_url),
            source=self.source, subject=device.name, id=self.ids.fresh("device.health"))
        await self._health(event, device.name)

    async def problem_event(self, problem: DeviceProblem) -> None:
        """A labnet.yaml device kept out of the pool: unhealthy, with the reason, so
        its maintainers hear of it as of any device that left the pool."""
        event = ev.DeviceHealthChanged.build(ev.DeviceHealthData(
            lab=self.lab, device=problem.device,
            device_type=UNKNOWN_DEVICE_TYPE,
            health=DeviceHealth.UNHEALTHY, state=DeviceState.UNHEALTHY, check_passed=False,
            message=f"out of the pool: {problem}"[-2000:]),
            source=self.source, subject=problem.device, id=self.ids.fresh("device.health"))
        await self._health(event, problem.device)

    async def _health(self, event: ev.DeviceHealthChanged, device: str) -> None:
        try:
            await self.publish(event)
        except Exception as exc:  # the KV record still holds the state
            note("device health event lost", exc, log, level=logging.ERROR, device=device)
