"""A suite checkout laid out like openwrt-tests, run by the lab in its own environment.

The checkout is written here (git init + commit, so it has a revision):
``pyproject.toml`` in poetry's format declaring pytest, labgrid and
pytest-harvest — which wrtci's own environment lacks —, ``tests/conftest.py``
importing it, and a target file whose strategy does ``from conftest import
...`` (as openwrt-tests' QEMUNetworkStrategy does), for the QEMU virtual
device. The lab builds the suite's environment, health-checks the device with
the suite's own shell tests, runs a job, and the results service stores the
result with the suite's revision.
"""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from tests.factories_results import Factory, ingest_all
from tests.lab_helpers import (
    VIRTUAL_TARGET,
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

CONFTEST = '''
import json
from pathlib import Path

import pytest
from pytest_harvest import get_fixture_store

SHELL = "shell"


def pytest_addoption(parser):
    parser.addoption("--firmware", action="store", default="firmware.bin")


def pytest_sessionfinish(session):
    store = get_fixture_store(session)
    if "results_bag" in store:
        Path("results.json").write_text(json.dumps(store["results_bag"], indent=2))


@pytest.fixture
def shell_command(env, target, pytestconfig):
    env.config.data.setdefault("images", {})["firmware"] = pytestconfig.getoption("firmware")
    target.get_strategy().transition(SHELL)
    return target.get_driver("ShellDriver")
'''

STRATEGY = '''
import enum

import attr
from conftest import SHELL  # only importable inside pytest, as in openwrt-tests
from labgrid import step, target_factory
from labgrid.strategy import Strategy, StrategyError


class Status(enum.Enum):
    unknown = 0
    off = 1
    shell = 2


@target_factory.reg_driver
@attr.s(eq=False)
class VirtualShellStrategy(Strategy):
    bindings = {"qemu": "QEMUDriver", "shell": "ShellDriver"}
    status = attr.ib(default=Status.unknown)

    @step(args=["status"])
    def transition(self, status, *, step):
        if not isinstance(status, Status):
            status = Status[status]
        if status == Status.unknown:
            raise StrategyError(f"can not transition to {status}")
        if status == self.status:
            return
        if status == Status.off:
            self.target.deactivate(self.shell)
            self.target.activate(self.qemu)
            self.qemu.off()
        elif status.name == SHELL:
            self.target.activate(self.qemu)
            self.qemu.on()
            self.target.activate(self.shell)
        self.status = status
'''

TESTS = '''
def test_shell(shell_command):
    assert shell_command.run_check("true") == []


def test_echo(shell_command):
    assert shell_command.run_check("echo hello") == ["hello"]


def test_uname(shell_command, results_bag):
    [line] = shell_command.run_check("uname -a")
    results_bag["uname"] = line
    assert "Linux" in line
'''


def _virtual_target() -> str:
    """The current virtual device's target file, with the suite's own strategy."""
    text = VIRTUAL_TARGET.read_text().replace("- ShellStrategy: {}",
                                              "- VirtualShellStrategy: {}")
    assert "VirtualShellStrategy" in text
    return text + "\nimports:\n  - ../strategies/virtualstrategy.py\n"


def write_suite(root: Path) -> tuple[Path, str]:
    files = {"pyproject.toml": PYPROJECT, "tests/conftest.py": CONFTEST,
             "tests/test_base.py": TESTS, "strategies/virtualstrategy.py": STRATEGY,
             "targets/qemu-x86-64.yaml": _virtual_target()}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
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
                    plans=[TestPlan(name="base", tests=["tests/test_base.py"], timeout_s=300)])
    config = lab_config(nats_config, tmp_path / "work", suite, python=None, suite_envs_dir=None,
                        health_image=str(virtual_firmware.image))
    device = config.lab.devices[0]
    config.lab.devices[0] = type(device)(**{
        **{f: getattr(device, f) for f in device.__struct_fields__},
        "target_file": str(suite / "targets" / "qemu-x86-64.yaml")})
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
        "base.test_base.test_shell": TestStatus.PASS,
        "base.test_base.test_echo": TestStatus.PASS,
        "base.test_base.test_uname": TestStatus.PASS}
    assert "results.json" in {a.name for a in finished.artifacts}  # pytest-harvest ran
    # the results service stores the result with the suite's revision
    await ingest_all(js, subjects, pool)
    row = await pool.fetchrow("SELECT result, suite_revision FROM job_attempts "
                              "WHERE job_id = $1 AND attempt = 1", job_id)
    assert (row["result"], row["suite_revision"]) == ("pass", revision)
