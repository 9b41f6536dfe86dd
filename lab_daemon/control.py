"""Requests on the lab's control subject: status, health check, maintenance.

Each request is handled in its own task: nats-py runs a subscription's
callbacks one after the other, and a health check request, which waits for
the check, must not hold up the rest.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.aio.msg import Msg

from wrtci.core.swallow import logged
from wrtci.lab_daemon.context import LabContext
from wrtci.lab_daemon.device import Device
from wrtci.proto.control import LabAction, LabControlReply, LabControlRequest
from wrtci.proto.model import DeviceState

log = logging.getLogger(__name__)


class Control:
    def __init__(self, ctx: LabContext) -> None:
        self.ctx = ctx
        self._tasks: set[asyncio.Task] = set()

    async def on_request(self, msg: Msg) -> None:
        task = asyncio.create_task(self.handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def handle(self, msg: Msg) -> None:
        try:
            request = msgspec.json.decode(msg.data, type=LabControlRequest)
        except msgspec.DecodeError as exc:
            await self._reply(msg, LabControlReply(ok=False, message=f"bad request: {exc}"))
            return
        targets = self._targets(request.device)
        if targets is None:
            await self._reply(msg, LabControlReply(
                ok=False, message=f"no device {request.device!r} in lab {self.ctx.lab.name}"))
            return
        if request.action in (LabAction.MAINTENANCE_ON, LabAction.MAINTENANCE_OFF):
            for device in targets:
                device.maintenance_requested = request.action is LabAction.MAINTENANCE_ON
                device.poke()
            message = "requested; a running job or check finishes first"
        elif request.action is LabAction.HEALTH_CHECK:
            try:
                await self._checks_requested(targets)
                blocked = [f"{d.name}: {d.place.problem}" for d in targets if d.place.problem]
                message = ("health check not run: " + "; ".join(blocked) if blocked
                           else "health check done")
            except TimeoutError:
                message = "health check still pending (device busy?)"
        else:
            message = "status"
        await self._reply(msg, LabControlReply(
            ok=True, message=message, devices=[d.status() for d in targets]))

    def _targets(self, name: str | None) -> list[Device] | None:
        if name is None:
            return list(self.ctx.devices.values())
        device = self.ctx.devices.get(name)
        return [device] if device else None

    async def _checks_requested(self, devices: list[Device]) -> None:
        async def one(device: Device) -> None:
            if device.state is DeviceState.MAINTENANCE:
                return
            async with device.check_done:
                device.check_requested = True
                device.poke()
                await device.check_done.wait()

        await asyncio.wait_for(asyncio.gather(*(one(d) for d in devices)),
                               self.ctx.lab.health.timeout_s + 60)

    async def _reply(self, msg: Msg, reply: LabControlReply) -> None:
        if msg.reply:
            with logged("control reply not sent (the asker has gone?)", log):
                await msg.respond(msgspec.json.encode(reply))
