"""The device loop's decisions (``state.next_action``) and reading a suite's
dependency declaration (``suite_env``): pure, no servers."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab_helpers import commit_all
from wrtci.lab_daemon.state import Act, HealthCounter, next_action
from wrtci.lab_daemon.suite_env import (
    SuiteEnvError,
    build_env,
    poetry_constraint,
    read_declaration,
    suite_revision,
)
from wrtci.proto.model import DeviceState

S = DeviceState
NOW = 1000.0


@dataclass
class Facts:
    state: DeviceState = S.IDLE
    health: HealthCounter = field(default_factory=lambda: _health(checked=True))
    check_requested: bool = False
    maintenance_requested: bool | None = None
    check_due_at: float = NOW + 100
    place_wait_s: float = 0.0


def _health(*, checked: bool, failures: int = 0) -> HealthCounter:
    return HealthCounter(warn_after=1, disable_after=3, failures=failures, checked=checked)


def test_a_healthy_idle_device_takes_a_job():
    assert next_action(Facts(), NOW).act is Act.TAKE_JOB


@pytest.mark.parametrize("health", [_health(checked=False), _health(checked=True, failures=1)],
                         ids=["unknown", "failing"])
def test_unknown_or_failing_health_never_takes_a_job(health):
    action = next_action(Facts(health=health), NOW)
    assert action.act is Act.WAIT and 0 < action.wait_s <= 60


def test_a_due_or_requested_check_comes_first():
    assert next_action(Facts(check_due_at=NOW), NOW).act is Act.CHECK
    assert next_action(Facts(check_requested=True), NOW).act is Act.CHECK
    unhealthy = Facts(state=S.UNHEALTHY, health=_health(checked=True, failures=3))
    assert next_action(unhealthy, NOW) == next_action(unhealthy, NOW)  # pure
    assert next_action(unhealthy, NOW).act is Act.WAIT
    assert next_action(unhealthy, NOW + 100).act is Act.CHECK


def test_a_place_someone_holds_means_waiting_and_answering_check_requests():
    assert next_action(Facts(place_wait_s=30), NOW).act is Act.WAIT
    action = next_action(Facts(place_wait_s=30, check_requested=True), NOW)
    assert (action.act, action.wait_s) == (Act.CHECK_NOT_RUN, 30)
    # maintenance on needs no place
    assert next_action(Facts(place_wait_s=30, maintenance_requested=True),
                       NOW).act is Act.MAINTENANCE


def test_maintenance():
    assert next_action(Facts(maintenance_requested=False), NOW).act is Act.MAINTENANCE
    action = next_action(Facts(state=S.MAINTENANCE, check_due_at=NOW - 1), NOW)
    assert action.act is Act.WAIT  # no checks, no jobs in maintenance


def test_a_fatal_failure_takes_the_device_out_at_once():
    health = _health(checked=True)
    health.record(False, fatal=True)
    assert health.disabled and not health.in_pool


# -- the suite's declaration ----------------------------------------------------------

def _suite(tmp_path: Path, files: dict[str, str]) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir(parents=True)
    for name, text in files.items():
        (suite / name).write_text(textwrap.dedent(text))
    return suite


OPENWRT_TESTS_PYPROJECT = '''
[tool.poetry]
name = "openwrt-tests"
package-mode = false

[tool.poetry.dependencies]
python = "^3.10"
labgrid = { git = "https://github.com/aparcar/labgrid.git", rev = "aparcar/staging" }
pytest = "^8.4.0"
pytest-harvest = "^1.10.5"
pytest-json = "~0.4"
'''


def test_poetry_declaration_as_openwrt_tests_writes_it(tmp_path):
    suite = _suite(tmp_path, {"pyproject.toml": OPENWRT_TESTS_PYPROJECT})
    declaration = read_declaration(suite)
    assert declaration.requirements == [
        "labgrid @ git+https://github.com/aparcar/labgrid.git@aparcar/staging",
        "pytest>=8.4.0,<9", "pytest-harvest>=1.10.5,<2", "pytest-json>=0.4,<0.5"]
    assert str(suite / "pyproject.toml") in declaration.source


def test_a_lock_file_pins_the_direct_dependencies(tmp_path):
    lock = '''
    [[package]]
    name = "pytest"
    version = "8.4.1"
    groups = ["main"]

    [[package]]
    name = "labgrid"
    version = "25.0.1"

    [package.source]
    type = "git"
    url = "https://github.com/aparcar/labgrid.git"
    reference = "aparcar/staging"
    resolved_reference = "0123abc"
    '''
    suite = _suite(tmp_path, {"pyproject.toml": OPENWRT_TESTS_PYPROJECT, "poetry.lock": lock})
    requirements = read_declaration(suite).requirements
    assert "pytest==8.4.1" in requirements
    assert "labgrid @ git+https://github.com/aparcar/labgrid.git@0123abc" in requirements
    assert "pytest-harvest>=1.10.5,<2" in requirements  # not in the lock: as declared


def test_pep621_and_requirements_declarations(tmp_path):
    suite = _suite(tmp_path, {"pyproject.toml": '[project]\nname="s"\n'
                                                 'dependencies = ["pytest>=8", "labgrid"]\n'})
    assert read_declaration(suite).requirements == ["pytest>=8", "labgrid"]
    other = _suite(tmp_path / "b", {"requirements.txt": "pytest\nlabgrid\n"})
    assert read_declaration(other).requirements == ["-r", str(other / "requirements.txt")]


@pytest.mark.parametrize(("spec", "pep440"), [
    ("^1.2.3", ">=1.2.3,<2"), ("^0.4.1", ">=0.4.1,<0.5"), ("~1.2.3", ">=1.2.3,<1.3"),
    ("1.2", "==1.2"), (">=2,<3", ">=2,<3"), ("*", "")])
def test_poetry_constraints(spec, pep440):
    assert poetry_constraint(spec) == pep440


def test_a_checkout_without_a_declaration_is_named(tmp_path):
    suite = _suite(tmp_path, {"conftest.py": "", "pyproject.toml": "[tool.ruff]\n"})
    with pytest.raises(SuiteEnvError, match=f"{suite}: no dependency declaration"):
        read_declaration(suite)


def test_a_dependency_that_fails_to_install_names_the_file_and_cause(tmp_path):
    broken = tmp_path / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"this is not a zip file")
    suite = _suite(tmp_path, {"requirements.txt": f"{broken}\n"})
    with pytest.raises(SuiteEnvError) as error:
        build_env(suite, tmp_path / "envs", timeout_s=300)
    message = str(error.value)
    assert f"{suite / 'requirements.txt'}: dependencies failed to install" in message
    assert "broken-1.0-py3-none-any.whl" in message  # pip's own words, from its log
    assert not [p for p in (tmp_path / "envs").iterdir() if p.is_dir()]  # nothing half-built


def test_the_revision_is_the_checkouts_git_head(tmp_path):
    suite = _suite(tmp_path, {"requirements.txt": "pytest\n"})
    assert suite_revision(suite) is None
    head = commit_all(suite)
    assert suite_revision(suite) == head and len(head) == 40
