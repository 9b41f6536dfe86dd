"""A fleet on one NATS server: 100 labs x 40 devices taking jobs with the real JobQueue.

Starts nats-server (monitoring on), creates the job consumers centrally, and
runs the labs in a few worker processes (``--workers``); each lab has its own
connection and ``proto.jobqueue.JobQueue``, each device a loop that takes a
job and finishes it at once (ack). Each lab has 40 device types out of 200,
so every device type is in 20 labs. Then, measured by the server:

1. idle: NATS messages/s and CPU while every device waits (safety polls only);
2. dispatch: jobs published one by one (random priority and device type) to
   idle devices: publish -> taken p50/p99;
3. load: a burst of jobs taken as fast as the fleet can: jobs/hour, NATS CPU
   and messages/s; every job taken exactly once (none lost, none doubled).

Prints ``RESULT key=value`` lines (bench/run collects them) and each
process's RSS.

    python bench/bench_fleet.py [--labs 100] [--devices 40] [--burst 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats

from wrtci.proto import events as ev
from wrtci.proto import topology
from wrtci.proto.jobqueue import JobQueue
from wrtci.proto.model import Image, TestPlan
from wrtci.proto.subjects import Priority, Subjects
from wrtci.services.stack.servers import NatsServer

DEVICE_TYPES = 200
PREFIX = "fleet"
TICK = os.sysconf("SC_CLK_TCK")


def device_type(index: int) -> str:
    return f"t{index % 20}/s{index % 3}/dev-{index}"


def lab_device_types(lab: int, devices: int) -> list[str]:
    return [device_type((lab * 7 + d) % DEVICE_TYPES) for d in range(devices)]


# -- a worker process: some labs ---------------------------------------------------


async def worker(url: str, labs: range, devices: int) -> dict:
    subjects = Subjects(PREFIX)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    taken: list[tuple[str, float]] = []
    connections, queues = [], []
    for lab in labs:
        nc = await nats.connect(url, name=f"sim-lab-{lab}", max_reconnect_attempts=-1)
        connections.append(nc)
        queues.append((JobQueue(nc.jetstream(), subjects), lab_device_types(lab, devices)))

    async def device(queue: JobQueue, kind: str) -> None:
        while not stop.is_set():
            job = await queue.next_job(kind, wait=30.0)
            if job is None:
                continue
            latency_ms = (time.time() - job.event.time.timestamp()) * 1000
            await job.ack()  # finished at once
            taken.append((job.spec.job_id, latency_ms))

    tasks = [asyncio.create_task(device(queue, kind))
             for queue, kinds in queues for kind in kinds]
    print("READY", flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    requests = sum(queue.requests for queue, _ in queues)
    for nc in connections:
        await nc.close()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"pid": os.getpid(), "labs": len(labs), "max_rss_kb": rss_kb,
            "requests": requests, "taken": taken}


# -- the coordinator -------------------------------------------------------------


class Server:
    """Counters of the nats-server process (monitoring endpoint and /proc)."""

    def __init__(self, server: NatsServer) -> None:
        self.server = server

    def varz(self) -> dict:
        with urllib.request.urlopen(f"{self.server.monitor_url}/varz", timeout=5) as reply:
            return json.load(reply)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def sample(self) -> tuple[float, float, int, int]:
        varz = self.varz()
        return time.perf_counter(), self.cpu_s(), varz["in_msgs"], varz["out_msgs"]

    @staticmethod
    def rates(a, b) -> dict[str, float]:
        seconds = b[0] - a[0]
        return {"cpu_percent": 100 * (b[1] - a[1]) / seconds,
                "in_msgs_per_s": (b[2] - a[2]) / seconds,
                "out_msgs_per_s": (b[3] - a[3]) / seconds}


def job_event(job_id: str, kind: str, priority: Priority) -> ev.JobCreated:
    image = Image(id=f"img:{job_id}", target="t", subtarget="s", profile="p",
                  name="fw.bin", type="sysupgrade", sha256="0" * 64, url="http://x/fw.bin")
    spec = ev.JobSpec(job_id=job_id, firmware_id="fleet:fw", device_type=kind, image=image,
                      plans=[TestPlan(name="base", tests=["tests/test_base.py"])],
                      priority=int(priority), timeout_s=600)
    return ev.JobCreated.build(spec, source="bench", id=f"job.created:{job_id}")


async def publish(js, subjects: Subjects, job_id: str, kinds: list[str], *,
                  wait: bool) -> None:
    kind = random.choice(kinds)
    priority = random.choice(list(Priority))
    event = job_event(job_id, kind, priority)
    args = (subjects.job(priority, kind), ev.encode(event))
    if wait:
        await js.publish(*args, headers={"Nats-Msg-Id": event.id})
    else:
        await js.publish_async(*args, headers={"Nats-Msg-Id": event.id})


async def queue_empty(js, subjects: Subjects, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while (await js.stream_info(subjects.jobs_stream)).state.messages:
        if time.monotonic() > deadline:
            raise TimeoutError("jobs left in the queue")
        await asyncio.sleep(0.1)


async def coordinate(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="wrtci-fleet-"))
    server = NatsServer(root / "nats").start()
    stats = Server(server)
    subjects = Subjects(PREFIX)
    workers: list[asyncio.subprocess.Process] = []
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await topology.apply(js, subjects)
        kinds = [device_type(i) for i in range(DEVICE_TYPES)]
        await asyncio.gather(*(topology.ensure_job_consumers(js, subjects, [k]) for k in kinds))

        per = -(-args.labs // args.workers)
        for w in range(args.workers):
            labs = range(w * per, min(args.labs, (w + 1) * per))
            workers.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--worker", f"{labs.start}:{labs.stop}",
                "--devices", str(args.devices), "--url", server.url,
                "--out", str(root / f"worker-{w}.json"), stdout=asyncio.subprocess.PIPE))
        for proc in workers:
            assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"READY"
        devices = args.labs * args.devices
        fleet_kinds = sorted({k for lab in range(args.labs)
                              for k in lab_device_types(lab, args.devices)})
        print(f"{args.labs} labs x {args.devices} devices ({devices} devices, "
              f"{DEVICE_TYPES} device types) in {args.workers} processes", flush=True)

        await asyncio.sleep(5)  # start-up fetches over
        a = stats.sample()
        await asyncio.sleep(args.idle_s)
        idle = Server.rates(a, stats.sample())
        print(f"idle {args.idle_s:.0f} s: {json.dumps(idle)}", flush=True)

        for i in range(args.dispatch):
            await publish(js, subjects, f"dispatch-{i}", fleet_kinds, wait=True)
            await asyncio.sleep(args.dispatch_gap_s)
        await queue_empty(js, subjects, 60)

        a = stats.sample()
        started = time.perf_counter()
        for i in range(args.burst):
            await publish(js, subjects, f"burst-{i}", fleet_kinds, wait=False)
        await js.publish_async_completed()
        await queue_empty(js, subjects, 600)
        elapsed = time.perf_counter() - started
        load = Server.rates(a, stats.sample())
        nats_rss = stats.varz()["mem"]
        await nc.close()
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            await asyncio.wait_for(proc.wait(), 60)
        server.stop()

    reports = [json.loads((root / f"worker-{w}.json").read_text()) for w in range(len(workers))]
    shutil.rmtree(root, ignore_errors=True)
    taken = [t for r in reports for t in r["taken"]]
    ids = [job_id for job_id, _ in taken]
    published = args.dispatch + args.burst
    doubled = len(ids) - len(set(ids))
    lost = published - len(set(ids))
    dispatch_ms = sorted(ms for job_id, ms in taken if job_id.startswith("dispatch-"))
    q = statistics.quantiles(dispatch_ms, n=100, method="inclusive")
    print(f"dispatch to idle devices ({len(dispatch_ms)} jobs): p50 {q[49]:.1f} ms, "
          f"p99 {q[98]:.1f} ms, max {dispatch_ms[-1]:.1f} ms")
    print(f"burst of {args.burst} jobs taken in {elapsed:.1f} s: "
          f"{args.burst / elapsed * 3600:.0f} jobs/hour; load {json.dumps(load)}")
    print(f"jobs published {published}, taken {len(ids)}, lost {lost}, doubled {doubled}")
    print(f"RSS: nats-server {nats_rss / 2**20:.0f} MiB; " + ", ".join(
        f"worker {r['pid']} ({r['labs']} labs) {r['max_rss_kb'] / 1024:.0f} MiB"
        for r in reports))
    results = {
        "fleet_devices": devices,
        "fleet_jobs_per_hour": round(args.burst / elapsed * 3600),
        "fleet_dispatch_p50_ms": round(q[49], 1),
        "fleet_dispatch_p99_ms": round(q[98], 1),
        "fleet_lost": lost,
        "fleet_doubled": doubled,
        "nats_idle_cpu_percent": round(idle["cpu_percent"], 1),
        "nats_idle_msgs_per_s": round(idle["in_msgs_per_s"] + idle["out_msgs_per_s"]),
        "nats_idle_requests_per_device_s": round(idle["in_msgs_per_s"] / devices, 3),
        "nats_load_cpu_percent": round(load["cpu_percent"], 1),
        "nats_load_msgs_per_s": round(load["in_msgs_per_s"] + load["out_msgs_per_s"]),
        "nats_rss_mib": round(nats_rss / 2**20),
        "lab_process_rss_mib": round(max(r["max_rss_kb"] for r in reports) / 1024),
        "lab_rss_mib_per_lab": round(max(r["max_rss_kb"] / r["labs"] for r in reports) / 1024,
                                     1),
    }
    for key, value in results.items():
        print(f"RESULT {key}={value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labs", type=int, default=100)
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--idle-s", type=float, default=25.0,
                        help="one safety-poll period (5 priorities at 0.2 requests/s)")
    parser.add_argument("--dispatch", type=int, default=500)
    parser.add_argument("--dispatch-gap-s", type=float, default=0.02)
    parser.add_argument("--burst", type=int, default=20000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        start, stop = (int(x) for x in args.worker.split(":"))
        with contextlib.suppress(KeyboardInterrupt):
            report = asyncio.run(worker(args.url, range(start, stop), args.devices))
            Path(args.out).write_text(json.dumps(report))
        return
    asyncio.run(coordinate(args))


if __name__ == "__main__":
    main()
