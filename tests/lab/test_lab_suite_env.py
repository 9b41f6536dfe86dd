"""A suite checkout laid out like openwrt-tests, run by the lab in its own environment.

The checkout is written here (git init + commit, so it has a revision):
``pyproject.toml`` in poetry's format declaring pytest, labgrid and
pytest-harvest — which wrtci's own environment lacks —, and the bundled
suite's own files (deploy/virtual-lab/openwrt-tests): ``tests/conftest.py``
importing pytest-harvest, and the target file whose QEMUNetworkStrategy does
``from conftest import ubus_call`` (as openwrt-tests' does), for the QEMU
virtual device. The lab builds the suite's environment, health-checks the device with
the suite's own shell tests, runs a job, and the results service stores the
result with the suite's revision.
"""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
from pathlib import Path

import pytest

from tests.factories_results import Factory, ingest_all
from tests.lab_helpers import (
    VIRTUAL_SUITE,
    EventLog,
    commit_all,
    job_spec,
    lab_config,
    publish_job,
    running_lab,
)
from wrtci.proto import events as ev
from wrtci.proto.model import DeviceHealth, JobResult, TestPlan, TestStatus

PYPROJECT = '''
[tool.poetry]
name = "openwrt-tests-lookalike"
version = "0.1.0"
package-mode = false

[tool.poetry.dependencies]
python = "^3.10"
labgrid = ">=24.0"
pytest = "^8.0"
pytest-harvest = "^1.10"
'''

SUITE_PARTS = ("tests", "strategies", "targets")
"""What the checkout takes from the bundled openwrt-tests lookalike, as it is."""
JOB_TESTS = ["test_shell", "test_echo", "test_uname", "test_ubus_system_board"]
"""The job's tests (the health check runs the first three): the last fills pytest-harvest's
results_bag, which the suite's conftest writes to results.json."""


def write_suite(root: Path) -> tuple[Path, str]:
    """The bundled suite's tests, strategy and target file under a poetry declaration."""
    for part in SUITE_PARTS:
        shutil.copytree(VIRTUAL_SUITE / part, root / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    return root, commit_all(root)


@pytest.mark.slow
async def test_openwrt_tests_layout_runs_in_its_own_environment_through_the_pipeline(
        js, nc, subjects, nats_config, pool, virtual_firmware, file_server, tmp_path):
    assert importlib.util.find_spec("pytest_harvest") is None, \
        "wrtci's environment must lack the suite's plugin for this test to mean anything"
    suite, revision = write_suite(tmp_path / "openwrt-tests")
    base_url, www = file_server
    (www / "fw.img").write_bytes(virtual_firmware.image.read_bytes())
    factory = Factory(pool)
    firmware_id = await factory.firmware()
    job_id = await factory.job(firmware_id)
    spec = job_spec(job_id, f"{base_url}/fw.img", virtual_firmware.sha256,
                    name="fw.img", revision=None,
                    plans=[TestPlan(name="base", timeout_s=300, tests=[
                        f"tests/test_base.py::{name}" for name in JOB_TESTS])])
    config = lab_config(nats_config, tmp_path / "work", suite, python=None, suite_envs_dir=None,
                        health_image=str(virtual_firmware.image),
                        target_file=suite / "targets" / "qemu-x86-64.yaml")
    events = await EventLog().start(nc, subjects)
    async with running_lab(config) as daemon:
        await publish_job(nc, subjects, spec)
        await events.wait_for(lambda e: e.of(ev.JobFinished), within_s=400)
        env = daemon.ctx.suite.env
    # the suite ran in the environment the lab built from its declaration
    assert env is not None and env.revision == revision
    assert Path(env.python).is_relative_to(tmp_path / "work" / "suite-envs")
    # the health check (the suite's own shell tests) passed before the job started
    [check, *_] = events.of(ev.DeviceHealthChanged)
    assert check.data.check_passed is True, check.data.message
    assert check.data.health is DeviceHealth.HEALTHY
    assert events.events.index(check) < events.events.index(events.of(ev.JobStarted)[0])
    finished = events.of(ev.JobFinished)[0].data
    assert finished.result is JobResult.PASS, finished
    assert finished.suite_revision == revision
    assert {t.path: t.status for t in finished.tests} == {
        f"base.test_base.{name}": TestStatus.PASS for name in JOB_TESTS}
    assert "results.json" in {a.name for a in finished.artifacts}  # pytest-harvest ran
    # the results service stores the result with the suite's revision
    await ingest_all(js, subjects, pool)
    row = await pool.fetchrow("SELECT result, suite_revision FROM job_attempts "
                              "WHERE job_id = $1 AND attempt = 1", job_id)
    assert (row["result"], row["suite_revision"]) == ("pass", revision)
