"""Health-check logs in the log writer: who may write them, and where they go.

A health check's log chunks carry a job id in the reserved ``health:`` namespace
(``proto.storage.health_log_id``). There is no job attempt to hold: a chunk is
accepted when the device it names is one of the sending lab's — the lab named
in the subject, whose NATS permissions let it write only its own keys of the
devices bucket — and it is stored under that lab (``health_log_key``), so a lab
can neither write another lab's health log nor one for a device it lacks.
"""

from __future__ import annotations

import time

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from wrtci.proto.events import LogChunkData
from wrtci.proto.subjects import Subjects
from wrtci.services.consume import Retry

KNOWN_CACHE_S = 30.0
"""A device once found in the sender's registry is not looked up again this long."""


class DeviceUnknown(Exception):
    """The sending lab has no such device."""


class HealthDevices:
    """The devices bucket, asked whether a lab has a device."""

    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self.js = js
        self.subjects = subjects
        self.known: dict[tuple[str, str], float] = {}

    async def authorise(self, chunk: LogChunkData, lab: str, device: str) -> None:
        """Raises DeviceUnknown if ``lab`` has no ``device`` (or the chunk names another)."""
        if chunk.device != device:
            raise DeviceUnknown(f"health log of device {device!r} in a chunk of "
                                f"device {chunk.device!r}")
        now = time.monotonic()
        if now - self.known.get((lab, device), -KNOWN_CACHE_S) < KNOWN_CACHE_S:
            return
        try:
            kv = await self.js.key_value(self.subjects.devices_bucket)
            await kv.get(self.subjects.device_key(lab, device))
        except KeyNotFoundError as exc:  # deleted keys too
            raise DeviceUnknown(f"health log for device {device!r}, which lab {lab!r} "
                                "does not have") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise Retry(f"device registry not readable: {exc!r}", 2.0, grow=True) from exc
        if len(self.known) > 10_000:
            self.known.clear()
        self.known[(lab, device)] = now
