"""The scheduler against real NATS + PostgreSQL, with labs announced in the registry."""

from __future__ import annotations

import asyncio
import datetime as dt

import aiohttp
from minio import Minio

from tests import factories
from tests.helpers import consumer_caught_up, eventually
from tests.pipeline import (
    FakeLab,
    firmware_in,
    firmware_jobs,
    running,
    stored_events,
)
from wrtci.proto.events import JobCreated, decode_as
from wrtci.proto.model import PriorityClass, SourceKind
from wrtci.proto.subjects import Priority
from wrtci.services.lifecycle import store
from wrtci.services.lifecycle.dispatch import Dispatcher
from wrtci.services.scheduler.fanout import FIRST_SLICE, plan_jobs
from wrtci.services.scheduler.plans import PlanSet

LAB_A = [
    ("x86-1", "x86/64/generic", ["online", "opkg", "rootfs", "wan_port"]),
    ("archer", "ath79/generic/tplink_archer-c7-v2", ["wifi"]),
]
LAB_B = [
    ("one", "mediatek/filogic/openwrt_one", ["online", "apk", "wifi", "hwsim"]),
    # the same device type with more features in another lab: plans use the union
    ("x86-2", "x86/64/generic", ["hwsim"]),
]


async def _announce(js, subjects):
    await factories.announce_lab(js, subjects, "lab-a", LAB_A)
    await factories.announce_lab(js, subjects, "lab-b", LAB_B)


async def test_fanout_matches_plans_and_features(js, subjects, nats_config, database_config,
                                                 storage_config, pool):
    await _announce(js, subjects)
    data = factories.firmware([
        "x86/64/generic", "ath79/generic/tplink_archer-c7-v2", "mediatek/filogic/openwrt_one",
        "ath79/generic/no_lab_has_this",
    ])
    await factories.insert_firmware(pool, data)
    async with running(nats_config, database_config, storage_config,
                       with_timeout=False) as pipeline:
        await factories.publish_firmware(js, subjects, data)
        await eventually(firmware_in(pool, data.firmware_id, "available"),
                         "firmware available")
        assert pipeline.scheduler.registry.online_device_types() == {
            "x86/64/generic", "ath79/generic/tplink_archer-c7-v2",
            "mediatek/filogic/openwrt_one"}

    jobs = {row["device_type"]: [p["name"] for p in row["plans"]]
            for row in await firmware_jobs(pool, data.firmware_id)}
    assert jobs == {
        "x86/64/generic": ["base", "system", "network", "wifi_hwsim", "package_opkg"],
        "ath79/generic/tplink_archer-c7-v2": ["base", "system", "wifi"],
        "mediatek/filogic/openwrt_one": ["base", "system", "wifi", "wifi_hwsim",
                                         "package_apk"],
    }
    created = [e for e in await stored_events(js, subjects, "job.created")]
    assert sorted(e.data.device_type for e in created) == sorted(jobs)
    # Each job sits on the subject of its priority and device type.
    for device_type in jobs:
        msg = await js.get_last_msg(subjects.jobs_stream,
                                    subjects.job(Priority.SNAPSHOT, device_type))
        spec = decode_as(msg.data, JobCreated).data
        assert spec.device_type == device_type and spec.priority == 5
        assert spec.firmware_revision == "r1000-abcdef"
        assert [p.name for p in spec.plans] == jobs[device_type]


