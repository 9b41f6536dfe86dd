"""The virtual lab's firmware image and bundled suite, checked without booting.

Booting is covered by test_spine (``wrtci up --demo``) and test_lab_device.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.lab_helpers import REVISION, VERSION, VIRTUAL_LAB, VIRTUAL_SUITE, VIRTUAL_SUITE_TARGET
from wrtci.lab_daemon.targets import load_target_file

SECTOR = 512


def _partitions(disk: bytes) -> list[tuple[bool, int, int, int]]:
    """MBR entries: (bootable, type, first sector, sectors)."""
    assert disk[510:512] == b"\x55\xaa", "no MBR signature"
    found = []
    for i in range(4):
        entry = disk[446 + 16 * i: 446 + 16 * (i + 1)]
        status, kind = entry[0], entry[4]
        start, size = struct.unpack("<II", entry[8:16])
        if kind:
            found.append((status == 0x80, kind, start, size))
    return found


def _debugfs_cat(rootfs: Path, path: str) -> str:
    """A file of the ext2 image (debugfs reads it without mounting)."""
    result = subprocess.run(["debugfs", "-R", f"cat {path}", str(rootfs)],
                            capture_output=True, check=True)
    return result.stdout.decode("latin-1")


def _debugfs_mode(rootfs: Path, path: str) -> str:
    result = subprocess.run(["debugfs", "-R", f"stat {path}", str(rootfs)],
                            capture_output=True, text=True, check=True)
    return result.stdout.split("Mode:")[1].split()[0]


def test_the_firmware_is_a_bootable_combined_disk_image(virtual_firmware, tmp_path):
    image = virtual_firmware.image
    assert image.name == f"openwrt-{VERSION}-x86-64-generic-ext4-combined.img"
    disk = image.read_bytes()
    [boot, root] = _partitions(disk)
    assert boot[:2] == (True, 0x0C)     # active FAT32 (LBA): syslinux, kernel, preinit
    assert root[:2] == (False, 0x83)    # Linux: the root filesystem
    assert b"SYSLINUX" in disk[boot[2] * SECTOR: boot[2] * SECTOR + SECTOR]
    listing = subprocess.run(["mdir", "-b", "-i", f"{image}@@{boot[2] * SECTOR}", "::"],
                             capture_output=True, text=True, check=True,
                             env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout
    assert {"::/vmlinuz", "::/initrd.gz", "::/syslinux.cfg"} <= set(
        listing.split())

    rootfs = tmp_path / "root.ext2"
    rootfs.write_bytes(disk[root[2] * SECTOR: (root[2] + root[3]) * SECTOR])
    assert struct.unpack("<H", rootfs.read_bytes()[1080:1082])[0] == 0xEF53  # ext2 magic
    release = _debugfs_cat(rootfs, "/etc/openwrt_release")
    assert f"DISTRIB_REVISION='{REVISION}'" in release
    assert f"DISTRIB_RELEASE='{VERSION}'" in release
    assert "askfirst" in _debugfs_cat(rootfs, "/etc/inittab")
    assert "br-lan" in _debugfs_cat(rootfs, "/etc/init.d/rcS")
    assert _debugfs_cat(rootfs, "/bin/ubus").startswith("#!/bin/sh")
    # Debian's programs OpenWrt has too: dropbear, scp (SSHDriver's explicit_scp_mode),
    # a netstat with -p, a shell that finds them on PATH. They are dynamically
    # linked: the loader and their libraries are in the image.
    programs = {"/usr/sbin/dropbear": "/usr/sbin/dropbear", "/usr/bin/scp": "/usr/bin/scp",
                "/bin/netstat": "/usr/bin/netstat"}
    for on_device in [*programs, "/bin/ash"]:
        assert _debugfs_cat(rootfs, on_device).startswith("\x7fELF"), on_device
    ldd = subprocess.run(["ldd", *programs.values()], capture_output=True, text=True,
                         check=True).stdout
    libraries = {line.split("=>")[1].split()[0] for line in ldd.splitlines() if "=> /" in line}
    assert libraries
    for library in [*libraries, "/lib64/ld-linux-x86-64.so.2"]:
        assert _debugfs_cat(rootfs, library), f"{library} missing from the image"
    # sysupgrade's backup: dropbear's config is on the keep list
    assert _debugfs_cat(rootfs, "/sbin/sysupgrade").startswith("#!/bin/sh")
    assert "/etc/config/dropbear" in _debugfs_cat(rootfs, "/lib/upgrade/keep.d/dropbear")
    # modes as on OpenWrt (root owns everything; not squashed to 0700)
    assert _debugfs_mode(rootfs, "/etc/passwd") == "0644"
    assert _debugfs_mode(rootfs, "/etc/shadow") == "0600"
    assert _debugfs_mode(rootfs, "/bin/busybox") == "0755"
    assert _debugfs_mode(rootfs, "/sbin/sysupgrade") == "0755"


@pytest.mark.timeout(600)
def test_the_build_is_reproducible_and_cached_by_its_inputs(virtual_firmware, tmp_path):
    # A cache with the Debian packages' files but no images: the image is built
    # again, identical.
    cache = tmp_path / "cache"
    (cache / "virtual-lab").mkdir(parents=True)
    cached = (Path(os.environ.get("WRTCI_CACHE") or Path.home() / ".cache/wrtci")
              / "virtual-lab")
    kernels = sorted(cached.glob("kernel-*"))
    assert kernels, "the virtual_firmware fixture should have cached a kernel"
    for package in [*kernels, *cached.glob("busybox-*")]:
        shutil.copytree(package, cache / "virtual-lab" / package.name)
    env = dict(os.environ, WRTCI_CACHE=str(cache))
    script = str(VIRTUAL_LAB / "build-firmware.sh")

    def build(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([script, str(out), VERSION, REVISION], capture_output=True,
                              text=True, env=env, timeout=300, check=True)

    first = build(tmp_path / "a")
    assert first.stdout.split()[0] == virtual_firmware.sha256
    assert "firmware: cached" not in first.stderr
    second = build(tmp_path / "b")
    assert "firmware: cached" in second.stderr
    assert second.stdout.split()[0] == virtual_firmware.sha256
    other = subprocess.run([script, str(tmp_path / "c"), VERSION, "r1-0000000000"],
                           capture_output=True, text=True, env=env, timeout=300, check=True)
    assert other.stdout.split()[0] != virtual_firmware.sha256


def test_the_suite_target_file_is_openwrt_tests_qemu_format():
    info = load_target_file(VIRTUAL_SUITE_TARGET)
    assert info.drivers == ["QEMUDriver", "ShellDriver", "SSHDriver", "QEMUNetworkStrategy"]
    assert info.resources == ["NetworkService"]
    assert info.unverified == []  # the strategy comes from the suite's strategies/
    data = yaml.safe_load(VIRTUAL_SUITE_TARGET.read_text().replace("!template", ""))
    [qemu] = [d["QEMUDriver"] for d in data["targets"]["main"]["drivers"] if "QEMUDriver" in d]
    assert qemu["disk"] == "firmware" and "kernel" not in qemu
    assert qemu["nic"] == "user,model=virtio-net-pci,net=192.168.1.0/24,id=lan"
    assert "-netdev user,id=wan" in qemu["extra_args"]
    strategy = (VIRTUAL_SUITE / "strategies" / "qemunetworkstrategy.py").read_text()
    assert "from conftest import ubus_call" in strategy


def test_the_suite_needs_a_package_wrtci_does_not():
    conftest = (VIRTUAL_SUITE / "tests" / "conftest.py").read_text()
    assert "from pytest_harvest import" in conftest
    pyproject = (VIRTUAL_SUITE / "pyproject.toml").read_text()
    assert "pytest-harvest" in pyproject
    wrtci = (VIRTUAL_LAB.parent.parent / "pyproject.toml").read_text()
    base = wrtci.split("[project.optional-dependencies]")[0]
    assert "pytest-harvest" not in base  # not a dependency of wrtci itself


def test_the_labnet_yaml_names_devices_with_target_files():
    labnet = yaml.safe_load((VIRTUAL_SUITE / "labnet.yaml").read_text())
    assert set(labnet) == {"devices", "labs", "developers"}
    for lab in labnet["labs"].values():
        for device in lab["devices"]:
            assert device in labnet["devices"]
            assert (VIRTUAL_SUITE / "targets" / f"{device}.yaml").is_file()
        for device in lab.get("device_instances", {}):
            assert device in lab["devices"]
        assert set(lab["developers"]) <= set(labnet["developers"])
