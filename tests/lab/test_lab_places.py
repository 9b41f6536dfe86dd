"""Devices behind labgrid places: the lab holds a device's place while it works.

Against labgrid's real coordinator (``labgrid-coordinator``): the daemon
acquires the place with ``labgrid-client`` before a job or a health check and
releases it after; a place a developer holds keeps the device out of work,
without counting against its health.
"""

from __future__ import annotations

from tests.helpers import eventually
from tests.lab_helpers import (
    DEVICE_TYPE,
    LAB_PLACE_USER,
    cancel_job,
    device_status,
    fake_job,
    publish_job,
    running_lab,
    write_config,
    wrtci_lab,
)
from wrtci.lab_daemon.config import HealthConfig
from wrtci.lab_daemon.places import parse_holder
from wrtci.proto import events as ev
from wrtci.proto.model import DeviceHealth, DeviceState, ErrorCode, JobResult, TestStatus
from wrtci.proto.subjects import Priority
from wrtci.proto.topology import ensure_consumer, job_consumer

# Run by the lab as part of the suite: asks the coordinator who holds the place.
PLACE_TEST = '''
import os, subprocess, sys
from pathlib import Path

def test_the_lab_holds_the_place_while_the_suite_runs():
    client = Path(sys.executable).parent / "labgrid-client"
    # LG_ENV (set as openwrt-tests' CI does) would make labgrid-client read the
    # target file; the place is asked of the coordinator alone.
    env = {k: v for k, v in os.environ.items() if k != "LG_ENV"}
    assert "LG_ENV" in os.environ
    shown = subprocess.run(
        [str(client), "-x", os.environ["LG_COORDINATOR"], "-p", os.environ["LG_PLACE"], "show"],
        capture_output=True, text=True, timeout=30, check=True, env=env).stdout
    assert os.environ["LG_USERNAME"] == "wrtci-lab1"
    assert f"acquired: {os.environ['LG_HOSTNAME']}/wrtci-lab1" in shown, shown
'''


def test_holder_is_read_from_labgrid_client_show():
    shown = "Place 'dut':\n  matches:\n  acquired: devbox/alice\n  acquired resources:\n"
    assert parse_holder(shown) == "devbox/alice"
    assert parse_holder(shown.replace("devbox/alice", "None")) is None


async def test_job_runs_with_the_place_acquired_and_releases_it(
        js, nc, subjects, events, place_lab, fake_suite, fake_firmware_url, labgrid_coordinator,
        labgrid_place):
    (fake_suite / "tests" / "test_place.py").write_text(PLACE_TEST)
    spec = fake_job("wrtci:job:place", fake_firmware_url, tests=["tests/test_place.py"])
    config = place_lab()
    async with running_lab(config):
        await publish_job(nc, subjects, spec)
        await events.wait_for(lambda e: e.of(ev.JobFinished))
        data = events.of(ev.JobFinished)[0].data
        assert data.result is JobResult.PASS, data
        assert [(t.path, t.status) for t in data.tests] == [
            ("base.test_place.test_the_lab_holds_the_place_while_the_suite_runs",
             TestStatus.PASS)]
        await eventually(lambda: labgrid_coordinator.holder(labgrid_place) is None)


async def test_cancelled_job_releases_the_place(
        js, nc, subjects, events, place_lab, fake_firmware_url, labgrid_coordinator, labgrid_place):
    spec = fake_job("wrtci:job:place-cancel", fake_firmware_url,
                    tests=["tests/test_fake.py::test_hang"])
    config = place_lab()
    async with running_lab(config):
        await publish_job(nc, subjects, spec)
        await events.wait_for(lambda e: any(p.data.stage == "test"
                                            for p in e.of(ev.JobProgress)))
        assert labgrid_coordinator.holder(labgrid_place) == LAB_PLACE_USER
        await cancel_job(js, subjects, spec, "by alice")
        await events.wait_for(lambda e: e.of(ev.JobFinished))
        assert events.of(ev.JobFinished)[0].data.error_code is ErrorCode.CANCELLED
        await eventually(lambda: labgrid_coordinator.holder(labgrid_place) is None)


