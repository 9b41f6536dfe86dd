"""The lab's job queue: wake-up, priority order, safety poll, central consumers only."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tests.helpers import eventually
from tests.lab_helpers import DEVICE_TYPE, job_spec
from wrtci.proto import events as ev
from wrtci.proto.events import decode_as
from wrtci.proto.jobpull import Puller, PullFailed
from wrtci.proto.jobqueue import JobQueue
from wrtci.proto.jobwake import wake_labs
from wrtci.proto.model import TestPlan
from wrtci.proto.subjects import Priority
from wrtci.proto.topology import ensure_job_consumers

PLANS = [TestPlan(name="base", tests=["tests/test_base.py"])]
NEVER = 1e-6
"""A max_idle_rate whose safety poll never comes within a test: only wake-ups count."""


async def _publish(nc, subjects, job_id: str, priority: Priority) -> None:
    js = nc.jetstream()
    spec = msgspec.structs.replace(job_spec(job_id, "http://x/fw.bin", "0" * 64, plans=PLANS),
                                   priority=int(priority))
    event = ev.JobCreated.build(spec, source="test", id=f"job.created:{job_id}")
    await js.publish(subjects.job(priority, DEVICE_TYPE), ev.encode(event),
                     headers={"Nats-Msg-Id": event.id})
    await wake_labs(nc, subjects, [(priority, DEVICE_TYPE)])


async def _consumers(js, subjects) -> list[str]:
    return [c.name for c in await js.consumers_info(subjects.jobs_stream)]


async def test_pr_job_is_taken_before_an_older_snapshot_job(js, nc, subjects):
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE])
    await _publish(nc, subjects, "snap-1", Priority.SNAPSHOT)
    await _publish(nc, subjects, "stable-1", Priority.STABLE)
    await _publish(nc, subjects, "pr-1", Priority.PR)
    queue = JobQueue(nc, subjects, max_idle_rate=NEVER)
    taken = []
    for _ in range(3):
        job = await queue.next_job(DEVICE_TYPE, wait=5)
        assert job is not None
        taken.append((job.spec.job_id, job.priority))
        await job.ack()
    assert taken == [("pr-1", Priority.PR), ("snap-1", Priority.SNAPSHOT),
                     ("stable-1", Priority.STABLE)]
    await queue.close()


async def test_idle_device_is_woken_by_a_new_job_and_asks_nothing_meanwhile(js, nc, subjects):
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE])
    queue = JobQueue(nc, subjects, max_idle_rate=NEVER, ack_wait=3600)
    assert await queue.next_job(DEVICE_TYPE, wait=0) is None  # the start-up look: all empty
    asked = queue.requests
    assert asked == len(Priority)
    for _ in range(3):  # idle: no wake-up, no poll due -> no request at all
        assert await queue.next_job(DEVICE_TYPE, wait=0.3) is None
    assert queue.requests == asked

    waiting = asyncio.create_task(queue.next_job(DEVICE_TYPE, wait=30))
    await eventually(lambda: queue.waiting(DEVICE_TYPE) == 1, "the device waiting")
    await _publish(nc, subjects, "pr-wake", Priority.PR)
    job = await asyncio.wait_for(waiting, 30)
    assert job is not None and job.spec.job_id == "pr-wake"
    await job.ack()
    await queue.close()


async def test_two_waiting_devices_of_a_type_take_two_jobs_once_each(js, nc, subjects):
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE])
    lab_a = JobQueue(nc, subjects, max_idle_rate=NEVER, ack_wait=3600)
    lab_b = JobQueue(nc, subjects, max_idle_rate=NEVER, ack_wait=3600)
    for queue in (lab_a, lab_b):
        assert await queue.next_job(DEVICE_TYPE, wait=0) is None
    devices = [asyncio.create_task(q.next_job(DEVICE_TYPE, wait=30))
               for q in (lab_a, lab_a, lab_b)]
    await eventually(lambda: lab_a.waiting(DEVICE_TYPE) == 2 and lab_b.waiting(DEVICE_TYPE) == 1,
                     "three devices waiting")
    await _publish(nc, subjects, "job-1", Priority.SNAPSHOT)
    await _publish(nc, subjects, "job-2", Priority.SNAPSHOT)
    jobs = []
    for next_done in asyncio.as_completed(devices, timeout=30):
        jobs.append(await next_done)
        if len(jobs) == 2:
            break
    await asyncio.sleep(0.5)  # the third device got nothing, even a moment later
    assert sorted(j.spec.job_id for j in jobs) == ["job-1", "job-2"]
    assert all(j.num_delivered == 1 for j in jobs)
    assert sum(not t.done() for t in devices) == 1
    for task in devices:
        task.cancel()
    for queue in (lab_a, lab_b):
        await queue.close()


async def test_naked_job_is_taken_again_when_its_delay_ends(js, nc, subjects):
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE])
    await _publish(nc, subjects, "nak-1", Priority.SNAPSHOT)
    queue = JobQueue(nc, subjects, max_idle_rate=NEVER, ack_wait=3600)
    job = await queue.next_job(DEVICE_TYPE, wait=5)
    assert job is not None
    await job.nak(delay=0.5)
    # No new publish wakes anyone: the nak's delay schedules the next look.
    again = await queue.next_job(DEVICE_TYPE, wait=10)
    assert again is not None and again.spec.job_id == "nak-1" and again.num_delivered == 2
    await again.ack()
    await queue.close()


async def test_job_of_a_lab_that_stopped_acking_is_found_by_the_safety_poll(js, nc, subjects):
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE], ack_wait=1.0)
    await _publish(nc, subjects, "lost-1", Priority.PR)
    gone = JobQueue(nc, subjects, max_idle_rate=NEVER, ack_wait=1.0)
    job = await gone.next_job(DEVICE_TYPE, wait=5)
    assert job is not None
    await gone.close()  # never acks

    # Another lab, idle for a while already: only its safety poll (every 1 s
    # at this rate) can see the job come back, nothing is published.
    other = JobQueue(nc, subjects, max_idle_rate=len(Priority), ack_wait=3600)
    assert other.poll_interval == 1.0
    assert await other.next_job(DEVICE_TYPE, wait=0) is None
    again = await other.next_job(DEVICE_TYPE, wait=10)
    assert again is not None and again.spec.job_id == "lost-1" and again.num_delivered == 2
    await again.ack()
    await other.close()


async def test_lab_waits_for_the_central_consumers_and_never_creates_them(js, nc, subjects):
    queue = JobQueue(nc, subjects, max_idle_rate=NEVER, ack_wait=3600)
    assert await queue.next_job(DEVICE_TYPE, wait=0.5) is None
    assert await _consumers(js, subjects) == []  # asked, created nothing
    waiting = asyncio.create_task(queue.next_job(DEVICE_TYPE, wait=30))
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE])  # what the scheduler does
    await _publish(nc, subjects, "late-1", Priority.CUSTOM)
    job = await asyncio.wait_for(waiting, 30)
    assert job is not None and job.spec.job_id == "late-1"
    await job.ack()
    assert len(await _consumers(js, subjects)) == len(Priority)
    await queue.close()


async def test_malformed_job_message_is_terminated_and_the_next_one_taken(js, nc, subjects):
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE])
    await js.publish(subjects.job(Priority.PR, DEVICE_TYPE), b"{not json")
    await _publish(nc, subjects, "good-1", Priority.SNAPSHOT)
    queue = JobQueue(nc, subjects, max_idle_rate=NEVER)
    job = await queue.next_job(DEVICE_TYPE, wait=5)
    assert job is not None and job.spec.job_id == "good-1"
    await job.msg.ack_sync()  # confirmed: the stream is looked at next
    info = await js.stream_info(subjects.jobs_stream)
    assert info.state.messages == 0  # the bad one terminated, the good one acked
    await queue.close()


async def test_job_that_comes_after_its_pull_was_given_up_is_not_left_an_ack_wait(
        js, nc, subjects):
    # A client too busy to read its answers in time: its pull request is still open
    # on the server (expires 1 s) when it gives up (after 0.2 s), then a job comes.
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE])
    consumer = subjects.job_consumer(Priority.PR, DEVICE_TYPE)
    taken: list = []
    for takes in (True, False):
        puller = Puller(nc, subjects.jobs_stream, timeout=-0.8,
                        on_late=lambda _consumer, msg, takes=takes: takes and not taken.append(msg))
        with pytest.raises(PullFailed, match="no answer within"):
            await puller.pull(consumer, expires=1.0)
        await _publish(nc, subjects, f"late-{takes}", Priority.PR)
        await eventually(lambda puller=puller: puller.late_jobs == 1, "the late job came")
        await puller.close()
    # Not taken: handed back at once (not after the 120 s ack wait) for anyone to fetch.
    # The hand-back (a nak) is not acknowledged by the server: a lab that looks
    # before the server has it sees nothing yet, so look until it is back.
    async def handed_back():
        other = JobQueue(nc, subjects, max_idle_rate=NEVER)
        try:
            return await other.next_job(DEVICE_TYPE, wait=0)
        finally:
            await other.close()

    job = await eventually(handed_back, "the late job back in the queue", within_s=10)
    assert job.spec.job_id == "late-False" and job.num_delivered == 2
    await job.ack()
    # Taken by on_late (the job queue gives it to a waiting device): it is that one's.
    assert [decode_as(m.data, ev.JobCreated).data.job_id for m in taken] == ["late-True"]
    await taken[0].ack()


async def test_wake_up_without_a_job_makes_an_idle_device_ask_that_priority(js, nc, subjects):
    # What `wrtci resume` sends for the jobs a drain held: no new job, only the signal.
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE])
    queue = JobQueue(nc, subjects, max_idle_rate=NEVER, ack_wait=3600)
    assert await queue.next_job(DEVICE_TYPE, wait=0) is None
    asked = queue.requests
    waiting = asyncio.create_task(queue.next_job(DEVICE_TYPE, wait=30))
    await eventually(lambda: queue.waiting(DEVICE_TYPE) == 1, "the device waiting")
    assert queue.requests == asked  # idle: asks nothing
    await nc.publish(subjects.job_wake(Priority.STABLE, DEVICE_TYPE))
    await eventually(lambda: queue.requests == asked + 1, "the woken device asks once")
    assert not waiting.done()  # nothing there: it waits on
    waiting.cancel()
    await queue.close()
