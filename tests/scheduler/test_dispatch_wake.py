"""Queued jobs wake the labs once per (priority, device type), and every job is taken."""

from __future__ import annotations

import asyncio

import msgspec

from tests.helpers import eventually
from tests.lab_helpers import DEVICE_TYPE, job_spec
from wrtci.proto.jobqueue import JobQueue
from wrtci.proto.model import TestPlan
from wrtci.proto.subjects import Priority
from wrtci.proto.topology import ensure_job_consumers
from wrtci.services.lifecycle.dispatch import Dispatcher

NEVER = 1e-6
"""A max_idle_rate whose safety poll never comes within a test: only wake-ups count."""
PLANS = [TestPlan(name="base", tests=["tests/test_base.py"])]


async def test_a_batch_of_n_jobs_wakes_once_and_reaches_n_waiting_devices(nc, js, subjects):
    await ensure_job_consumers(js, subjects, [DEVICE_TYPE])
    wakes: list[tuple[str, bytes]] = []

    async def heard(msg) -> None:
        wakes.append((msg.subject, msg.data))

    await nc.subscribe(subjects.wakes_of_type(DEVICE_TYPE), cb=heard)
    # Two labs, five idle devices; no safety poll within the test.
    labs = [JobQueue(nc, subjects, max_idle_rate=NEVER, ack_wait=3600) for _ in range(2)]
    for queue in labs:
        assert await queue.next_job(DEVICE_TYPE, wait=0) is None  # the start-up look
    devices = [asyncio.create_task(queue.next_job(DEVICE_TYPE, wait=60))
               for queue in (labs[0], labs[0], labs[0], labs[1], labs[1])]
    await eventually(lambda: sum(q.waiting(DEVICE_TYPE) for q in labs) == len(devices),
                     "five devices waiting")
    specs = [msgspec.structs.replace(job_spec(f"batch-{i}", "http://x/fw.bin", "0" * 64,
                                              plans=PLANS), priority=int(Priority.SNAPSHOT))
             for i in range(len(devices))]
    published = await Dispatcher(nc, js, subjects).publish_all(specs)
    assert len(published) == len(specs)
    jobs = await asyncio.wait_for(asyncio.gather(*devices), 60)
    assert sorted(j.spec.job_id for j in jobs) == sorted(s.job_id for s in specs)
    assert all(j.num_delivered == 1 for j in jobs)
    await nc.flush()
    # One wake-up for the batch, saying how many jobs it stands for.
    assert wakes == [(subjects.job_wake(Priority.SNAPSHOT, DEVICE_TYPE), b"5")]
    for job in jobs:
        await job.ack()
    for queue in labs:
        await queue.close()
