"""No lab can pre-empt another party's event by its ``Nats-Msg-Id`` (``core/publisher.py``).

JetStream dedupes per stream, not per subject: a message lab A publishes on
its own subjects with the ``Nats-Msg-Id`` of an event about to be published
(a central one, or lab B's) made JetStream drop the real event as a
duplicate. Here lab A, under the credentials `wrtci lab add` generated, sends
first every ``Nats-Msg-Id`` it can know — the plain event ids (deterministic),
the ids keyed with a key of its own, and those it sees on the subjects it may
read — and the real events are still stored and handled.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError

from tests.helpers import eventually, read_object
from tests.isolation_support import (
    OTHER,
    X86,
    SecuredNats,
    add_lab,
    central_services,
    fake_firmware,
    lab_connection,
    lab_process,
    publish_firmware,
    wrtci,
)
from tests.lab_helpers import (
    job_spec,
    lab_config,
)
from tests.pipeline import firmware_state, stored_events
from wrtci.core.publisher import CENTRAL_KEY, central_key, msg_id, new_key
from wrtci.core.runtime import EventPublisher, connect_nats
from wrtci.lab_daemon.event_ids import EventIds, load_key
from wrtci.lab_daemon.presence import Presence
from wrtci.proto import events as ev
from wrtci.proto.jobqueue import JobQueue
from wrtci.proto.model import FirmwareState, JobResult, TestPlan
from wrtci.proto.storage import job_log_key
from wrtci.proto.topology import ensure_job_consumers
from wrtci.services.lifecycle.dispatch import job_created_id
from wrtci.services.lifecycle.rules import state_event_id
from wrtci.services.scheduler.fanout import job_id as fanout_job_id

LOG_STREAMS = ("console", "pytest.log", "junit.xml", "results.json")


@contextlib.asynccontextmanager
async def central(secured: SecuredNats, user: str = "scheduler"):
    """A central service's connection and its publisher, built as the services build it."""
    nc = await connect_nats(secured.user(user), f"test-{user}")
    try:
        yield nc.jetstream(), EventPublisher(nc.jetstream(), secured.subjects)
    finally:
        await nc.close()


def lab_publisher(nc, subjects, lab: str, work_dir) -> EventPublisher:
    """The lab daemon's publisher, made by its own code (``Presence``) with its host key."""
    return Presence(nc, subjects, lab=lab, source=f"wrtci-lab/{lab}", request_timeout_s=5,
                    heartbeat_s=30, stop=asyncio.Event(),
                    ids=EventIds(lab, load_key(work_dir))).publisher


async def pre_publish(nc, subject: str, ids: set[str]) -> None:
    """Lab A, on a subject of its own: one message per ``Nats-Msg-Id`` (each stored)."""
    js = nc.jetstream()
    for value in sorted(ids):
        ack = await js.publish(subject, b"forged", headers={"Nats-Msg-Id": value})
        assert not ack.duplicate, value


def guesses(event_ids: set[str], subjects_of: list[str]) -> set[str]:
    """What lab A can send for these event ids: each plain, and keyed with its own keys."""
    found = set(event_ids)
    for key in (new_key(), b"\0" * 32):
        found |= {msg_id(key, subject, i) for i in event_ids for subject in subjects_of}
    return found


