"""Per-device firmware preparation: sha256, gunzip (real gzip files), staging, environment.

The last two tests run jobs through the real lab daemon (NATS, a downloaded
image, the suite in a subprocess): a gzip image reaches the suite
decompressed with openwrt-tests' CI variables set; a corrupt one ends the job
as an infrastructure error naming the file.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import msgspec
import pytest

from tests.helpers import eventually
from tests.lab_helpers import (
    FAKE_FIRMWARE,
    REVISION,
    VIRTUAL_TARGET,
    job_spec,
    publish_job,
    run_one_job,
    running_lab,
    sha256_of,
    with_device,
)
from wrtci.lab_daemon.config import DeviceConfig
from wrtci.lab_daemon.firmware import FirmwareCache
from wrtci.lab_daemon.firmware_prep import (
    PrepError,
    device_image,
    gunzip,
    image_mismatch,
    prepare,
    prepare_held,
    read_openwrt_section,
    suite_environment,
    wanted_image,
)
from wrtci.proto import events as ev
from wrtci.proto.model import DeviceState, ErrorCode, Image, JobResult, TestPlan, TestStatus
from wrtci.proto.records import LabRecord, decode_record

RAW = os.urandom(200_000) + b"\0" * 300_000  # a disk image: some data, many zeros
METADATA = b"\x00\x00FWx0" + b'{"metadata_version": "1.1", "supported_devices": []}'
"""What OpenWrt appends after the gzip stream of an image (fwtool)."""

TARGET_FILE = """\
openwrt:
  name: Example Router
  target: ath79-generic
  profile: example_router-v1
  snapshots_only: true
  image:
    type: kernel
    filesystem: initramfs
targets:
  main:
    resources:
      RemotePlace:
        name: !template "$LG_PLACE"
    drivers:
      ShellDriver:
        prompt: 'root@[\\w()]+:[^ ]+ '
        login_prompt: Please press Enter to activate this console.
        username: root
images:
  root: !template $LG_IMAGE
