"""The shared pull loop: ack, retry, terminate malformed messages, hand back on stop."""

from __future__ import annotations

import asyncio
import logging

from tests.helpers import run_until
from tests.samples import sample_events
from wrtci.core.runtime import EventPublisher
from wrtci.proto import events as ev
from wrtci.proto.topology import service_consumer
from wrtci.services.consume import Pull, Reject, Retry, consume


def _config(subjects, name="svc"):
    return service_consumer(name, [subjects.event_family("job")], ack_wait=5, max_deliver=4)


async def _run_until(js, subjects, handler, done: asyncio.Event, config=None) -> None:
    pull = Pull(subjects.events_stream, config or _config(subjects), batch=10, fetch_timeout=0.2)
    await run_until(lambda stop: consume(js, pull, handler, stop), done)


async def test_malformed_message_is_terminated_and_next_one_processed(js, subjects, caplog):
    cancel = next(e for e in sample_events() if isinstance(e, ev.JobCancelled))
    bad_ack = await js.publish(subjects.event("job.cancelled"), b'{"type": "garbage"')
    await EventPublisher(js, subjects).publish(cancel)
    seen: list[ev.CloudEvent] = []
    done = asyncio.Event()

    async def handler(event, meta):
        seen.append(event)
        done.set()

    with caplog.at_level(logging.ERROR, logger="wrtci.services.consume"):
        await _run_until(js, subjects, handler, done)

    assert seen == [cancel]
    record = next(r for r in caplog.records if "malformed" in r.getMessage())
    assert record.subject == subjects.event("job.cancelled")
    assert record.stream_seq == bad_ack.seq
    info = await js.consumer_info(subjects.events_stream, "svc")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_retry_redelivers_and_reject_terminates(js, subjects, caplog):
    publisher = EventPublisher(js, subjects)
    retried = ev.JobRetryRequested.build(ev.JobRequestData(job_id="a"), source="t")
    rejected = ev.JobCancelRequested.build(ev.JobRequestData(job_id="b"), source="t")
    await publisher.publish(retried)
    await publisher.publish(rejected)
    deliveries: dict[str, int] = {}
    done = asyncio.Event()

    async def handler(event, meta):
        deliveries[event.data.job_id] = meta.num_delivered
        if isinstance(event, ev.JobCancelRequested):
            raise Reject("unknown job")
        if meta.num_delivered < 2:
            raise Retry("not yet", delay=0.1)
        done.set()

    with caplog.at_level(logging.WARNING, logger="wrtci.services.consume"):
        await _run_until(js, subjects, handler, done)
    assert deliveries == {"a": 2, "b": 1}
    assert any("rejected" in r.getMessage() for r in caplog.records)


async def test_unexpected_handler_error_does_not_stop_the_loop(js, subjects):
    publisher = EventPublisher(js, subjects)
    for job in ("x", "y"):
        await publisher.publish(ev.JobRetryRequested.build(ev.JobRequestData(job_id=job),
                                                           source="t"))
    handled: list[str] = []
    done = asyncio.Event()

    async def handler(event, meta):
        if event.data.job_id == "x" and meta.num_delivered == 1:
            raise RuntimeError("database down")
        handled.append(event.data.job_id)
        if {"x", "y"} <= set(handled):
            done.set()

    config = service_consumer("svc2", [subjects.event_family("job")], ack_wait=5, max_deliver=4)
    await _run_until(js, subjects, handler, done, config)
    assert sorted(handled) == ["x", "y"]


async def test_stop_hands_back_unprocessed_messages(js, subjects):
    publisher = EventPublisher(js, subjects)
    for i in range(5):
        await publisher.publish(ev.JobRetryRequested.build(ev.JobRequestData(job_id=str(i)),
                                                           source="t"))
    stop = asyncio.Event()
    handled: list[str] = []

    async def handler(event, meta):
        handled.append(event.data.job_id)
        stop.set()  # SIGTERM arrives while the first message is handled

    config = service_consumer("svc3", [subjects.event_family("job")], ack_wait=30)
    await asyncio.wait_for(consume(js, Pull(subjects.events_stream, config, batch=10,
                                            fetch_timeout=0.2), handler, stop), 10)
    assert handled == ["0"]

    # Another replica gets the other four at once, not after the 30 s ack wait.
    rest: list[str] = []
    done = asyncio.Event()

    async def second_replica(event, meta):
        rest.append(event.data.job_id)
        if len(rest) == 4:
            done.set()

    await _run_until(js, subjects, second_replica, done, config)
    assert sorted(rest) == ["1", "2", "3", "4"]
