"""Fixtures for the wrtci virtual-lab suite, in the layout of openwrt-tests.

Like openwrt-tests: a ``--firmware`` option, and ``shell_command`` /
``ssh_command`` fixtures that bring the device to the ``shell`` state through
the target's strategy. labgrid's pytest plugin provides ``env``, ``target``,
``strategy``, ``--lg-env``, ``--lg-log`` and the ``lg_feature`` marker.

Added for wrtci:
  --expected-revision REV (or env WRTCI_EXPECTED_REVISION; FIRMWARE_VERSION as
  in openwrt-tests is accepted too): the revision the firmware under test must
  report, so the suite proves that the right firmware was booted.
"""

import os
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--firmware",
        action="store",
        default=None,
        help="firmware image under test (for the virtual lab it must be the "
        "file LG_IMAGE points to)",
    )
    parser.addoption(
        "--expected-revision",
        action="store",
        default=None,
        help="revision (DISTRIB_REVISION) the firmware must report; default: "
        "$WRTCI_EXPECTED_REVISION or $FIRMWARE_VERSION",
    )


def pytest_configure(config):
    # The virtual lab boots $LG_IMAGE (it is baked into QEMU's -initrd when the
    # target file is loaded), so a different --firmware would silently test the
    # wrong image: refuse it.
    firmware = config.getoption("firmware")
    lg_image = os.environ.get("LG_IMAGE")
    if firmware and lg_image:
        if Path(firmware).resolve() != Path(lg_image).resolve():
            raise pytest.UsageError(
                f"--firmware {firmware} differs from LG_IMAGE={lg_image}; "
                "the target boots LG_IMAGE"
            )


def _check_images(env):
    """Fail early, with a readable message, on image paths that do not exist
    (e.g. WRTCI_VIRTUAL_KERNEL unset leaves a literal '$WRTCI_VIRTUAL_KERNEL')."""
    for kind in env.config.data.get("images", {}) or {}:
        path = env.config.get_image_path(kind)
        if not os.path.isfile(path):
            pytest.exit(
                f"image '{kind}' not found: {path} (check LG_IMAGE / "
                "WRTCI_VIRTUAL_KERNEL)",
                returncode=3,
            )


@pytest.fixture(scope="session")
def firmware_path(env, pytestconfig):
    firmware = pytestconfig.getoption("firmware")
    if firmware:
        env.config.data.setdefault("images", {})["firmware"] = str(
            Path(firmware).resolve()
        )
    _check_images(env)
    return env.config.data.get("images", {}).get("firmware")


@pytest.fixture(scope="session")
def expected_revision(pytestconfig):
    return (
        pytestconfig.getoption("expected_revision")
        or os.environ.get("WRTCI_EXPECTED_REVISION")
        or os.environ.get("FIRMWARE_VERSION")
        or None
    )


@pytest.fixture
def shell_command(firmware_path, strategy):
    try:
        strategy.transition("shell")
    except Exception as exc:  # noqa: BLE001 - report any boot failure the same way
        pytest.exit(f"failed to transition to state shell: {exc!r}", returncode=3)
    return strategy.shell


@pytest.fixture
def ssh_command(firmware_path, target, strategy):
    strategy.transition("shell")
    return target.get_driver("SSHDriver")


@pytest.fixture
def openwrt_release(shell_command):
    """/etc/openwrt_release of the running firmware as a dict."""
    release = {}
    for line in shell_command.run_check("cat /etc/openwrt_release"):
        key, sep, value = line.partition("=")
        if sep:
            release[key.strip()] = value.strip().strip("'\"")
    return release