async def test_generic_pr_image_runs_on_every_profile_of_its_subtarget(
        js, subjects, nats_config, database_config, storage_config, pool):
    await _announce(js, subjects)
    fw = factories.firmware([], priority_class=PriorityClass.PR,
                            source_kind=SourceKind.GITHUB_PR, tag="pr-17000-ab12")
    generic = factories.image(fw.firmware_id, "ath79/generic/*", "sysupgrade")
    data = factories.firmware([], priority_class=PriorityClass.PR,
                              source_kind=SourceKind.GITHUB_PR, tag="pr-17000-ab12",
                              images=[generic])
    async with running(nats_config, database_config, storage_config, with_timeout=False):
        await factories.publish_firmware(js, subjects, data)
        await eventually(firmware_in(pool, data.firmware_id, "available"),
                         "firmware available")
    rows = await firmware_jobs(pool, data.firmware_id)
    assert [(r["device_type"], r["priority"]) for r in rows] == [
        ("ath79/generic/tplink_archer-c7-v2", 9)]
    # PR images get no package plans by default (no matching feeds).
    assert [p["name"] for p in rows[0]["plans"]] == ["base", "system", "wifi"]


async def test_duplicate_firmware_events_and_two_replicas_create_each_job_once(
        js, subjects, nats_config, database_config, storage_config, pool):
    await _announce(js, subjects)
    data = factories.firmware(["x86/64/generic", "mediatek/filogic/openwrt_one"])
    # No checkout row yet: the scheduler records the firmware itself.
    async with (running(nats_config, database_config, storage_config, with_timeout=False),
                running(nats_config, database_config, storage_config, with_timeout=False)):
        # The trigger sends it twice (different event ids: it restarted and rescanned).
        await asyncio.gather(
            factories.publish_firmware(js, subjects, data, event_id="first"),
            factories.publish_firmware(js, subjects, data, event_id="second"),
        )
        await eventually(firmware_in(pool, data.firmware_id, "available"),
                         "firmware available")
        await eventually(lambda: _intake_idle(js, subjects), "both events handled")

    rows = await firmware_jobs(pool, data.firmware_id)
    assert len(rows) == 2
    info = await js.stream_info(subjects.jobs_stream)
    assert info.state.messages == 2
    assert len(await stored_events(js, subjects, "job.created")) == 2
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM job_attempts") == 2
        checkout = await conn.fetchrow("SELECT * FROM checkouts WHERE id = $1",
                                       data.firmware_id)
    assert checkout["source_kind"] == "official" and checkout["origin"] == "wrtci"
    available = [e for e in await stored_events(js, subjects, "firmware.state")
                 if e.data.state == "available"]
    assert len(available) == 1


async def _intake_idle(js, subjects):
    return await consumer_caught_up(js, subjects.events_stream, "scheduler-intake")


async def test_priorities_are_served_highest_first(js, nc, subjects, nats_config, database_config,
                                                   storage_config, pool):
    await _announce(js, subjects)
    device_type = "x86/64/generic"
    classes = [PriorityClass.OLDSTABLE, PriorityClass.SNAPSHOT, PriorityClass.PR,
               PriorityClass.STABLE, PriorityClass.CUSTOM]
    async with running(nats_config, database_config, storage_config, with_timeout=False):
        for index, priority_class in enumerate(classes):
            data = factories.firmware([device_type], priority_class=priority_class,
                                      tag=f"r{index}")
            await factories.publish_firmware(js, subjects, data)

        async def all_queued():
            return (await js.stream_info(subjects.jobs_stream)).state.messages == 5
        await eventually(all_queued, "five jobs queued")

    lab = FakeLab(nc, subjects, "lab-a")
    taken = []
    for _ in classes:
        job = await lab.take(device_type)
        taken.append(job.spec.priority)
        await job.ack()
    await lab.close()
    assert taken == [9, 8, 5, 3, 2]


