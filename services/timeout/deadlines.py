"""The timers of the node life: job deadlines, holdoffs, firmware timeouts.

No polling period: the loop sleeps until the earliest timer in the database
is due, or until something changes one (a job starts, a firmware becomes
available) and wakes it. Timers live in the database, so a restarted or
second replica picks them up at once. ``max_sleep_s`` only bounds how late a
timer set by another replica can be noticed.
"""

from __future__ import annotations

import asyncio
import logging

from wrtci.core.retry import wait_or_stop
from wrtci.services.lifecycle import Lifecycle

log = logging.getLogger(__name__)


class DeadlineLoop:
    def __init__(self, lifecycle: Lifecycle, *, max_sleep_s: float = 60.0) -> None:
        self.lifecycle = lifecycle
        self.max_sleep_s = max_sleep_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> float:
        """Fire what is due; returns seconds until the next timer (bounded)."""
        await self.lifecycle.outbox.flush()  # what a crashed replica staged but never sent
        await self.lifecycle.expire_overdue()
        await self.lifecycle.publish_due_retries()
        for firmware_id in await self.lifecycle.due_firmware():
            await self.lifecycle.advance_firmware(firmware_id)
        seconds = await self.lifecycle.seconds_to_next_deadline()
        if seconds is None:
            return self.max_sleep_s
        return min(max(seconds, 0.01), self.max_sleep_s)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            # A database outage raises here: the daemon's supervisor runs the loop
            # again with backoff and logs the outage once; the timers are in the database.
            delay = await self.run_once()
            await wait_or_stop(self._wake.wait(), stop, within_s=delay)