async def test_a_lab_cannot_preempt_central_or_another_labs_events(secured, tmp_path):
    subjects = secured.subjects
    lab_a = await add_lab(secured, "lab-a", OTHER)
    lab_b = await add_lab(secured, "lab-b", X86)
    firmware_id = "wrtci:snapshot:preempt"
    states = {state: ev.FirmwareStateChanged.build(
        ev.FirmwareStateData(firmware_id=firmware_id, state=state,
                             previous=FirmwareState.RUNNING, reason="test"),
        source="wrtci/scheduler", subject=firmware_id,
        id=state_event_id(firmware_id, state, 1)) for state in FirmwareState}
    spec = msgspec.structs.replace(
        job_spec("wrtci:job:preempt", "http://x/fw.bin", "0" * 64,
                 plans=[TestPlan(name="base", tests=["t.py"])]), device_type=OTHER)
    created = ev.JobCreated.build(spec, source="wrtci/scheduler", subject=spec.job_id,
                                  id=job_created_id(spec.job_id, spec.attempt))
    ids_b = EventIds("lab-b", load_key(tmp_path / "work-b"))
    started_b = ev.JobStarted.build(ev.JobStartedData(
        job_id="wrtci:job:b", attempt=1, lab="lab-b", device="dut1"),
        source="wrtci-lab/lab-b", id=ids_b.started("wrtci:job:b", 1, 1))
    chunk_b = ev.LogChunk.build(ev.LogChunkData(
        job_id="wrtci:job:b", attempt=1, lab="lab-b", device="dut1", seq=0, text="real\n"),
        source="wrtci-lab/lab-b", id=ids_b.chunk("wrtci:job:b", 1, 1, "console", 0))

    errors: list[str] = []
    async with lab_connection(lab_a, "lab-a", errors) as nc_a, central(secured) as (js, pub):
        # Lab A knows every plain id (here even lab B's, keyed ids and all).
        central_ids = {e.id for e in states.values()} | {created.id}
        own_events = subjects.lab_event("lab-a", "job.progress")
        await pre_publish(nc_a, own_events, guesses(
            central_ids | {started_b.id}, [subjects.event("firmware.state"),
                                           subjects.event("job.created"),
                                           subjects.lab_event("lab-b", "job.started"),
                                           own_events]))
        await pre_publish(nc_a, subjects.log_chunk("lab-a", "wrtci:job:b"), guesses(
            {chunk_b.id}, [subjects.log_chunk("lab-b", "wrtci:job:b")]))

        # What lab A sees: the scheduler queues a job of A's type — first on JOBS
        # (A takes it from its consumer, as its daemon does: the delivery shows the
        # message and its headers), then on EVENTS (Dispatcher.publish). A replays
        # the header in between.
        await ensure_job_consumers(js, subjects, [OTHER])
        await pub.publish(created, subjects.job(spec.priority, spec.device_type))
        queue = JobQueue(nc_a, subjects)
        try:
            taken = await queue.next_job(OTHER, wait=10)
            assert taken is not None and taken.spec.job_id == spec.job_id
            seen_id = taken.msg.headers["Nats-Msg-Id"]
        finally:
            await queue.close()
        await pre_publish(nc_a, own_events, {seen_id})

        # The real events, published as their publishers publish them.
        for event in states.values():
            assert not (await pub.publish(event)).duplicate, event.id
        assert not (await pub.publish(created)).duplicate
        nc_b = await connect_nats(lab_b, "lab-b", inbox_prefix=subjects.lab_inbox_prefix("lab-b"))
        try:
            publisher_b = lab_publisher(nc_b, subjects, "lab-b", tmp_path / "work-b")
            assert not (await publisher_b.publish(started_b)).duplicate
            assert not (await publisher_b.publish(chunk_b)).duplicate
        finally:
            await nc_b.close()

        stored = {e.id for e in await stored_events(js, subjects)}
        assert central_ids | {started_b.id} <= stored
        b_logs = subjects.log_chunk("lab-b", "wrtci:job:b")
        logs = await js.stream_info(subjects.logs_stream, subjects_filter=b_logs)
        assert logs.state.subjects == {b_logs: 1}
    assert not errors, errors  # lab A used only what its permissions allow


