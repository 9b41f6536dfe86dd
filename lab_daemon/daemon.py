"""The lab daemon: registers the lab, keeps devices healthy, pulls and runs jobs.

One worker task per device drives its state machine; only an idle device in
the pool asks for a job. Outbound connections only: NATS and HTTP downloads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import fcntl
import logging
import socket
import time
import uuid
from pathlib import Path

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from core.runtime import EventPublisher, connect_nats
from lab_daemon.config import Config
from lab_daemon.device import Device
from lab_daemon.firmware import FirmwareCache
from lab_daemon.healthcheck import run_health_check
from lab_daemon.job import INFRASTRUCTURE_ERRORS, JobExecution, fit_results
from lab_daemon.labnet import DeviceQueues
from lab_daemon.leftovers import kill_leftover_groups
from lab_daemon.logstream import ChunkSender
from lab_daemon.places import place_guard
from lab_daemon.targets import TargetFileError, load_target_file
from proto import events as ev
from proto.control import LabAction, LabControlReply, LabControlRequest
from proto.jobqueue import JobQueue, QueuedJob
from proto.model import DeviceState, JobResult
from proto.records import DeviceRecord, LabRecord, decode_record, encode_record

log = logging.getLogger(__name__)

VERSION = "0.1.0"
CANCEL_MEMORY = 1000
S = DeviceState


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LabDaemon:
    def __init__(self, config: Config, stop: asyncio.Event) -> None:
        self.config = config
        self.lab = config.lab
        self.stop = stop
        self.subjects = config.nats.subjects
        self.source = f"wrtci-lab/{self.lab.name}@{socket.gethostname()}"
        self.devices: dict[str, Device] = {}
        self.cache = FirmwareCache(self.lab.cache_dir, self.lab.cache_max_bytes,
                                   self.lab.download_timeout_s)
        self.queue: JobQueue | None = None
        self.executions: dict[str, JobExecution] = {}
        """Running jobs by job id, for cancel requests."""
        self.cancelled: collections.OrderedDict[tuple[str, int], str] = \
            collections.OrderedDict()
        """Recent cancels of jobs not running here (yet): a job fetched just
        before its cancel arrived must not run (the newest CANCEL_MEMORY kept)."""
        self.online = asyncio.Event()
        """Set once the lab is registered (devices, lab record, lab.online)."""
        self._shutdown_deadline: float | None = None
        self._control_tasks: set[asyncio.Task] = set()

    # -- start-up ---------------------------------------------------------------

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
        await asyncio.to_thread(self.cache.remove_partial_downloads)

    async def _run(self) -> None:
        # Its own reply inbox: the lab's NATS permissions let it read only that.
        self.nc = await connect_nats(self.config.nats, self.source,
                                     inbox_prefix=self.subjects.lab_inbox_prefix(self.lab.name))
        self.js: JetStreamContext = self.nc.jetstream()
        self.publisher = EventPublisher(self.js, self.subjects,
                                        timeout=self.config.nats.request_timeout_s)
        self.devices_kv = await self.js.key_value(self.subjects.devices_bucket)
        self.labs_kv = await self.js.key_value(self.subjects.labs_bucket)
        await self._load_devices()
        await self._clean_up_after_previous_run()
        self.queue = JobQueue(self.js, self.subjects, ack_wait=self.lab.job_ack_wait_s)
        # labnet's snapshots_only devices ask queues limited to their priorities
        self.queues = DeviceQueues(self.queue, self.js, self.subjects, self.lab.job_ack_wait_s)
        control = await self.nc.subscribe(self.subjects.lab_control(self.lab.name),
                                          cb=self._on_control)
        # Core NATS is enough: a cancel missed while disconnected still ends the
        # job centrally (the timeout service), and our late result is ignored.
        cancels = await self.nc.subscribe(self.subjects.event("job.cancelled"),
                                          cb=self._on_job_cancelled)
        for device in self.devices.values():
            await self._save(device)
        await self._publish(ev.LabOnline.build(
            ev.LabOnlineData(lab=self.lab.name, version=VERSION,
                             devices=[d.summary() for d in self.devices.values()]),
            source=self.source))
        log.info("lab online", extra={"lab": self.lab.name, "devices": list(self.devices)})
        await self._beat()
        self.online.set()
        heartbeat = asyncio.create_task(self._heartbeat())
        workers = [asyncio.create_task(self._device_loop(d), name=f"device-{d.name}")
                   for d in self.devices.values()]
        try:
            await self.stop.wait()
            log.info("stopping: no new jobs", extra={"lab": self.lab.name})
            for device in self.devices.values():
                device.poke()
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            heartbeat.cancel()
            for task in list(self._control_tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await control.unsubscribe()
                await cancels.unsubscribe()
            await self._go_offline()

    async def _load_devices(self) -> None:
        for device_config in self.lab.devices:
            try:
                target = await asyncio.to_thread(load_target_file, device_config.target_file)
            except TargetFileError as exc:
                # One broken file must not take the other devices down.
                log.error("device %s disabled: %s", device_config.name, exc,
                          extra={"device": device_config.name,
                                 "target_file": device_config.target_file})
                continue
            if target.unverified:
                log.warning("device %s: %s come from imports not present on this host",
                            device_config.name, ", ".join(target.unverified),
                            extra={"device": device_config.name})
            restored = await self._restore(device_config.name)
            self.devices[device_config.name] = Device(
                device_config, target, self.lab.name, self.lab.health, restored,
                place=place_guard(self.lab, device_config))

    async def _restore(self, name: str) -> DeviceRecord | None:
        try:
            entry = await self.devices_kv.get(self.subjects.device_key(self.lab.name, name))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return decode_record(entry.value, DeviceRecord)
        except msgspec.DecodeError:
            return None

    async def _go_offline(self) -> None:
        for device in self.devices.values():
            with contextlib.suppress(Exception):
                await self._save(device)
        with contextlib.suppress(Exception):
            await self._publish(ev.LabOffline.build(
                ev.LabOfflineData(lab=self.lab.name, reason="shutdown"), source=self.source))
            await self.labs_kv.delete(self.subjects.lab_key(self.lab.name))
        if self.queue is not None:
            await self.queue.close()
            await self.queues.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), 10)
        log.info("lab offline", extra={"lab": self.lab.name})

    # -- live state -------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lab.heartbeat_s)
            await self._beat()

    async def _beat(self) -> None:
        record = LabRecord(lab=self.lab.name, heartbeat_at=_now(), version=VERSION,
                           devices=[d.summary() for d in self.devices.values()])
        try:
            await self.labs_kv.put(self.subjects.lab_key(self.lab.name), encode_record(record))
        except Exception as exc:  # NATS away: the next beat retries
            log.warning("heartbeat failed: %r", exc, extra={"lab": self.lab.name})

    async def _save(self, device: Device) -> None:
        try:
            await self.devices_kv.put(self.subjects.device_key(self.lab.name, device.name),
                                      encode_record(device.record()))
        except Exception as exc:  # the next change writes it again
            log.warning("device record not saved: %r", exc, extra={"device": device.name})

    async def _move(self, device: Device, state: DeviceState) -> None:
        previous = device.machine.move(state)
        log.info("device %s: %s -> %s", device.name, previous, state,
                 extra={"device": device.name, "state": str(state)})
        await self._save(device)

    async def _publish(self, event: ev.CloudEvent, attempts: int = 3) -> object:
        for attempt in range(attempts):
            try:
                return await self.publisher.publish(event)
            except Exception as exc:  # retried, then reported
                if attempt == attempts - 1:
                    raise
                log.warning("publish failed, retrying: %r", exc, extra={"event_id": event.id})
                await asyncio.sleep(1 + attempt)
        return None

    async def _health_event(self, device: Device, message: str) -> None:
        event = ev.DeviceHealthChanged.build(ev.DeviceHealthData(
            lab=self.lab.name, device=device.name, device_type=device.device_type,
            health=device.health.health, state=device.state,
            consecutive_failures=device.health.failures,
            check_passed=device.last_check_passed, message=message[-2000:]),
            source=self.source, subject=device.name)
        try:
            await self._publish(event)
        except Exception as exc:  # the KV record still holds the state
            log.error("device health event lost: %r", exc, extra={"device": device.name})

    # -- the device loop -----------------------------------------------------------

    async def _device_loop(self, device: Device) -> None:
        while not self.stop.is_set():
            try:
                await self._step(device)
            except Exception:
                log.exception("device loop error", extra={"device": device.name})
                await self._wait(device, 5.0)

    async def _step(self, device: Device) -> None:
        # Someone else holds the place: nothing to do but wait (maintenance on needs no place).
        if device.place.wait_s() > 0 and device.maintenance_requested is not True:
            if device.check_requested:
                await self._check_not_run(device)  # it stays requested, for later
            await self._wait(device, device.place.wait_s())
            return
        await self._apply_maintenance(device)
        if device.state is S.MAINTENANCE:
            await self._wait(device, 3600.0)
            return
        if device.state is S.UNHEALTHY:
            if device.check_requested or time.monotonic() >= device.check_due_at:
                await self._check(device)
            else:
                await self._wait(device, device.check_due_at - time.monotonic())
            return
        if device.check_requested or time.monotonic() >= device.check_due_at:
            await self._check(device)
            return
        if not device.takes_jobs:
            await self._wait(device, min(60.0, max(0.1, device.check_due_at - time.monotonic())))
            return
        if not await device.place.looks_free():
            return  # not taking a job we could not run: it stays queued for others
        job = await self.queues.for_device(device.config).next_job(
            device.device_type, wait=self.lab.fetch_timeout_s)
        if job is None:
            return
        if self.stop.is_set():
            await job.nak()
            return
        await self._run_job(device, job)

    async def _wait(self, device: Device, seconds: float) -> None:
        device.wakeup.clear()
        stop = asyncio.ensure_future(self.stop.wait())
        poke = asyncio.ensure_future(device.wakeup.wait())
        try:
            await asyncio.wait({stop, poke}, timeout=max(0.0, seconds),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            poke.cancel()

    async def _apply_maintenance(self, device: Device) -> None:
        wanted = device.maintenance_requested
        if wanted is None:
            return
        device.maintenance_requested = None
        if wanted and device.state is not S.MAINTENANCE:
            await self._move(device, S.MAINTENANCE)
            device.message = "maintenance on"
            await self._health_event(device, "maintenance on")
        elif not wanted and device.state is S.MAINTENANCE:
            device.message = "maintenance off"
            device.check_requested = True  # back into the pool only through a passing check
            if not await self._check(device):
                device.maintenance_requested = False  # the place was taken: try again later

    # -- health checks ---------------------------------------------------------------

    async def _check(self, device: Device) -> bool:
        """Run a health check with the device's place held; False if the place was not free.

        A place someone else holds says nothing about the device's health: no
        check, nothing counted, the check is tried again when the place is free.
        """
        if not await device.place.acquire():
            await self._check_not_run(device)
            return False
        try:
            await self._run_check(device)
        finally:
            await device.place.release()
        return True

    async def _check_not_run(self, device: Device) -> None:
        """Answer whoever asked for a check now: the place is not free (see status)."""
        async with device.check_done:
            device.check_done.notify_all()

    async def _run_check(self, device: Device) -> None:
        health = self.lab.health
        device.check_requested = False
        await self._move(device, S.CHECKING)
        output = self.lab.runs_dir / device.name / "health-check.log"
        check = asyncio.create_task(run_health_check(self.lab, health, device.config,
                                                     device.last_good_image, output))
        stop = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({check, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not check.done():
            # Shutdown: the check (and the device it booted) is stopped, nothing recorded.
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
            await self._move(device, S.UNHEALTHY if device.health.disabled else S.IDLE)
            return
        try:
            passed, detail = check.result()
        except Exception as exc:  # a check that cannot run has failed
            passed, detail = False, f"health check could not run: {exc!r}"
        device.last_check_at = _now()
        device.last_check_passed = passed
        device.health.record(passed)
        device.message = detail
        if device.health.disabled:
            await self._move(device, S.UNHEALTHY)
            device.check_due_at = time.monotonic() + health.unhealthy_recheck_s
        else:
            await self._move(device, S.IDLE)
            device.check_due_at = time.monotonic() + health.interval_s
        log.info("health check %s", "passed" if passed else "failed",
                 extra={"device": device.name, "health": str(device.health.health),
                        "consecutive_failures": device.health.failures})
        await self._health_event(device, detail)
        async with device.check_done:
            device.check_done.notify_all()

    # -- jobs --------------------------------------------------------------------------

    async def _run_job(self, device: Device, job: QueuedJob) -> None:
        """Run the job with the device's place held (released however the job ends)."""
        if not await device.place.acquire():
            # Taken since we looked: another device, or this one later, runs the job.
            await job.nak(delay=self.lab.place_check_s)
            log.info("job handed back: the place is not free",
                     extra={"job_id": job.spec.job_id, "device": device.name})
            return
        try:
            await self._run_acquired(device, job)
        finally:
            await device.place.release()

    async def _run_acquired(self, device: Device, job: QueuedJob) -> None:
        spec, msg = job.spec, job.msg
        run = job.num_delivered or 1
        ids = {"job_id": spec.job_id, "attempt": spec.attempt, "run": run,
               "device": device.name}
        await self._move(device, S.BUSY)
        device.current_job = spec.job_id
        sender = ChunkSender(self.publisher, self.source).start()
        stage_changed = asyncio.Event()
        execution = JobExecution(lab=self.lab, device=device.config, spec=spec, run=run,
                                 cache=self.cache, sender=sender,
                                 on_stage=lambda stage: stage_changed.set())
        self.executions[spec.job_id] = execution
        reason = self.cancelled.pop((spec.job_id, spec.attempt), None)
        if reason is not None:
            execution.cancel(reason)
        keepalive = asyncio.create_task(self._keepalive(msg, execution, device, stage_changed))
        next_state = S.IDLE
        try:
            await self._publish(ev.JobStarted.build(
                ev.JobStartedData(job_id=spec.job_id, attempt=spec.attempt, lab=self.lab.name,
                                  device=device.name,
                                  deadline=_now() + dt.timedelta(seconds=spec.timeout_s)),
                source=self.source, id=f"job.started:{spec.job_id}:{spec.attempt}",
                subject=spec.job_id))
            log.info("job started", extra=ids)
            finished = await self._execute_or_hand_back(execution, msg, ids)
            if finished is None:
                return
            await self._finish(msg, finished, ids)
            if finished.result is JobResult.PASS and execution.image is not None \
                    and not device.config.health_image:
                self._keep_for_checks(device, execution.image)
            if finished.error_code in INFRASTRUCTURE_ERRORS:
                next_state = S.CHECKING
        finally:
            self.executions.pop(spec.job_id, None)
            keepalive.cancel()
            # Chunks still waiting for NATS (it was away at the end of the job) go first.
            await sender.close(within_s=min(30.0, max(0.0, self._grace_left())))
            device.current_job = None
            if next_state is S.CHECKING:
                device.check_requested = True
            await self._move(device, S.IDLE)

    def _keep_for_checks(self, device: Device, image: Path) -> None:
        """Health checks boot the last image that passed: eviction must not take it."""
        if image == device.last_good_image or not self.cache.hold(image):
            return
        if device.last_good_image is not None:
            self.cache.release(device.last_good_image)
        device.last_good_image = image

    async def _execute_or_hand_back(self, execution: JobExecution, msg: Msg,
                                    ids: dict) -> ev.JobFinishedData | None:
        """The job's result; or None when shutdown handed the job back."""
        task = asyncio.create_task(execution.execute())
        stop = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                log.info("shutdown: waiting up to %.0f s for the running job",
                         self._grace_left(), extra=ids)
                await asyncio.wait({task}, timeout=max(0.0, self._grace_left()))
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        reason = (f"lab {self.lab.name} shutting down; job handed back after "
                  f"{self.lab.shutdown_grace_s:.0f} s grace")
        with contextlib.suppress(Exception):
            await self._publish(ev.JobProgress.build(ev.JobProgressData(
                job_id=execution.spec.job_id, attempt=execution.spec.attempt,
                lab=self.lab.name, device=execution.device.name, stage="handed_back",
                message=reason), source=self.source, subject=execution.spec.job_id),
                attempts=1)
        await msg.nak()
        log.warning("job handed back: %s", reason, extra=ids)
        return None

    def _grace_left(self) -> float:
        """Seconds of the shutdown grace still left (infinite while not stopping)."""
        if not self.stop.is_set():
            return float("inf")
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + self.lab.shutdown_grace_s
        return self._shutdown_deadline - time.monotonic()

    async def _finish(self, msg: Msg, data: ev.JobFinishedData, ids: dict) -> None:
        """Publish job.finished until JetStream has it, then (only then) ack the job.

        While stopping, only within the shutdown grace: then the job is left
        unacked and JetStream redelivers it after the ack wait. Its rerun's
        job.finished has the same id, so a result that did get through counts once.
        """
        def build(data: ev.JobFinishedData) -> ev.JobFinished:
            return ev.JobFinished.build(data, source=self.source,
                                        id=f"job.finished:{data.job_id}:{data.attempt}",
                                        subject=data.job_id)

        # (headers and the subject count against the limit too: keep a margin)
        data = fit_results(data, lambda d: len(ev.encode(build(d))),
                           self.nc.max_payload - 4096)
        event = build(data)
        delay = 1.0
        while True:
            try:
                await self.publisher.publish(event)
                break
            except Exception as exc:  # keep the job until the result is safe
                if self._grace_left() <= 0:
                    log.error("shutdown: job.finished not persisted within the grace; "
                              "the job is left for redelivery: %r", exc, extra=ids)
                    return
                log.warning("job.finished not persisted yet, retrying: %r", exc, extra=ids)
                await asyncio.sleep(max(0.0, min(delay, self._grace_left())))
                delay = min(delay * 2, 10.0)
        try:
            await msg.ack_sync(timeout=self.config.nats.request_timeout_s)
        except (nats.errors.Error, TimeoutError) as exc:
            # Redelivery reruns the job; its job.finished has the same id and is deduped.
            log.warning("job ack not confirmed: %r", exc, extra=ids)
        log.info("job finished", extra=ids | {"result": str(data.result),
                                              "error_code": str(data.error_code or "")})

    async def _keepalive(self, msg: Msg, execution: JobExecution, device: Device,
                         stage_changed: asyncio.Event) -> None:
        """In-progress acks and JobProgress heartbeats while the job runs."""
        interval = min(self.lab.progress_interval_s, self.lab.job_ack_wait_s / 4)
        spec = execution.spec
        while True:
            with contextlib.suppress(Exception):
                await msg.in_progress()
            with contextlib.suppress(Exception):
                await self.publisher.publish(ev.JobProgress.build(ev.JobProgressData(
                    job_id=spec.job_id, attempt=spec.attempt, lab=self.lab.name,
                    device=device.name, stage=execution.stage),
                    source=self.source, id=str(uuid.uuid4()), subject=spec.job_id))
            stage_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stage_changed.wait(), interval)

    # -- control requests ----------------------------------------------------------------

    async def _on_job_cancelled(self, msg: Msg) -> None:
        try:
            event = ev.decode_as(msg.data, ev.JobCancelled)
        except ev.DecodeError as exc:
            log.warning("undecodable job.cancelled ignored: %s", exc,
                        extra={"subject": msg.subject})
            return
        execution = self.executions.get(event.data.job_id)
        if execution is None:
            # Only a cancel naming its attempt is kept: a later retry is a new attempt.
            if event.data.attempt is not None:
                self.cancelled[(event.data.job_id, event.data.attempt)] = (
                    event.data.reason or "cancelled")
                while len(self.cancelled) > CANCEL_MEMORY:
                    self.cancelled.popitem(last=False)
            return
        if event.data.attempt is not None and event.data.attempt != execution.spec.attempt:
            return
        log.info("job cancelled while running: %s", event.data.reason,
                 extra={"job_id": event.data.job_id, "device": execution.device.name})
        execution.cancel(event.data.reason)

    async def _on_control(self, msg: Msg) -> None:
        # nats-py runs a subscription's callbacks one after the other: a health
        # check request, which waits for the check, must not hold up the rest.
        task = asyncio.create_task(self._control(msg))
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    async def _control(self, msg: Msg) -> None:
        try:
            request = msgspec.json.decode(msg.data, type=LabControlRequest)
        except msgspec.DecodeError as exc:
            await self._reply(msg, LabControlReply(ok=False, message=f"bad request: {exc}"))
            return
        targets = self._targets(request.device)
        if targets is None:
            await self._reply(msg, LabControlReply(
                ok=False, message=f"no device {request.device!r} in lab {self.lab.name}"))
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
            return list(self.devices.values())
        device = self.devices.get(name)
        return [device] if device else None

    async def _checks_requested(self, devices: list[Device]) -> None:
        async def one(device: Device) -> None:
            if device.state is S.MAINTENANCE:
                return
            async with device.check_done:
                device.check_requested = True
                device.poke()
                await device.check_done.wait()

        await asyncio.wait_for(asyncio.gather(*(one(d) for d in devices)),
                               self.lab.health.timeout_s + 60)

    async def _reply(self, msg: Msg, reply: LabControlReply) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(msgspec.json.encode(reply))


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
    lab = msgspec.structs.replace(lab, suite_dir=absolute(lab.suite_dir),
                                  work_dir=absolute(lab.work_dir), devices=devices)
    return msgspec.structs.replace(config, lab=lab)
