"""One test plan of a job: pytest + labgrid in a subprocess, from the suite checkout.

The command line is the one the OpenWrt suite documents (``--lg-env``,
``--firmware``, ``LG_PLACE``/``LG_IMAGE``/``LG_COORDINATOR``), written with
``--opt=value`` so pytest finds the suite's own ini file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

from wrtci.lab_daemon.config import DeviceConfig, LabSection
from wrtci.lab_daemon.junit import read_junit
from wrtci.lab_daemon.outcome import PytestRun, read_outcome
from wrtci.lab_daemon.places import lab_identity
from wrtci.lab_daemon.process import run_process
from wrtci.proto.model import ErrorCode, TestPlan, TestResult, TestStatus

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

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


def pytest_argv(python: str, device: DeviceConfig, plan: TestPlan, image: Path,
                files: PlanFiles, paths: list[str]) -> list[str]:
    """The command line openwrt-tests' own CI uses, with the lab's output paths."""
    plan_dir = files.plan_dir(plan.name)
    argv = [python, "-m", "pytest", *paths,
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
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """The suite's environment: labgrid's LG_* variables, the device's and the job's own.

    ``extra`` is what firmware preparation adds for this job (``LG_ENV``,
    ``FIRMWARE_VERSION``: ``firmware_prep.suite_environment``); it wins over the
    device's ``env``.
    """
    env = dict(os.environ)
    for leaked in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH"):
        env.pop(leaked, None)  # wrtci's own environment stays out of the suite's
    env.update(device.env)
    env["LG_IMAGE"] = str(image)
    if device.place:
        env["LG_PLACE"] = device.place
    if lab.coordinator:
        env["LG_COORDINATOR"] = lab.coordinator
    if device.place and lab.coordinator:
        # The suite's RemotePlace must find the place acquired by its own user.
        env.update(lab_identity(lab.name, lab.labgrid_user).environment())
    env.update(extra or {})
    env["PYTHONUNBUFFERED"] = "1"  # live output for the log stream
    return env


def _tail(path: Path, chars: int = 20000, start: int = 0) -> str:
    """The end of a file, from ``start`` on at most."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - chars))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


async def run_plan(lab: LabSection, device: DeviceConfig, plan: TestPlan, image: Path,
                   files: PlanFiles, *, python: str, timeout_s: float,
                   extra_env: dict[str, str] | None = None) -> PlanRun:
    """Run one plan with the suite's interpreter; its outcome read by ``outcome.py``."""
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
    argv = pytest_argv(python, device, plan, image, files, paths.present)
    junit = plan_dir / "junit.xml"
    junit.unlink(missing_ok=True)
    log_start = files.pytest_log.stat().st_size if files.pytest_log.is_file() else 0
    outcome = await run_process(
        argv, env=job_environment(lab, device, image, extra_env),
        cwd=plan_dir, output=files.pytest_log, limit_s=timeout_s, record_dir=lab.procs_dir)
    output = _tail(files.pytest_log, start=log_start)  # this plan's part of the log
    verdict = read_outcome(PytestRun(
        plan=plan.name, returncode=outcome.returncode, timed_out=outcome.timed_out,
        timeout_s=timeout_s, junit=read_junit(junit, plan.name), output=output,
        console=_tail(files.console_log)))
    # The suite may write a results.json into its working directory.
    results_json = plan_dir / "results.json"
    return PlanRun(plan=plan.name, tests=verdict.tests + missed,
                   error_code=verdict.error_code, error_message=verdict.error_message,
                   junit=junit if junit.is_file() else None,
                   results_json=results_json if results_json.is_file() else None)
