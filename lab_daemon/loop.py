"""One device's loop: ask ``state.next_action`` what to do, and do it."""

from __future__ import annotations

import logging
import time

from wrtci.core.swallow import note
from wrtci.lab_daemon.context import LabContext
from wrtci.lab_daemon.device import Device
from wrtci.lab_daemon.health import HealthChecks
from wrtci.lab_daemon.jobs import Jobs
from wrtci.lab_daemon.labnet import DeviceQueues
from wrtci.lab_daemon.state import Act, next_action
from wrtci.proto.model import DeviceState

log = logging.getLogger(__name__)
S = DeviceState
ERROR_PAUSE_S = 5.0


class DeviceLoop:
    def __init__(self, ctx: LabContext, health: HealthChecks, jobs: Jobs,
                 queues: DeviceQueues) -> None:
        self.ctx = ctx
        self.health = health
        self.jobs = jobs
        self.queues = queues

    async def run(self, device: Device) -> None:
        while not self.ctx.stop.is_set():
            try:
                await self.step(device)
            except Exception as exc:  # the device goes on after a pause; a bug is logged
                note("device loop error", exc, log, level=logging.ERROR, trace=True,
                     device=device.name)
                await self.ctx.wait(device, ERROR_PAUSE_S)

    async def step(self, device: Device) -> None:
        action = next_action(device, time.monotonic())
        match action.act:
            case Act.WAIT:
                await self.ctx.wait(device, action.wait_s)
            case Act.CHECK_NOT_RUN:
                await self.health.not_run(device)  # it stays requested, for later
                await self.ctx.wait(device, action.wait_s)
            case Act.MAINTENANCE:
                await self._apply_maintenance(device)
            case Act.CHECK:
                await self.health.check(device)
            case Act.TAKE_JOB:
                await self._take_job(device)

    async def _take_job(self, device: Device) -> None:
        if not await device.place.looks_free():
            return  # not taking a job we could not run: it stays queued for others
        queue = self.queues.for_device(device.config)
        job = await queue.next_job(device.device_type, wait=self.ctx.lab.fetch_timeout_s)
        if job is None:
            return
        if self.ctx.stop.is_set():
            await job.nak()
            return
        await self.jobs.run(device, job)

    async def _apply_maintenance(self, device: Device) -> None:
        wanted = device.maintenance_requested
        device.maintenance_requested = None
        presence = self.ctx.presence
        if wanted and device.state is not S.MAINTENANCE:
            await presence.move(device, S.MAINTENANCE)
            device.message = "maintenance on"
            await presence.health_event(device, "maintenance on")
        elif not wanted and device.state is S.MAINTENANCE:
            device.message = "maintenance off"
            device.check_requested = True  # back into the pool only through a passing check
            if not await self.health.check(device):
                device.maintenance_requested = False  # the place was taken: try again later
