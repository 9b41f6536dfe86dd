"""A fleet on one NATS server: 100 labs x 40 devices taking jobs with the real JobQueue.

Starts nats-server (monitoring on), creates the job consumers centrally, and
runs the labs in a few worker processes (``--workers``); each lab has its own
connection and ``proto.jobqueue.JobQueue``, each device a loop that takes a
job and finishes it at once (ack). Each lab has 40 device types out of 200,
so every device type is in 20 labs. Then, measured by the server:

1. idle: NATS messages/s and CPU while every device waits (safety polls only);
2. one idle device: a job published while the whole fleet idles, the next one
   only once it was taken (random priority and device type): publish -> taken
   p50/p99, the latency of one dispatch with nothing else going on;
3. dispatch: jobs published one after the other every ``--dispatch-gap-s``
   to idle devices: publish -> taken p50/p99;
4. load: a burst of jobs taken as fast as the fleet can: jobs/hour, NATS CPU
   and messages/s; every job taken exactly once (none lost, none doubled).

The labs start before anything is measured: a worker says READY once each of
its devices has had its start-up look, and the safety polls' random phases
settle (two poll intervals) before the idle figures are taken. 4,000 simulated devices share this
machine's cores, where a real fleet has a machine per lab: each worker process
measures how late its own event loop runs (a 10 ms sleep's overshoot), and the
output gives its p99 per phase, so a figure slowed by the simulation rather
than by the product is told apart (``--workers`` spreads the labs over more
processes).

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
import signal
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import nats
from common import NAME, Servers, options, servers, work_dir

from wrtci.proto import events as ev
from wrtci.proto import topology
from wrtci.proto.jobqueue import MAX_IDLE_RATE, JobQueue
from wrtci.proto.jobwake import wake_labs
from wrtci.proto.model import Image, TestPlan
from wrtci.proto.subjects import Priority, Subjects
from wrtci.services.stack.servers import NatsServer

DEVICE_TYPES = 200
TAKEN_SUBJECT = "fleetbench.taken"
"""Where a worker says it took a ``single-`` job (core NATS, outside every stream)."""
LAG_WARN_MS = 20.0
"""A worker's event loop later than this (p99) slows the dispatch figures itself."""
TICK = os.sysconf("SC_CLK_TCK")


def device_type(index: int) -> str:
    return f"t{index % 20}/s{index % 3}/dev-{index}"


def lab_device_types(lab: int, devices: int) -> list[str]:
    return [device_type((lab * 7 + d) % DEVICE_TYPES) for d in range(devices)]


# -- a worker process: some labs ---------------------------------------------------


async def watch_loop(lags: list[tuple[float, float]]) -> None:
    """How late this process's event loop runs: a 10 ms sleep's overshoot, in ms."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((time.time(), (time.perf_counter() - started - 0.01) * 1000))


async def worker(url: str, labs: range, devices: int) -> dict:
    subjects = Subjects(NAME)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    taken: list[tuple[str, float]] = []
    lags: list[tuple[float, float]] = []
    connections, queues = [], []
    for lab in labs:
        nc = await nats.connect(url, name=f"sim-lab-{lab}", max_reconnect_attempts=-1)
        connections.append(nc)
        queues.append((nc, JobQueue(nc, subjects), lab_device_types(lab, devices)))
    looked = asyncio.Event()
    waiting_first = sum(len(kinds) for _, _, kinds in queues)

    async def device(nc, queue: JobQueue, kind: str) -> None:
        nonlocal waiting_first
        wait = 0.0  # the start-up look
        while not stop.is_set():
            job = await queue.next_job(kind, wait=wait)
            if wait == 0.0:
                waiting_first -= 1
                if not waiting_first:
                    looked.set()
                wait = 30.0
            if job is None:
                continue
            latency_ms = (time.time() - job.event.time.timestamp()) * 1000
            await job.ack()  # finished at once
            taken.append((job.spec.job_id, latency_ms))
            if job.spec.job_id.startswith("single-"):
                await nc.publish(TAKEN_SUBJECT, job.spec.job_id.encode())

    tasks = [asyncio.create_task(device(nc, queue, kind))
             for nc, queue, kinds in queues for kind in kinds]
    await looked.wait()
    watcher = asyncio.create_task(watch_loop(lags))
    timeouts: list[tuple[float, int]] = []

    async def count_timeouts() -> None:
        while True:
            timeouts.append((time.time(), sum(q.timeouts for _, q, _ in queues)))
            await asyncio.sleep(1.0)
    counter = asyncio.create_task(count_timeouts())
    print("READY", flush=True)
    await stop.wait()
    for task in [*tasks, watcher, counter]:
        task.cancel()
    await asyncio.gather(*tasks, watcher, counter, return_exceptions=True)
    requests = sum(queue.requests for _, queue, _ in queues)
    for nc in connections:
        await nc.close()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"pid": os.getpid(), "labs": len(labs), "max_rss_kb": rss_kb,
            "requests": requests, "taken": taken, "lags": lags, "timeouts": timeouts}


async def probe() -> dict:
    """Nothing but the loop-lag watch: how late this machine runs an idle process."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    lags: list[tuple[float, float]] = []
    watcher = asyncio.create_task(watch_loop(lags))
    print("READY", flush=True)
    await stop.wait()
    watcher.cancel()
    return {"lags": lags}


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


