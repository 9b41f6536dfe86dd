"""Health checks: a short plan of the suite itself, run by the same runner as jobs.

The check runs the suite's own boot/shell tests (``[lab.health] tests``) with
the suite's interpreter, the device's target file and the lab's health image,
exactly as a job would. So any target file that works for jobs works for
checks — including strategies that import from the suite's conftest — and no
wrtci code runs in the suite's interpreter.

A check that cannot work until someone fixes the lab (a target file that does
not load, a suite environment that cannot be installed, health tests missing
from the checkout, a usage or collection error) is *fatal*: the device leaves
the pool at once, with that reason, instead of after ``disable_after`` checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import time
from pathlib import Path

import msgspec

from wrtci.core.retry import wait_or_stop
from wrtci.lab_daemon.config import DeviceConfig, LabSection
from wrtci.lab_daemon.context import LabContext
from wrtci.lab_daemon.device import Device
from wrtci.lab_daemon.health_log import send_check_log
from wrtci.lab_daemon.runner import PlanFiles, run_plan
from wrtci.lab_daemon.suite import Suite
from wrtci.lab_daemon.suite_env import SuiteEnvError
from wrtci.lab_daemon.targets import TargetFileError, load_target_file
from wrtci.proto.model import DeviceState, ErrorCode, TestPlan, TestStatus

log = logging.getLogger(__name__)
S = DeviceState

HEALTH_PLAN = "health"


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    passed: bool
    detail: str
    fatal: bool = False
    """A failure only a person can fix: the device leaves the pool at once."""
    suite_revision: str | None = None
    log_dir: str | None = None


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _judge(tests: list, error_code: ErrorCode | None,
           error_message: str | None) -> tuple[bool, str, bool]:
    """(passed, summary, fatal) of the health plan's run."""
    missing = [t.path for t in tests if t.status is TestStatus.MISS]
    if error_code is not None:
        return False, error_message or str(error_code), error_code is ErrorCode.INFRASTRUCTURE
    if missing:
        return False, f"health tests not in the suite checkout: {', '.join(missing)}", True
    failed = [f"{t.path}: {t.status} {t.message or ''}".strip() for t in tests
              if t.status in (TestStatus.FAIL, TestStatus.ERROR)]
    if failed:
        return False, "health tests failed:\n" + "\n".join(failed), False
    passed = [t.path for t in tests if t.status is TestStatus.PASS]
    if not passed:
        return False, "no health test passed (all skipped or deselected)", True
    return True, "health tests passed: " + ", ".join(passed), False


async def run_health_check(lab: LabSection, device: DeviceConfig, image: Path | None,
                           suite: Suite) -> CheckResult:
    """Run the health plan on ``device``; never raises for the device's or the lab's faults."""
    try:
        await asyncio.to_thread(load_target_file, device.target_file)
    except TargetFileError as exc:
        return CheckResult(passed=False, detail=str(exc), fatal=True)
    try:
        env = await suite.current()
    except SuiteEnvError as exc:
        return CheckResult(passed=False, detail=f"suite environment: {exc}", fatal=True)
    if image is None or not await asyncio.to_thread(image.is_file):
        return CheckResult(passed=False, suite_revision=env.revision, detail=(
            f"no firmware to boot for the health check ({image}); set [lab.health] image, "
            "the device's health_image, or pass a job first"))
    health = lab.health
    files = PlanFiles(run_dir=lab.runs_dir / device.name / "health-check")
    # labgrid appends to its console log: every check starts from an empty directory.
    await asyncio.to_thread(shutil.rmtree, files.run_dir, ignore_errors=True)
    files.run_dir.mkdir(parents=True)
    plan = TestPlan(name=HEALTH_PLAN, tests=health.tests, keyword=health.keyword,
                    timeout_s=health.timeout_s)
    run = await run_plan(lab, device, plan, image, files, python=env.python,
                         timeout_s=health.timeout_s)
    passed, summary, fatal = _judge(run.tests, run.error_code, run.error_message)
    console = _tail(files.console_log, 15)
    detail = summary + (f"\n--- console ---\n{console}" if console else "")
    if not passed:
        detail += f"\n--- pytest ---\n{_tail(files.pytest_log, 15)}"
    return CheckResult(passed=passed, detail=detail, fatal=fatal,
                       suite_revision=env.revision, log_dir=str(files.run_dir))


def where_to_read(result: CheckResult) -> str:
    """Where the lab keeps the check's whole console log (until the next check);
    ``log_url`` says where wrtci serves it (``health_log.py``)."""
    if not result.log_dir:
        return ""
    console = PlanFiles(run_dir=Path(result.log_dir)).console_log
    return f"\n--- whole console log (lab host, until the next check): {console}"


class HealthChecks:
    """The daemon's side: checks with the place held, state moves, health events."""

    def __init__(self, ctx: LabContext) -> None:
        self.ctx = ctx

    async def check(self, device: Device) -> bool:
        """Run a health check with the device's place held; False if the place was not free.

        A place someone else holds says nothing about the device's health: no
        check, nothing counted, the check is tried again when the place is free.
        """
        if not await device.place.acquire():
            await self.not_run(device)
            return False
        try:
            await self._run(device)
        finally:
            await device.place.release()
        return True

    async def not_run(self, device: Device) -> None:
        """Answer whoever asked for a check now: the place is not free (see status)."""
        async with device.check_done:
            device.check_done.notify_all()

    async def _run(self, device: Device) -> None:
        ctx, health = self.ctx, self.ctx.lab.health
        device.check_requested = False
        await ctx.presence.move(device, S.CHECKING)
        check = asyncio.create_task(run_health_check(ctx.lab, device.config,
                                                     device.last_good_image, ctx.suite))
        if not await wait_or_stop(check, ctx.stop):
            # Shutdown: the check (and the device it booted) is stopped, nothing recorded.
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
            await ctx.presence.move(device, S.UNHEALTHY if device.health.disabled else S.IDLE)
            return
        try:
            result = check.result()
        except Exception as exc:  # a check that cannot run has failed
            result = CheckResult(passed=False, detail=f"health check could not run: {exc!r}")
        device.last_check_at = dt.datetime.now(dt.UTC)
        device.last_check_passed = result.passed
        if result.passed:
            device.last_passed_at = device.last_check_at
        device.problem = result.detail.splitlines()[0] if result.fatal else None
        device.health.record(result.passed, fatal=result.fatal)
        device.message = result.detail
        if device.health.disabled:
            await ctx.presence.move(device, S.UNHEALTHY)
        else:
            await ctx.presence.move(device, S.IDLE)
        retry_s = health.interval_s if result.passed \
            else min(health.interval_s, health.unhealthy_recheck_s)
        device.check_due_at = time.monotonic() + retry_s
        log.info("health check %s", "passed" if result.passed else "failed",
                 extra={"device": device.name, "health": str(device.health.health),
                        "consecutive_failures": device.health.failures,
                        "suite_revision": result.suite_revision,
                        "detail": result.detail.splitlines()[0] if result.detail else ""})
        log_url = None
        if not result.passed and result.log_dir:
            log_url = await send_check_log(ctx, device.name, Path(result.log_dir))
        await ctx.presence.health_event(
            device, result.detail + ("" if result.passed else where_to_read(result)),
            log_url=log_url)
        async with device.check_done:
            device.check_done.notify_all()
