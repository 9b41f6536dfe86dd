"""The device registry: a live view of the labs KV bucket.

Labs put a ``LabRecord`` (their devices, with device type and features) under
their key and refresh it as a heartbeat; the bucket's TTL drops a lab that
stops. The registry watches the bucket (no polling) and mirrors every entry
into ``announced_devices``, where fan-out reads device types and features and
where the ``job_waiting`` view sees which device types have a lab online.
Device types stay known after their lab is gone, so their jobs wait in the
queue instead of never being created.

It also keeps, per device type, the image type its devices boot
(``image_wishes``, from each device's ``image_type``/``image_filesystem``),
in memory: fan-out reads it without a query. Devices that name no type do
not count; devices of one type naming different types leave it without a
wish (the preference order picks; logged once). A lab that leaves keeps its
say until it comes back, like its device types.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from wrtci.core.kv import watch_bucket
from wrtci.proto.records import LabRecord, decode_record
from wrtci.proto.subjects import Subjects
from wrtci.proto.tokens import TokenError, decode_key_part
from wrtci.proto.topology import LAB_HEARTBEAT_TTL
from wrtci.services.lifecycle import store
from wrtci.services.scheduler.fanout import ImageWish

log = logging.getLogger(__name__)


class DeviceRegistry:
    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        pool: asyncpg.Pool,
        *,
        ttl_s: float = LAB_HEARTBEAT_TTL,
    ) -> None:
        self.js = js
        self.subjects = subjects
        self.pool = pool
        self.ttl_s = ttl_s
        self.labs: dict[str, LabRecord] = {}
        self.ready = asyncio.Event()
        """Set once every entry present at start has been mirrored."""
        self.on_device_types: Callable[[set[str]], object] | None = None
        """Called with the device types of every lab entry (job consumers are made for them)."""
        self.on_new_device_types: Callable[[set[str]], Awaitable[object]] | None = None
        """Called with device types no lab had announced before (a late lab)."""
        self.image_wishes: dict[str, ImageWish] = {}
        """Device type -> the image type its devices boot (see the module's doc)."""
        self._wishes_by_lab: dict[str, dict[str, frozenset[ImageWish]]] = {}
        self._disagreements: dict[str, frozenset[ImageWish]] = {}
        """Device types whose devices disagree, with what was logged last."""

    def online_device_types(self, now: dt.datetime | None = None) -> set[str]:
        now = now or dt.datetime.now(dt.UTC)
        horizon = dt.timedelta(seconds=self.ttl_s)
        return {device.device_type for record in self.labs.values()
                if record.heartbeat_at + horizon > now for device in record.devices}

    async def run(self, stop: asyncio.Event) -> None:
        await watch_bucket(self.js, self.subjects.labs_bucket, stop, self._apply, self.ready)

    async def _apply(self, entry: KeyValue.Entry) -> None:
        try:
            lab = decode_key_part(entry.key)
        except TokenError:
            log.error("labs bucket key is not a lab name", extra={"key": entry.key})
            return
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self.labs.pop(lab, None)
            async with self.pool.acquire() as conn:
                await store.lab_gone(conn, lab)
            log.info("lab left", extra={"lab": lab})
            return
        try:
            record = decode_record(entry.value, LabRecord)
        except msgspec.DecodeError as exc:
            log.error("labs bucket entry ignored: %s", exc, extra={"lab": lab})
            return
        if record.lab != lab:
            log.error("labs bucket entry names another lab; ignored",
                      extra={"lab": lab, "record_lab": record.lab})
            return
        known = lab in self.labs
        self.labs[lab] = record
        self._note_wishes(lab, record)
        if self.on_device_types is not None:
            self.on_device_types({d.device_type for d in record.devices})
        async with self.pool.acquire() as conn:
            before = await store.known_device_types(conn, dt.datetime.min.replace(tzinfo=dt.UTC))
            await store.record_lab(conn, record, self.ttl_s)
        new_types = {d.device_type for d in record.devices} - before.keys()
        if new_types and self.on_new_device_types is not None:
            await self.on_new_device_types(new_types)
        if not known:
            log.info("lab online", extra={"lab": lab, "devices": len(record.devices),
                                          "device_types": sorted({d.device_type
                                                                  for d in record.devices})})

    def _note_wishes(self, lab: str, record: LabRecord) -> None:
        wishes: dict[str, set[ImageWish]] = {}
        for device in record.devices:
            if device.image_type:
                wishes.setdefault(device.device_type, set()).add(
                    ImageWish(device.image_type, device.image_filesystem or None))
        frozen = {t: frozenset(w) for t, w in wishes.items()}
        if self._wishes_by_lab.get(lab) == frozen:
            return  # a heartbeat: nothing changed
        self._wishes_by_lab[lab] = frozen
        merged: dict[str, set[ImageWish]] = {}
        for by_type in self._wishes_by_lab.values():
            for device_type, named in by_type.items():
                merged.setdefault(device_type, set()).update(named)
        self.image_wishes = {}
        for device_type, named in merged.items():
            wish = agreed_wish(named)
            if wish is not None:
                self.image_wishes[device_type] = wish
                self._disagreements.pop(device_type, None)
            elif self._disagreements.get(device_type) != frozenset(named):
                self._disagreements[device_type] = frozenset(named)
                log.warning("devices of one type boot different image types: its jobs "
                            "carry the image the preference order picks",
                            extra={"device_type": device_type,
                                   "image_types": sorted(map(str, named))})


def agreed_wish(named: set[ImageWish]) -> ImageWish | None:
    """The one image type the devices name (a filesystem only when they agree on
    it, or one names it); None when they name different types."""
    types = {w.type for w in named}
    if len(types) != 1:
        return None
    filesystems = {w.filesystem for w in named if w.filesystem}
    return ImageWish(types.pop(), filesystems.pop() if len(filesystems) == 1 else None)
