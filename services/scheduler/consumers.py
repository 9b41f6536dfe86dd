"""The job consumers of every announced device type, created centrally.

Labs only bind to job consumers (they may not create them). The registry
hands every device type it sees to :class:`JobConsumerKeeper`, which creates
its consumers (one per priority, ``topology.ensure_job_consumers``) in the
background: a lab announcing 1,000 device types must not hold up the
registry, and fan-out needs no consumer (the JOBS stream keeps the jobs until
one exists).

NATS away or a JetStream leader being elected (a node of the cluster killed)
is waited out with the shared :data:`~core.retry.FAILOVER_BACKOFF`, each
device type's requests bounded by :data:`~core.retry.CALL_TIMEOUT_S`: the
keeper is back within seconds of the new leader, like the consume loops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from nats.js import JetStreamContext

from wrtci.core.retry import CALL_TIMEOUT_S, FAILOVER_BACKOFF, retry_call, wait_or_stop
from wrtci.core.swallow import logged
from wrtci.proto.subjects import Subjects
from wrtci.proto.topology import JOB_ACK_WAIT, ensure_job_consumers

log = logging.getLogger(__name__)


class JobConsumerKeeper:
    def __init__(self, js: JetStreamContext, subjects: Subjects, *,
                 ack_wait: float = JOB_ACK_WAIT, concurrency: int = 16,
                 call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.js = js
        self.call_timeout_s = call_timeout_s
        self.subjects = subjects
        self.ack_wait = ack_wait
        self.concurrency = concurrency
        self.ready: set[str] = set()
        """Device types whose consumers exist (made sure of by this process)."""
        self._wanted: set[str] = set()
        self._changed = asyncio.Event()
        self.idle = asyncio.Event()
        """Set while every wanted device type is ready."""
        self.idle.set()

    def want(self, device_types: Iterable[str]) -> None:
        new = set(device_types) - self.ready - self._wanted
        if new:
            self._wanted |= new
            self.idle.clear()
            self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._wanted:
                self.idle.set()
                self._changed.clear()
                await wait_or_stop(self._changed.wait(), stop)
                continue
            # NATS away or JetStream electing: what failed is wanted again, with
            # what was asked for meanwhile, after the (short) failover backoff.
            with logged("job consumers not created: stopping", log, level=logging.DEBUG):
                await retry_call("job consumers", self._create_wanted, stop=stop,
                                 backoff=FAILOVER_BACKOFF, logger=log)

    async def _create_wanted(self) -> None:
        batch, self._wanted = self._wanted, set()
        try:
            await self._create(batch)
        except Exception:
            self._wanted |= batch - self.ready
            raise

    async def _create(self, device_types: set[str]) -> None:
        slots = asyncio.Semaphore(self.concurrency)

        async def one(device_type: str) -> None:
            async with slots:
                await asyncio.wait_for(ensure_job_consumers(
                    self.js, self.subjects, [device_type], ack_wait=self.ack_wait),
                    self.call_timeout_s)
                self.ready.add(device_type)

        results = await asyncio.gather(*(one(d) for d in sorted(device_types)),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        log.info("job consumers ready", extra={"device_types": len(device_types) - len(errors)})
        if errors:
            raise errors[0]
