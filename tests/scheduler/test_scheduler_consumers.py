"""The job consumers the scheduler keeps for every announced device type."""

from __future__ import annotations

import asyncio

from tests.helpers import eventually, private_nats
from wrtci.proto.subjects import Priority
from wrtci.services.scheduler.consumers import JobConsumerKeeper
from wrtci.services.scheduler.hold import job_consumers

DEVICE_TYPE = "x86/64/generic"


async def test_consumers_wanted_while_nats_is_away_are_made_when_it_is_back(server_root):
    async with private_nats(server_root, "keeper") as (server, config, js):
        keeper = JobConsumerKeeper(js, config.subjects, call_timeout_s=1.0)
        stop = asyncio.Event()
        task = asyncio.create_task(keeper.run(stop))
        try:
            server.stop()
            keeper.want([DEVICE_TYPE])  # a lab announced a new type meanwhile
            assert not keeper.idle.is_set() and keeper.ready == set()
            server.start()
            await eventually(keeper.idle.is_set, "the consumers made after the outage", 60)
            assert keeper.ready == {DEVICE_TYPE}
            names = {c.name for c in await job_consumers(js, config.subjects)}
            assert names == {config.subjects.job_consumer(p, DEVICE_TYPE) for p in Priority}
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
