"""Pulling jobs for one device type, highest priority first, one at a time."""

from __future__ import annotations

import contextlib

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from proto.subjects import PRIORITIES_HIGH_FIRST, Subjects
from proto.topology import ensure_consumer, job_consumer


class JobQueue:
    """The job consumers of one device type (one durable per priority, shared by labs)."""

    def __init__(self, js: JetStreamContext, subjects: Subjects, device_type: str,
                 ack_wait: float) -> None:
        self.js = js
        self.subjects = subjects
        self.device_type = device_type
        self.ack_wait = ack_wait
        self._subs: list = []

    async def open(self) -> JobQueue:
        for priority in PRIORITIES_HIGH_FIRST:
            config = job_consumer(self.subjects, priority, self.device_type,
                                  ack_wait=self.ack_wait)
            await ensure_consumer(self.js, self.subjects.jobs_stream, config)
            self._subs.append(await self.js.pull_subscribe_bind(
                config.durable_name, self.subjects.jobs_stream))
        return self

    async def fetch_one(self, wait: float) -> Msg | None:
        """The next job, asking each priority in turn; None if there is none.

        The wait is spread over the priorities so that an empty queue costs
        about ``wait`` seconds per round.
        """
        per_priority = max(0.05, wait / max(1, len(self._subs)))
        for sub in self._subs:
            try:
                msgs = await sub.fetch(1, timeout=per_priority)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            if msgs:
                return msgs[0]
        return None

    async def close(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):  # the connection may be gone
                await sub.unsubscribe()
        self._subs = []
