"""What the parts of the lab daemon share: config, stop, devices, presence, suite."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from wrtci.core.retry import wait_or_stop
from wrtci.lab_daemon.config import Config
from wrtci.lab_daemon.device import Device
from wrtci.lab_daemon.event_ids import EventIds
from wrtci.lab_daemon.firmware import FirmwareCache
from wrtci.lab_daemon.logstream import ChunkSender

if TYPE_CHECKING:
    from wrtci.lab_daemon.presence import Presence
    from wrtci.lab_daemon.suite import Suite


class LabContext:
    def __init__(self, config: Config, stop: asyncio.Event, source: str) -> None:
        self.config = config
        self.lab = config.lab
        self.stop = stop
        self.source = source
        self.devices: dict[str, Device] = {}
        self.cache = FirmwareCache(self.lab.cache_dir, self.lab.cache_max_bytes,
                                   self.lab.download_timeout_s)
        self.presence: Presence
        self.suite: Suite
        self.ids: EventIds
        self._shutdown_deadline: float | None = None
        self._grace_over: asyncio.Event | None = None
        self._grace_timer: asyncio.Task | None = None

    def new_sender(self) -> ChunkSender:
        """A log sender (a job's, a health check's): bounded by ``[lab]
        log_memory_bytes`` and, spilled into the work directory,
        ``log_spill_bytes`` while NATS is away; chunk ids keyed by this lab."""
        return ChunkSender(self.presence.publisher, self.source,
                           memory_bytes=self.lab.log_memory_bytes,
                           spill_dir=self.lab.log_spill_dir,
                           spill_bytes=self.lab.log_spill_bytes, event_id=self.ids.chunk)

    def grace_left(self) -> float:
        """Seconds of the shutdown grace still left (infinite while not stopping)."""
        if not self.stop.is_set():
            return float("inf")
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + self.lab.shutdown_grace_s
        return self._shutdown_deadline - time.monotonic()

    def grace_over(self) -> asyncio.Event:
        """Set once the daemon is stopping and the shutdown grace has run out: what
        must still be done at shutdown (a job's result) is retried until then."""
        if self._grace_over is None:
            self._grace_over = asyncio.Event()
            self._grace_timer = asyncio.create_task(self._time_grace(self._grace_over),
                                                    name="shutdown-grace")
        return self._grace_over

    async def _time_grace(self, over: asyncio.Event) -> None:
        await self.stop.wait()
        await asyncio.sleep(max(0.0, self.grace_left()))
        over.set()

    async def close(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._grace_timer

    async def wait(self, device: Device, seconds: float) -> None:
        """Sleep up to ``seconds``; woken early by stop or by ``device.poke()``."""
        device.wakeup.clear()
        await wait_or_stop(device.wakeup.wait(), self.stop, within_s=max(0.0, seconds))
