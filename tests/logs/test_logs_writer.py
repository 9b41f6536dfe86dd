"""The log writer service and the lab's chunk sender, over real NATS and S3."""

from __future__ import annotations

import asyncio

from minio import Minio

from tests.helpers import eventually, private_nats
from tests.lab_helpers import log_sender, running_log_writer, stream_events
from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import LogChunk, LogChunkData
from wrtci.proto.storage import job_log_key


def _get(storage_config, key: str) -> str | None:
    client = Minio(storage_config.endpoint, access_key=storage_config.access_key,
                   secret_key=storage_config.secret_key, secure=False)
    try:
        response = client.get_object(storage_config.bucket, key)
    except Exception:
        return None
    try:
        return response.read().decode()
    finally:
        response.close()
        response.release_conn()


async def _wait_object(storage_config, key: str, expected: str) -> str | None:
    async def stored() -> str | None:
        text = await asyncio.to_thread(_get, storage_config, key)
        return text if text == expected else None

    return await eventually(stored, f"{key} stored as expected", every_s=0.2)


def _chunk(seq: int, text: str, final: bool = False, run: int = 1) -> LogChunk:
    data = LogChunkData(job_id="wrtci:job:1", attempt=1, lab="lab1", device="dut1", seq=seq,
                        text=text, final=final, run=run)
    return LogChunk.build(data, source="test")


async def test_out_of_order_and_duplicate_chunks_make_one_complete_object(
        js, subjects, nats_config, storage_config):
    publisher = EventPublisher(js, subjects)
    # Published out of order, with a duplicate that has a different event id
    # (JetStream keeps both; the writer must still store "abc" once).
    for event in [_chunk(1, "b"), _chunk(0, "a"), _chunk(1, "b"), _chunk(2, "c", final=True)]:
        await publisher.publish(event)
    async with running_log_writer(nats_config, storage_config):
        stored = await _wait_object(storage_config, job_log_key("wrtci:job:1", 1), "abc")
    assert stored == "abc"


async def test_final_chunk_after_a_restart_rebuilds_from_the_stream(
        js, subjects, nats_config, storage_config):
    publisher = EventPublisher(js, subjects)
    key = job_log_key("wrtci:job:1", 1)
    async with running_log_writer(nats_config, storage_config):
        await publisher.publish(_chunk(0, "first run, handed back\n"))
        for seq, text in enumerate(["boot\n", "shell\n"]):
            await publisher.publish(_chunk(seq, text, run=2))
        # the partial object (live view) shows the latest run so far
        await _wait_object(storage_config, key, "boot\nshell\n")
    # a new writer has none of it in memory; the final chunk makes it read the stream
    await publisher.publish(_chunk(2, "done\n", final=True, run=2))
    async with running_log_writer(nats_config, storage_config):
        stored = await _wait_object(storage_config, key, "boot\nshell\ndone\n")
    assert stored == "boot\nshell\ndone\n"


async def test_sender_buffers_while_nats_is_down_and_loses_or_doubles_nothing(
        server_root, storage_config):
    async with private_nats(server_root, "restart") as (server, config, js):
        subjects = config.subjects
        sender, stream = log_sender(js, subjects, chunk_chars=4, retry_delays=(0.1, 0.2))
        stream.write("0123")
        assert await sender.drain(within_s=10)
        server.stop()
        stream.write("4567")  # NATS is away: these wait in memory
        stream.write("89")
        stream.finish()
        await asyncio.sleep(1.5)  # several failed attempts while the server is down
        assert sender.backlog > 0
        server.start()
        assert await sender.drain(within_s=30)
        await sender.close()
        chunks = await stream_events(js, subjects.logs_stream, subjects.log_chunk("lab1", "j"))
    assert [c.data.seq for c in chunks] == [0, 1, 2]
    assert "".join(c.data.text for c in chunks) == "0123456789"
    assert chunks[-1].data.final


async def test_closing_the_sender_sends_what_nats_did_not_take_yet(server_root):
    # NATS was away at the end of a job: the final chunks still wait for it
    # when the job is over; closing the sender must not drop them.
    async with private_nats(server_root, "closing") as (server, config, js):
        subjects = config.subjects
        sender, stream = log_sender(js, subjects, chunk_chars=4, retry_delays=(0.1, 0.5))
        server.stop()
        stream.write("0123")
        stream.finish()
        await asyncio.sleep(1.5)  # resent a few times while NATS is away
        assert sender.backlog > 0
        server.start()
        await sender.close(within_s=30)
        chunks = await stream_events(js, subjects.logs_stream, subjects.log_chunk("lab1", "j"))
    assert [(c.data.seq, c.data.text, c.data.final) for c in chunks] == [
        (0, "0123", False), (1, "", True)]
