"""The log writer's memory bound: spill to disk, drop and count beyond it, over real NATS and S3.

Each test reports its counts (logs lost, doubled, bytes dropped). A log that
nothing was dropped from is stored byte-identical to what the lab sent, also
when it was spilled and across a writer restart; one with text dropped says
so in its text and its object metadata, and `wrtci logs status` shows it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

from minio import Minio

from tests.helpers import eventually, private_nats
from tests.lab_helpers import log_sender, running_log_writer, stream_events
from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import LogChunk, LogChunkData
from wrtci.proto.storage import job_log_key
from wrtci.services.cli.logs_cmd import writer_records
from wrtci.services.cli.main import main as wrtci
from wrtci.services.config import StorageConfig
from wrtci.services.logs.buffer import DROPPED_HEADER, SpillDir
from wrtci.services.logs.store import FINAL_META
from wrtci.services.stack.servers import S3Server

LINE = "{i:04d} [ok] Päivää ✓ 🚀 {pad}\n"


def report(name: str, **counts: int) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in counts.items()))


def texts(count: int, size: int = 1000) -> list[str]:
    return [LINE.format(i=i, pad="x" * size) for i in range(count)]


def chunks(job_id: str, parts: list[str], run: int = 1) -> list[LogChunk]:
    return [LogChunk.build(LogChunkData(job_id=job_id, attempt=1, lab="lab1", device="dut1",
                                        seq=seq, text=text, final=seq == len(parts) - 1,
                                        run=run), source="test")
            for seq, text in enumerate(parts)]


def client(storage: StorageConfig) -> Minio:
    return Minio(storage.endpoint, access_key=storage.access_key,
                 secret_key=storage.secret_key, secure=False)


def fetch(storage: StorageConfig, key: str) -> tuple[bytes, dict[str, str]] | None:
    try:
        response = client(storage).get_object(storage.bucket, key)
    except Exception:
        return None
    try:
        return response.read(), {k.lower(): v for k, v in response.headers.items()}
    finally:
        response.close()
        response.release_conn()


async def stored(storage: StorageConfig, key: str, expected: bytes | None = None,
                 limit: float = 60) -> tuple[bytes, dict[str, str]]:
    """The object once the writer stored it complete (marked final: it may store a log
    before its last chunk came) and, if given, once it holds ``expected``."""
    found: list[tuple[bytes, dict[str, str]]] = []

    async def there() -> bool:
        got = await asyncio.to_thread(fetch, storage, key)
        if got is None or got[1].get(f"x-amz-meta-{FINAL_META}") != "1":
            return False
        if expected is not None and got[0] != expected:
            return False
        found.append(got)
        return True

    await eventually(there, f"object {key}", limit)
    return found[-1]


async def spilled(js, subjects) -> bool:
    return any(r.spilled_bytes > 0 for r in await writer_records(js, subjects))


async def test_spilled_log_is_byte_identical_also_across_a_restart(
        js, subjects, nats_config, storage_config, tmp_path: Path) -> None:
    publisher = EventPublisher(js, subjects)
    spill_dir = tmp_path / "spill"
    bounds = {"memory_bytes": 8 * 1024, "spill_dir": str(spill_dir),
              "spill_bytes": 4 * 1024 * 1024}
    first, second = texts(60), texts(40, size=3000)
    async with running_log_writer(nats_config, storage_config, **bounds):
        for event in chunks("job-a", first) + chunks("job-b", second)[:-1]:
            await publisher.publish(event)
        await eventually(lambda: spilled(js, subjects), "chunks spilled to disk")
        assert [p for p in spill_dir.glob("writer-*/*.spill")], "no spill file"
        a, a_meta = await stored(storage_config, job_log_key("job-a", 1),
                                 "".join(first).encode())
    assert not list(spill_dir.glob("writer-*")), "the writer left its spill directory"
    # job-b's final chunk reaches a new writer: it rebuilds the log from the stream,
    # spilling again, and stores the same bytes.
    await publisher.publish(chunks("job-b", second)[-1])
    async with running_log_writer(nats_config, storage_config, **bounds):
        b, b_meta = await stored(storage_config, job_log_key("job-b", 1),
                                 "".join(second).encode())

        async def reported() -> bool:
            return bool(await writer_records(js, subjects))
        await eventually(reported, "the writer's figures")
        records = await writer_records(js, subjects)
    report("log writer spill", logs=2, identical=int(a == "".join(first).encode())
           + int(b == "".join(second).encode()), dropped=sum(r.dropped_bytes for r in records))
    assert DROPPED_HEADER not in str(a_meta) and DROPPED_HEADER not in str(b_meta)
    assert [r.dropped_bytes for r in records] == [0]


async def test_a_full_buffer_drops_counts_and_marks_the_log_truncated(
        js, subjects, nats_config, storage_config, site_config_file, tmp_path: Path,
        capsys) -> None:
    publisher = EventPublisher(js, subjects)
    parts = texts(60)
    data = [p.encode() for p in parts]
    async with running_log_writer(nats_config, storage_config, memory_bytes=8 * 1024,
                                  spill_dir=str(tmp_path / "spill"), spill_bytes=16 * 1024):
        for event in chunks("job-t", parts):
            await publisher.publish(event)
        body, meta = await stored(storage_config, job_log_key("job-t", 1))

        async def counted() -> bool:
            return any(r.truncated_logs for r in await writer_records(js, subjects))
        await eventually(counted, "the truncated log counted")
        [record] = await writer_records(js, subjects)
        capsys.readouterr()
        status = await asyncio.to_thread(wrtci, ["logs", "status", "--config",
                                                 str(site_config_file)])
        out = capsys.readouterr().out
    dropped = int(meta[f"x-amz-meta-{DROPPED_HEADER}"])
    before, marker, after = body.partition(b"\n[wrtci: ")
    marker_bytes = int(after.split(b" ", 1)[0])
    after = after.split(b"buffer was full]\n", 1)[1]
    kept_head = [d for d in data if before.startswith(b"".join(data[:data.index(d) + 1]))]
    report("log writer full", logs=1, lost=0, dropped_bytes=dropped,
           dropped_chunks=record.dropped_chunks)
    assert marker and dropped == marker_bytes == record.dropped_bytes > 0
    # What is stored is the head and tail of the log around one marked gap.
    assert before == b"".join(kept_head) and b"".join(data).endswith(after)
    assert len(before) + dropped + len(after) == len(b"".join(data))
    assert record.truncated_logs == 1 and record.memory_bytes == record.spilled_bytes == 0
    assert status == 1 and f"{dropped} dropped" in out and "1 logs stored truncated" in out


async def test_s3_away_logs_wait_on_disk_and_are_stored_when_it_is_back(
        js, subjects, nats_config, traversable_tmp: Path) -> None:
    server = S3Server(traversable_tmp / "s3").start()
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    storage = StorageConfig(endpoint=server.endpoint, access_key=server.access_key,
                            secret_key=server.secret_key, bucket=bucket, timeout_s=2.0)
    client(storage).make_bucket(bucket)
    publisher = EventPublisher(js, subjects)
    logs = {f"job-s3-{n}": texts(20, size=2000) for n in range(5)}
    try:
        async with running_log_writer(nats_config, storage, memory_bytes=16 * 1024,
                                      spill_dir=str(traversable_tmp / "spill"),
                                      spill_bytes=8 * 1024 * 1024):
            server.stop()
            for job_id, parts in logs.items():
                for event in chunks(job_id, parts):
                    await publisher.publish(event)
            await eventually(lambda: spilled(js, subjects), "logs held on disk while S3 is away")
            server.start()  # moto keeps nothing: the bucket comes back empty
            client(storage).make_bucket(bucket)
            bodies = {job_id: (await stored(storage, job_log_key(job_id, 1),
                                            "".join(parts).encode(), limit=90))[0]
                      for job_id, parts in logs.items()}
            records = await writer_records(js, subjects)
        objects = [o.object_name for o in client(storage).list_objects(bucket, recursive=True)]
    finally:
        server.stop()
    identical = sum(bodies[j] == "".join(p).encode() for j, p in logs.items())
    dropped = sum(r.dropped_bytes for r in records)
    report("log writer, S3 away", logs=len(logs), identical=identical,
           lost=len(logs) - identical, doubled=len(objects) - len(set(objects)),
           dropped_bytes=dropped)
    assert identical == len(logs) and len(objects) == len(logs) and dropped == 0


async def test_lab_sender_spills_while_nats_is_away_and_loses_or_doubles_nothing(
        traversable_tmp: Path) -> None:
    async with private_nats(traversable_tmp, "spill") as (server, config, js):
        sender, stream = log_sender(js, config.subjects, chunk_chars=1024,
                                    retry_delays=(0.1, 0.2), memory_bytes=16 * 1024,
                                    spill_dir=traversable_tmp / "lab-spill",
                                    spill_bytes=4 * 1024 * 1024)
        parts = texts(200)
        server.stop()
        peak = (0, 0)
        for part in parts:
            stream.write(part)
            peak = max(peak, sender.buffered)
        stream.finish()
        memory, on_disk = sender.buffered
        server.start()
        assert await sender.drain(within_s=60)
        await sender.close()
        chunks = await stream_events(js, config.subjects.logs_stream,
                                     config.subjects.log_chunk("lab1", "j"))
    seqs = [c.data.seq for c in chunks]
    report("lab sender, NATS away", chunks=len(seqs), lost=len(set(range(stream.seq)) - set(seqs)),
           doubled=len(seqs) - len(set(seqs)), dropped_bytes=stream.dropped_bytes,
           peak_memory=peak[0], spilled=on_disk)
    assert memory <= 16 * 1024 and on_disk > 0
    assert seqs == list(range(stream.seq)) and chunks[-1].data.final
    assert "".join(c.data.text for c in chunks) == "".join(parts)
    assert stream.dropped_bytes == sender.dropped_bytes == chunks[-1].data.dropped_bytes == 0


async def test_lab_sender_beyond_its_bound_drops_counts_and_the_stored_log_says_so(
        traversable_tmp: Path, storage_config) -> None:
    async with private_nats(traversable_tmp, "dropping") as (server, config, js):
        sender, stream = log_sender(js, config.subjects, "jd", chunk_chars=1024,
                                    retry_delays=(0.1, 0.2), memory_bytes=16 * 1024,
                                    spill_dir=traversable_tmp / "lab-spill",
                                    spill_bytes=32 * 1024)
        parts = texts(100)
        async with running_log_writer(config, storage_config):
            server.stop()
            for part in parts:
                stream.write(part)
            stream.write("the end\n")
            stream.finish()
            server.start()
            assert await sender.drain(within_s=60)
            body, meta = await stored(storage_config, job_log_key("jd", 1))
        await sender.close()
        chunks = await stream_events(js, config.subjects.logs_stream,
                                     config.subjects.log_chunk("lab1", "jd"))
    seqs = [c.data.seq for c in chunks]
    sent = "".join(parts) + "the end\n"
    text = body.decode()
    report("lab sender beyond its bound", chunks=len(seqs),
           lost=len(set(range(stream.seq)) - set(seqs)), doubled=len(seqs) - len(set(seqs)),
           dropped_bytes=stream.dropped_bytes, dropped_chunks=sender.dropped_chunks)
    assert seqs == list(range(stream.seq)), "the log has no gap the writer would wait for"
    assert stream.dropped_bytes == sender.dropped_bytes > 0
    assert chunks[-1].data.final and chunks[-1].data.dropped_bytes == stream.dropped_bytes
    assert int(meta[f"x-amz-meta-{DROPPED_HEADER}"]) == stream.dropped_bytes
    # The stored log is what was sent, with each dropped run replaced by a marker line.
    assert "bytes of this log were dropped here" in text
    kept = re.sub(r"\n\[wrtci-lab: \d+ bytes of this log were dropped here[^\]]*\]\n", "", text)
    assert len(kept.encode()) + stream.dropped_bytes == len(sent.encode())
    assert sent.startswith(kept[:1000])


def test_spill_directories_of_writers_that_are_gone_are_removed(tmp_path: Path) -> None:
    alive = SpillDir(tmp_path)  # a running writer's, locked
    killed = tmp_path / "writer-killed"
    killed.mkdir()
    (killed / ".lock").touch()  # its lock died with its process
    (killed / "0.spill").write_bytes(b"x" * 100)
    starting = SpillDir(tmp_path)
    try:
        assert alive.path.is_dir() and not killed.exists() and starting.path.is_dir()
    finally:
        starting.close()
        alive.close()
    assert not list(tmp_path.glob("writer-*"))
