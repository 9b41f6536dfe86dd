"""A three-node JetStream cluster on loopback: R3 streams, a node killed mid-run.

Bounded (a minute or two): 3 nats-server processes, the topology at 3
replicas (``topology.apply(..., replicas=3)``, ``wrtci nats apply --replicas 3``),
labs (real JobQueue) on different nodes taking jobs while the node of one of
them is killed, and the same services unchanged, two replicas each, one of
them stopped mid-run. Every job is taken and ends exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import urllib.request
from pathlib import Path

import nats
import pytest

from tests import factories
from tests.helpers import eventually, eventually_succeeds
from tests.pipeline import FakeLab, firmware_jobs, firmware_state, running
from wrtci.core.config import NatsConfig
from wrtci.proto import events as ev
from wrtci.proto import topology
from wrtci.proto.jobqueue import JobQueue
from wrtci.proto.model import Image, JobResult, TestPlan
from wrtci.proto.subjects import Priority, Subjects
from wrtci.services.scheduler.service import SchedulerSettings
from wrtci.services.stack.servers import LOOPBACK, find_executable, free_port

DEVICE_TYPES = ["x86/64/generic", "ath79/generic/tplink_archer-c7-v2"]
JOBS = 120


class Node:
    def __init__(self, root: Path, index: int, cluster_ports: list[int]) -> None:
        self.index = index
        self.port, self.monitor = free_port(), free_port()
        self.dir = root / f"n{index}"
        self.dir.mkdir(parents=True)
        routes = ", ".join(f"nats-route://{LOOPBACK}:{p}" for p in cluster_ports)
        self.config = self.dir / "node.conf"
        self.config.write_text(
            f"server_name: n{index}\nlisten: {LOOPBACK}:{self.port}\n"
            f"http: {LOOPBACK}:{self.monitor}\n"
            f'jetstream {{ store_dir: "{self.dir / "js"}" }}\n'
            f"cluster {{ name: wrtci-test, listen: {LOOPBACK}:{cluster_ports[index]}, "
            f"routes: [{routes}] }}\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 (the process keeps it)
        self.proc = subprocess.Popen([find_executable("nats-server"), "-c", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.monitor}/healthz",
                                        timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
async def cluster(tmp_path: Path):
    ports = [free_port() for _ in range(3)]
    nodes = [Node(tmp_path, i, ports) for i in range(3)]
    for node in nodes:
        node.start()
    await eventually(lambda: all(n.healthy() for n in nodes), "the cluster to come up",
                     within_s=30, every_s=0.2)
    yield nodes
    for node in nodes:
        node.kill()


def _event(job_id: str, device_type: str, priority: Priority) -> ev.JobCreated:
    image = Image(id=f"img:{job_id}", target="x86", subtarget="64", profile="generic",
                  name="fw.bin", type="sysupgrade", sha256="0" * 64, url="http://x/fw.bin")
    spec = ev.JobSpec(job_id=job_id, firmware_id="cluster:fw", device_type=device_type,
                      image=image, plans=[TestPlan(name="base", tests=["t.py"])],
                      priority=int(priority), timeout_s=600)
    return ev.JobCreated.build(spec, source="test", id=f"job.created:{job_id}")


@pytest.mark.timeout(150)
async def test_jobs_survive_a_killed_node_none_lost_none_doubled(cluster):
    subjects = Subjects("cluster")
    urls = [n.url for n in cluster]
    central = await nats.connect(servers=urls, max_reconnect_attempts=-1)
    js = central.jetstream(timeout=10)
    # The meta leader is elected a moment after the nodes answer.
    await eventually_succeeds(lambda: topology.apply(js, subjects, replicas=3),
                              "the R3 topology", 30, every_s=0.5)
    # A short ack wait: a job whose lab lost its node comes back within the test.
    await eventually_succeeds(lambda: topology.ensure_job_consumers(
        js, subjects, DEVICE_TYPES, ack_wait=5), "the job consumers", 30, every_s=0.5)
    info = await js.stream_info(subjects.jobs_stream)
    assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2

    taken: list[str] = []
    stop = asyncio.Event()
    labs = []
    for node in cluster[1:]:  # lab A on node 1 (killed below), lab B on node 2
        nc = await nats.connect(servers=[node.url], max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
        labs.append((nc, JobQueue(nc.jetstream(), subjects, max_idle_rate=len(Priority))))

    async def device(queue: JobQueue, device_type: str) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the node went away: ask again
                job = await queue.next_job(device_type, wait=0.5)
                if job is not None:
                    await job.msg.ack_sync(timeout=10)
                    taken.append(job.spec.job_id)

    devices = [asyncio.create_task(device(q, t)) for _, q in labs for t in DEVICE_TYPES]
    try:
        for i in range(JOBS):
            event = _event(f"job-{i}", DEVICE_TYPES[i % 2], list(Priority)[i % len(Priority)])
            await eventually_succeeds(lambda e=event: js.publish(
                subjects.job(e.data.priority, e.data.device_type), ev.encode(e),
                headers={"Nats-Msg-Id": e.id}), "a job published", 30, every_s=0.5)
            if i == JOBS // 3:
                cluster[1].kill()  # lab A's node, mid-run
        await eventually(lambda: len(set(taken)) >= JOBS, f"all {JOBS} jobs taken", 60)
    finally:
        stop.set()
        for task in devices:
            task.cancel()
        await asyncio.gather(*devices, return_exceptions=True)
        for nc, queue in labs:
            with contextlib.suppress(Exception):
                await queue.close()
                await nc.close()
    assert sorted(set(taken)) == sorted(f"job-{i}" for i in range(JOBS))  # none lost
    assert len(taken) == len(set(taken))  # none doubled
    assert (await js.stream_info(subjects.jobs_stream)).state.messages == 0
    await central.close()


SERVICE_TYPES = [f"t{i}/s/dev-{i}" for i in range(6)]


@pytest.mark.timeout(420)
async def test_services_on_the_cluster_two_replicas_one_killed_mid_run(
        cluster, database_config, storage_config, pool):
    """Scheduler and timeout services, two replicas each on different nodes, labs on
    two nodes; mid-run one node and one replica of each service go away. Every job
    ends once, on its first attempt, and the firmware is done."""
    subjects = Subjects("clsvc")
    central = await nats.connect(servers=[n.url for n in cluster], max_reconnect_attempts=-1)
    js = central.jetstream(timeout=10)
    await eventually_succeeds(lambda: topology.apply(js, subjects, replicas=3),
                              "the R3 topology", 30, every_s=0.5)
    # Both labs announce their devices: a lab's start is accepted only for device
    # types it has (services/identity.py).
    for lab in ("lab-a", "lab-b"):
        await factories.announce_lab(js, subjects, lab,
                                     [(f"d{i}", t, []) for i, t in enumerate(SERVICE_TYPES)])
    settings = SchedulerSettings(holdoff_s=0.3)
    replica_1, replica_2 = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
    labs = []
    try:
        await replica_1.enter_async_context(running(
            NatsConfig(url=cluster[0].url, prefix=subjects.prefix, request_timeout_s=10),
            database_config, storage_config, scheduler=settings))
        await replica_2.enter_async_context(running(
            NatsConfig(url=cluster[2].url, prefix=subjects.prefix, request_timeout_s=10),
            database_config, storage_config, scheduler=settings))
        data = factories.firmware(SERVICE_TYPES)
        await factories.publish_firmware(js, subjects, data)

        for name, node in (("lab-a", cluster[1]), ("lab-b", cluster[2])):
            nc = await nats.connect(servers=[node.url], max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.2)
            labs.append((nc, FakeLab(nc.jetstream(timeout=10), subjects, name)))
        done: list[str] = []

        async def lab_loop(lab: FakeLab) -> None:
            while True:
                for device_type in SERVICE_TYPES:
                    with contextlib.suppress(Exception):  # its node went away: again
                        job = await lab.queue.next_job(device_type, wait=0.1)
                        if job is None:
                            continue
                        await lab.start(job)
                        await lab.finish(job, JobResult.PASS, ack=False)
                        await job.msg.ack_sync(timeout=10)
                        done.append(job.spec.job_id)

        loops = [asyncio.create_task(lab_loop(lab)) for _, lab in labs]
        await eventually(lambda: len(done) >= 2, "two jobs done", 60)
        cluster[1].kill()  # lab A's node
        await replica_1.aclose()  # one scheduler and one timeout service gone
        # A consume loop whose JetStream calls hung through the leader elections can
        # take two minutes to come back (seen on a loaded 2-core machine): allow it.
        await eventually(lambda: _firmware_done(pool, data.firmware_id), "the firmware done",
                         300)
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    finally:
        for nc, lab in labs:
            with contextlib.suppress(Exception):
                await lab.close()
                await nc.close()
        await replica_2.aclose()
        await replica_1.aclose()
    rows = await firmware_jobs(pool, data.firmware_id)
    assert len(rows) == len(SERVICE_TYPES)  # none lost
    assert all((r["state"], r["result"], r["attempt"]) == ("done", "pass", 1) for r in rows)
    attempts = await pool.fetchval(
        "SELECT count(*) FROM job_attempts WHERE job_id = ANY($1::text[])",
        [r["id"] for r in rows])
    assert attempts == len(SERVICE_TYPES)  # none doubled
    await central.close()


async def _firmware_done(pool, firmware_id: str) -> bool:
    return await firmware_state(pool, firmware_id) == "done"