async def test_a_lab_cannot_read_the_central_key(secured):
    subjects = secured.subjects
    lab_a = await add_lab(secured, "lab-a", OTHER)
    applied = await wrtci("nats", "apply", "-c", str(secured.site))
    assert applied.returncode == 0, applied.stderr
    assert f"kv {subjects.secrets_bucket}" in applied.stdout
    async with central(secured) as (_, pub):
        key = await pub.key()
    bucket = subjects.secrets_bucket
    errors: list[str] = []
    async with lab_connection(lab_a, "lab-a", errors) as nc:
        lab_js = nc.jetstream(timeout=1)  # a refused request gets no reply: 1 s, as below
        # Through the client's KV API, and by every JetStream API subject that serves messages.
        with pytest.raises((APIError, NatsTimeoutError, NoRespondersError)):
            kv = await lab_js.key_value(bucket)
            await kv.get(CENTRAL_KEY)
        requests = [f"$JS.API.STREAM.MSG.GET.KV_{bucket}",
                    f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{CENTRAL_KEY}",
                    f"$JS.API.DIRECT.GET.KV_{bucket}",
                    f"$JS.API.CONSUMER.CREATE.KV_{bucket}",
                    f"$JS.API.CONSUMER.CREATE.KV_{bucket}.mine.$KV.{bucket}.{CENTRAL_KEY}",
                    "$JS.API.STREAM.CREATE.COPY",
                    f"$KV.{bucket}.{CENTRAL_KEY}"]
        # Side by side: a refused request gets no reply, each waits its 1 s out.
        replies = await asyncio.gather(*(nc.request(subject, b'{"last_by_subj": "$KV.x"}',
                                                    timeout=1) for subject in requests),
                                       return_exceptions=True)
        for subject, reply in zip(requests, replies, strict=True):
            if isinstance(reply, NatsTimeoutError | NoRespondersError):
                continue
            assert not isinstance(reply, BaseException), (subject, reply)
            assert key.hex().encode() not in reply.data, subject
        await nc.subscribe(f"$KV.{bucket}.>")
        await nc.flush()
        for subject in [*requests, f"$KV.{bucket}.>"]:
            await eventually(lambda s=subject: asyncio.sleep(0, result=any(
                "permissions violation" in e and s.lower() in e for e in errors)),
                f"permission violation for {subject}", within_s=10)
        # A lab publisher that forgot its own key fails loudly; it never goes unkeyed.
        with pytest.raises((APIError, NatsTimeoutError, NoRespondersError)):
            await EventPublisher(lab_js, subjects, timeout=1).publish(ev.JobProgress.build(
                ev.JobProgressData(job_id="j", attempt=1, lab="lab-a", device="x", stage="test"),
                source="wrtci-lab/lab-a"))
    # Every central user reads the same key.
    async with central(secured, "timeout") as (_, other):
        assert await other.key() == key


async def test_a_restarted_publisher_still_dedupes_its_own_republish(secured, tmp_path):
    subjects = secured.subjects
    lab_b = await add_lab(secured, "lab-b", X86)
    event = ev.FirmwareStateChanged.build(
        ev.FirmwareStateData(firmware_id="fw", state=FirmwareState.AVAILABLE,
                             previous=FirmwareState.RUNNING, reason="test"),
        source="wrtci/scheduler", subject="fw", id=state_event_id("fw", FirmwareState.AVAILABLE, 0))
    # Two replicas start at once on an installation with no key yet: they agree on one.
    async with central(secured) as (js, first), central(secured) as (_, second):
        keys = await asyncio.gather(first.key(), second.key())
        assert keys[0] == keys[1] == await central_key(js, subjects)
        assert not (await first.publish(event)).duplicate
    # A replica restarted (a new process: a new connection, the key read again).
    async with central(secured, "timeout") as (js, again):
        assert (await again.publish(event)).duplicate
        assert [e.id for e in await stored_events(js, subjects, "firmware.state")] == [event.id]

    # A lab restarted: its host key is in its work directory, its retry dedupes.
    started = ev.JobStarted.build(ev.JobStartedData(job_id="j", attempt=1, lab="lab-b",
                                                    device="dut1"), source="wrtci-lab/lab-b",
                                  id=EventIds("lab-b", load_key(tmp_path / "w")).started("j", 1, 1))
    for expect_duplicate in (False, True):
        nc = await connect_nats(lab_b, "lab-b", inbox_prefix=subjects.lab_inbox_prefix("lab-b"))
        try:
            publisher = lab_publisher(nc, subjects, "lab-b", tmp_path / "w")
            assert bool((await publisher.publish(started)).duplicate) is expect_duplicate
        finally:
            await nc.close()


