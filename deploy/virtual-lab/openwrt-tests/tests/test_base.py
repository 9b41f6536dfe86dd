import re

import pytest


def test_shell(shell_command):
    shell_command.run_check("true")


def test_echo(shell_command):
    [output] = shell_command.run_check("echo 'hello world'")
    assert output == "hello world"


def test_uname(shell_command):
    [kernel] = shell_command.run_check("uname -s")
    [machine] = shell_command.run_check("uname -m")
    assert kernel == "Linux"
    assert machine == "x86_64"


def test_hostname(shell_command):
    [output] = shell_command.run_check("cat /proc/sys/kernel/hostname")
    assert output == "OpenWrt"


def test_firmware_version(openwrt_release, expected_revision, record_property):
    release = openwrt_release
    assert release.get("DISTRIB_ID") == "OpenWrt"
    record_property("firmware_revision", release.get("DISTRIB_REVISION"))
    record_property("firmware_release", release.get("DISTRIB_RELEASE"))
    record_property("firmware_target", release.get("DISTRIB_TARGET"))

    if not expected_revision:
        pytest.skip(
            "no expected revision given (--expected-revision or "
            "WRTCI_EXPECTED_REVISION): cannot tell which firmware should run"
        )
    record_property("expected_firmware_revision", expected_revision)
    assert release.get("DISTRIB_REVISION") == expected_revision, (
        f"firmware revision mismatch: expected {expected_revision}, "
        f"got {release.get('DISTRIB_REVISION')}"
    )


def test_os_release_matches(shell_command, openwrt_release):
    release = openwrt_release
    [build_id] = shell_command.run_check(". /etc/os-release; echo $BUILD_ID")
    assert build_id == release["DISTRIB_REVISION"]


def test_free_memory(shell_command, record_property):
    [line] = shell_command.run_check("grep MemTotal /proc/meminfo")
    total_kb = int(line.split()[1])
    record_property("mem_total_kb", total_kb)
    assert total_kb > 64 * 1024


def test_kernel_errors(shell_command):
    dmesg_output = "\n".join(shell_command.run_check("dmesg"))
    assert dmesg_output, "dmesg returned nothing"
    error_patterns = [
        r" Oops:",
        r"BUG:",
        r"Kernel panic",
        r"Out of memory",
        r"segfault",
        r"Unable to handle kernel",
    ]
    errors = [p for p in error_patterns if re.search(p, dmesg_output)]
    assert not errors, f"kernel log contains {errors}"


@pytest.mark.lg_feature("online")
def test_online(shell_command):
    """Needs network access; the virtual lab has none, so this is skipped."""
    shell_command.run_check("ping -c 1 -W 5 downloads.openwrt.org")