"""


def _device(tmp_path: Path, **options) -> DeviceConfig:
    return DeviceConfig(name="dut1", target_file=str(VIRTUAL_TARGET), target="x86",
                        subtarget="64", profile="generic", **options)


def _image(name: str, data: bytes, image_type: str = "combined") -> Image:
    return Image(id="i", target="x86", subtarget="64", name=name, type=image_type,
                 filesystem="squashfs", sha256=sha256_of(data))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- gunzip -------------------------------------------------------------------------------


def test_gunzip_ignores_the_metadata_openwrt_appends(tmp_path):
    src = _write(tmp_path / "openwrt-x86-64-generic-squashfs-combined.img.gz",
                 gzip.compress(RAW) + METADATA)
    gunzip(src, tmp_path / "raw.img")
    assert (tmp_path / "raw.img").read_bytes() == RAW


def test_gunzip_reads_every_member_like_gzip_d(tmp_path):
    src = _write(tmp_path / "two.gz", gzip.compress(b"first ") + gzip.compress(b"second"))
    gunzip(src, tmp_path / "two")
    assert (tmp_path / "two").read_bytes() == b"first second"


@pytest.mark.parametrize("damage, cause", [
    (lambda z: z[: len(z) // 2], "ends early"),
    (lambda z: z[:10] + bytes(b ^ 0x5A for b in z[10:200]) + z[200:], "corrupt gzip data"),
])
def test_a_damaged_gzip_is_an_error_naming_the_file_and_leaves_nothing(tmp_path, damage, cause):
    src = _write(tmp_path / "bad.img.gz", damage(gzip.compress(RAW)))
    with pytest.raises(PrepError, match=cause) as error:
        gunzip(src, tmp_path / "bad.img")
    assert str(src) in str(error.value)
    assert list(tmp_path.iterdir()) == [src]  # no raw file, no temp file


# -- prepare --------------------------------------------------------------------------------


def test_a_gz_image_is_verified_then_decompressed_once(tmp_path):
    data = gzip.compress(RAW) + METADATA
    src = _write(tmp_path / "cache" / "x.img.gz", data)
    derived = tmp_path / "cache" / "x.img"
    prepared = prepare(src, _image("x.img.gz", data), _device(tmp_path), derived)
    assert prepared.decompressed and prepared.image == derived
    assert derived.read_bytes() == RAW
    assert prepared.lg_image == derived and prepared.staged is None
    mtime = derived.stat().st_mtime_ns
    assert prepare(src, _image("x.img.gz", data), _device(tmp_path), derived).image == derived
    assert derived.stat().st_mtime_ns == mtime  # reused, not decompressed again


def test_the_sha256_is_checked_before_anything_reads_the_image(tmp_path):
    data = gzip.compress(RAW)
    src = _write(tmp_path / "x.img.gz", data[:-1] + bytes([data[-1] ^ 0xFF]))  # damaged on disk
    with pytest.raises(PrepError, match=r"sha256 is .* the job expects") as error:
        prepare(src, _image("x.img.gz", data), _device(tmp_path), tmp_path / "x.img")
    assert error.value.checksum and str(src) in str(error.value)
    assert not (tmp_path / "x.img").exists()


def test_decompress_false_keeps_the_image_whole_and_other_names_are_not_touched(tmp_path):
    data = gzip.compress(RAW)
    src = _write(tmp_path / "x.img.gz", data)
    kept = prepare(src, _image("x.img.gz", data), _device(tmp_path, decompress=False),
                   tmp_path / "x.img")
    assert kept.image == src and not kept.decompressed
    bin_ = _write(tmp_path / "initramfs-kernel.bin", b"kernel")
    as_is = prepare(bin_, _image("initramfs-kernel.bin", b"kernel"), _device(tmp_path),
                    tmp_path / "unused")
    assert as_is.image == bin_ and not as_is.decompressed


def test_staging_puts_the_image_into_the_tftp_directory_and_replaces_the_last(tmp_path):
    device = _device(tmp_path, stage_dir=str(tmp_path / "tftp" / "{device}"))
    first = _write(tmp_path / "cache" / "a.bin", b"first")
    second = _write(tmp_path / "cache" / "b.bin", b"second")
    one = prepare(first, _image("a.bin", b"first"), device, tmp_path / "unused")
    assert one.staged == tmp_path / "tftp" / "dut1" / "a.bin"
    assert one.lg_image == one.staged and one.staged.read_bytes() == b"first"
    two = prepare(second, _image("b.bin", b"second"), device, tmp_path / "unused")
    assert two.staged.read_bytes() == b"second"
    assert sorted(p.name for p in (tmp_path / "tftp" / "dut1").iterdir()) == [
        ".wrtci-staged", "b.bin"]
    fixed = _device(tmp_path, stage_dir=str(tmp_path / "tftp" / "{device}"),
                    stage_name="openwrt-initramfs.bin")
    three = prepare(first, _image("a.bin", b"first"), fixed, tmp_path / "unused")
    assert three.staged == tmp_path / "tftp" / "dut1" / "openwrt-initramfs.bin"


def test_a_stage_directory_that_cannot_be_written_is_an_error_naming_it(tmp_path):
    blocker = _write(tmp_path / "tftp", b"a file, not a directory")
    device = _device(tmp_path, stage_dir=str(blocker / "dut1"))
    src = _write(tmp_path / "a.bin", b"x")
    with pytest.raises(PrepError, match=re.escape(f"{blocker / 'dut1'}: cannot stage a.bin")):
        prepare(src, _image("a.bin", b"x"), device, tmp_path / "unused")


async def test_prepare_held_holds_the_raw_image_and_drops_a_damaged_download(tmp_path):
    cache = FirmwareCache(tmp_path / "cache", max_bytes=1)  # everything unheld is evicted
    data = gzip.compress(RAW)
    image = _image("x.img.gz", data)
    downloaded = _write(cache.path_for(image.sha256, image.name), data)
    assert cache.hold(downloaded)
    prepared = await prepare_held(cache, downloaded, image, _device(tmp_path))
    cache.release(downloaded)
    cache.evict()
    assert prepared.image.read_bytes() == RAW  # held: not evicted
    assert not downloaded.exists()  # released: evicted
    cache.release(prepared.image)

    damaged = _write(cache.path_for(image.sha256, image.name), b"not it")
    with pytest.raises(PrepError, match="sha256"):
        await prepare_held(cache, damaged, image, _device(tmp_path))
    assert not damaged.exists()  # never used again: the next job downloads it


# -- the target file and the environment ----------------------------------------------------


def test_the_image_type_comes_from_the_lab_config_else_the_target_file(tmp_path):
    target = tmp_path / "targets" / "example_router-v1.yaml"
    _write(target, TARGET_FILE.encode())
    section = read_openwrt_section(target)
    assert section is not None
    assert (section.target, section.profile, section.snapshots_only) == (
        "ath79-generic", "example_router-v1", True)
    device = msgspec.structs.replace(_device(tmp_path), target_file=str(target))
    assert wanted_image(device, section) == "kernel:initramfs"
    override = msgspec.structs.replace(device, image_type="sysupgrade")
    assert wanted_image(override, section) == "sysupgrade"
    assert read_openwrt_section(VIRTUAL_TARGET) is None  # no openwrt: section
    # what the lab announces: the same choice, read from the device's files
    assert device_image(device) == "kernel:initramfs"
    assert device_image(override) == "sysupgrade"
    assert device_image(_device(tmp_path)) is None  # no section, no config: any type
    plain = _write(tmp_path / "plain.yaml", b"openwrt:\n  target: ath79-generic\n")
    assert device_image(msgspec.structs.replace(device, target_file=str(plain))) == "kernel"
    missing = msgspec.structs.replace(device, target_file=str(tmp_path / "gone.yaml"))
    assert device_image(missing) is None  # the target loader reports a missing file
    bad = _write(tmp_path / "bad.yaml", b"openwrt:\n  image: kernel\n")
    with pytest.raises(PrepError, match="'openwrt: image:' must be a mapping"):
        device_image(msgspec.structs.replace(device, target_file=str(bad)))


def test_an_image_of_another_type_is_refused_and_compression_is_no_difference():
    sysupgrade = _image("x-sysupgrade.bin", b"", image_type="sysupgrade")  # squashfs
    refused = image_mismatch(sysupgrade, "kernel:initramfs")
    assert refused is not None
    assert "boots kernel:initramfs" in refused and "x-sysupgrade.bin (sysupgrade:squashfs)" \
        in refused
    assert image_mismatch(sysupgrade, "sysupgrade:ext4") is not None  # both name one
    assert image_mismatch(sysupgrade, "sysupgrade") is None
    assert image_mismatch(sysupgrade, "sysupgrade:squashfs") is None
    assert image_mismatch(sysupgrade, None) is None  # the device names no type
    no_fs = msgspec.structs.replace(sysupgrade, filesystem=None)
    assert image_mismatch(no_fs, "sysupgrade:squashfs") is None  # not known to differ
    # a gzip combined image for a device booting raw combined images: decompressed, run
    gz = _image("openwrt-x86-64-generic-squashfs-combined.img.gz", b"")
    assert image_mismatch(gz, "combined:squashfs") is None


def test_a_malformed_openwrt_section_is_an_error_naming_the_file(tmp_path):
    target = _write(tmp_path / "bad.yaml", b"openwrt:\n  image: combined\n")
    expected = f"{target}: 'openwrt: image:' must be a mapping"
    with pytest.raises(PrepError, match=re.escape(expected)):
        read_openwrt_section(target)


def test_lg_env_and_firmware_version_as_openwrt_tests_ci_sets_them(tmp_path):
    env = suite_environment(_device(tmp_path), REVISION)
    assert env == {"LG_ENV": str(VIRTUAL_TARGET.resolve()), "FIRMWARE_VERSION": REVISION}
    assert "FIRMWARE_VERSION" not in suite_environment(_device(tmp_path), None)


# -- through the lab daemon ---------------------------------------------------------------------


ENV_TEST = '''
import os

def test_openwrt_tests_ci_variables(firmware):
    assert os.environ["LG_IMAGE"] == firmware
    assert firmware.endswith("/tftp/dut1/firmware.bin")
    assert os.environ["LG_ENV"].endswith("qemu-x86-64-virtual.yaml")
    assert os.environ["FIRMWARE_VERSION"] == "r28427-6df0e3d02a"
'''


async def test_a_gzip_image_reaches_the_suite_raw_and_staged(
        js, nc, subjects, events, lab1, fake_suite, file_server, tmp_path):
    base_url, www = file_server
    data = gzip.compress(FAKE_FIRMWARE) + METADATA
    (www / "firmware.bin.gz").write_bytes(data)
    (fake_suite / "tests" / "test_env.py").write_text(ENV_TEST)
    spec = job_spec("wrtci:job:gz", f"{base_url}/firmware.bin.gz", sha256_of(data),
                    name="firmware.bin.gz", plans=[TestPlan(
                        name="base", tests=["tests/test_fake.py", "tests/test_env.py"],
                        keyword="verified_image or ci_variables")])
    # the device boots this type: a .gz of it is a conversion, not another type
    config = with_device(lab1, image_type="initramfs",
                         stage_dir=str(tmp_path / "tftp" / "{device}"))
    data_ = await run_one_job(nc, subjects, events, config, spec)
    assert data_.result is JobResult.PASS, data_
    assert {t.path: t.status for t in data_.tests} == {
        "base.test_fake.test_firmware_is_the_verified_image": TestStatus.PASS,
        "base.test_env.test_openwrt_tests_ci_variables": TestStatus.PASS}
    assert (tmp_path / "tftp" / "dut1" / "firmware.bin").read_bytes() == FAKE_FIRMWARE


async def test_an_image_that_does_not_decompress_is_an_infrastructure_error(
        js, nc, subjects, events, lab1, file_server, tmp_path):
    base_url, www = file_server
    data = gzip.compress(RAW)[:5000]  # a truncated upload, checksummed as it is
    (www / "broken.img.gz").write_bytes(data)
    spec = job_spec("wrtci:job:badgz", f"{base_url}/broken.img.gz", sha256_of(data),
                    name="broken.img.gz",
                    tests=["tests/test_fake.py"])
    data_ = await run_one_job(nc, subjects, events, lab1, spec)
    assert data_.result is JobResult.ERROR and data_.tests == []
    assert data_.error_code is ErrorCode.INFRASTRUCTURE
    assert "broken.img.gz: cannot decompress: the gzip stream ends early" in data_.error_message
    ran = [p for p in (tmp_path / "work" / "runs").rglob("junit.xml")
           if "health-check" not in p.parts]  # the device's own health checks ran, no job test
    assert not ran


async def test_a_job_of_another_image_type_is_an_infrastructure_error_not_run(
        js, nc, subjects, events, lab1, fake_firmware_url, tmp_path):
    config = with_device(lab1, image_type="kernel:initramfs")
    spec = job_spec("wrtci:job:wrongtype", fake_firmware_url, sha256_of(FAKE_FIRMWARE),
                    name="fw.bin", tests=["tests/test_fake.py"])
    async with running_lab(config) as lab:
        # announced to the scheduler in the lab's registration
        kv = await js.key_value(subjects.labs_bucket)
        record = decode_record((await kv.get(subjects.lab_key("lab1"))).value, LabRecord)
        assert [(d.image_type, d.image_filesystem) for d in record.devices] == [
            ("kernel", "initramfs")]
        dut = lab.devices["dut1"]
        await eventually(lambda: dut.last_check_passed and dut.state is DeviceState.IDLE,
                         "the start-up check passed")
        checked_at = dut.last_check_at
        await publish_job(nc, subjects, spec)  # carries an "initramfs" type image
        await events.wait_for(lambda e: e.of(ev.JobFinished))
        await eventually(lambda: dut.current_job is None, "the job over")
        # not the device's fault: no health check follows
        assert not dut.check_requested and dut.state is not DeviceState.CHECKING
        assert dut.last_check_at == checked_at
    data_ = events.of(ev.JobFinished)[0].data
    assert data_.result is JobResult.ERROR and data_.tests == []
    assert data_.error_code is ErrorCode.INFRASTRUCTURE
    assert data_.error_message == (
        "wrong image type for this device: it boots kernel:initramfs images (its lab "
        "config or target file says so), the job carries fw.bin (initramfs); not run")
    assert not list((tmp_path / "work" / "cache").rglob("fw.bin*"))  # not even downloaded
