"""The console log of a running job, read through the API while the lab sends it."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import msgspec
import pytest

from tests.api_support import serving
from tests.factories_results import Factory, ingest_all, publish, started
from wrtci.core.runtime import EventPublisher
from wrtci.proto import events as ev
from wrtci.services.api.livelog import Ordered, Position


@pytest.fixture
async def api(js, nats_config, database_config, storage_config):
    async with serving(nats_config, database_config, storage_config) as client:
        yield client


def chunk(job_id: str, seq: int, text: str, *, attempt: int = 1, lab: str = "lab-a",
          run: int = 1, final: bool = False, stream: str = "console") -> ev.LogChunk:
    data = ev.LogChunkData(job_id=job_id, attempt=attempt, lab=lab, device="dut-1", seq=seq,
                           text=text, final=final, stream=stream, run=run)
    return ev.LogChunk.build(data, source=f"wrtci/lab/{lab}", subject=job_id,
                             id=f"log:{job_id}:{attempt}:{run}:{stream}:{seq}")


def progress(job_id: str, stage: str, lab: str = "lab-a") -> ev.JobProgress:
    return ev.JobProgress.build(
        ev.JobProgressData(job_id=job_id, attempt=1, lab=lab, device="dut-1", stage=stage),
        source=f"wrtci/lab/{lab}", id=f"progress:{job_id}:{stage}")


async def send(js, subjects, *events: ev.LogChunk, lab: str = "lab-a") -> None:
    publisher = EventPublisher(js, subjects)
    for event in events:
        await publisher.publish(event, subject=subjects.log_chunk(lab, event.data.job_id))


def test_chunks_come_out_in_order_latest_run_only():
    def data(seq, text, run=1, final=False):
        return chunk("j", seq, text, run=run, final=final).data

    order = Ordered()
    assert order.add(data(1, "b")) == []  # waits for seq 0
    assert order.add(data(0, "a")) == [("text", Position(1, 0), "a"),
                                       ("text", Position(1, 1), "b")]
    assert order.add(data(1, "b")) == []  # duplicate
    assert order.add(data(0, "A", run=2)) == [("reset", 2), ("text", Position(2, 0), "A")]
    assert order.add(data(5, "old run")) == []
    assert order.add(data(1, "B", run=2, final=True))[-1] == ("text", Position(2, 1), "B")
    assert order.final
    resumed = Ordered(Position(2, 0))
    assert resumed.add(data(0, "A", run=2)) == []
    assert resumed.add(data(1, "B", run=2)) == [("text", Position(2, 1), "B")]


async def running_job(js, subjects, pool) -> str:
    factory = Factory(pool)
    job_id = await factory.job(await factory.firmware())
    await publish(js, subjects, started(job_id))
    await ingest_all(js, subjects, pool)
    return job_id


async def read_events(resp, until, limit_s: float = 10.0) -> list[tuple[str, str, object]]:
    """(event, id, data) of a Server-Sent-Events response until ``until(events)`` holds."""
    events, fields = [], {}
    async with asyncio.timeout(limit_s):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line == "":
                if "event" in fields:
                    events.append((fields["event"], fields.get("id"),
                                   msgspec.json.decode(fields["data"])))
                    if until(events):
                        return events
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return events


async def test_running_log_is_served_from_the_stream_and_followed_live(
        api, js, subjects, pool):
    job_id = await running_job(js, subjects, pool)
    base = f"/api/v1/jobs/{quote(job_id, safe='')}/attempts/1/log"
    await send(js, subjects, chunk(job_id, 0, "SeaBIOS (version 1.16)\n"),
               chunk(job_id, 1, "Linux version 6.1\n"))
    # Another lab's chunks for this job are never shown (only the attempt's lab is read).
    # (Its own event id: JetStream would drop lab-a's chunk 2 as a duplicate of it.)
    forged = chunk(job_id, 2, "forged by lab-b\n", lab="lab-b")
    await send(js, subjects, msgspec.structs.replace(forged, id="forged"), lab="lab-b")
    await publish(js, subjects, progress(job_id, "download"), progress(job_id, "test"))

    async with api.session.get(api.base + base) as resp:
        assert resp.status == 200
        assert resp.headers["X-Wrtci-Log"] == "live"
        assert resp.headers["X-Wrtci-Log-Position"] == "1.1"
        assert await resp.text() == "SeaBIOS (version 1.16)\nLinux version 6.1\n"

    async with api.session.get(api.base + base + "/live", params={"after": "1.0"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        first = await read_events(resp, lambda e: ("stage", None, "test") in e and any(
            kind == "text" for kind, _, _ in e))
        assert ("text", "1.1", "Linux version 6.1\n") in first
        assert ("text", "1.0", "SeaBIOS (version 1.16)\n") not in first  # resumed after 1.0
        await send(js, subjects, chunk(job_id, 2, "root@OpenWrt:/# "),
                   chunk(job_id, 3, "done\n", final=True))
        rest = await read_events(resp, lambda e: e[-1][0] == "end")
    texts = [data for kind, _, data in first + rest if kind == "text"]
    assert texts == ["Linux version 6.1\n", "root@OpenWrt:/# ", "done\n"]
    assert ("stage", None, "test") in first + rest
    assert rest[-1] == ("end", None, {"state": "final"})
    assert not any("forged" in str(data) for _, _, data in first + rest)

    async with api.session.get(api.base + base) as resp:  # not stored yet: from the stream
        assert resp.headers["X-Wrtci-Log"] == "complete"
        assert (await resp.text()).endswith("root@OpenWrt:/# done\n")


async def test_live_log_bad_input_is_400_or_404(api, js, subjects, pool):
    job_id = await running_job(js, subjects, pool)
    base = f"/api/v1/jobs/{quote(job_id, safe='')}/attempts"
    for path, params, status in ((f"{base}/1/log/live", {"after": "x"}, 400),
                                 (f"{base}/1/log/live", {"stream": "../x"}, 400),
                                 (f"{base}/1/log", {"bogus": "1"}, 400),
                                 (f"{base}/9/log/live", {}, 404),
                                 (f"{base}/0/log", {}, 400)):
        got, body = await api.get(path, **params)
        assert got == status, (path, params, body)
        assert body["error"]


async def test_the_stage_is_read_from_the_record(api, js, subjects, pool):
    """The results service stores the stage: no stream replay (a restarted API, an
    events stream that lost the message) is needed to show it."""
    job_id = await running_job(js, subjects, pool)
    page = f"/jobs/{quote(job_id, safe='')}"
    status, text = await api.get(page)
    assert status == 200 and '<span id="stage" class="stage">started</span>' in text
    await publish(js, subjects, progress(job_id, "boot"))
    await ingest_all(js, subjects, pool)
    await js.purge_stream(subjects.events_stream)
    status, text = await api.get(page)
    assert status == 200 and '<span id="stage" class="stage">boot</span>' in text
    _, body = await api.get(f"/api/v1/jobs/{quote(job_id, safe='')}")
    assert [(a["state"], a["stage"]) for a in body["attempts"]] == [("running", "boot")]
    # The live feed opens with the stored stage.
    url = f"{api.base}/api/v1/jobs/{quote(job_id, safe='')}/attempts/1/log/live"
    async with api.session.get(url) as resp:
        events = await read_events(resp, lambda e: any(kind == "stage" for kind, _, _ in e))
    assert ("stage", None, "boot") in events