async def test_job_for_a_device_type_without_lab_online_waits(
        js, subjects, nats_config, database_config, storage_config, pool):
    gone = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    await factories.announce_lab(js, subjects, "lab-old", [("r1", "ramips/mt7621/r1", [])],
                                 heartbeat_at=gone)
    await factories.announce_lab(js, subjects, "lab-a", LAB_A)
    data = factories.firmware(["ramips/mt7621/r1", "x86/64/generic"])
    async with running(nats_config, database_config, storage_config, with_timeout=False):
        await factories.publish_firmware(js, subjects, data)
        await eventually(firmware_in(pool, data.firmware_id, "available"),
                         "firmware available")
    async with pool.acquire() as conn:
        progress = await conn.fetchrow(
            "SELECT * FROM firmware_progress WHERE checkout_id = $1", data.firmware_id)
    assert progress["jobs"] == 2 and progress["queued"] == 2
    assert progress["waiting_for_lab"] == 1
    assert progress["waiting_device_types"] == ["ramips/mt7621/r1"]


async def test_late_lab_gets_jobs_of_open_firmware_but_not_of_closed(
        js, subjects, nats_config, database_config, storage_config, pool):
    await factories.announce_lab(js, subjects, "lab-a", LAB_A)
    open_fw = factories.firmware(["x86/64/generic", "mediatek/filogic/openwrt_one"], tag="r1")
    closed_fw = factories.firmware(["mediatek/filogic/openwrt_one"], tag="r0")
    await factories.insert_firmware(pool, closed_fw)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE checkouts SET state = 'closing' WHERE id = $1",
                           closed_fw.firmware_id)
    async with running(nats_config, database_config, storage_config,
                       with_timeout=False) as pipeline:
        await factories.publish_firmware(js, subjects, open_fw)
        await eventually(firmware_in(pool, open_fw.firmware_id, "available"),
                         "firmware available")
        assert [r["device_type"] for r in await firmware_jobs(pool, open_fw.firmware_id)] == [
            "x86/64/generic"]

        await factories.announce_lab(js, subjects, "lab-b", LAB_B)  # brings openwrt_one

        async def openwrt_one_scheduled() -> bool:
            rows = await firmware_jobs(pool, open_fw.firmware_id)
            return len(rows) == 2 and all(r["queue_seq"] for r in rows)

        await eventually(openwrt_one_scheduled, "late lab's job queued")
        assert pipeline.scheduler.registry.online_device_types() >= {
            "mediatek/filogic/openwrt_one"}
        # a lab heartbeat with nothing new changes nothing
        await factories.announce_lab(js, subjects, "lab-b", LAB_B)
        await asyncio.sleep(0.5)
    assert len(await firmware_jobs(pool, open_fw.firmware_id)) == 2
    assert await firmware_jobs(pool, closed_fw.firmware_id) == []  # closing: no new children
    created = [e for e in await stored_events(js, subjects, "job.created")
               if e.data.device_type == "mediatek/filogic/openwrt_one"]
    assert len(created) == 1
    info = await js.stream_info(subjects.jobs_stream)
    assert info.state.messages == 2


async def test_start_up_schedules_what_open_firmware_is_missing(
        js, subjects, nats_config, database_config, storage_config, pool):
    # A scheduler died after recording the firmware and before its jobs were
    # queued; the firmware event is long acked. The next start catches up.
    await factories.announce_lab(js, subjects, "lab-a", LAB_A)
    data = factories.firmware(["x86/64/generic"], tag="r7")
    await factories.insert_firmware(pool, data)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE checkouts SET state = 'available' WHERE id = $1",
                           data.firmware_id)
    async with running(nats_config, database_config, storage_config, with_timeout=False):
        async def queued() -> bool:
            rows = await firmware_jobs(pool, data.firmware_id)
            return len(rows) == 1 and rows[0]["queue_seq"] is not None

        await eventually(queued, "the missing job queued at start-up")
    info = await js.stream_info(subjects.jobs_stream)
    assert info.state.messages == 1


