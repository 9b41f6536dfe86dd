"""The scheduler daemon: firmware events in, jobs out.

For each ``firmware.discovered`` event: record the firmware (if the trigger
has not yet), fan it out to the device types labs have announced x the test
plans they qualify for, queue one job per device type on its priority's
subject, and move the firmware to ``available``. Jobs have deterministic ids
and ``Nats-Msg-Id`` headers, and rows are upserts, so a repeated event — or
two replicas handling it — queues each job once.

It also applies operators' retry and cancel requests, and stops taking new
firmware while the pause switch is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping

import asyncpg
import msgspec
from nats.js import JetStreamContext

from wrtci.core.retry import retry_call, wait_or_stop
from wrtci.core.runtime import Daemon, Stopped, check_all, check_nats, run_app
from wrtci.proto.events import (
    CloudEvent,
    FirmwareCancelRequested,
    FirmwareDiscovered,
    FirmwareDiscoveredData,
    FirmwareRetryRequested,
    JobCancelRequested,
    JobRetryRequested,
)
from wrtci.proto.subjects import Subjects
from wrtci.proto.topology import JOB_ACK_WAIT, ensure_consumer, service_consumer
from wrtci.services.checks import check_database
from wrtci.services.config import ServiceConfig
from wrtci.services.consume import MsgMeta, Pull, consume
from wrtci.services.firmware_store import load_open_firmware, record_firmware
from wrtci.services.lifecycle import Lifecycle, store
from wrtci.services.lifecycle.app import LifecycleApp
from wrtci.services.lifecycle.dispatch import Dispatcher
from wrtci.services.scheduler.consumers import JobConsumerKeeper
from wrtci.services.scheduler.control import INTAKE_CONSUMER, ControlSwitch
from wrtci.services.scheduler.devices import DeviceRegistry
from wrtci.services.scheduler.fanout import DEFAULT_IMAGE_PREFERENCE, ImageWish, plan_jobs
from wrtci.services.scheduler.hold import keep_jobs_held
from wrtci.services.scheduler.plans import PlanSet
from wrtci.services.scheduler.queueing import insert_and_queue

log = logging.getLogger(__name__)

CONTROL_CONSUMER = "scheduler-control"


class SchedulerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    plans_file: str | None = None
    """TOML test plans; None: the defaults shipped in services/scheduler/plans.toml."""
    holdoff_s: float = 600.0
    """How long a firmware stays ``available`` (open for late jobs) before closing."""
    firmware_timeout_s: float = 48 * 3600.0
    max_attempts: int = 3
    job_overhead_s: float = 900.0
    """Added to the plans' timeouts for download, flash and boot."""
    device_retention_days: float = 30.0
    """Device types announced within this time get jobs, online or not."""
    image_preference: list[str] = msgspec.field(
        default_factory=lambda: list(DEFAULT_IMAGE_PREFERENCE))
    publish_concurrency: int = 64
    insert_concurrency: int = 2
    """Fan-out: slices of a firmware's jobs inserted at once (each on a pool connection)."""
    fetch_batch: int = 10
    job_ack_wait_s: float = JOB_ACK_WAIT
    """Ack wait of the job consumers the scheduler creates: a lab silent this
    long (no in-progress ack) loses its job to another lab."""


