"""``wrtci-lab`` commands against a running daemon and without one."""

from __future__ import annotations

from tests.helpers import eventually
from tests.lab_helpers import lab_config, running_lab, write_config, wrtci_lab
from wrtci.lab_daemon.config import HealthConfig
from wrtci.proto import events as ev
from wrtci.proto.model import DeviceHealth, DeviceState
from wrtci.proto.records import DeviceRecord, LabRecord, decode_record


async def _record(js, subjects) -> DeviceRecord:
    kv = await js.key_value(subjects.devices_bucket)
    return decode_record((await kv.get(subjects.device_key("lab1", "dut1"))).value, DeviceRecord)


async def test_maintenance_through_the_running_daemon(js, subjects, events, nats_config,
                                                      fake_suite, tmp_path):
    config = lab_config(nats_config, tmp_path / "work", fake_suite,
                        health_image=str(tmp_path / "missing.cpio.gz"),
                        health=HealthConfig(check_at_start=False, warn_after=1,
                                            disable_after=3))
    path = write_config(config, tmp_path / "lab.toml")
    async with running_lab(config):
        labs = await js.key_value(subjects.labs_bucket)
        lab = decode_record((await labs.get(subjects.lab_key("lab1"))).value, LabRecord)
        assert [d.name for d in lab.devices] == ["dut1"]
        assert lab.devices[0].features == ["rootfs"]
        # health unknown at start: a check first (it fails here: no image)
        await events.wait_for(lambda e: e.of(ev.DeviceHealthChanged))
        code, out = await wrtci_lab("maintenance", "on", "dut1", "--config", str(path))
        assert code == 0, out
        await events.wait_for(lambda e: len(e.of(ev.DeviceHealthChanged)) >= 2)
        assert (await _record(js, subjects)).state is DeviceState.MAINTENANCE
        code, out = await wrtci_lab("maintenance", "off", "dut1", "--config", str(path))
        assert code == 0, out
        # leaving maintenance runs a health check first (it fails here: no image)
        await events.wait_for(lambda e: len(e.of(ev.DeviceHealthChanged)) >= 3)
        code, out = await wrtci_lab("status", "--config", str(path))
        assert "dut1: state=idle health=warning failures=2" in out, out
    changes = [(e.data.state, e.data.check_passed) for e in events.of(ev.DeviceHealthChanged)]
    assert changes == [(DeviceState.IDLE, False), (DeviceState.MAINTENANCE, False),
                       (DeviceState.IDLE, False)]
    assert events.of(ev.LabOnline) and events.of(ev.LabOffline)


async def test_maintenance_without_a_daemon_is_kept_when_it_starts(
        js, nc, subjects, lab1, tmp_path):
    path = write_config(lab1, tmp_path / "lab.toml")
    code, out = await wrtci_lab("maintenance", "on", "dut1", "--config", str(path))
    assert code == 0 and "acting directly" in out, out
    assert (await _record(js, subjects)).state is DeviceState.MAINTENANCE
    async with running_lab(lab1) as daemon:
        assert daemon.devices["dut1"].state is DeviceState.MAINTENANCE
        assert not daemon.devices["dut1"].takes_jobs


async def test_broken_target_file_is_named_and_other_devices_keep_working(
        lab1, tmp_path, js):
    broken = tmp_path / "broken.yaml"
    broken.write_text("targets:\n  main:\n    drivers:\n      - NoSuchDriver: {}\n")
    path = write_config(lab1, tmp_path / "lab.toml")
    text = path.read_text() + (
        '\n[[lab.devices]]\nname = "dut2"\ntarget_file = "broken.yaml"\n'
        'target = "x86"\nsubtarget = "64"\nprofile = "generic"\n')
    path.write_text(text)
    code, out = await wrtci_lab("check", "--config", str(path))
    assert code == 1
    assert f"{broken}: unknown labgrid driver or resource: NoSuchDriver" in out
    from wrtci.lab_daemon.cli import load

    async with running_lab(load(str(path))) as daemon:
        # the broken device is out of the pool with the reason; dut1 passes its check
        assert list(daemon.devices) == ["dut1", "dut2"]
        await eventually(lambda: daemon.devices["dut1"].health.health is DeviceHealth.HEALTHY
                         and daemon.devices["dut2"].state is DeviceState.UNHEALTHY)
        dut2 = daemon.devices["dut2"]
        assert not dut2.takes_jobs and dut2.health.health is DeviceHealth.UNHEALTHY
        assert f"{broken}: unknown labgrid driver or resource: NoSuchDriver" in dut2.message
        assert dut2.status().message.startswith(str(broken))
