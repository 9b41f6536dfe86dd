"""What the lab tells people about a device that left the pool (issue 10 item 6).

A failed check's device.health event says when the device last passed and
where its whole console log is: on the lab host, and at ``log_url`` once the
log writer stored it (tests/lab/test_lab_health_log.py); a
labnet.yaml device kept out of the pool is announced unhealthy with the
reason, so the notifier opens its health issue. Also: the job's log sender
is bounded by the ``[lab]`` settings and spills into the work directory.
"""

from __future__ import annotations

import msgspec

from tests.lab.test_lab_labnet import LAB, LABNET
from tests.lab_helpers import FAKE_FIRMWARE, EventLog, lab_config, running_lab
from wrtci.lab_daemon.config import HealthConfig
from wrtci.lab_daemon.labnet import with_labnet
from wrtci.proto import events as ev
from wrtci.proto.control import LabAction, LabControlReply, LabControlRequest
from wrtci.proto.model import DeviceHealth, DeviceState
from wrtci.proto.storage import health_log_path


async def test_a_failed_check_says_when_the_device_last_passed_and_where_its_log_is(
        nc, subjects, events, nats_config, fake_suite, tmp_path):
    image = tmp_path / "health.bin"
    image.write_bytes(FAKE_FIRMWARE)
    health = HealthConfig(tests=["tests/test_fake.py::test_firmware_is_the_verified_image"],
                          image=str(image))
    config = lab_config(nats_config, tmp_path / "work", fake_suite, health=health)
    async with running_lab(config) as daemon:
        await events.wait_for(lambda e: e.of(ev.DeviceHealthChanged))
        [passed] = events.of(ev.DeviceHealthChanged)
        assert passed.data.check_passed and passed.data.last_passed_at is not None
        image.write_bytes(b"not the firmware")  # the next check fails
        request = LabControlRequest(action=LabAction.HEALTH_CHECK, device="dut1")
        reply = await nc.request(subjects.lab_control("lab1"), msgspec.json.encode(request),
                                 timeout=60)
        assert msgspec.json.decode(reply.data, type=LabControlReply).ok
        await events.wait_for(lambda e: len(e.of(ev.DeviceHealthChanged)) >= 2)
        record = daemon.devices["dut1"].record()
    failed = events.of(ev.DeviceHealthChanged)[1].data
    assert failed.check_passed is False
    assert failed.last_passed_at == passed.data.last_passed_at  # the pass before
    assert failed.log_url == health_log_path("lab1", "dut1", failed.log_url.split("/")[-2])
    console = tmp_path / "work" / "runs" / "dut1" / "health-check" / "labgrid" / "console_main"
    assert failed.message.endswith(f"whole console log (lab host, until the next check): "
                                   f"{console}")
    assert record.last_passed_at == passed.data.last_passed_at  # kept across restarts


async def test_labnet_devices_left_out_are_announced_unhealthy_with_the_reason(
        subjects, events, nats_config, fake_suite, tmp_path):
    config = lab_config(nats_config, tmp_path / "work", fake_suite, name=LAB)
    config, inventory = with_labnet(config, LABNET, LAB)
    assert {p.device for p in inventory.problems} >= {"lost_router", "unknown_router"}
    left_out = {p.device for p in inventory.problems}

    def announced(events: EventLog) -> dict[str, ev.DeviceHealthData]:
        return {e.data.device: e.data for e in events.of(ev.DeviceHealthChanged)
                if e.data.device in left_out}

    async with running_lab(config, problems=inventory.problems):
        await events.wait_for(lambda e: set(announced(e)) == left_out)
    found = announced(events)
    lost = found["lost_router"]
    assert (lost.lab, lost.health, lost.state, lost.check_passed) == (
        LAB, DeviceHealth.UNHEALTHY, DeviceState.UNHEALTHY, False)
    assert "lost_router.yaml is missing" in lost.message
    assert "unknown device" in found["unknown_router"].message


async def test_the_log_sender_is_bounded_by_the_lab_settings_and_spills_into_the_work_dir(
        nats_config, fake_suite, tmp_path):
    config = lab_config(nats_config, tmp_path / "work", fake_suite,
                        log_memory_bytes=1024, log_spill_bytes=4096)
    async with running_lab(config) as daemon:
        assert daemon.jobs is not None
        sender = daemon.jobs.new_sender()
    assert (sender.memory_limit, sender.spill_limit) == (1024, 4096)
    assert sender.spill_dir == tmp_path / "work" / "log-spill"
    assert sender.event_id == daemon.ctx.ids.chunk  # the lab's own keyed chunk ids