class Config(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    scheduler: SchedulerSettings = msgspec.field(default_factory=SchedulerSettings)


def intake_consumer(subjects: Subjects):
    """New work: paused by the control switch."""
    return service_consumer(INTAKE_CONSUMER, [
        subjects.event("firmware.discovered"),
        subjects.event("firmware.retry_requested"),
        subjects.event("job.retry_requested"),
    ])


def control_consumer(subjects: Subjects):
    """Cancel requests: served even while paused (a drain may need them)."""
    return service_consumer(CONTROL_CONSUMER, [
        subjects.event("firmware.cancel_requested"),
        subjects.event("job.cancel_requested"),
    ])


def _log_unmet_wishes(firmware_id: str, drafts, wishes: Mapping[str, ImageWish]) -> None:
    """Device types whose job carries another image than their devices boot (their
    labs refuse it): the firmware has none of that type."""
    unmet = sorted(d.device_type for d in drafts
                   if (wish := wishes.get(d.device_type)) and not wish.met_by(d.image))
    if unmet:
        log.warning("firmware has no image of the type these devices boot: their jobs "
                    "carry the preference order's image", extra={
                        "firmware_id": firmware_id, "count": len(unmet),
                        "device_types": unmet[:20]})


class Scheduler:
    def __init__(self, pool: asyncpg.Pool, dispatcher: Dispatcher, lifecycle: Lifecycle,
                 plans: PlanSet, settings: SchedulerSettings,
                 image_wishes: Callable[[], Mapping[str, ImageWish]] = dict) -> None:
        self.pool = pool
        self.image_wishes = image_wishes
        """Device type -> the image type its devices boot (the registry's view)."""
        self.dispatcher = dispatcher
        self.lifecycle = lifecycle
        self.plans = plans
        self.settings = settings

    async def handle(self, event: CloudEvent, meta: MsgMeta) -> None:
        if isinstance(event, FirmwareDiscovered):
            await self.schedule_firmware(event.data)
        elif isinstance(event, JobRetryRequested):
            if not await self.lifecycle.retry_job(event.data.job_id):
                log.info("retry of a job that is not done ignored",
                         extra={"job_id": event.data.job_id})
        elif isinstance(event, FirmwareRetryRequested):
            count = await self.lifecycle.retry_firmware(event.data.firmware_id)
            log.info("firmware retry", extra={"firmware_id": event.data.firmware_id,
                                              "jobs": count})
        elif isinstance(event, JobCancelRequested):
            await self.lifecycle.cancel_job(event.data.job_id,
                                            event.data.reason or "cancelled by request")
        elif isinstance(event, FirmwareCancelRequested):
            await self.lifecycle.cancel_firmware(event.data.firmware_id,
                                                 event.data.reason or "cancelled by request")

    async def schedule_open_firmware(self, why: str) -> None:
        """Jobs that are missing for the firmware still open.

        KernelCI's rule: an ``available`` firmware still takes new children (a
        late lab); a closing or done one does not. Scheduling is idempotent, so
        this only adds and publishes the jobs that are missing: after a lab
        brought new device types, and at start-up (a crash may have cut that
        short, or come between inserting jobs and publishing them).
        """
        async with self.pool.acquire() as conn:
            open_firmware = await load_open_firmware(conn)
        for data in open_firmware:
            added = await self.schedule_firmware(data)
            log.info("open firmware rescheduled", extra={
                "firmware_id": data.firmware_id, "why": why, "jobs_published": added})

    async def schedule_firmware(self, data: FirmwareDiscoveredData) -> int:
        """Queue the firmware's jobs; returns how many were published now.

        Pipelined, with the job rows as the outbox (see ``queueing``).
        """
        firmware_id = data.firmware_id
        unknown = self.plans.unknown(data.plans)
        if unknown:
            log.warning("firmware asks for unknown test plans", extra={
                "firmware_id": firmware_id, "plans": unknown, "known": self.plans.names()})
        retention = dt.timedelta(days=self.settings.device_retention_days)
        async with self.pool.acquire() as conn:
            await record_firmware(conn, data)
            state = await store.firmware_state(conn, firmware_id)
            if state == "done":
                log.info("firmware already done; event ignored",
                         extra={"firmware_id": firmware_id})
                return 0
            # Also after a crash between insert and publish: whatever is not queued yet.
            existing, unpublished = await store.firmware_jobs(conn, firmware_id)
            batch = self.dispatcher.batch()
            try:
                if unpublished:
                    await batch.add(await store.job_specs(conn, unpublished))
                if state in ("running", "available"):  # a closing firmware takes no new jobs
                    device_types = await store.known_device_types(
                        conn, dt.datetime.now(dt.UTC) - retention)
                    drafts = plan_jobs(
                        data, device_types,
                        self.plans.for_firmware(data.source_kind, data.plans),
                        overhead_s=self.settings.job_overhead_s,
                        image_preference=self.settings.image_preference,
                        image_wishes=(wishes := self.image_wishes()),
                    )
                    _log_unmet_wishes(firmware_id, drafts, wishes)
                    await insert_and_queue(
                        self.pool, batch, firmware_id,
                        [d for d in drafts if d.job_id not in existing],
                        lambda d: store.new_job_spec(d, firmware_id, data.version,
                                                     data.revision),
                        max_attempts=self.settings.max_attempts,
                        concurrency=self.settings.insert_concurrency)
                published = await batch.close()
            except BaseException:
                await batch.cancel()
                raise
            await store.set_queue_seqs(conn, published)
            device_types_now = sorted({s.device_type for s in batch.specs})
            online = await store.device_types_online(conn, device_types_now)
        waiting = [d for d in device_types_now if d not in online]
        log.info("firmware scheduled", extra={
            "firmware_id": firmware_id, "jobs": len(published),
            "waiting_for_lab": len(waiting)})
        await self.lifecycle.mark_available(firmware_id, self.settings.holdoff_s)
        return len(published)


async def pausable_intake(js: JetStreamContext, subjects: Subjects, scheduler: Scheduler,
                          switch: ControlSwitch, stop: asyncio.Event, batch: int) -> None:
    """Consume new work while the switch is on; messages wait in the stream while paused."""
    pull = Pull(subjects.events_stream, intake_consumer(subjects), batch=batch)
    while not stop.is_set():
        if switch.paused:
            await wait_or_stop(switch.wait_running(), stop)
            continue
        halt = asyncio.Event()
        watcher = asyncio.create_task(_halt_on_pause(switch, stop, halt))
        try:
            await consume(js, pull, scheduler.handle, halt)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _halt_on_pause(switch: ControlSwitch, stop: asyncio.Event, halt: asyncio.Event) -> None:
    await wait_or_stop(switch.wait_paused(), stop)
    halt.set()


class SchedulerApp(LifecycleApp):
    name = "scheduler"
    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.plans = PlanSet.load(config.scheduler.plans_file)

    async def open(self, daemon: Daemon) -> None:
        """Connect, catch up with the registry and the switch, start consuming."""
        settings, subjects, stop = self.config.scheduler, self.subjects, daemon.stop
        js = await self.open_lifecycle(
            daemon, dispatcher_options={"concurrency": settings.publish_concurrency},
            max_attempts=settings.max_attempts, firmware_timeout_s=settings.firmware_timeout_s)
        self.registry = DeviceRegistry(js, subjects, self.pool)
        self.job_consumers = JobConsumerKeeper(js, subjects, ack_wait=settings.job_ack_wait_s)
        self.registry.on_device_types = self.job_consumers.want
        self.switch = ControlSwitch(js, subjects)
        daemon.loop("job-consumers", self.job_consumers.run)
        daemon.loop("registry", self.registry.run)
        daemon.loop("control-watch", self.switch.run)
        # Fan-out reads the registry: let it catch up with the bucket first
        # (as long as that takes: a database outage at start is waited out).
        if not await wait_or_stop(
                asyncio.gather(self.registry.ready.wait(), self.switch.ready.wait()), stop):
            raise Stopped("stopped before the registry was read")
        # The job consumers follow the drain switch once it has been read.
        daemon.loop("jobs-held", lambda stop: keep_jobs_held(
            self.nc, js, subjects, lambda: self.switch.record.jobs_held, stop))
        self.scheduler = Scheduler(self.pool, self.dispatcher, self.lifecycle, self.plans, settings,
                                   image_wishes=lambda: self.registry.image_wishes)
        self.registry.on_new_device_types = self._late_lab
        # Labs may only bind to job consumers: every device type announced gets
        # its consumers here, in the background (and from `wrtci nats apply` /
        # `wrtci lab add`); new ones through the registry's hook.
        self.job_consumers.want(self.registry.online_device_types()
                                | await self._known_device_types())
        if not self.switch.paused:
            await retry_call("start-up scheduling", self.scheduler.schedule_open_firmware,
                             "start-up", stop=stop, logger=log)
        # Exists even while paused: `wrtci scheduler status` counts what waits in it.
        await retry_call("intake consumer", ensure_consumer, js, subjects.events_stream,
                         intake_consumer(subjects), stop=stop, logger=log)
        daemon.loop("intake", lambda stop: pausable_intake(
            js, subjects, self.scheduler, self.switch, stop, settings.fetch_batch))
        daemon.loop("control", lambda stop: consume(
            js, Pull(subjects.events_stream, control_consumer(subjects)), self.scheduler.handle,
            stop))
        log.info("scheduler running", extra={"plans": self.plans.names()})

    async def _known_device_types(self) -> set[str]:
        retention = dt.timedelta(days=self.config.scheduler.device_retention_days)
        async with self.pool.acquire() as conn:
            known = await store.known_device_types(conn, dt.datetime.now(dt.UTC) - retention)
        return set(known)

    async def _late_lab(self, device_types: set[str]) -> None:
        if self.switch.paused:
            # Paused means no new scheduling; the next firmware event picks them up.
            log.info("late lab while paused: not scheduling",
                     extra={"device_types": sorted(device_types)})
            return
        await self.scheduler.schedule_open_firmware(f"new device types {sorted(device_types)}")

async def run(config: Config, stop: asyncio.Event) -> None:
    await run_app(SchedulerApp(config), stop)


async def check(config: Config) -> None:
    PlanSet.load(config.scheduler.plans_file)
    await check_all(nats=check_nats(config.nats), database=check_database(
        config.database, "SELECT count(*) FROM announced_devices"))