async def test_place_held_by_a_developer_keeps_the_job_queued_until_released(
        js, nc, subjects, events, place_lab, fake_firmware_url, labgrid_coordinator,
        labgrid_place):
    labgrid_coordinator.client("acquire", place=labgrid_place, user="alice")
    spec = fake_job("wrtci:job:place-busy", fake_firmware_url,
                    tests=["tests/test_fake.py::test_prints"])
    config = place_lab(place_check_s=0.3)
    # The queue the daemon would pull from (created here so that it can be inspected).
    consumer = job_consumer(subjects, Priority.SNAPSHOT, DEVICE_TYPE)
    await ensure_consumer(js, subjects.jobs_stream, consumer)
    async with running_lab(config):
        await publish_job(nc, subjects, spec)
        status = await eventually(lambda: _blocked_status(nc, subjects))
        assert "acquired by devbox/alice" in status.message
        assert status.state is DeviceState.IDLE
        # The daemon has seen the place taken and not even fetched the job.
        info = await js.consumer_info(subjects.jobs_stream, consumer.durable_name)
        assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (1, 0, 0)
        assert events.of(ev.JobStarted) == []
        assert labgrid_coordinator.holder(labgrid_place) == "devbox/alice"

        labgrid_coordinator.client("release", place=labgrid_place, user="alice")
        await events.wait_for(lambda e: e.of(ev.JobFinished))
        assert events.of(ev.JobFinished)[0].data.result is JobResult.PASS
        # first delivery: the job was never taken and handed back while alice worked
        assert {c.data.run for c in events.of(ev.LogChunk)} == {1}
        await eventually(lambda: labgrid_coordinator.holder(labgrid_place) is None)
        assert "acquired by" not in (await device_status(nc, subjects)).message


async def test_place_held_by_a_developer_is_not_a_health_failure(
        js, nc, subjects, events, place_lab, tmp_path, labgrid_coordinator, labgrid_place):
    labgrid_coordinator.client("acquire", place=labgrid_place, user="alice")
    # The check itself must fail (no firmware to boot): what matters is when it runs.
    config = place_lab(place_check_s=0.3, health_image=str(tmp_path / "missing.bin"),
                       health=HealthConfig(check_at_start=True, warn_after=1, disable_after=3))
    async with running_lab(config):
        status = await eventually(lambda: _blocked_status(nc, subjects))
        assert (status.health, status.consecutive_failures, status.check_passed) == (
            DeviceHealth.UNKNOWN, 0, None)
        assert events.of(ev.DeviceHealthChanged) == []

        labgrid_coordinator.client("release", place=labgrid_place, user="alice")
        await events.wait_for(lambda e: e.of(ev.DeviceHealthChanged))
        [checked] = events.of(ev.DeviceHealthChanged)
        assert (checked.data.check_passed, checked.data.consecutive_failures) == (False, 1)
        assert "no firmware to boot" in checked.data.message
        await eventually(lambda: labgrid_coordinator.holder(labgrid_place) is None)


async def _blocked_status(nc, subjects):
    status = await device_status(nc, subjects)
    return status if "acquired by" in status.message else None


async def test_standalone_health_check_leaves_a_developers_place_alone(
        place_lab, tmp_path, labgrid_coordinator, labgrid_place):
    labgrid_coordinator.client("acquire", place=labgrid_place, user="alice")
    config = place_lab()
    path = write_config(config, tmp_path / "lab.toml")
    code, out = await wrtci_lab("health-check", "--config", str(path))
    assert code == 1, out
    assert f"dut1: health check not run: place {labgrid_place}: acquired by devbox/alice" in out
    assert not (tmp_path / "work" / "runs" / "dut1" / "health-check.log").exists()
    assert labgrid_coordinator.holder(labgrid_place) == "devbox/alice"