async def test_uploaded_image_gets_a_presigned_url(js, nc, subjects, nats_config, database_config,
                                                   storage_config, pool, s3_server):
    await _announce(js, subjects)
    client = Minio(storage_config.endpoint, access_key=storage_config.access_key,
                   secret_key=storage_config.secret_key, secure=False)
    import io
    client.put_object(storage_config.bucket, "firmware/up1/image.bin", io.BytesIO(b"FIRMWARE"), 8)
    fw_id = "wrtci:upload:custom:up1"
    stored = factories.image(fw_id, "x86/64/*", "combined", url=None,
                             object_key="firmware/up1/image.bin")
    data = factories.firmware([], priority_class=PriorityClass.CUSTOM,
                              source_kind=SourceKind.UPLOAD, tag="up1", images=[stored])
    async with running(nats_config, database_config, storage_config, with_timeout=False):
        await factories.publish_firmware(js, subjects, data)
        lab = FakeLab(nc, subjects, "lab-a")
        job = await lab.take("x86/64/generic")
        await lab.close()
    assert job.spec.priority == 8 and job.spec.image.object_key == "firmware/up1/image.bin"
    async with aiohttp.ClientSession() as session, session.get(
            job.spec.image.url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        assert response.status == 200
        assert await response.read() == b"FIRMWARE"


async def test_no_new_jobs_for_a_firmware_that_closed_meanwhile(pool):
    """Fan-out reads the firmware's state, then inserts; the timeout service may close
    (or end) the firmware in between. A closing or done firmware takes no new jobs."""
    data = factories.firmware(["x86/64/generic"])
    await factories.insert_firmware(pool, data)
    drafts = plan_jobs(data, {"x86/64/generic": frozenset()}, PlanSet.load().plans,
                       overhead_s=0)
    assert drafts
    for state in ("closing", "done"):
        async with pool.acquire() as conn:
            await conn.execute("UPDATE checkouts SET state = $2 WHERE id = $1",
                               data.firmware_id, state)
            await store.insert_jobs(conn, data.firmware_id, drafts, 3)
        assert await firmware_jobs(pool, data.firmware_id) == []


async def test_fanout_cut_short_is_completed_with_each_job_queued_once(
        js, nc, subjects, nats_config, database_config, storage_config, pool):
    """A scheduler killed mid fan-out: its first slice of jobs committed, part of it
    published but no sequence recorded. The redelivered event finishes the job:
    every job queued exactly once, each row holding its message's sequence."""
    device_types = [f"ramips/mt7621/board-{i}" for i in range(120)]  # more than one slice
    await factories.announce_lab(js, subjects, "lab-a",
                                 [(f"dut-{i}", d, ["online"]) for i, d in enumerate(device_types)])
    data = factories.firmware(device_types, tag="r8")
    await factories.insert_firmware(pool, data)
    drafts = plan_jobs(data, {d: frozenset({"online"}) for d in device_types},
                       PlanSet.load().plans, overhead_s=0)
    first = drafts[:FIRST_SLICE]
    async with pool.acquire() as conn:
        assert len(await store.insert_jobs(conn, data.firmware_id, first, 3)) == len(first)
    await Dispatcher(nc, js, subjects).publish_all(
        [store.new_job_spec(d, data.firmware_id, data.version, data.revision)
         for d in first[:40]])

    async with running(nats_config, database_config, storage_config, with_timeout=False):
        await factories.publish_firmware(js, subjects, data)
        await eventually(firmware_in(pool, data.firmware_id, "available"),
                         "firmware available")
        await factories.publish_firmware(js, subjects, data, event_id="again")
        await eventually(lambda: _intake_idle(js, subjects), "both events handled")

    rows = await firmware_jobs(pool, data.firmware_id)
    assert len(rows) == len(drafts) == 120
    info = await js.stream_info(subjects.jobs_stream)
    assert info.state.messages == 120
    assert len(await stored_events(js, subjects, "job.created")) == 120
    for row in rows:  # each row names its own message on the JOBS stream
        msg = await js.get_msg(subjects.jobs_stream, row["queue_seq"])
        assert decode_as(msg.data, JobCreated).data.job_id == row["id"]
    async with pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id "
            "WHERE j.checkout_id = $1", data.firmware_id) == 120
