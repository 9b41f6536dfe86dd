"""The lab daemon with the QEMU virtual device: end to end, and health checks.

Boots are real (labgrid QEMUDriver + ShellStrategy under TCG, ~5 s each), so
these tests are marked slow and keep the number of boots small.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sys

import pytest
from minio import Minio

from tests.helpers import PROJECT_ROOT
from tests.lab_helpers import (
    REVISION,
    VIRTUAL_SUITE,
    VIRTUAL_SUITE_TARGET,
    EventLog,
    job_spec,
    lab_config,
    publish_job,
    running_lab,
    running_log_writer,
    write_config,
)
from wrtci.lab_daemon.config import HealthConfig
from wrtci.proto import events as ev
from wrtci.proto.model import DeviceHealth, DeviceState, JobResult, TestPlan, TestStatus
from wrtci.proto.records import DeviceRecord, decode_record
from wrtci.proto.storage import job_log_key


def _minio(storage_config) -> Minio:
    return Minio(storage_config.endpoint, access_key=storage_config.access_key,
                 secret_key=storage_config.secret_key, secure=False)


def _get(client: Minio, bucket: str, key: str) -> str:
    response = client.get_object(bucket, key)
    try:
        return response.read().decode()
    finally:
        response.close()
        response.release_conn()


@pytest.mark.slow
async def test_end_to_end_job_on_the_virtual_device(
        js, nc, subjects, nats_config, storage_config, virtual_firmware, tmp_path):
    # The firmware sits in object storage; the job carries a presigned URL.
    client = _minio(storage_config)
    await asyncio.to_thread(client.fput_object, storage_config.bucket, "firmware/fw.img",
                            str(virtual_firmware.image))
    url = client.presigned_get_object(storage_config.bucket, "firmware/fw.img",
                                      expires=dt.timedelta(hours=1))
    spec = job_spec("wrtci:job:e2e", url, virtual_firmware.sha256,
                    name=virtual_firmware.image.name,
                    plans=[TestPlan(name="base", tests=["tests/test_base.py"], timeout_s=300)])
    events = await EventLog().start(nc, subjects)
    config = lab_config(nats_config, tmp_path / "work", VIRTUAL_SUITE,
                        target_file=VIRTUAL_SUITE_TARGET,
                        health_image=str(virtual_firmware.image))
    async with running_log_writer(nats_config, storage_config), running_lab(config):
        await publish_job(nc, subjects, spec)
        await events.wait_for(lambda e: e.of(ev.JobFinished), within_s=240)
        finished = events.of(ev.JobFinished)[0]
        console = [c for c in events.of(ev.LogChunk) if c.data.stream == "console"]
        key = job_log_key(spec.job_id, 1, "console")

        async def stored_log() -> str:
            while True:
                try:
                    text = await asyncio.to_thread(_get, client, storage_config.bucket, key)
                    if text == "".join(c.data.text for c in console):
                        return text
                except Exception:
                    pass
                await asyncio.sleep(0.3)

        stored = await asyncio.wait_for(stored_log(), 30)

    data = finished.data
    assert data.result is JobResult.PASS, data
    statuses = {t.path: t.status for t in data.tests}
    assert statuses["base.test_base.test_firmware_version"] is TestStatus.PASS
    assert statuses["base.test_base.test_uname"] is TestStatus.PASS
    assert statuses["base.test_base.test_ubus_system_board"] is TestStatus.PASS
    assert statuses["base.test_base.test_ssh"] is TestStatus.PASS
    assert statuses["base.test_base.test_online"] is TestStatus.SKIP  # no 'online' feature
    assert data.log_key == key
    assert {"junit.xml", "pytest.log"} <= {a.name for a in data.artifacts}
    # live: console chunks went out (in order, none doubled) before the job finished
    index_finished = events.events.index(finished)
    live = [c for c in console if events.events.index(c) < index_finished and not c.data.final]
    assert live, "no console chunk arrived while the job ran"
    assert [c.data.seq for c in console] == list(range(len(console)))
    assert console[-1].data.final
    # the stored log is the device's console, complete
    assert f"OpenWrt 24.10.0 {REVISION}" in stored
    assert "root@OpenWrt" in stored
    info = await js.stream_info(subjects.jobs_stream)
    assert info.state.messages == 0  # acked


@pytest.mark.slow
async def test_failed_health_checks_take_the_device_out_and_a_pass_brings_it_back(
        js, nc, subjects, events, nats_config, file_server, virtual_firmware, tmp_path):
    health_image = tmp_path / "health.img"  # missing: every check fails
    base_url, www = file_server
    (www / "fw.img").write_bytes(virtual_firmware.image.read_bytes())
    # checks are the suite's own shell tests (test_shell, test_echo, test_uname)
    config = lab_config(
        nats_config, tmp_path / "work", VIRTUAL_SUITE, health_image=str(health_image),
        target_file=VIRTUAL_SUITE_TARGET,
        health=HealthConfig(check_at_start=True, interval_s=0.2, unhealthy_recheck_s=3600,
                            warn_after=1, disable_after=2, timeout_s=120))
    config_path = write_config(config, tmp_path / "lab.toml")

    def health_events():
        return [(e.data.health, e.data.state, e.data.check_passed)
                for e in events.of(ev.DeviceHealthChanged)]

    async with running_lab(config):
        await events.wait_for(lambda e: len(e.of(ev.DeviceHealthChanged)) >= 2)
        assert health_events() == [
            (DeviceHealth.WARNING, DeviceState.IDLE, False),
            (DeviceHealth.UNHEALTHY, DeviceState.UNHEALTHY, False),
        ]
        kv = await js.key_value(subjects.devices_bucket)
        record = decode_record((await kv.get(subjects.device_key("lab1", "dut1"))).value,
                               DeviceRecord)
        assert record.state is DeviceState.UNHEALTHY and record.consecutive_failures == 2
        # an unhealthy device takes no job: it stays queued
        spec = job_spec("wrtci:job:after-health", f"{base_url}/fw.img",
                        virtual_firmware.sha256, name="fw.img",
                        tests=["tests/test_base.py::test_echo"])
        await publish_job(nc, subjects, spec)
        # fix the device (the image is back) and check it by hand, through the daemon
        shutil.copy(virtual_firmware.image, health_image)
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/env", f"PYTHONPATH={PROJECT_ROOT}", sys.executable,
            "-m", "wrtci.lab_daemon.cli", "health-check", "dut1", "--config", str(config_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=PROJECT_ROOT)
        output, _ = await asyncio.wait_for(proc.communicate(), 200)
        assert proc.returncode == 0, output.decode()
        assert "health=healthy failures=0 last check=passed" in output.decode()
        await events.wait_for(lambda e: e.of(ev.JobFinished), within_s=60)
    assert health_events()[2] == (DeviceHealth.HEALTHY, DeviceState.IDLE, True)
    message = events.of(ev.DeviceHealthChanged)[2].data.message
    assert "health tests passed: health.test_base.test_shell" in message, message
    assert "root@OpenWrt" in message  # the console of the boot
    [finished] = events.of(ev.JobFinished)
    started = events.of(ev.JobStarted)[0]
    assert events.events.index(started) > events.events.index(
        events.of(ev.DeviceHealthChanged)[2])  # the job waited for the passing check
    assert finished.data.result is JobResult.PASS