def _job_row(pool, job_id: str):
    async def check():
        async with pool.acquire() as conn:
            return await conn.fetchrow("SELECT state, lab, attempt, result FROM jobs "
                                       "WHERE id = $1 AND state = 'done'", job_id)
    return check


async def test_a_real_job_runs_while_a_lab_holds_every_id_it_could_know(
        secured, tmp_path, pool, database_config, storage_config, fake_suite,
        fake_firmware_url):
    """The scheduler, the log writer and the real wrtci-lab, while lab A sent first the
    ids of the firmware's events, the job's, and lab B's start, finish and log chunks."""
    subjects = secured.subjects
    lab_b = await add_lab(secured, "lab-b", X86)
    lab_a = await add_lab(secured, "lab-a", OTHER)
    data = fake_firmware(X86, fake_firmware_url, "r1-preempt")
    firmware_id = data.firmware_id
    job = fanout_job_id(firmware_id, data.images[0], X86)
    work_b = tmp_path / "work-b"
    ids_b = EventIds("lab-b", load_key(work_b))  # the key lab-b will find at its start
    event_ids = {f"firmware.discovered:{firmware_id}"}
    event_ids |= {state_event_id(firmware_id, s, r) for s in FirmwareState for r in (0, 1, 2)}
    event_ids |= {job_created_id(job, 1), f"job.finished:{job}:1:lab-b"}
    event_ids |= {i for run in (1, 2) for i in (ids_b.started(job, 1, run),
                                                ids_b.finished(job, 1, run))}
    chunk_ids = {ids_b.chunk(job, 1, run, stream, seq) for run in (1, 2)
                 for stream in LOG_STREAMS for seq in range(4)}
    errors: list[str] = []
    async with lab_connection(lab_a, "lab-a", errors) as nc_a:
        await pre_publish(nc_a, subjects.lab_event("lab-a", "job.progress"), guesses(
            event_ids, [subjects.event("firmware.discovered"),
                        subjects.event("firmware.state"), subjects.event("job.created"),
                        subjects.lab_event("lab-b", "job.started"),
                        subjects.lab_event("lab-b", "job.finished")]))
        await pre_publish(nc_a, subjects.log_chunk("lab-a", job), guesses(
            chunk_ids, [subjects.log_chunk("lab-b", job)]))
    assert not errors, errors

    config = lab_config(lab_b, work_b, fake_suite, name="lab-b")
    async with central_services(secured, tmp_path, database_config, storage_config), \
            lab_process(config, tmp_path, pool):
        await publish_firmware(secured, data)
        done = await eventually(_job_row(pool, job), "lab-b's job done", within_s=120)
        async with central(secured) as (js, _):
            async def stored_ids() -> set[str]:
                return {e.id for e in await stored_events(js, subjects)}

            def has_state(state: FirmwareState):
                async def check():
                    found = await stored_ids()
                    return any(state_event_id(firmware_id, state, r) in found
                               for r in (0, 1, 2))
                return check

            # The firmware's state events, each handled: done follows available.
            await eventually(has_state(FirmwareState.AVAILABLE), "firmware available")
            await eventually(has_state(FirmwareState.DONE), "firmware done", within_s=60)
            assert await firmware_state(pool, firmware_id) == "done"
            stored = await stored_ids()

    assert (done["result"], done["lab"], done["attempt"]) == (JobResult.PASS.value, "lab-b", 1)
    assert {f"firmware.discovered:{firmware_id}", job_created_id(job, 1),
            ids_b.started(job, 1, 1), ids_b.finished(job, 1, 1)} <= stored
    # The log writer got lab-b's chunks: the suite's log is stored whole.
    pytest_log = read_object(storage_config, job_log_key(job, 1, "pytest.log")).decode()
    assert "3 passed" in pytest_log
