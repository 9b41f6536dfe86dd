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
import fcntl
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from wrtci.core.runtime import Daemon, connect_nats
from wrtci.core.swallow import logged
from wrtci.lab_daemon.config import Config
from wrtci.lab_daemon.context import LabContext
from wrtci.lab_daemon.control import Control
from wrtci.lab_daemon.device import Device
from wrtci.lab_daemon.event_ids import EventIds, load_key
from wrtci.lab_daemon.firmware_prep import PrepError, device_image
from wrtci.lab_daemon.health import HealthChecks
from wrtci.lab_daemon.jobs import Jobs
from wrtci.lab_daemon.labnet import DeviceProblem, DeviceQueues
from wrtci.lab_daemon.leftovers import kill_leftover_groups
from wrtci.lab_daemon.loop import DeviceLoop
from wrtci.lab_daemon.places import place_guard
from wrtci.lab_daemon.presence import Presence
from wrtci.lab_daemon.suite import Suite
from wrtci.lab_daemon.targets import TargetFileError, load_target_file
from wrtci.proto import events as ev
from wrtci.proto.jobqueue import JobQueue

log = logging.getLogger(__name__)

__all__ = ["LabDaemon", "resolve_paths"]


class LabDaemon:
    def __init__(self, config: Config, stop: asyncio.Event,
                 problems: Sequence[DeviceProblem] = ()) -> None:
        self.config = config
        self.lab = config.lab
        self.stop = stop
        own = {d.name for d in config.lab.devices}
        self.problems = [p for p in problems if p.device not in own]
        """labnet.yaml devices kept out of the pool (and not defined in lab.toml):
        announced as unhealthy at start, with the reason."""
        self.ctx = LabContext(config, stop,
                              source=f"wrtci-lab/{self.lab.name}@{socket.gethostname()}")
        self.ctx.suite = Suite(self.lab)
        self.devices = self.ctx.devices
        self.queue: JobQueue | None = None
        self.queues: DeviceQueues | None = None
        self.jobs: Jobs | None = None
        self.online = asyncio.Event()
        """Set once the lab is registered (devices, lab record, lab.online)."""

    async def run(self) -> None:
        """The daemon's life (``core.runtime.Daemon``): what ``_start`` opens is closed
        in reverse order once ``stop`` is set and the device loops have ended (a
        running job gets the shutdown grace, its result a little more)."""
        async with Daemon("lab", self.stop, grace_s=self.lab.shutdown_grace_s + 60) as daemon:
            daemon.exits.callback(self._lock_work_dir().close)
            daemon.exits.push_async_callback(self.ctx.close)
            await self._start(daemon)
            await daemon.serve()
            log.info("stopping: no new jobs", extra={"lab": self.lab.name})
        log.info("lab offline", extra={"lab": self.lab.name})

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

    async def _start(self, daemon: Daemon) -> None:
        ctx, subjects, lab = self.ctx, self.config.nats.subjects, self.lab
        ctx.ids = EventIds(lab.name, await asyncio.to_thread(load_key, lab.work_dir))
        # Its own reply inbox: the lab's NATS permissions let it read only that.
        self.nc = await daemon.open(
            f"NATS {self.config.nats.url}",
            lambda: connect_nats(self.config.nats, ctx.source,
                                 inbox_prefix=subjects.lab_inbox_prefix(lab.name),
                                 reconnected_cb=self._reconnected),
            _drain)
        ctx.presence = await daemon.open("the lab's KV buckets", Presence(
            self.nc, subjects, lab=lab.name, source=ctx.source, stop=self.stop, ids=ctx.ids,
            request_timeout_s=self.config.nats.request_timeout_s,
            heartbeat_s=lab.heartbeat_s).open)
        await self._load_devices()
        await self._clean_up_after_previous_run()
        self.queue = JobQueue(self.nc, subjects, ack_wait=lab.job_ack_wait_s,
                              max_idle_rate=lab.job_idle_rate)
        daemon.exits.push_async_callback(self.queue.close)
        # labnet's snapshots_only devices ask queues limited to their priorities
        self.queues = DeviceQueues(self.queue)
        daemon.exits.push_async_callback(self.queues.close)
        devices = list(self.devices.values())
        daemon.exits.push_async_callback(ctx.presence.offline, devices)
        self.jobs = Jobs(ctx, self.nc.max_payload)
        control = Control(ctx)
        for subject, callback in (
                (subjects.lab_control(lab.name), control.on_request),
                # Core NATS is enough: a cancel missed while disconnected still ends the
                # job centrally (the timeout service), and our late result is ignored.
                (subjects.event("job.cancelled"), self._on_cancelled)):
            subscription = await self.nc.subscribe(subject, cb=callback)
            daemon.exits.push_async_callback(_unsubscribe, subscription)
        daemon.exits.callback(control.close)
        await ctx.presence.online(devices)
        for problem in self.problems:
            await ctx.presence.problem_event(problem)
        self.online.set()
        loop = DeviceLoop(ctx, HealthChecks(ctx), self.jobs, self.queues)
        daemon.loop("heartbeat", lambda stop: ctx.presence.heartbeat(devices, stop))
        for device in devices:
            daemon.loop(f"device-{device.name}", lambda stop, device=device: loop.run(device))

    async def _reconnected(self) -> None:
        """NATS is back: job wake-ups sent meanwhile were lost, so every queue looks now
        (not at its next safety poll)."""
        log.info("NATS connection back: looking for jobs", extra={"lab": self.lab.name})
        if self.queues is not None:
            self.queues.look_again()

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
            wanted = None
            try:
                wanted = await asyncio.to_thread(device_image, device_config)
            except PrepError as exc:  # a malformed 'openwrt:' section: as a broken file
                problem = problem or str(exc)
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
                place=place_guard(self.lab, device_config), problem=problem,
                wanted_image=wanted)


async def _unsubscribe(subscription) -> None:
    with logged("unsubscribe at exit failed", log, subject=subscription.subject):
        await subscription.unsubscribe()


async def _drain(nc: NATS) -> None:
    with logged("NATS drain at exit failed", log):
        await asyncio.wait_for(nc.drain(), 10)


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
