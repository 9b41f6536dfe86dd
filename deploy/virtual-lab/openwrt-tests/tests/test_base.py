import re
import tarfile

import pytest
from conftest import ubus_call


def test_shell(shell_command):
    shell_command.run_check("true")


def test_echo(shell_command):
    [output] = shell_command.run_check("echo 'hello world'")
    assert output == "hello world"


def test_uname(shell_command):
    [uname] = shell_command.run_check("uname -a")
    assert "GNU/Linux" in uname
    assert " x86_64 " in uname


def test_hostname(shell_command):
    [output] = shell_command.run_check("cat /proc/sys/kernel/hostname")
    assert output == "OpenWrt"


def test_ubus_system_board(shell_command, results_bag):
    board = ubus_call(shell_command, "system", "board")
    assert board["release"]["distribution"] == "OpenWrt"
    assert board["release"]["target"] == "x86/64"
    assert board["rootfs_type"] == "ext4"
    results_bag["board_name"] = board["board_name"]
    results_bag["kernel"] = board["kernel"]
    results_bag["revision"] = board["release"]["revision"]
    results_bag["rootfs_type"] = board["rootfs_type"]
    results_bag["target"] = board["release"]["target"]
    results_bag["version"] = board["release"]["version"]


def test_lan_bridge(shell_command):
    status = ubus_call(shell_command, "network.interface.lan", "status")
    assert status["l3_device"] == "br-lan"
    assert {"address": "192.168.1.1", "mask": 24} in status["ipv4-address"]
    assert shell_command.run_check("ls /sys/class/net/br-lan/brif") == ["eth0"]


def test_firmware_version(openwrt_release, expected_revision, record_property):
    release = openwrt_release
    assert release.get("DISTRIB_ID") == "OpenWrt"
    record_property("firmware_revision", release.get("DISTRIB_REVISION"))
    record_property("firmware_release", release.get("DISTRIB_RELEASE"))
    record_property("firmware_target", release.get("DISTRIB_TARGET"))
    if not expected_revision:
        pytest.skip("no expected revision given (--expected-revision or "
                    "WRTCI_EXPECTED_REVISION): cannot tell which firmware should run")
    record_property("expected_firmware_revision", expected_revision)
    assert release.get("DISTRIB_REVISION") == expected_revision, (
        f"firmware revision mismatch: expected {expected_revision}, "
        f"got {release.get('DISTRIB_REVISION')}")


def test_free_memory(shell_command, results_bag):
    [_, memory, _] = shell_command.run_check("free -m")
    total, used = (int(value) for value in memory.split()[1:3])
    results_bag["used_memory"] = used
    assert total >= 64, f"only {total} MB of memory"
    assert used < total


def test_port_22_open(shell_command):
    # as openwrt-tests checks it: `netstat -p` names the listening program
    [line] = shell_command.run_check("netstat -tlpn | grep 0.0.0.0:22")
    assert line.split()[3] == "0.0.0.0:22" and line.split()[5] == "LISTEN"
    assert line.split()[6].endswith("/dropbear")


def test_ssh(ssh_command):
    ssh_command.run_check("true")
    [release] = ssh_command.run_check(". /etc/openwrt_release; echo $DISTRIB_ID")
    assert release == "OpenWrt"


def test_scp_put_and_get(ssh_command, tmp_path):
    # SSHDriver with explicit_scp_mode: `scp -O`, the device runs scp -t / -f
    sent = tmp_path / "sent.txt"
    sent.write_text("wrtci scp round trip\n")
    ssh_command.put(str(sent), "/tmp/scp-test.txt")
    assert ssh_command.run_check("cat /tmp/scp-test.txt") == ["wrtci scp round trip"]
    (tmp_path / "back").mkdir()
    ssh_command.get("/tmp/scp-test.txt", str(tmp_path / "back"))
    assert (tmp_path / "back" / "scp-test.txt").read_text() == sent.read_text()
    ssh_command.run_check("rm -f /tmp/scp-test.txt")


def _backup(ssh_command, tmp_path, options):
    """``sysupgrade OPTIONS -b``, fetched with scp; the archive's member names."""
    ssh_command.run_check(f"sysupgrade {options} -b /tmp/backup.tar.gz")
    ssh_command.get("/tmp/backup.tar.gz", str(tmp_path))
    ssh_command.run_check("rm -f /tmp/backup.tar.gz")
    with tarfile.open(tmp_path / "backup.tar.gz", "r") as backup:
        return backup.getnames()


@pytest.mark.lg_feature("rootfs")
def test_sysupgrade_backup(ssh_command, tmp_path):
    names = _backup(ssh_command, tmp_path, "")
    assert "etc/config/dropbear" in names
    assert {"etc/config/network", "etc/config/system", "etc/passwd"} <= set(names)


@pytest.mark.lg_feature("rootfs")
def test_sysupgrade_backup_u(ssh_command, tmp_path):
    # -u leaves out what is unchanged from /rom; a file added to the keep list is in
    ssh_command.run_check("echo /etc/wrtci-backup-test >> /etc/sysupgrade.conf"
                          " && echo kept > /etc/wrtci-backup-test")
    try:
        names = _backup(ssh_command, tmp_path, "-u")
    finally:
        ssh_command.run_check("cp /rom/etc/sysupgrade.conf /etc/sysupgrade.conf"
                              " && rm -f /etc/wrtci-backup-test")
    assert "etc/config/dropbear" not in names
    assert {"etc/sysupgrade.conf", "etc/wrtci-backup-test"} <= set(names)


def test_kernel_errors(shell_command):
    logread = "\n".join(shell_command.run_check("logread"))
    assert logread, "logread returned nothing"
    error_patterns = [
        r"traps:.*general protection",
        r"segfault at [0-9]+ ip",
        r"Unable to handle kernel.*address",
        r"Kernel panic",
        r"Out of memory",
    ]
    errors = [p for p in error_patterns if re.search(p, logread)]
    assert not errors, f"kernel log contains {errors}"


@pytest.mark.lg_feature("online")
def test_online(shell_command):
    """Needs network access; the virtual lab has none, so this is skipped."""
    shell_command.run_check("ping -c 1 -W 5 downloads.openwrt.org")
