"""Console log throughput and live lag through NATS into object storage; lab idle RSS.

    python bench/bench_lab_logs.py [--mb 20] [--chunk 65536]

Starts nats-server and the S3 server locally, runs the log writer, pushes
``--mb`` MB of console text through the lab's LogStream/ChunkSender, and
prints:
- throughput: MB/s from the first write until the stored object is complete;
- live lag: time from writing a line to seeing its chunk on the LOGS subject
  (p50/p99 over marked lines written at the live flush rhythm);
- lab daemon idle RSS: a real ``wrtci-lab run`` with one device, after start-up.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, options, servers, work_dir
from minio import Minio

from wrtci.core.config import NatsConfig
from wrtci.core.runtime import EventPublisher, connect_nats
from wrtci.lab_daemon.logstream import ChunkSender, LogStream
from wrtci.proto.events import decode
from wrtci.proto.storage import job_log_key
from wrtci.services import logs as logs_service
from wrtci.services.config import StorageConfig


async def throughput(nats: NatsConfig, storage: StorageConfig, megabytes: int,
                     chunk: int) -> None:
    nc = await connect_nats(nats, "bench")
    js = nc.jetstream()
    stop = asyncio.Event()
    writer = asyncio.create_task(logs_service.run(
        logs_service.Config(nats=nats, storage=storage,
                            # no job records here: the lab named in the subject is checked
                            logs=logs_service.LogsSection(check_holder=False)), stop))
    sender = ChunkSender(EventPublisher(js, nats.subjects), "bench").start()
    stream = LogStream(sender, job_id="bench", attempt=1, run=1, lab="bench", device="dut",
                       chunk_chars=chunk)
    line = "[   12.345678] " + "x" * 100 + "\n"
    total = megabytes * 1024 * 1024
    client = Minio(storage.endpoint, access_key=storage.access_key,
                   secret_key=storage.secret_key, secure=False)
    key = job_log_key("bench", 1)
    start = time.perf_counter()
    written = 0
    while written < total:
        stream.write(line * 64)
        written += len(line) * 64
        if sender.backlog > 64:
            await asyncio.sleep(0)  # let the sender catch up (bounded memory)
            await sender.drain(60)
    stream.finish()
    await sender.drain(600)
    published = time.perf_counter()
    while True:
        try:
            size = client.stat_object(storage.bucket, key).size
            if size == written:
                break
        except Exception:
            pass
        await asyncio.sleep(0.05)
    stored = time.perf_counter()
    mb = written / 1e6
    print(f"log throughput: {mb:.1f} MB in {stored - start:.2f} s = "
          f"{mb / (stored - start):.1f} MB/s into the stored object "
          f"(publish {mb / (published - start):.1f} MB/s, {sender.sent} chunks "
          f"of {chunk // 1024} KiB)")
    stop.set()
    await writer
    await sender.close()
    await nc.close()


async def live_lag(nats: NatsConfig, samples: int, flush_s: float) -> None:
    nc = await connect_nats(nats, "bench-lag")
    js = nc.jetstream()
    seen: dict[str, float] = {}

    async def on_chunk(msg) -> None:
        now = time.perf_counter()
        for part in decode(msg.data).data.text.split("MARK:")[1:]:
            seen[part.split("\n", 1)[0]] = now

    await nc.subscribe(nats.subjects.log_chunk("bench", "lag"), cb=on_chunk)
    sender = ChunkSender(EventPublisher(js, nats.subjects), "bench").start()
    stream = LogStream(sender, job_id="lag", attempt=1, run=1, lab="bench", device="dut")
    written: dict[str, float] = {}
    # Like the job's pump: lines arrive any time, the stream flushes every flush_s.
    next_flush = time.perf_counter() + flush_s
    for index in range(samples):
        await asyncio.sleep(flush_s / 5)
        written[str(index)] = time.perf_counter()
        stream.write(f"MARK:{index}\n")
        if time.perf_counter() >= next_flush:
            stream.flush()
            next_flush += flush_s
    stream.finish()
    await sender.drain(30)
    await asyncio.sleep(0.2)
    lags = sorted(seen[k] - written[k] for k in written if k in seen)
    p99 = lags[int(len(lags) * 0.99) - 1]
    print(f"live lag (flush every {flush_s} s): p50 {statistics.median(lags) * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms over {len(lags)} lines")
    await sender.close()
    await nc.close()


def idle_rss(nats: NatsConfig, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "lab.toml"
    config.write_text(f"""
[nats]
url = "{nats.url}"
prefix = "{nats.prefix}"
[lab]
name = "bench"
suite_dir = "{ROOT / 'deploy/virtual-lab/openwrt-tests'}"
work_dir = "{work}"
[lab.health]
check_at_start = false
[[lab.devices]]
name = "dut"
target_file = "{ROOT / 'deploy/virtual-lab/qemu-x86-64-virtual.yaml'}"
target = "x86"
subtarget = "64"
profile = "generic"
""")
    proc = subprocess.Popen([sys.executable, "-m", "wrtci.lab_daemon.cli", "run", "--config",
                             str(config)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
        print(f"lab daemon idle RSS (1 device, polling its job queues): {rss.split()[1]} kB")
    finally:
        proc.terminate()
        proc.wait(30)


async def main() -> None:
    args = options(__doc__.splitlines()[0], mb=20, chunk=64 * 1024,
                   lag_samples=200).parse_args()
    with work_dir() as root:
        async with servers(root, s3=True) as local:
            await throughput(local.nats, local.storage, args.mb, args.chunk)
            await live_lag(local.nats, args.lag_samples, 1.0)
            await asyncio.to_thread(idle_rss, local.nats, root / "lab")


if __name__ == "__main__":
    asyncio.run(main())
