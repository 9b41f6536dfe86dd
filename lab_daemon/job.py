"""Running one job on one device: download, test plans, logs, the result.

``execute()`` returns the JobFinished data and never raises for a failure of
the job itself (those become an ``error`` result with an ErrorCode); it is
cancelled from outside on shutdown, which kills the test processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from wrtci.core.retry import wait_or_stop
from wrtci.lab_daemon.config import DeviceConfig, LabSection
from wrtci.lab_daemon.firmware import ChecksumMismatch, DownloadError, FirmwareCache
from wrtci.lab_daemon.firmware_prep import (
    PrepError,
    image_mismatch,
    prepare_held,
    suite_environment,
)
from wrtci.lab_daemon.logstream import ChunkSender, FileTailer, LogStream
from wrtci.lab_daemon.runner import PlanFiles, PlanRun, run_plan
from wrtci.proto.events import JobFinishedData, JobSpec
from wrtci.proto.model import Artifact, ErrorCode, JobResult, TestStatus
from wrtci.proto.storage import job_log_key

log = logging.getLogger(__name__)

CONSOLE = "console"
PYTEST_LOG = "pytest.log"
INFRASTRUCTURE_ERRORS = frozenset({ErrorCode.BOOT_FAILED, ErrorCode.TIMEOUT,
                                   ErrorCode.INFRASTRUCTURE})
"""Errors that may be the device's fault: a health check follows them."""

T = TypeVar("T")

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def combine(runs: list[PlanRun]) -> tuple[JobResult, ErrorCode | None, str | None]:
    """Pass if every test passed or skipped, fail if any failed, error on infrastructure."""
    for run in runs:
        if run.error_code is not None:
            return JobResult.ERROR, run.error_code, run.error_message
    statuses = [t.status for run in runs for t in run.tests]
    if not statuses:
        # nothing ran: never a pass or a skip
        return JobResult.ERROR, ErrorCode.TEST_SUITE_ERROR, "no tests ran"
    if any(s in (TestStatus.FAIL, TestStatus.ERROR) for s in statuses):
        return JobResult.FAIL, None, None
    if all(s in (TestStatus.SKIP, TestStatus.MISS) for s in statuses):
        return JobResult.SKIP, None, None
    return JobResult.PASS, None, None


def fit_results(data: JobFinishedData, size: Callable[[JobFinishedData], int],
                limit: int) -> JobFinishedData:
    """``data`` made to fit in one NATS message (``size(data) <= limit``).

    Failure texts are cut down first (junit.xml, an artifact, keeps them
    whole); a result that still does not fit says so instead of its tests.
    A result too big to publish would otherwise be retried for ever.
    """
    for keep in (1000, 200, 0):
        if size(data) <= limit:
            return data
        tests = [msgspec.structs.replace(
            t, message=(t.message or "")[:keep] or None,
            log_excerpt=(t.log_excerpt or "")[-keep:] if keep else None)
            for t in data.tests]
        data = msgspec.structs.replace(data, tests=tests)
    if size(data) <= limit:
        return data
    return msgspec.structs.replace(
        data, tests=[], result=JobResult.ERROR, error_code=ErrorCode.TEST_SUITE_ERROR,
        error_message=f"{len(data.tests)} test results do not fit in one message; "
                      "see the junit.xml artifact")


