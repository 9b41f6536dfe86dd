"""Fixtures of the wrtci virtual-lab suite, laid out like openwrt-tests.

As in openwrt-tests: a ``--firmware`` option that becomes the target's
``firmware`` image, ``shell_command`` / ``ssh_command`` fixtures that bring the
device to the ``shell`` state through the target's strategy, ``ubus_call``
(the target strategy imports it from here), and the per-test ``results_bag``
of pytest-harvest written to ``results.json`` at the end of the session.
labgrid's pytest plugin provides ``env``, ``target``, ``--lg-env``,
``--lg-log`` and the ``lg_feature`` marker.

Added for wrtci: ``--expected-revision REV`` (or ``WRTCI_EXPECTED_REVISION``,
or ``FIRMWARE_VERSION`` as openwrt-tests' CI sets it), the revision the
firmware must report, so the suite proves the right firmware was booted.
"""

import json
import os
from pathlib import Path

import pytest
from pytest_harvest import get_fixture_store


def pytest_addoption(parser):
    parser.addoption("--firmware", action="store", default=None,
                     help="firmware image under test (default: the target file's)")
    parser.addoption("--expected-revision", action="store", default=None,
                     help="revision (DISTRIB_REVISION) the firmware must report; default: "
                     "$WRTCI_EXPECTED_REVISION or $FIRMWARE_VERSION")


def pytest_sessionfinish(session):
    """Everything the tests put in their results_bag, as results.json."""
    store = get_fixture_store(session)
    if "results_bag" in store:
        Path("results.json").write_text(json.dumps(store["results_bag"], indent=2))


def ubus_call(command, namespace, method, params=None):
    """``ubus call`` on the device; the decoded JSON answer ({} if none)."""
    output, _, exitcode = command.run(
        f"ubus call {namespace} {method} '{json.dumps(params or {})}'")
    assert exitcode == 0, f"ubus call {namespace} {method} failed ({exitcode}): {output}"
    try:
        return json.loads("\n".join(output))
    except json.JSONDecodeError:
        return {}


def _use_firmware(env, pytestconfig):
    firmware = pytestconfig.getoption("firmware")
    if firmware:
        env.config.data.setdefault("images", {})["firmware"] = str(Path(firmware).resolve())
    images = env.config.data.get("images") or {}
    path = images.get("firmware")
    if not path or not os.path.isfile(path):
        pytest.exit(f"firmware image not found: {path!r} (pass --firmware)", returncode=3)


def _boot(target):
    try:
        target.get_strategy().transition("shell")
    except Exception as exc:  # noqa: BLE001 - every boot failure is reported alike
        pytest.exit(f"failed to transition to state shell: {exc!r}", returncode=3)


@pytest.fixture
def shell_command(env, target, pytestconfig):
    _use_firmware(env, pytestconfig)
    _boot(target)
    return target.get_driver("ShellDriver")


@pytest.fixture
def ssh_command(env, target, pytestconfig):
    _use_firmware(env, pytestconfig)
    _boot(target)
    return target.get_driver("SSHDriver")


@pytest.fixture(scope="session")
def expected_revision(pytestconfig):
    return (pytestconfig.getoption("expected_revision")
            or os.environ.get("WRTCI_EXPECTED_REVISION")
            or os.environ.get("FIRMWARE_VERSION")
            or None)


@pytest.fixture
def openwrt_release(shell_command):
    """/etc/openwrt_release of the running firmware as a dict."""
    release = {}
    for line in shell_command.run_check("cat /etc/openwrt_release"):
        key, sep, value = line.partition("=")
        if sep:
            release[key.strip()] = value.strip().strip("'\"")
    return release
