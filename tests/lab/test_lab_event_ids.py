"""Lab event ids no other lab can take first (``lab_daemon/event_ids.py``).

JetStream drops a ``Nats-Msg-Id`` its stream saw within the dedupe window,
whatever subject it came on. A lab's ids name the lab and the delivery and
carry a tag keyed with the lab host's secret: a second lab that takes over a
redelivered job gets its own start stored, and a lab publishing another
lab's ids (as far as it can work them out) first suppresses nothing.
"""

from __future__ import annotations

import signal
import stat

from tests.lab_helpers import (
    EventLog,
    fake_job,
    lab_config,
    lab_process_with_job,
    publish_job,
    running_lab,
    signal_while_testing,
    stream_events,
)
from wrtci.core.runtime import EventPublisher
from wrtci.lab_daemon.event_ids import KEY_FILE, EventIds, load_key
from wrtci.proto import events as ev
from wrtci.proto.limits import NAME_MAX
from wrtci.proto.model import JobResult


def test_ids_are_the_same_for_the_same_labs_retries_and_differ_otherwise(tmp_path):
    key = load_key(tmp_path / "work")
    assert load_key(tmp_path / "work") == key  # a restart: the same key, the same ids
    assert stat.S_IMODE((tmp_path / "work" / KEY_FILE).stat().st_mode) == 0o600
    ids = EventIds("lab1", key)
    again = EventIds("lab1", load_key(tmp_path / "work"))
    assert ids.started("wrtci:job:1", 1, 1) == again.started("wrtci:job:1", 1, 1)
    assert ids.chunk("wrtci:job:1", 1, 1, "console", 7) == again.chunk(
        "wrtci:job:1", 1, 1, "console", 7)
    assert ids.started("wrtci:job:1", 1, 1).startswith("job.started:lab1:wrtci:job:1:1:1:")
    others = {
        ids.started("wrtci:job:1", 1, 2),  # the next delivery of the attempt
        ids.finished("wrtci:job:1", 1, 1),
        EventIds("lab2", key).started("wrtci:job:1", 1, 1),  # another lab
        EventIds("lab1", load_key(tmp_path / "elsewhere")).started("wrtci:job:1", 1, 1),
    }
    assert ids.started("wrtci:job:1", 1, 1) not in others and len(others) == 4
    assert ids.fresh("job.progress") != ids.fresh("job.progress")
    long_id = ids.started("j" * NAME_MAX, 1, 1)  # still a valid id, still unique
    assert len(long_id) <= NAME_MAX and long_id != ids.started("j" * (NAME_MAX - 1), 1, 1)


async def test_a_second_lab_taking_over_a_redelivered_job_gets_its_start_stored(
        js, nc, subjects, events, nats_config, fake_suite, fake_firmware_url, tmp_path):
    # lab1 takes the job and is killed (no ack); after the ack wait JetStream
    # hands it to lab2 — well within the stream's 2 h dedupe window.
    spec = fake_job("wrtci:job:takeover", fake_firmware_url,
                    tests=["tests/test_fake.py::test_sleeps"])
    first = lab_config(nats_config, tmp_path / "work1", fake_suite, name="lab1",
                       job_ack_wait_s=4, env={"FAKE_SLEEP": "30"})
    async with lab_process_with_job(nc, subjects, first, spec, tmp_path / "lab1.log") as lab:
        await signal_while_testing(lab, events, signal.SIGKILL)
    second = lab_config(nats_config, tmp_path / "work2", fake_suite, name="lab2",
                        job_ack_wait_s=4, env={"FAKE_SLEEP": "0"})
    async with running_lab(second):
        await events.wait_for(lambda e: e.of(ev.JobFinished), within_s=60)
    started = {e.data.lab: e for e in await stream_events(
        js, subjects.events_stream, subjects.all_lab_events("job.started"))}
    assert set(started) == {"lab1", "lab2"}, "JetStream dropped the second lab's start"
    assert started["lab1"].id != started["lab2"].id
    [finished] = await stream_events(js, subjects.events_stream,
                                     subjects.lab_event("lab2", "job.finished"))
    assert finished.data.result is JobResult.PASS


async def test_another_lab_publishing_a_labs_event_ids_first_suppresses_nothing(
        js, nc, subjects, nats_config, fake_suite, fake_firmware_url, tmp_path):
    spec = fake_job("wrtci:job:forged", fake_firmware_url,
                    tests=["tests/test_fake.py::test_prints"])
    config = lab_config(nats_config, tmp_path / "work", fake_suite, name="lab1")
    # "evil" knows the scheme and the job, not lab1's key: it publishes, on its
    # own subjects, every id lab1 could use — the old predictable ones and the
    # new ones keyed with a key of its own.
    guess = EventIds("lab1", load_key(tmp_path / "evil"))
    publisher = EventPublisher(js, subjects)
    forged_ids = {
        ev.JobStarted: [f"job.started:{spec.job_id}:1", guess.started(spec.job_id, 1, 1)],
        ev.JobFinished: [f"job.finished:{spec.job_id}:1", guess.finished(spec.job_id, 1, 1)],
        ev.LogChunk: [f"log:{spec.job_id}:1:1:console:0",
                      guess.chunk(spec.job_id, 1, 1, "console", 0)],
    }
    async with running_lab(config):  # online first: the job consumers exist
        for kind, ids in forged_ids.items():
            for event_id in ids:
                if kind is ev.JobStarted:
                    data = ev.JobStartedData(job_id=spec.job_id, attempt=1, lab="evil",
                                             device="x")
                elif kind is ev.JobFinished:
                    data = ev.JobFinishedData(job_id=spec.job_id, attempt=1, lab="evil",
                                              device="x", result=JobResult.FAIL)
                else:
                    data = ev.LogChunkData(job_id=spec.job_id, attempt=1, lab="evil",
                                           device="x", seq=0, text="forged")
                ack = await publisher.publish(kind.build(data, source="evil", id=event_id))
                assert not ack.duplicate
        events = await EventLog().start(nc, subjects)
        await publish_job(nc, subjects, spec)
        await events.wait_for(lambda e: e.of(ev.JobFinished))
    for kind in ("job.started", "job.finished"):
        stored = await stream_events(js, subjects.events_stream,
                                     subjects.lab_event("lab1", kind))
        assert [e.data.job_id for e in stored] == [spec.job_id], kind
    [finished] = await stream_events(js, subjects.events_stream,
                                     subjects.lab_event("lab1", "job.finished"))
    assert finished.data.result is JobResult.PASS
    chunks = await stream_events(js, subjects.logs_stream,
                                 subjects.log_chunk("lab1", spec.job_id))
    assert any(c.data.stream == "console" and c.data.seq == 0 for c in chunks)
