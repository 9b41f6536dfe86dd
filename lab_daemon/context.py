"""What the parts of the lab daemon share: config, stop, devices, presence, suite."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from lab_daemon.config import Config
from lab_daemon.device import Device
from lab_daemon.firmware import FirmwareCache

if TYPE_CHECKING:
    from lab_daemon.presence import Presence
    from lab_daemon.suite import Suite


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
        self._shutdown_deadline: float | None = None

    def grace_left(self) -> float:
        """Seconds of the shutdown grace still left (infinite while not stopping)."""
        if not self.stop.is_set():
            return float("inf")
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + self.lab.shutdown_grace_s
        return self._shutdown_deadline - time.monotonic()

    async def wait(self, device: Device, seconds: float) -> None:
        """Sleep up to ``seconds``; woken early by stop or by ``device.poke()``."""
        device.wakeup.clear()
        stop = asyncio.ensure_future(self.stop.wait())
        poke = asyncio.ensure_future(device.wakeup.wait())
        try:
            await asyncio.wait({stop, poke}, timeout=max(0.0, seconds),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            poke.cancel()