async def publish(nc, js, subjects: Subjects, job_id: str, kinds: list[str], *,
                  wait: bool) -> tuple[Priority, str]:
    """One job as the scheduler queues it; with ``wait``, stored and its labs woken
    (else the caller wakes them once for the whole burst, as a batch does)."""
    kind = random.choice(kinds)
    priority = random.choice(list(Priority))
    event = job_event(job_id, kind, priority)
    args = (subjects.job(priority, kind), ev.encode(event))
    if wait:
        await js.publish(*args, headers={"Nats-Msg-Id": event.id})
        await wake_labs(nc, subjects, [(priority, kind)])
    else:
        await js.publish_async(*args, headers={"Nats-Msg-Id": event.id})
    return priority, kind


async def queue_empty(js, subjects: Subjects, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while (await js.stream_info(subjects.jobs_stream)).state.messages:
        if time.monotonic() > deadline:
            raise TimeoutError("jobs left in the queue")
        await asyncio.sleep(0.1)


async def coordinate(args: argparse.Namespace) -> None:
    with work_dir() as root:
        async with servers(root) as local:
            await run_fleet(args, local, root)


async def run_fleet(args: argparse.Namespace, local: Servers, root: Path) -> None:
    """The workers started on the local NATS server, the phases measured, the report."""
    nc, js, subjects = local.nc, local.js, local.nats.subjects
    stats = Server(local.nats_server)
    workers: list[asyncio.subprocess.Process] = []
    phases: dict[str, list[float]] = {}
    try:
        kinds = [device_type(i) for i in range(DEVICE_TYPES)]
        await asyncio.gather(*(topology.ensure_job_consumers(js, subjects, [k]) for k in kinds))

        per = -(-args.labs // args.workers)
        for w in range(args.workers):
            labs = range(w * per, min(args.labs, (w + 1) * per))
            workers.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--worker", f"{labs.start}:{labs.stop}",
                "--devices", str(args.devices), "--url", local.nats.url,
                "--out", str(root / f"worker-{w}.json"), stdout=asyncio.subprocess.PIPE))
        workers.append(await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--probe", "--out", str(root / "probe.json"),
            stdout=asyncio.subprocess.PIPE))
        for proc in workers:
            assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"READY"
        devices = args.labs * args.devices
        fleet_kinds = sorted({k for lab in range(args.labs)
                              for k in lab_device_types(lab, args.devices)})
        print(f"{args.labs} labs x {args.devices} devices ({devices} devices, "
              f"{DEVICE_TYPES} device types) in {args.workers} processes", flush=True)

        # The safety polls' phases settle within two intervals of the start-up look:
        # from then on the fleet idles as it always will.
        settle_s = 2 * len(Priority) / MAX_IDLE_RATE + 1
        print(f"settling for {settle_s:.0f} s (two safety-poll intervals)", flush=True)
        await asyncio.sleep(settle_s)
        phases["idle"] = [time.time()]
        a = stats.sample()
        await asyncio.sleep(args.idle_s)
        idle = Server.rates(a, stats.sample())
        phases["idle"].append(time.time())
        print(f"idle {args.idle_s:.0f} s: {json.dumps(idle)}", flush=True)

        phases["single"] = [time.time()]
        await one_by_one(nc, js, subjects, args.single, fleet_kinds)
        phases["single"].append(time.time())

        phases["dispatch"] = [time.time()]
        for i in range(args.dispatch):
            await publish(nc, js, subjects, f"dispatch-{i}", fleet_kinds, wait=True)
            await asyncio.sleep(args.dispatch_gap_s)
        await queue_empty(js, subjects, 60)
        phases["dispatch"].append(time.time())

        phases["burst"] = [time.time()]
        a = stats.sample()
        started = time.perf_counter()
        queued = [await publish(nc, js, subjects, f"burst-{i}", fleet_kinds, wait=False)
                  for i in range(args.burst)]
        await js.publish_async_completed()
        await wake_labs(nc, subjects, queued)
        await queue_empty(js, subjects, 600)
        elapsed = time.perf_counter() - started
        load = Server.rates(a, stats.sample())
        phases["burst"].append(time.time())
        nats_rss = stats.varz()["mem"]
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            await asyncio.wait_for(proc.wait(), 60)

    reports = [json.loads((root / f"worker-{w}.json").read_text())
               for w in range(len(workers) - 1)]
    machine = json.loads((root / "probe.json").read_text())
    taken = [t for r in reports for t in r["taken"]]
    ids = [job_id for job_id, _ in taken]
    published = args.single + args.dispatch + args.burst
    doubled = len(ids) - len(set(ids))
    lost = published - len(set(ids))
    lag = {name: loop_lag(reports, *window) for name, window in phases.items()}
    machine_lag = {name: loop_lag([machine], *window) for name, window in phases.items()}
    timeouts = {name: timeouts_in(reports, *window) for name, window in phases.items()}
    single_ms = sorted(ms for job_id, ms in taken if job_id.startswith("single-"))
    one = statistics.quantiles(single_ms, n=100, method="inclusive")
    print(f"dispatch to one idle device while the fleet idles ({len(single_ms)} jobs, one "
          f"at a time): p50 {one[49]:.1f} ms, p99 {one[98]:.1f} ms, max {single_ms[-1]:.1f} ms; "
          f"{describe_lag(lag['single'])}")
    dispatch_ms = sorted(ms for job_id, ms in taken if job_id.startswith("dispatch-"))
    q = statistics.quantiles(dispatch_ms, n=100, method="inclusive")
    print(f"dispatch to idle devices ({len(dispatch_ms)} jobs, one every "
          f"{args.dispatch_gap_s * 1000:.0f} ms): p50 {q[49]:.1f} ms, "
          f"p99 {q[98]:.1f} ms, max {dispatch_ms[-1]:.1f} ms; {describe_lag(lag['dispatch'])}")
    print(f"idle: {describe_lag(lag['idle'])}; burst: {describe_lag(lag['burst'])}")
    print("pull requests given up (no answer within 5 s): " + ", ".join(
        f"{name} {count}" for name, count in timeouts.items()))
    print("the machine itself (an idle probe process's event-loop lag): " + "; ".join(
        f"{name} p99 {value[0]:.1f} ms, max {value[1]:.0f} ms"
        for name, value in machine_lag.items()) + f"; load average {os.getloadavg()[0]:.1f}")
    worst = max(lag["single"][0], lag["dispatch"][0])
    if worst > LAG_WARN_MS:
        busy = machine_lag["single"][0] > LAG_WARN_MS
        print(f"NOTE: the simulated labs' event loops ran late (p99 {worst:.0f} ms > "
              f"{LAG_WARN_MS:.0f} ms), which the dispatch figures include: " + (
                  "this machine is busy (even an idle process waits for a CPU); "
                  "measure on a quieter machine" if busy else
                  f"{devices // args.workers} devices per process on {os.cpu_count()} cores "
                  "are the simulation's own load; try more --workers"))
    print(f"burst of {args.burst} jobs taken in {elapsed:.1f} s: "
          f"{args.burst / elapsed * 3600:.0f} jobs/hour; load {json.dumps(load)}")
    print(f"jobs published {published}, taken {len(ids)}, lost {lost}, doubled {doubled}")
    print(f"RSS: nats-server {nats_rss / 2**20:.0f} MiB; " + ", ".join(
        f"worker {r['pid']} ({r['labs']} labs) {r['max_rss_kb'] / 1024:.0f} MiB"
        for r in reports))
    results = {
        "fleet_devices": devices,
        "fleet_jobs_per_hour": round(args.burst / elapsed * 3600),
        "fleet_idle_dispatch_p50_ms": round(one[49], 1),
        "fleet_idle_dispatch_p99_ms": round(one[98], 1),
        "fleet_dispatch_p50_ms": round(q[49], 1),
        "fleet_dispatch_p99_ms": round(q[98], 1),
        "fleet_worker_loop_lag_p99_ms": round(max(lag["single"][0], lag["dispatch"][0]), 1),
        "fleet_machine_loop_lag_p99_ms": round(machine_lag["single"][0], 1),
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


async def one_by_one(nc, js, subjects: Subjects, count: int, kinds: list[str]) -> None:
    """Publish a job, wait until a device took it, pause a little, publish the next."""
    taken: asyncio.Queue[str] = asyncio.Queue()

    async def on_taken(msg) -> None:
        await taken.put(msg.data.decode())
    sub = await nc.subscribe(TAKEN_SUBJECT, cb=on_taken)
    for i in range(count):
        await publish(nc, js, subjects, f"single-{i}", kinds, wait=True)
        while await asyncio.wait_for(taken.get(), 60) != f"single-{i}":
            pass
        await asyncio.sleep(random.uniform(0.05, 0.15))
    await sub.unsubscribe()


def loop_lag(reports: list[dict], start: float, end: float) -> tuple[float, float]:
    """p99 and max of the workers' event-loop lag (ms) between two times."""
    lags = sorted(ms for r in reports for t, ms in r["lags"] if start <= t <= end)
    if len(lags) < 2:
        return 0.0, 0.0
    return statistics.quantiles(lags, n=100, method="inclusive")[98], lags[-1]


def timeouts_in(reports: list[dict], start: float, end: float) -> int:
    """Pull requests the workers gave up between two times (sampled every second)."""
    total = 0
    for report in reports:
        counts = [n for t, n in report["timeouts"] if start <= t <= end + 1]
        total += counts[-1] - counts[0] if counts else 0
    return total


def describe_lag(lag: tuple[float, float]) -> str:
    return f"worker event-loop lag p99 {lag[0]:.1f} ms, max {lag[1]:.0f} ms"


def main() -> None:
    parser = options(
        __doc__, labs=100, devices=40, workers=4,
        idle_s=(len(Priority) / MAX_IDLE_RATE,
                "how long the idle fleet is watched (default: one safety-poll period, "
                "every priority once at MAX_IDLE_RATE requests/s)"),
        single=(200, "jobs published one at a time to the idle fleet"),
        dispatch=500, dispatch_gap_s=0.02, burst=20000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        with contextlib.suppress(KeyboardInterrupt):
            Path(args.out).write_text(json.dumps(asyncio.run(probe())))
        return
    if args.worker:
        start, stop = (int(x) for x in args.worker.split(":"))
        with contextlib.suppress(KeyboardInterrupt):
            report = asyncio.run(worker(args.url, range(start, stop), args.devices))
            Path(args.out).write_text(json.dumps(report))
        return
    asyncio.run(coordinate(args))


if __name__ == "__main__":
    main()
