"""The lab daemon: registers the lab, keeps devices healthy, pulls and runs jobs.

The parts, each in its own module: presence (registration, heartbeat, device
records), the device loop (``loop.py``, deciding with ``state.next_action``),
health checks, job running and control requests. This module wires them and
owns the daemon's life: start-up, clean-up after a killed predecessor, shutdown.
Outbound connections only: NATS and HTTP downloads. The lab subscribes to its
own control subject and to job cancellations, nothing else (plus job fetches).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
from pathlib import Path

import msgspec
from nats.aio.msg import Msg

from core.runtime import connect_nats
from lab_daemon.config import Config
from lab_daemon.context import LabContext
from lab_daemon.control import Control
from lab_daemon.device import Device
from lab_daemon.health import HealthChecks
from lab_daemon.jobs import Jobs
from lab_daemon.labnet import DeviceQueues
from lab_daemon.leftovers import kill_leftover_groups
from lab_daemon.loop import DeviceLoop
from lab_daemon.places import place_guard
from lab_daemon.presence import VERSION, Presence
from lab_daemon.suite import Suite
from lab_daemon.targets import TargetFileError, load_target_file
from proto import events as ev
from proto.jobqueue import JobQueue

log = logging.getLogger(__name__)

__all__ = ["VERSION", "LabDaemon", "resolve_paths"]


class LabDaemon:
    def __init__(self, config: Config, stop: asyncio.Event) -> None:
        self.config = config
        self.lab = config.lab
        self.stop = stop
        self.ctx = LabContext(config, stop,
                              source=f"wrtci-lab/{self.lab.name}@{socket.gethostname()}")
        self.ctx.suite = Suite(self.lab)
        self.devices = self.ctx.devices
        self.queue: JobQueue | None = None
        self.jobs: Jobs | None = None
        self.online = asyncio.Event()
        """Set once the lab is registered (devices, lab record, lab.online)."""

    async def run(self) -> None:
        work_lock = self._lock_work_dir()
        try:
            await self._run()
        finally:
            work_lock.close()

    def _lock_work_dir(self):
        """One daemon per work directory: the next one may then kill what this one left."""
        Path(self.lab.work_dir).mkdir(parents=True, exist_ok=True)
        handle = open(Path(self.lab.work_dir) / "lab.lock", "w")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeError(
                f"another lab daemon uses the work directory {self.lab.work_dir}") from None
        return handle

    async def _clean_up_after_previous_run(self) -> None:
        """Kill test processes and release place locks a killed predecessor left behind."""
        killed = await asyncio.to_thread(kill_leftover_groups, self.lab.procs_dir)
        if killed:
            log.warning("killed %d process group(s) left by a previous run", len(killed),
                        extra={"lab": self.lab.name, "pgids": [r.pgid for r in killed]})
        await asyncio.gather(*(d.place.release() for d in self.devices.values()))
        await asyncio.to_thread(self.ctx.cache.remove_partial_downloads)

    async def _run(self) -> None:
        ctx, subjects = self.ctx, self.config.nats.subjects
        # Its own reply inbox: the lab's NATS permissions let it read only that.
        self.nc = await connect_nats(self.config.nats, ctx.source,
                                     inbox_prefix=subjects.lab_inbox_prefix(self.lab.name))
        ctx.presence = await Presence(
            self.nc, subjects, lab=self.lab.name, source=ctx.source,
            request_timeout_s=self.config.nats.request_timeout_s,
            heartbeat_s=self.lab.heartbeat_s).open()
        await self._load_devices()
        await self._clean_up_after_previous_run()
        js = self.nc.jetstream()
        self.queue = JobQueue(js, subjects, ack_wait=self.lab.job_ack_wait_s)
        # labnet's snapshots_only devices ask queues limited to their priorities
        self.queues = DeviceQueues(self.queue, js, subjects, self.lab.job_ack_wait_s)
        self.jobs = Jobs(ctx, self.nc.max_payload)
        control = Control(ctx)
        loop = DeviceLoop(ctx, HealthChecks(ctx), self.jobs, self.queues)
        subscriptions = [
            await self.nc.subscribe(subjects.lab_control(self.lab.name), cb=control.on_request),
            # Core NATS is enough: a cancel missed while disconnected still ends the
            # job centrally (the timeout service), and our late result is ignored.
            await self.nc.subscribe(subjects.event("job.cancelled"), cb=self._on_cancelled),
        ]
        devices = list(self.devices.values())
        await ctx.presence.online(devices)
        self.online.set()
        heartbeat = asyncio.create_task(ctx.presence.heartbeat(devices))
        workers = [asyncio.create_task(loop.run(d), name=f"device-{d.name}") for d in devices]
        try:
            await self.stop.wait()
            log.info("stopping: no new jobs", extra={"lab": self.lab.name})
            for device in devices:
                device.poke()
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            heartbeat.cancel()
            control.close()
            for subscription in subscriptions:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
            await ctx.presence.offline(devices)
            await self.queue.close()
            await self.queues.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), 10)
            log.info("lab offline", extra={"lab": self.lab.name})

    async def _on_cancelled(self, msg: Msg) -> None:
        try:
            event = ev.decode_as(msg.data, ev.JobCancelled)
        except ev.DecodeError as exc:
            log.warning("undecodable job.cancelled ignored: %s", exc,
                        extra={"subject": msg.subject})
            return
        if self.jobs is not None:
            self.jobs.on_cancelled(event)

    async def _load_devices(self) -> None:
        for device_config in self.lab.devices:
            target, problem = None, None
            try:
                target = await asyncio.to_thread(load_target_file, device_config.target_file)
            except TargetFileError as exc:
                # One broken file takes only its own device out of the pool, with the
                # reason; its checks fail with it until the file is fixed.
                problem = str(exc)
                log.error("device %s out of the pool: %s", device_config.name, exc,
                          extra={"device": device_config.name,
                                 "target_file": device_config.target_file})
            if target is not None and target.unverified:
                log.warning("device %s: %s come from imports not present on this host",
                            device_config.name, ", ".join(target.unverified),
                            extra={"device": device_config.name})
            restored = await self.ctx.presence.restore(device_config.name)
            self.devices[device_config.name] = Device(
                device_config, target, self.lab.name, self.lab.health, restored,
                place=place_guard(self.lab, device_config), problem=problem)


def resolve_paths(config: Config, base: Path) -> Config:
    """Relative paths in lab.toml are relative to the file's directory."""

    def absolute(value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    lab = config.lab
    devices = [msgspec.structs.replace(d, target_file=absolute(d.target_file),
                                       health_image=absolute(d.health_image))
               for d in lab.devices]
    health = msgspec.structs.replace(lab.health, image=absolute(lab.health.image))
    lab = msgspec.structs.replace(lab, suite_dir=absolute(lab.suite_dir),
                                  work_dir=absolute(lab.work_dir), devices=devices,
                                  suite_envs_dir=absolute(lab.suite_envs_dir), health=health)
    return msgspec.structs.replace(config, lab=lab)
