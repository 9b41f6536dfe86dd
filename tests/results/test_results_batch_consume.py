"""The batched pull loop: one handler call per fetch, verdicts per message."""

from __future__ import annotations

import asyncio
import logging

from tests.helpers import run_until
from wrtci.core.runtime import EventPublisher
from wrtci.proto import events as ev
from wrtci.proto.topology import service_consumer
from wrtci.services.batch_consume import consume_batches
from wrtci.services.consume import Pull, Reject, Retry


def _request(job: str) -> ev.JobRetryRequested:
    return ev.JobRetryRequested.build(ev.JobRequestData(job_id=job), source="t", id=job)


async def _run(js, subjects, handler, done: asyncio.Event, name: str,
               drained: bool = True) -> None:
    config = service_consumer(name, [subjects.event_family("job")], ack_wait=5, max_deliver=4)
    pull = Pull(subjects.events_stream, config, batch=50, fetch_timeout=0.2, retry_delay=0.1)
    await run_until(lambda stop: consume_batches(js, pull, handler, stop), done)
    info = await js.consumer_info(subjects.events_stream, name)
    assert info.num_pending == 0 and (info.num_ack_pending == 0 or not drained)


async def test_batch_gets_all_messages_and_each_verdict_is_applied(js, subjects, caplog):
    publisher = EventPublisher(js, subjects)
    await js.publish(subjects.event("job.retry_requested"), b"not json")
    for job in ("ok-1", "bad", "later", "ok-2"):
        await publisher.publish(_request(job))
    calls: list[list[str]] = []
    done = asyncio.Event()

    async def handler(deliveries):
        calls.append([d.event.data.job_id for d in deliveries])
        verdicts = []
        for d in deliveries:
            if d.event.data.job_id == "bad":
                verdicts.append(Reject("no such job"))
            elif d.event.data.job_id == "later" and d.meta.num_delivered == 1:
                verdicts.append(Retry("not yet", delay=0.1))
            else:
                verdicts.append(None)
        if calls[-1] == ["later"]:
            done.set()
        return verdicts

    with caplog.at_level(logging.WARNING, logger="wrtci.services.batch_consume"):
        await _run(js, subjects, handler, done, "batch1")
    assert calls[0] == ["ok-1", "bad", "later", "ok-2"]  # the malformed one never reaches it
    assert calls[-1] == ["later"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("malformed" in m for m in messages)
    assert any("rejected" in m and "no such job" in m for m in messages)


async def test_failing_handler_hands_the_whole_batch_back(js, subjects):
    publisher = EventPublisher(js, subjects)
    for job in ("a", "b", "c"):
        await publisher.publish(_request(job))
    seen: list[list[str]] = []
    done = asyncio.Event()

    async def handler(deliveries):
        seen.append(sorted(d.event.data.job_id for d in deliveries))
        if len(seen) == 1:
            raise RuntimeError("database down")
        if sum(len(s) for s in seen[1:]) >= 3:
            done.set()
        return [None] * len(deliveries)

    await _run(js, subjects, handler, done, "batch2")
    assert seen[0] == ["a", "b", "c"]
    assert sorted(j for batch in seen[1:] for j in batch) == ["a", "b", "c"]


async def test_message_that_always_fails_does_not_hold_back_its_batch(js, subjects):
    publisher = EventPublisher(js, subjects)
    for job in ("a", "poison", "b"):
        await publisher.publish(_request(job))
    handled: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handler(deliveries):
        if any(d.event.data.job_id == "poison" for d in deliveries):
            if len(deliveries) == 1 and deliveries[0].meta.num_delivered == 2:
                done.set()  # alone, redelivered: it fails on its own
            raise RuntimeError("the database refuses this one")
        handled.extend((d.event.data.job_id, d.meta.num_delivered) for d in deliveries)
        return [None] * len(deliveries)

    await _run(js, subjects, handler, done, "batch3", drained=False)
    # The others went in at their first delivery, not at the poison's pace.
    assert sorted(handled) == [("a", 1), ("b", 1)]
