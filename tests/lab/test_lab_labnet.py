"""openwrt-tests' labnet.yaml as the lab's inventory (fixture: tests/data/labnet/).

Parsing, every error case (naming the file and the cause), ``wrtci-lab check``
with ``--labnet``, and the daemon: labnet devices register with their device
types while the bad ones stay out, and a ``snapshots_only`` device takes a
snapshot job but leaves a stable one for others.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import msgspec
import pytest

from tests.lab_helpers import (
    PROJECT,
    fake_job,
    lab_config,
    publish_job,
    running_lab,
    write_config,
    wrtci_lab,
)
from wrtci.lab_daemon.cli import load
from wrtci.lab_daemon.config import DeviceConfig
from wrtci.lab_daemon.labnet import LabnetError, load_labnet, with_labnet
from wrtci.proto import events as ev
from wrtci.proto.model import JobResult, TestPlan
from wrtci.proto.subjects import Priority, PriorityClass

LABNET = PROJECT / "tests" / "data" / "labnet" / "labnet.yaml"
LAB = "labgrid-wrtci"
ROUTER = "ath79/generic/example_router-v1"


def test_the_fixture_becomes_the_labs_devices():
    inventory = load_labnet(LABNET, LAB)
    devices = {d.name: d for d in inventory.devices}
    assert list(devices) == ["qemu_x86-64", "example_router_1", "example_router_2"]
    assert devices["qemu_x86-64"].device_type == "x86/64/generic"
    assert devices["qemu_x86-64"].job_priorities is None
    # device_instances: one wrtci device (and labgrid place) per unit, one target file
    for unit in ("example_router_1", "example_router_2"):
        assert devices[unit].device_type == ROUTER
        assert devices[unit].place == f"{LAB}-{unit}"  # openwrt-tests' place names
        assert devices[unit].target_file == str(LABNET.parent / "targets"
                                                / "example_router-v1.yaml")
        assert devices[unit].job_priorities == [PriorityClass.SNAPSHOT]  # snapshots_only
    assert inventory.maintainers == ["@lab-owner"]
    assert inventory.developers == ["alice", "bob"]
    problems = {p.device: str(p) for p in inventory.problems}
    assert problems == {
        "lost_router": f"{LABNET}: device lost_router: target file "
                       f"{LABNET.parent / 'targets' / 'lost_router.yaml'} is missing",
        "unknown_router": f"{LABNET}: device unknown_router: unknown device: no target file "
                          f"{LABNET.parent / 'targets' / 'unknown_router.yaml'} and no "
                          "'devices:' entry",
    }
    other = load_labnet(LABNET, "labgrid-elsewhere")  # maintainers as one string
    assert [d.place for d in other.devices] == ["labgrid-elsewhere-qemu_x86-64"]
    assert other.maintainers == ["@someone-else"] and other.problems == []


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(LABNET.parent, tmp_path / "openwrt-tests")
    return tmp_path / "openwrt-tests" / "labnet.yaml"


@pytest.mark.parametrize("content, cause", [
    ("labs: [unclosed", "not valid YAML"),
    ("devices: {}\n", "not a labnet file (no 'labs:' mapping)"),
    ("labs:\n  labgrid-wrtci:\n    devices: qemu_x86-64: x\n", "not valid YAML"),
    ("labs:\n  labgrid-wrtci:\n    devices: [1, 2]\n", "labs: labgrid-wrtci: devices must be"),
    ("labs:\n  labgrid-wrtci: [a]\n", "labs: labgrid-wrtci must be a mapping"),
])
def test_a_malformed_file_is_an_error_naming_it_and_the_cause(tmp_path, content, cause):
    path = tmp_path / "labnet.yaml"
    path.write_text(content)
    with pytest.raises(LabnetError) as error:
        load_labnet(path, LAB)
    assert str(error.value).startswith(f"{path}: ") and cause in str(error.value)


def test_an_unknown_lab_or_a_missing_file_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(LabnetError, match=r"unknown lab 'labgrid-nope' .*labgrid-elsewhere, "
                                          r"labgrid-wrtci"):
        load_labnet(LABNET, "labgrid-nope")
    with pytest.raises(LabnetError, match="cannot read labnet file"):
        load_labnet(tmp_path / "labnet.yaml", LAB)


def test_a_target_file_without_its_target_leaves_only_that_device_out(tmp_path):
    path = _copy(tmp_path)
    (path.parent / "targets" / "qemu_x86-64.yaml").write_text(
        "targets:\n  main:\n    drivers: {}\n")  # no openwrt: section, no devices: entry
    (path.parent / "targets" / "example_router-v1.yaml").write_text("openwrt: [x]\n")
    inventory = load_labnet(path, LAB)
    assert inventory.devices == []
    problems = {p.device: p.reason for p in inventory.problems}
    assert "has no 'openwrt: target: <target>-<subtarget>'" in problems["qemu_x86-64"]
    assert problems["example_router-v1"] == (
        f"{path.parent / 'targets' / 'example_router-v1.yaml'}: 'openwrt:' must be a mapping")
    instances = tmp_path / "instances.yaml"
    instances.write_text("labs:\n  l:\n    devices: []\n    device_instances:\n"
                         "      ghost: [ghost_1]\n")
    [ghost] = load_labnet(instances, "l", path.parent / "targets").problems
    assert ghost.reason == "device_instances names a device lab l does not list"


def test_lab_toml_keeps_its_own_definition_of_a_labnet_device(nats_config, tmp_path):
    config = lab_config(nats_config, tmp_path / "work", tmp_path)
    own = DeviceConfig(name="qemu_x86-64", target_file=str(LABNET), target="x86",
                       subtarget="64", profile="generic", stage_dir="/srv/tftp/{device}")
    config = msgspec.structs.replace(config, lab=msgspec.structs.replace(
        config.lab, devices=[own]))
    merged, _ = with_labnet(config, LABNET, LAB)
    names = [d.name for d in merged.lab.devices]
    assert names == ["qemu_x86-64", "example_router_1", "example_router_2"]
    assert merged.lab.devices[0].stage_dir == "/srv/tftp/{device}"


async def test_wrtci_lab_check_reports_the_devices_labnet_leaves_out(
        nats_config, fake_suite, tmp_path):
    config = lab_config(nats_config, tmp_path / "work", fake_suite, name=LAB)
    config = msgspec.structs.replace(config, lab=msgspec.structs.replace(config.lab, devices=[]))
    path = write_config(config, tmp_path / "lab.toml")
    code, out = await wrtci_lab("check", "--config", str(path), "--labnet", str(LABNET))
    assert code == 1, out
    assert "device lost_router: target file" in out and "is missing" in out
    assert "device unknown_router: unknown device" in out
    code, out = await wrtci_lab("check", "--config", str(path), "--labnet", str(LABNET),
                                 "--lab", "labgrid-nope")
    assert code == 2 and f"{LABNET}: unknown lab 'labgrid-nope'" in out
    # the same through lab.toml keys, relative to the file
    copy = _copy(tmp_path)
    path.write_text(path.read_text().replace(
        "[lab]\n", f'[lab]\nlabnet = "{copy.relative_to(tmp_path)}"\n'))
    loaded = load(str(path))
    assert [d.name for d in loaded.lab.devices] == [
        "qemu_x86-64", "example_router_1", "example_router_2"]


async def test_labnet_devices_register_and_snapshots_only_takes_no_stable_job(
        js, nc, subjects, events, nats_config, fake_suite, fake_firmware_url, tmp_path):
    config = lab_config(nats_config, tmp_path / "work", fake_suite, name="lab1")
    config = msgspec.structs.replace(config, lab=msgspec.structs.replace(
        config.lab, devices=[], labnet_lab=LAB))
    config, _ = with_labnet(config, LABNET, LAB)
    plans = [TestPlan(name="base", tests=["tests/test_fake.py"], keyword="verified_image")]

    def job(name: str, priority: Priority) -> ev.JobSpec:
        spec = fake_job(f"wrtci:job:{name}", fake_firmware_url, plans=plans)
        # the router's target file names no image: openwrt-tests' default, kernel
        image = msgspec.structs.replace(spec.image, target="ath79", subtarget="generic",
                                        profile="example_router-v1", type="kernel",
                                        filesystem="initramfs")
        return msgspec.structs.replace(spec, device_type=ROUTER, image=image,
                                       priority=int(priority))

    async with running_lab(config) as daemon:
        assert sorted(daemon.devices) == ["example_router_1", "example_router_2",
                                          "qemu_x86-64"]
        [online] = events.of(ev.LabOnline)
        assert {d.name: d.device_type for d in online.data.devices}["example_router_2"] == ROUTER
        # each device's image type, from its target file, is announced to the scheduler
        assert {d.name: (d.image_type, d.image_filesystem) for d in online.data.devices} == {
            "qemu_x86-64": ("combined", "squashfs"), "example_router_1": ("kernel", None),
            "example_router_2": ("kernel", None)}
        await publish_job(nc, subjects, job("stable", Priority.STABLE))
        await publish_job(nc, subjects, job("snapshot", Priority.SNAPSHOT))
        await events.wait_for(lambda e: e.of(ev.JobFinished))
        await asyncio.sleep(2.0)  # time for a wrong fetch of the stable job
    finished = events.of(ev.JobFinished)
    assert [f.data.job_id for f in finished] == ["wrtci:job:snapshot"]
    assert finished[0].data.result is JobResult.PASS, finished[0].data
    assert finished[0].data.device in ("example_router_1", "example_router_2")
    assert not events.of(ev.JobStarted) or all(
        e.data.job_id != "wrtci:job:stable" for e in events.of(ev.JobStarted))