class JobExecution:
    def __init__(self, *, lab: LabSection, device: DeviceConfig, spec: JobSpec, run: int,
                 cache: FirmwareCache, sender: ChunkSender, python: str,
                 suite_revision: str | None = None, wanted_image: str | None = None,
                 on_stage: Callable[[str], None] = lambda stage: None) -> None:
        self.lab = lab
        self.device = device
        self.spec = spec
        self.run = run
        self.cache = cache
        self.sender = sender
        self.python = python
        """The suite's interpreter (its own environment, see suite_env.py)."""
        self.suite_revision = suite_revision
        self.on_stage = on_stage
        self.wanted_image = wanted_image
        """``type[:filesystem]`` the device boots; a job of another type is refused."""
        self.device_in_doubt = True
        """False when the job ended for a reason that is not the device's (no health
        check follows its infrastructure error)."""
        self.marks: dict[str, float] = {}
        """Monotonic times: pytest_start, pytest_end (and the caller's own)."""
        self.stage = "queued"
        self.image: Path | None = None
        self.lg_image: Path | None = None
        """The image as the suite gets it (``--firmware``, LG_IMAGE): staged, else ``image``."""
        self._cancelled = asyncio.Event()
        self.cancel_reason = ""
        name = _SAFE.sub("_", f"{spec.job_id}-{spec.attempt}-{run}")[-120:]
        self.files = PlanFiles(run_dir=lab.runs_dir / device.name / name)

    def _stream(self, stream: str) -> LogStream:
        return LogStream(self.sender, job_id=self.spec.job_id, attempt=self.spec.attempt,
                         run=self.run, lab=self.lab.name, device=self.device.name,
                         stream=stream, chunk_chars=self.lab.log_chunk_bytes)

    def _set_stage(self, stage: str) -> None:
        self.stage = stage
        self.on_stage(stage)

    def _finished(self, started_at: dt.datetime, result: JobResult,
                  error_code: ErrorCode | None = None, error_message: str | None = None,
                  **extra) -> JobFinishedData:
        return JobFinishedData(
            job_id=self.spec.job_id, attempt=self.spec.attempt, lab=self.lab.name,
            device=self.device.name, result=result, error_code=error_code,
            error_message=error_message, started_at=started_at, finished_at=_now(),
            log_key=job_log_key(self.spec.job_id, self.spec.attempt, CONSOLE),
            suite_revision=self.suite_revision, **extra)

    def cancel(self, reason: str) -> None:
        """Stop the job (the scheduler withdrew it); it ends as error/cancelled."""
        self.cancel_reason = reason or "cancelled"
        self._cancelled.set()

    async def _unless_cancelled(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None once the job is cancelled (``work`` is stopped)."""
        task = asyncio.ensure_future(work)
        if await wait_or_stop(task, self._cancelled):
            return task.result()
        task.cancel()  # run_process kills pytest's process group
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    async def execute(self) -> JobFinishedData:
        started_at = _now()
        # labgrid appends to its console log: every run starts from an empty directory.
        shutil.rmtree(self.files.run_dir, ignore_errors=True)
        self.files.run_dir.mkdir(parents=True)
        console, pytest_log = self._stream(CONSOLE), self._stream(PYTEST_LOG)
        tailers = [(FileTailer(self.files.console_log), console),
                   (FileTailer(self.files.pytest_log), pytest_log)]
        pump = asyncio.create_task(self._pump(tailers))
        try:
            if self._cancelled.is_set():  # withdrawn between the fetch and the start
                pytest_log.write(f"wrtci-lab: job cancelled: {self.cancel_reason}\n")
                return await self._close(started_at, tailers, pump, [], JobResult.ERROR,
                                         ErrorCode.CANCELLED, self.cancel_reason)
            mismatch = image_mismatch(self.spec.image, self.wanted_image)
            if mismatch is not None:  # the device would boot the wrong image: not tried
                self.device_in_doubt = False
                pytest_log.write(f"wrtci-lab: {mismatch}\n")
                return await self._close(started_at, tailers, pump, [], JobResult.ERROR,
                                         ErrorCode.INFRASTRUCTURE, mismatch)
            self._set_stage("download")
            try:
                downloaded = self.image = await self._download(pytest_log)
            except (DownloadError, ChecksumMismatch) as exc:
                code = (ErrorCode.CHECKSUM_MISMATCH if isinstance(exc, ChecksumMismatch)
                        else ErrorCode.DOWNLOAD_FAILED)
                pytest_log.write(f"wrtci-lab: {exc}\n")
                return await self._close(started_at, tailers, pump, [], JobResult.ERROR,
                                         code, str(exc))
            try:
                await self._prepare(pytest_log, downloaded)
            except PrepError as exc:  # the lab's side: an infrastructure error, not a test
                code = ErrorCode.CHECKSUM_MISMATCH if exc.checksum else ErrorCode.INFRASTRUCTURE
                pytest_log.write(f"wrtci-lab: {exc}\n")
                return await self._close(started_at, tailers, pump, [], JobResult.ERROR,
                                         code, str(exc))
            self._set_stage("test")
            runs = []
            extra_env = suite_environment(self.device, self.spec.firmware_revision)
            if self.spec.firmware_revision:
                extra_env["WRTCI_EXPECTED_REVISION"] = self.spec.firmware_revision
            self.marks.setdefault("pytest_start", time.monotonic())
            for plan in self.spec.plans:
                run = await self._unless_cancelled(run_plan(
                    self.lab, self.device, plan, self.lg_image or self.image, self.files,
                    python=self.python, timeout_s=plan.timeout_s, extra_env=extra_env))
                self.marks["pytest_end"] = time.monotonic()
                if run is None:
                    pytest_log.write(f"wrtci-lab: job cancelled: {self.cancel_reason}\n")
                    return await self._close(started_at, tailers, pump, runs, JobResult.ERROR,
                                             ErrorCode.CANCELLED, self.cancel_reason)
                runs.append(run)
                if run.error_code in INFRASTRUCTURE_ERRORS:
                    break  # the device is in doubt: no further plans on it
            result, code, message = combine(runs)
            return await self._close(started_at, tailers, pump, runs, result, code, message)
        finally:
            if self.image is not None:
                self.cache.release(self.image)
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    async def _download(self, out: LogStream) -> Path:
        """The verified image, held in the cache until the job is over."""
        image = self.spec.image
        cached = self.cache.cached(image.sha256, image.name)
        if cached is not None:
            out.write(f"wrtci-lab: firmware {image.name} ({image.sha256}) from the cache\n")
            return cached
        if not image.url:
            raise DownloadError(f"job {self.spec.job_id} has no download URL for {image.name}")
        out.write(f"wrtci-lab: downloading {image.name} ({image.sha256})\n")
        path = await self.cache.fetch(image.url, image.sha256, image.name)
        out.write(f"wrtci-lab: firmware verified: {path}\n")
        return path

    async def _prepare(self, out: LogStream, downloaded: Path) -> None:
        """``downloaded`` (held in the cache, ``self.image``) verified, decompressed,
        staged for this device (``firmware_prep``)."""
        self.image = None  # held by the preparation now: released below or by it
        try:
            prepared = await prepare_held(self.cache, downloaded, self.spec.image, self.device)
        except BaseException:
            self.cache.release(downloaded)
            raise
        if prepared.image != downloaded:
            self.cache.release(downloaded)  # the raw file (held) is what the device boots
        self.image, self.lg_image = prepared.image, prepared.lg_image
        for line in prepared.notes():
            out.write(f"wrtci-lab: {line}\n")

    async def _pump(self, tailers: list[tuple[FileTailer, LogStream]]) -> None:
        """Live log: new file content goes out every ``log_flush_s``."""
        while True:
            for tailer, stream in tailers:
                stream.write(tailer.poll())
                stream.flush()
            await asyncio.sleep(self.lab.log_flush_s)

    async def _close(self, started_at: dt.datetime, tailers: list[tuple[FileTailer, LogStream]],
                     pump: asyncio.Task, runs: list[PlanRun], result: JobResult,
                     code: ErrorCode | None, message: str | None) -> JobFinishedData:
        self._set_stage("upload")
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        for tailer, stream in tailers:
            stream.write(tailer.rest())
            stream.finish()
        artifacts = [self._artifact(PYTEST_LOG, self.files.pytest_log, "text/plain")]
        single = len(runs) == 1
        for run in runs:
            for path, base, content_type in ((run.junit, "junit.xml", "application/xml"),
                                             (run.results_json, "results.json",
                                              "application/json")):
                if path is not None:
                    name = base if single else f"{run.plan}-{base}"
                    self._send_file(name, path)
                    artifacts.append(self._artifact(name, path, content_type))
        if not await self.sender.drain(within_s=max(30.0, self.lab.job_ack_wait_s / 2)):
            log.warning("log chunks still unacknowledged; they keep being resent",
                        extra={"job_id": self.spec.job_id, "backlog": self.sender.backlog})
        tests = [t for run in runs for t in run.tests]
        return self._finished(started_at, result, code, message, tests=tests,
                              artifacts=artifacts)

    def _send_file(self, name: str, path: Path) -> None:
        stream = self._stream(name)
        stream.write(path.read_text(errors="replace"))
        stream.finish()

    def _artifact(self, name: str, path: Path, content_type: str) -> Artifact:
        data = path.read_bytes() if path.is_file() else b""
        return Artifact(name=name, content_type=content_type, size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        object_key=job_log_key(self.spec.job_id, self.spec.attempt, name))
