"""One test plan of a job: pytest + labgrid in a subprocess, from the suite checkout.

The command line is the one the OpenWrt suite documents (``--lg-env``,
``--firmware``, ``LG_PLACE``/``LG_IMAGE``/``LG_COORDINATOR``), written with
``--opt=value`` so pytest finds the suite's own ini file.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import msgspec

from lab_daemon.config import DeviceConfig, LabSection
from lab_daemon.firmware_prep import suite_environment
from lab_daemon.junit import parse_junit
from lab_daemon.places import lab_identity
from lab_daemon.process import run_process
from proto.model import ErrorCode, TestPlan, TestResult, TestStatus

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# pytest exit codes (and the suite's own: pytest.exit(returncode=3) when the
# device does not reach its shell).
EXIT_OK, EXIT_TESTS_FAILED, EXIT_INTERRUPTED, EXIT_BOOT, EXIT_USAGE, EXIT_NO_TESTS = range(6)


class PlanError(ValueError):
    """A plan that cannot run in this suite checkout (bad test path)."""


class PlanRun(msgspec.Struct, kw_only=True):
    plan: str
    tests: list[TestResult] = []
    error_code: ErrorCode | None = None
    error_message: str | None = None
    junit: Path | None = None
    results_json: Path | None = None


class PlanFiles(msgspec.Struct, frozen=True, kw_only=True):
    """Where one job's run writes; one directory per (job, attempt, run)."""

    run_dir: Path

    @property
    def console_dir(self) -> Path:
        return self.run_dir / "labgrid"

    @property
    def console_log(self) -> Path:
        # labgrid's --lg-log=DIR writes DIR/console_<target name>
        return self.console_dir / "console_main"

    @property
    def pytest_log(self) -> Path:
        return self.run_dir / "pytest.log"

    def plan_dir(self, plan: str) -> Path:
        # A plan name comes from the job message: never a path out of the run directory.
        return self.run_dir / "plans" / (_UNSAFE.sub("_", plan).strip(".") or "plan")


class PlanPaths(msgspec.Struct, frozen=True):
    present: list[str]
    """Absolute pytest node ids that exist in this suite checkout."""
    missing: list[str]
    """Plan entries this checkout does not have (an older or trimmed suite)."""


def test_paths(suite: Path, plan: TestPlan) -> PlanPaths:
    suite = suite.resolve()
    present, missing = [], []
    for entry in plan.tests or ["tests"]:
        node, sep, rest = entry.partition("::")
        full = (suite / node).resolve()
        if full != suite and suite not in full.parents:
            raise PlanError(f"test path {entry!r} is outside the suite checkout")
        if full.exists():
            present.append(str(full) + sep + rest)
        else:
            missing.append(entry)
    return PlanPaths(present, missing)


def missing_results(plan: str, entries: list[str]) -> list[TestResult]:
    """KCIDB MISS for each plan entry the suite checkout lacks: asked for, not run."""
    results = []
    for entry in entries:
        module = Path(entry.partition("::")[0]).stem
        results.append(TestResult(path=f"{plan}.{module}", status=TestStatus.MISS,
                                  message=f"{entry} is not in this lab's test suite checkout"))
    return results


def pytest_argv(lab: LabSection, device: DeviceConfig, plan: TestPlan, image: Path,
                files: PlanFiles, paths: list[str]) -> list[str]:
    plan_dir = files.plan_dir(plan.name)
    argv = [lab.python or sys.executable, "-m", "pytest", *paths,
            f"--lg-env={Path(device.target_file).resolve()}",
            f"--firmware={image}",
            f"--lg-log={files.console_dir}",
            f"--junitxml={plan_dir / 'junit.xml'}",
            "-v", "--color=no"]
    if plan.keyword:
        argv.append(f"-k={plan.keyword}")
    if plan.markers:
        argv.append(f"-m={plan.markers}")
    return argv


def job_environment(lab: LabSection, device: DeviceConfig, image: Path,
                    expected_revision: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(device.env)
    env["LG_IMAGE"] = str(image)
    env.update(suite_environment(device, expected_revision))  # LG_ENV, FIRMWARE_VERSION
    if device.place:
        env["LG_PLACE"] = device.place
    if lab.coordinator:
        env["LG_COORDINATOR"] = lab.coordinator
    if device.place and lab.coordinator:
        # The suite's RemotePlace must find the place acquired by its own user.
        env.update(lab_identity(lab.name, lab.labgrid_user).environment())
    if expected_revision:
        env["WRTCI_EXPECTED_REVISION"] = expected_revision
    env["PYTHONUNBUFFERED"] = "1"  # live output for the log stream
    return env


async def run_plan(lab: LabSection, device: DeviceConfig, plan: TestPlan, image: Path,
                   files: PlanFiles, expected_revision: str | None,
                   timeout_s: float) -> PlanRun:
    plan_dir = files.plan_dir(plan.name)
    plan_dir.mkdir(parents=True, exist_ok=True)
    files.console_dir.mkdir(parents=True, exist_ok=True)
    try:
        paths = test_paths(Path(lab.suite_dir), plan)
    except PlanError as exc:
        return PlanRun(plan=plan.name, error_code=ErrorCode.TEST_SUITE_ERROR,
                       error_message=str(exc))
    missed = missing_results(plan.name, paths.missing)
    if not paths.present:
        return PlanRun(plan=plan.name, tests=missed)  # nothing to run: no boot
    argv = pytest_argv(lab, device, plan, image, files, paths.present)
    outcome = await run_process(
        argv, env=job_environment(lab, device, image, expected_revision),
        cwd=plan_dir, output=files.pytest_log, limit_s=timeout_s, record_dir=lab.procs_dir)
    junit = plan_dir / "junit.xml"
    # The suite may write a results.json into its working directory.
    results_json = plan_dir / "results.json"
    run = PlanRun(plan=plan.name, tests=parse_junit(junit, plan.name) + missed,
                  junit=junit if junit.is_file() else None,
                  results_json=results_json if results_json.is_file() else None)
    if outcome.timed_out:
        run.error_code = ErrorCode.TIMEOUT
        run.error_message = f"plan {plan.name} did not finish within {timeout_s:.0f} s; killed"
    elif outcome.returncode == EXIT_BOOT:
        run.error_code = ErrorCode.BOOT_FAILED
        run.error_message = f"plan {plan.name}: the device did not reach its shell"
    elif outcome.returncode not in (EXIT_OK, EXIT_TESTS_FAILED, EXIT_NO_TESTS):
        run.error_code = ErrorCode.TEST_SUITE_ERROR
        run.error_message = f"plan {plan.name}: pytest exited with {outcome.returncode}"
    return run
