"""Events staged in a transaction go out only if it commits, and go out even after a crash."""

from __future__ import annotations

import pytest
from nats.js.errors import NoStreamResponseError

from wrtci.core.runtime import EventPublisher
from wrtci.proto import events as ev
from wrtci.services.outbox import Outbox, stage_event


def _event(job: str) -> ev.JobCancelled:
    return ev.JobCancelled.build(ev.JobCancelledData(job_id=job), source="t",
                                 id=f"job.cancelled:{job}")


async def _stored(js, subjects) -> list[str]:
    info = await js.stream_info(subjects.events_stream)
    if info.state.messages == 0:
        return []
    sub = await js.pull_subscribe(subjects.event("job.cancelled"), stream=subjects.events_stream)
    msgs = await sub.fetch(info.state.messages, timeout=5)
    return [ev.decode(m.data).data.job_id for m in msgs]


class Boom(Exception):
    pass


async def test_rolled_back_transaction_announces_nothing(js, subjects, pool) -> None:
    with pytest.raises(Boom):
        async with pool.acquire() as conn, conn.transaction():
            await stage_event(conn, _event("rolled-back"), subjects.event("job.cancelled"))
            raise Boom
    assert await Outbox(pool, EventPublisher(js, subjects)).flush() == 0
    assert await _stored(js, subjects) == []


async def test_staged_events_survive_a_crash_and_go_out_once_in_order(js, subjects, pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for job in ("a", "b", "c"):
            await stage_event(conn, _event(job), subjects.event("job.cancelled"))
        await stage_event(conn, _event("a"), subjects.event("job.cancelled"))  # staged twice
    # the process that committed died before flushing; another one flushes
    first = Outbox(pool, EventPublisher(js, subjects))
    second = Outbox(pool, EventPublisher(js, subjects))
    assert await first.flush() == 3
    assert await second.flush() == 0
    assert await _stored(js, subjects) == ["a", "b", "c"]
    assert await pool.fetchval("SELECT count(*) FROM event_outbox") == 0


async def test_failed_publish_keeps_the_rest_for_the_next_flush(js, subjects, pool, nc) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await stage_event(conn, _event("x"), subjects.event("job.cancelled"))
        await stage_event(conn, _event("y"), "nowhere.no.stream.listens")
        await stage_event(conn, _event("z"), subjects.event("job.cancelled"))
    outbox = Outbox(pool, EventPublisher(js, subjects, timeout=1))
    with pytest.raises(NoStreamResponseError):  # no stream takes that subject
        await outbox.flush()
    assert await _stored(js, subjects) == ["x"]
    assert await pool.fetchval("SELECT count(*) FROM event_outbox") == 2
