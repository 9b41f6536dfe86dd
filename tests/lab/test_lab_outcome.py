"""How a suite's run is read: boot failure, crash, usage and collection errors.

The cases run real pytest subprocesses (with labgrid's plugin and the virtual
target file, as jobs do) on tiny suites written here; the pure reader gets
its own cases for what a subprocess cannot cheaply show (a kernel panic).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tests.lab_helpers import VIRTUAL_TARGET
from wrtci.lab_daemon.config import DeviceConfig, LabSection
from wrtci.lab_daemon.outcome import JunitReport, PytestRun, read_outcome
from wrtci.lab_daemon.runner import PlanFiles, PlanRun, run_plan
from wrtci.proto.model import ErrorCode, TestPlan, TestResult, TestStatus

FIRMWARE_OPTION = '''
def pytest_addoption(parser):
    parser.addoption("--firmware", action="store", default="firmware.bin")
'''
BOOT_FIXTURE = '''
import pytest
from pexpect import TIMEOUT

@pytest.fixture
def shell_command():
    # what labgrid's ShellDriver raises when the firmware never offers a login
    raise TIMEOUT("Timeout of 15.0 seconds exceeded during waiting for login")
'''
SHELL_TESTS = '''
def test_shell(shell_command):
    pass

def test_uname(shell_command):
    pass
'''


async def _run(tmp_path: Path, files: dict[str, str], *, keyword: str | None = None,
               timeout_s: float = 120) -> PlanRun:
    suite = tmp_path / "suite"
    # every suite takes --firmware, as openwrt-tests' conftest does
    root_conftest = FIRMWARE_OPTION + textwrap.dedent(files.get("conftest.py", ""))
    files = {**files, "conftest.py": root_conftest}
    for name, text in files.items():
        (suite / name).parent.mkdir(parents=True, exist_ok=True)
        (suite / name).write_text(textwrap.dedent(text))
    (suite / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    image = tmp_path / "firmware.bin"
    image.write_bytes(b"firmware")
    lab = LabSection(name="lab1", suite_dir=str(suite), work_dir=str(tmp_path / "work"))
    device = DeviceConfig(name="dut1", target_file=str(VIRTUAL_TARGET), target="x86",
                          subtarget="64", profile="generic")
    run_dir = tmp_path / "work" / "run"
    run_dir.mkdir(parents=True)
    return await run_plan(lab, device, TestPlan(name="base", tests=["tests"], keyword=keyword),
                          image, PlanFiles(run_dir=run_dir), python=sys.executable,
                          timeout_s=timeout_s)


async def test_login_timeouts_with_exit_1_are_a_boot_failure(tmp_path):
    run = await _run(tmp_path, {"conftest.py": BOOT_FIXTURE, "tests/test_base.py": SHELL_TESTS})
    assert run.error_code is ErrorCode.BOOT_FAILED, run
    assert "waiting for login" in run.error_message
    assert {t.status for t in run.tests} == {TestStatus.ERROR}  # errors, never pass/skip


async def test_the_suites_own_exit_3_is_a_boot_failure(tmp_path):
    conftest = '''
    import pytest

    @pytest.fixture
    def shell_command():
        pytest.exit("failed to transition to state shell: console closed", returncode=3)
    '''
    run = await _run(tmp_path, {"conftest.py": conftest, "tests/test_base.py": SHELL_TESTS})
    assert run.error_code is ErrorCode.BOOT_FAILED, run
    assert "console closed" in run.error_message
    assert not any(t.status in (TestStatus.PASS, TestStatus.SKIP) for t in run.tests)


async def test_pytest_internal_error_exit_3_is_a_suite_error_not_a_boot_failure(tmp_path):
    conftest = '''
    def pytest_collection_modifyitems(items):
        raise RuntimeError("plugin bug")
    '''
    run = await _run(tmp_path, {"conftest.py": conftest, "tests/test_base.py": SHELL_TESTS})
    assert run.error_code is ErrorCode.TEST_SUITE_ERROR, run
    assert "plugin bug" in run.error_message
    assert run.tests == []


async def test_a_crash_without_junit_is_a_suite_error_not_a_skip(tmp_path):
    tests = '''
    import os

    def test_crashes():
        os._exit(1)  # the interpreter dies: no junit file is written
    '''
    run = await _run(tmp_path, {"conftest.py": "", "tests/test_base.py": tests})
    assert run.junit is None
    assert run.error_code is ErrorCode.TEST_SUITE_ERROR, run
    assert "no junit" in run.error_message
    assert run.tests == []


async def test_a_collection_error_is_an_infrastructure_error_with_pytests_output(tmp_path):
    tests = "import no_such_module_here\n\ndef test_x():\n    pass\n"
    run = await _run(tmp_path, {"conftest.py": "", "tests/test_base.py": tests,
                                "tests/test_ok.py": "def test_ok():\n    pass\n"})
    assert run.error_code is ErrorCode.INFRASTRUCTURE, run
    assert "collection error" in run.error_message
    assert "No module named 'no_such_module_here'" in run.error_message  # pytest's output
    assert run.tests == []  # nothing reported as passed while the plan could not run


async def test_a_conftest_that_cannot_load_is_a_usage_error_with_its_cause(tmp_path):
    # the suite's conftest needs a package this interpreter lacks (exit 4)
    conftest = "from pytest_harvest_is_not_here import get_fixture_store\n"
    run = await _run(tmp_path, {"tests/conftest.py": conftest,
                                "tests/test_base.py": SHELL_TESTS})
    assert run.error_code is ErrorCode.INFRASTRUCTURE, run
    assert "usage error" in run.error_message
    assert "pytest_harvest_is_not_here" in run.error_message
    assert "conftest" in run.error_message


async def test_nothing_selected_is_an_error_not_a_skip(tmp_path):
    run = await _run(tmp_path, {"conftest.py": "", "tests/test_base.py": SHELL_TESTS},
                     keyword="nothing_matches_this")
    assert run.error_code is ErrorCode.TEST_SUITE_ERROR, run
    assert "no test ran" in run.error_message


async def test_a_real_failure_after_a_boot_is_a_failure(tmp_path):
    tests = '''
    def test_shell():
        pass

    def test_broken():
        assert 1 == 2
    '''
    run = await _run(tmp_path, {"conftest.py": "", "tests/test_base.py": tests})
    assert run.error_code is None, run
    assert sorted(t.status for t in run.tests) == [TestStatus.FAIL, TestStatus.PASS]


def _result(status: TestStatus, message: str = "") -> TestResult:
    return TestResult(path="base.test_base.test_x", status=status, message=message)


@pytest.mark.parametrize(("returncode", "tests", "console", "output", "code"), [
    # a kernel panic on the console, every test errored
    (1, [_result(TestStatus.ERROR, "TIMEOUT")], "Kernel panic - not syncing: VFS", "",
     ErrorCode.BOOT_FAILED),
    # one test passed: the shell was reached; a later login timeout is a failure
    (1, [_result(TestStatus.PASS), _result(TestStatus.ERROR, "waiting for login")], "", "",
     None),
    # the login timeout only in pytest's output (-s), not in junit
    (1, [_result(TestStatus.ERROR, "failed on setup")], "",
     "pexpect.exceptions.TIMEOUT: Timeout of 30 seconds exceeded during waiting for login",
     ErrorCode.BOOT_FAILED),
    # killed by a signal
    (-9, [], "", "", ErrorCode.TEST_SUITE_ERROR),
    (0, [_result(TestStatus.PASS)], "", "", None),
])
def test_read_outcome(returncode, tests, console, output, code):
    verdict = read_outcome(PytestRun(plan="base", returncode=returncode,
                                     junit=JunitReport(tests=tests), output=output,
                                     console=console))
    assert verdict.error_code == code, verdict


def test_a_timeout_keeps_what_ran():
    verdict = read_outcome(PytestRun(plan="base", returncode=None, timed_out=True,
                                     timeout_s=60, junit=None))
    assert verdict.error_code is ErrorCode.TIMEOUT and verdict.tests == []
