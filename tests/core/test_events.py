"""Every event type round-trips through a real JetStream and a durable consumer."""

from __future__ import annotations

import json

import msgspec
import pytest

from tests.samples import sample_events
from wrtci.core.runtime import EventPublisher
from wrtci.proto import events as ev
from wrtci.proto.routing import event_subject
from wrtci.proto.topology import service_consumer


def test_samples_cover_every_event_type() -> None:
    assert {type(e) for e in sample_events()} == set(ev.EVENT_TYPES)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.kind)
def test_structured_json_mode(event: ev.CloudEvent) -> None:
    document = json.loads(ev.encode(event))
    assert document["specversion"] == "1.0"
    assert document["type"] == f"org.openwrt.wrtci.{event.kind}"
    assert {"id", "source", "time", "data"} <= document.keys()
    assert isinstance(document["data"], dict)


async def test_every_event_round_trips_through_jetstream(js, subjects) -> None:
    publisher = EventPublisher(js, subjects)
    samples = sample_events()
    logs = [e for e in samples if isinstance(e, ev.LogChunk)]
    others = [e for e in samples if not isinstance(e, ev.LogChunk)]
    for event in samples:
        ack = await publisher.publish(event)
        assert ack.stream in (subjects.events_stream, subjects.logs_stream)

    events_sub = await js.pull_subscribe(
        "", durable="roundtrip", stream=subjects.events_stream,
        config=service_consumer("roundtrip", subjects.all_events()),
    )
    received = []
    while len(received) < len(others):
        for msg in await events_sub.fetch(20, timeout=5):
            assert msg.subject == event_subject(subjects, ev.decode(msg.data))
            received.append(ev.decode(msg.data))
            await msg.ack()
    assert received == others

    logs_sub = await js.pull_subscribe(subjects.all_logs(), durable="logs",
                                       stream=subjects.logs_stream)
    msgs = await logs_sub.fetch(5, timeout=5)
    assert [ev.decode(m.data) for m in msgs] == logs


async def test_duplicate_event_id_is_stored_once(js, subjects) -> None:
    publisher = EventPublisher(js, subjects)
    event = sample_events()[0]
    first = await publisher.publish(event)
    second = await publisher.publish(event)
    assert second.duplicate and not first.duplicate
    info = await js.stream_info(subjects.events_stream)
    assert info.state.messages == 1


def test_lab_events_are_published_under_the_lab_scope(subjects) -> None:
    for event in sample_events():
        subject = event_subject(subjects, event)
        if isinstance(event, ev.LAB_EVENT_TYPES):
            assert subject.startswith(f"{subjects.prefix}.lab.lab-aparcar.")
        else:
            assert subject.startswith(f"{subjects.prefix}.events.")


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b'{"type": "org.openwrt.wrtci.nope", "data": {}}',
     b'{"type": "org.openwrt.wrtci.job.cancelled", "id": "x"}', b"[1,2,3]"],
)
def test_decode_rejects_malformed(payload: bytes) -> None:
    with pytest.raises(ev.DecodeError):
        ev.decode(payload)


def test_decode_as_insists_on_the_type() -> None:
    created = next(e for e in sample_events() if isinstance(e, ev.JobCreated))
    assert ev.decode_as(ev.encode(created), ev.JobCreated) == created
    with pytest.raises(ev.DecodeError):
        ev.decode_as(ev.encode(sample_events()[0]), ev.JobCreated)


def test_new_optional_fields_keep_old_messages_readable() -> None:
    old = {"type": "org.openwrt.wrtci.job.cancelled", "id": "1", "source": "s",
           "time": "2026-01-01T00:00:00Z", "data": {"job_id": "j"}}
    event = ev.decode(msgspec.json.encode(old))
    assert isinstance(event, ev.JobCancelled)
    assert event.data.reason == ""
