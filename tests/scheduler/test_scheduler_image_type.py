"""The image type a device boots, announced by the lab, chooses the image of its jobs.

A real lab ``Presence`` announces a device whose target file says
``openwrt: image: type: sysupgrade`` into the labs bucket; the scheduler
(real NATS + PostgreSQL) then gives that device type the firmware's
sysupgrade image, though its preference order would pick the combined one.
"""

from __future__ import annotations

import asyncio

from tests import factories
from tests.helpers import eventually
from tests.pipeline import X86, firmware_in, firmware_jobs, running
from wrtci.lab_daemon.config import DeviceConfig, HealthConfig
from wrtci.lab_daemon.device import Device
from wrtci.lab_daemon.event_ids import EventIds
from wrtci.lab_daemon.firmware_prep import device_image
from wrtci.lab_daemon.presence import Presence
from wrtci.proto.events import JobCreated, decode_as
from wrtci.proto.subjects import Priority
from wrtci.services.scheduler.fanout import plan_jobs
from wrtci.services.scheduler.plans import PlanSet

MT = "mediatek/filogic/openwrt_one"

TARGET = """\
openwrt:
  target: x86-64
  profile: generic
  image:
    type: sysupgrade
targets:
  main:
    drivers: {}
"""


async def _announce_through_the_lab(nc, subjects, tmp_path) -> Presence:
    target_file = tmp_path / "x86-sysupgrade.yaml"
    target_file.write_text(TARGET)
    config = DeviceConfig(name="x86-1", target_file=str(target_file), target="x86",
                          subtarget="64", profile="generic")
    device = Device(config, None, "lab-a", HealthConfig(), wanted_image=device_image(config))
    presence = await Presence(nc, subjects, lab="lab-a", source="wrtci-lab/lab-a",
                              request_timeout_s=5.0, heartbeat_s=30.0, stop=asyncio.Event(),
                              ids=EventIds("lab-a", b"k" * 32)).open()
    await presence.beat([device])
    return presence


async def test_a_lab_device_wanting_sysupgrade_gets_the_sysupgrade_image(
        js, nc, subjects, nats_config, database_config, storage_config, pool, tmp_path):
    await _announce_through_the_lab(nc, subjects, tmp_path)
    await factories.announce_lab(js, subjects, "lab-b", [("one", MT, ["online"])])
    fid = "wrtci:official:snapshot:r2000"
    images = [factories.image(fid, X86, t, fs) for t, fs in [
        ("combined", "squashfs"), ("sysupgrade", "squashfs"), ("kernel", None)]]
    images += [factories.image(fid, MT, t, fs) for t, fs in [
        ("sysupgrade", "squashfs"), ("factory", "squashfs")]]
    data = factories.firmware([], images=images, tag="r2000")
    await factories.insert_firmware(pool, data)
    async with running(nats_config, database_config, storage_config,
                       with_timeout=False) as pipeline:
        await eventually(lambda: _wish_known(pipeline), "the lab's wish in the registry")
        await factories.publish_firmware(js, subjects, data)
        await eventually(firmware_in(pool, data.firmware_id, "available"), "firmware available")

    rows = {r["device_type"]: r for r in await firmware_jobs(pool, data.firmware_id)}
    assert set(rows) == {X86, MT}
    spec = decode_as((await js.get_last_msg(
        subjects.jobs_stream, subjects.job(Priority.SNAPSHOT, X86))).data, JobCreated).data
    assert (spec.image.type, spec.image.filesystem) == ("sysupgrade", "squashfs")
    # a device naming no type: the preference order (sysupgrade:squashfs before factory)
    other = decode_as((await js.get_last_msg(
        subjects.jobs_stream, subjects.job(Priority.SNAPSHOT, MT))).data, JobCreated).data
    assert other.image.type == "sysupgrade"
    # without the lab's wish the preference order would have picked the combined image
    [unwished] = plan_jobs(data, {X86: frozenset()}, PlanSet.load().plans, overhead_s=1)
    assert unwished.image.type == "combined"


async def _wish_known(pipeline) -> bool:
    wish = pipeline.scheduler.registry.image_wishes.get(X86)
    return wish is not None and str(wish) == "sysupgrade"


