"""A three-node JetStream cluster on loopback: R3 streams, a node killed mid-run.

Bounded (well under a minute each): 3 nats-server processes
(services/stack/cluster.py), the topology at 3 replicas
(``topology.apply(..., replicas=3)``, ``wrtci nats apply --replicas 3``).

- labs (real JobQueue) on different nodes take jobs while the node of one of
  them is killed: every job is taken once;
- the services unchanged, as processes (``wrtci run NAME``), two replicas of
  each that consumes events; labs on two nodes report start, console log,
  test results and end. Mid-run one node and one replica of each service get
  SIGKILL; the survivors (on the dead node) find another node and go on.
  Every job ends once, on its first attempt; no job, test row, stored log or
  mailed report is lost or doubled; the counts are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import tomli_w
from minio import Minio

from tests import factories
from tests.helpers import PROJECT_ROOT, eventually, eventually_succeeds
from tests.pipeline import stored_events
from tests.servers.downloads import DownloadsServer
from tests.servers.smtp import SmtpServer
from wrtci.core.config import NatsConfig, dump_config
from wrtci.core.runtime import EventPublisher
from wrtci.proto import events as ev
from wrtci.proto import topology
from wrtci.proto.jobqueue import JobQueue
from wrtci.proto.jobwake import wake_labs
from wrtci.proto.model import Image, JobResult, TestPlan, TestResult, TestStatus
from wrtci.proto.storage import job_log_key
from wrtci.proto.subjects import Priority, Subjects
from wrtci.services.cli.common import CliConfig
from wrtci.services.config import DatabaseConfig, StorageConfig
from wrtci.services.stack.cluster import ClusterNode, NatsCluster
from wrtci.services.stack.servers import LOOPBACK

DEVICE_TYPES = ["x86/64/generic", "ath79/generic/tplink_archer-c7-v2"]
JOBS = 120


@pytest.fixture
def cluster(traversable_tmp: Path) -> Iterator[list[ClusterNode]]:
    nodes = NatsCluster(traversable_tmp / "nats", 3, "wrtci-test").start()
    try:
        yield nodes.nodes
    finally:
        for node in nodes.nodes:
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
        labs.append((nc, JobQueue(nc, subjects, max_idle_rate=len(Priority))))

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
            await wake_labs(central, subjects, [(event.data.priority, event.data.device_type)])
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


# -- the services, two replicas each, as processes ----------------------------------

SERVICES = ["scheduler", "timeout", "results", "logs", "notifier", "trigger"]
"""Every service that consumes events, and the trigger (both replicas scan the same
downloads server). The API serves requests only: any replica answers any of them."""
MIRROR = PROJECT_ROOT / "tests" / "data" / "openwrt-downloads"
MIRROR_RELEASES = 2
"""What the trigger records from MIRROR: the snapshot and the stable release
(.versions.json names an oldstable the mirror does not have)."""
MIRROR_TARGETS = 3
"""...announced per target: the release's ath79/generic and x86/64, the snapshot's ath79."""
SERVICE_TYPES = [f"t{i}/s/dev-{i}" for i in range(6)]
TESTS = ["base/boot", "base/network", "base/opkg"]
MAIL_TO = "ci@example.org"
RECOVERY_S = 30.0
"""Bound of each wait after the kills: the services are back within seconds of the
new leaders (a generous test timeout, not a speed target)."""


class Replica:
    """One service process, started as `wrtci run NAME` is on a host."""

    def __init__(self, name: str, replica: str, config: Path, log: Path) -> None:
        self.name, self.replica, self.log = name, replica, log
        self.terminated = False
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wrtci.services.cli.main", "run", name,
                 "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT, start_new_session=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM once: a second one, sent while Python winds down after its event
        loop closed (its handler gone), would end the process by the signal."""
        if self.proc.poll() is None and not self.terminated:
            self.proc.terminate()
            self.terminated = True

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()


def _site_config(path: Path, url: str, prefix: str, database: DatabaseConfig,
                 storage: StorageConfig, smtp_port: int, mirror_url: str) -> Path:
    shared = CliConfig(nats=NatsConfig(url=url, prefix=prefix), database=database,
                       storage=storage)
    site = tomllib.loads(dump_config(shared).decode()) | {
        "logging": {"level": "INFO", "format": "text"},
        "scheduler": {"holdoff_s": 0.3},
        "trigger": {"official": {"base_url": mirror_url, "interval_s": 2.0,
                                 "targets": ["ath79/generic", "x86/64"]},
                    "web": {"enabled": False}},
        "notifier": {"settle_poll_s": 0.5, "retry_delays_s": [0.5],
                     "mail": {"enabled": True, "host": LOOPBACK, "port": smtp_port,
                              "mail_submitter": False, "rules": [{"to": [MAIL_TO]}]}},
    }
    path.write_text(tomli_w.dumps(site))
    return path


class Lab:
    """A lab on one node: takes jobs, reports start, console log, results, end.

    As the lab daemon does, it keeps a job it took: every report is sent again
    until JetStream has it (its node may have died meanwhile), with in-progress
    acks so the job is not handed to another lab."""

    def __init__(self, nc, subjects: Subjects, name: str) -> None:
        self.nc, self.name, self.device = nc, name, "dut-1"
        self.queue = JobQueue(nc, subjects)
        self.events = EventPublisher(nc.jetstream(timeout=5), subjects)
        self.runs: list[str] = []

    async def run(self) -> None:
        while True:
            for device_type in SERVICE_TYPES:
                with contextlib.suppress(Exception):  # its node went away: ask again
                    job = await self.queue.next_job(device_type, wait=0.1)
                    if job is not None:
                        await self.job(job)

    async def job(self, job) -> None:
        spec, source = job.spec, f"lab/{self.name}"
        self.runs.append(spec.job_id)
        ids = {"job_id": spec.job_id, "attempt": spec.attempt, "lab": self.name,
               "device": self.device}
        now = dt.datetime.now(dt.UTC)
        reports: list[ev.CloudEvent] = [ev.JobStarted.build(ev.JobStartedData(**ids),
                                                            source=source)]
        reports += [ev.LogChunk.build(ev.LogChunkData(**ids, seq=seq, text=text, final=seq == 2,
                                                      run=job.num_delivered), source=source)
                    for seq, text in enumerate(_console(spec.job_id))]
        reports.append(ev.JobFinished.build(ev.JobFinishedData(
            **ids, result=JobResult.PASS, log_key=job_log_key(spec.job_id, spec.attempt),
            started_at=now, finished_at=now,
            tests=[TestResult(path=p, status=TestStatus.PASS, duration_s=0.1) for p in TESTS]),
            source=source, id=f"lab-finished:{spec.job_id}:{spec.attempt}"))
        for report in reports:
            await asyncio.sleep(0.05)  # the job takes a moment: the kills land mid-job
            await self._until_done(job, lambda r=report: self.events.publish(r))
        await self._until_done(job, lambda: job.msg.ack_sync(timeout=5))

    async def _until_done(self, job, call) -> None:
        while True:
            with contextlib.suppress(Exception):
                await job.in_progress()
            try:
                await call()
                return
            except Exception:
                await asyncio.sleep(0.2)


async def _shut_down(loops: list[asyncio.Task], labs: list[Lab],
                     replicas: list[Replica]) -> None:
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    for lab in labs:
        with contextlib.suppress(Exception):
            await lab.queue.close()
            await lab.nc.close()
    for process in replicas:  # SIGTERM to all first: they wind down side by side
        process.terminate()
    for process in replicas:
        process.stop()


def _print_logs(replicas: list[Replica]) -> None:
    """What the survivors logged beyond INFO: why the run did not finish."""
    for replica in replicas:
        lines = [line for line in replica.log.read_text(errors="replace").splitlines()
                 if " INFO " not in line]
        print(f"--- {replica.name} ({replica.replica}):", *lines[-25:], sep="\n")


def _console(job_id: str) -> list[str]:
    return [f"{job_id}: boot\n", f"{job_id}: tests\n", f"{job_id}: done\n"]


def _reports(smtp: SmtpServer, firmware_ids: list[str]) -> list[str]:
    """Subjects of the mailed reports of these firmware (each body names its id)."""
    wanted = {f"Firmware:  {f}" for f in firmware_ids}
    return [m["Subject"] for m in smtp.mailbox.messages
            if wanted & set(m.get_content().splitlines())]


async def _counts(pool, storage: StorageConfig, firmware_ids: list[str]) -> dict[str, int]:
    jobs = await pool.fetch("SELECT id, state, result, attempt FROM jobs "
                            "WHERE checkout_id = ANY($1::text[])", firmware_ids)
    ids = [r["id"] for r in jobs]
    client = Minio(storage.endpoint, access_key=storage.access_key,
                   secret_key=storage.secret_key, secure=False)

    def stored_logs() -> dict[str, bytes]:
        found = {}
        for job_id in ids:
            with contextlib.suppress(Exception):
                reply = client.get_object(storage.bucket, job_log_key(job_id, 1))
                try:
                    found[job_id] = reply.read()
                finally:
                    reply.close()
                    reply.release_conn()
        return found

    logs = await asyncio.to_thread(stored_logs)
    return {
        "jobs": len(jobs),
        "jobs_done_pass_first_attempt": sum(
            (r["state"], r["result"], r["attempt"]) == ("done", "pass", 1) for r in jobs),
        "attempts": await pool.fetchval(
            "SELECT count(*) FROM job_attempts WHERE job_id = ANY($1::text[])", ids),
        "test_rows": await pool.fetchval(
            "SELECT count(*) FROM tests WHERE job_id = ANY($1::text[])", ids),
        "mirror_releases": await pool.fetchval(
            "SELECT count(*) FROM checkouts WHERE NOT id = ANY($1::text[])", firmware_ids),
        "test_rows_distinct": await pool.fetchval(
            "SELECT count(DISTINCT (job_id, path)) FROM tests WHERE job_id = ANY($1::text[])",
            ids),
        "logs_stored": len(logs),
        "logs_exact": sum(data == "".join(_console(job_id)).encode()
                          for job_id, data in logs.items()),
        "logs_wrong": [(job_id, data) for job_id, data in logs.items()
                       if data != "".join(_console(job_id)).encode()],
        "firmware_done": await pool.fetchval(
            "SELECT count(*) FROM checkouts WHERE id = ANY($1::text[]) AND state = 'done'",
            firmware_ids),
    }


@pytest.mark.timeout(240)
async def test_services_two_replicas_each_a_node_and_a_replica_of_each_killed(
        cluster, database_config, storage_config, pool, traversable_tmp) -> None:
    """Two processes of every event-consuming service; labs on two nodes; mid-run
    kill -9 of one NATS node and of one replica of each service. Every job ends
    once on its first attempt: no job, test row, stored log or report lost or doubled."""
    subjects = Subjects("clsvc")
    central = await nats.connect(servers=[n.url for n in cluster], max_reconnect_attempts=-1)
    js = central.jetstream(timeout=10)
    await eventually_succeeds(lambda: topology.apply(js, subjects, replicas=3),
                              "the R3 topology", 30, every_s=0.5)
    for lab in ("lab-a", "lab-b"):
        await factories.announce_lab(js, subjects, lab,
                                     [(f"d{i}", t, []) for i, t in enumerate(SERVICE_TYPES)])
    smtp = await SmtpServer().start()
    mirror = await DownloadsServer(MIRROR).start()
    doomed, killed_node = cluster[1], None
    # Replica "a" of each service lists the node that is killed first (the client
    # picks one of its list at random, so some replicas are on it and must move to
    # another node and go on). Replica "b" lists node 2 first: that one is killed.
    replicas: dict[str, list[Replica]] = {"a": [], "b": []}
    labs: list[Lab] = []
    loops: list[asyncio.Task] = []
    firmwares = [factories.firmware(SERVICE_TYPES, tag=f"r{1001 + i}-abcde{i}") for i in range(4)]
    ids = [f.firmware_id for f in firmwares]
    expected = len(ids) * len(SERVICE_TYPES)
    try:
        for replica, node in (("a", doomed), ("b", cluster[2])):
            # As an operator writes it: every node, this replica's first.
            servers = ",".join([node.url] + [n.url for n in cluster if n is not node])
            config = _site_config(traversable_tmp / f"site-{replica}.toml", servers,
                                  subjects.prefix, database_config, storage_config, smtp.port,
                                  mirror.url)
            replicas[replica] = [Replica(name, replica, config,
                                         traversable_tmp / f"{name}-{replica}.log")
                                 for name in SERVICES]
        for name, node in (("lab-a", doomed), ("lab-b", cluster[0])):
            nc = await nats.connect(servers=[node.url], max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.2)
            labs.append(Lab(nc, subjects, name))
        for data in firmwares[:3]:
            await factories.publish_firmware(js, subjects, data)
        loops = [asyncio.create_task(lab.run()) for lab in labs]

        def runs() -> int:
            return len({job for lab in labs for job in lab.runs})
        await eventually(lambda: runs() >= 6, "six jobs under way", 90)
        # Mid-run: a node and one replica of each service die, as machines do.
        doomed.kill()
        killed_node = doomed.node_name
        for process in replicas["b"]:
            process.kill()
        killed_at = time.monotonic()
        await eventually_succeeds(lambda: factories.publish_firmware(js, subjects, firmwares[3]),
                                  "a firmware published after the kills", RECOVERY_S, every_s=0.5)

        async def all_done() -> bool:
            counts = await _counts(pool, storage_config, ids)
            return counts["firmware_done"] == len(ids) and counts["logs_exact"] == expected \
                and counts["test_rows_distinct"] == expected * len(TESTS) \
                and counts["mirror_releases"] == MIRROR_RELEASES \
                and len(_reports(smtp, ids)) >= len(ids)
        try:
            await eventually(all_done, "every firmware done, every result and log stored",
                             RECOVERY_S + 30)
        except AssertionError:
            print(await _counts(pool, storage_config, ids))
            print([m["Subject"] for m in smtp.mailbox.messages])
            _print_logs(replicas["a"])
            raise
        recovered_s = time.monotonic() - killed_at
        assert all(p.proc.poll() is None for p in replicas["a"]), "a surviving replica died"
    finally:
        await _shut_down(loops, labs, replicas["a"] + replicas["b"])
        await smtp.stop()
        await mirror.stop()
    counts = await _counts(pool, storage_config, ids)
    reports = Counter(_reports(smtp, ids))
    discovered = await stored_events(js, subjects, "firmware.discovered")
    announced = Counter(e.data.firmware_id for e in discovered)
    counts |= {"expected_jobs": expected, "lab_runs": sum(len(lab.runs) for lab in labs),
               "reports_mailed": len(smtp.mailbox.messages)}
    print(f"\n[cluster: node {killed_node} and one replica of {', '.join(SERVICES)} "
          f"killed] everything done {recovered_s:.1f} s after the kills; "
          + ", ".join(f"{k}={v}" for k, v in counts.items()))
    assert counts["jobs"] == expected  # none lost
    assert counts["jobs_done_pass_first_attempt"] == expected
    assert counts["attempts"] == expected  # none doubled
    assert counts["test_rows"] == counts["test_rows_distinct"] == expected * len(TESTS)
    assert counts["logs_stored"] == counts["logs_exact"] == expected
    assert len(reports) == len(ids) and set(reports.values()) == {1}, reports
    # Two triggers scanning one mirror, one killed: each release recorded once and
    # each of its targets announced once (an announcement's id is the same from
    # either replica, and so is its keyed Nats-Msg-Id: JetStream keeps one).
    mirror_ids = set(announced) - set(ids)
    assert len(mirror_ids) == MIRROR_RELEASES and counts["mirror_releases"] == MIRROR_RELEASES
    assert sum(announced[f] for f in mirror_ids) == MIRROR_TARGETS, announced
    assert len({e.id for e in discovered}) == len(discovered), Counter(e.id for e in discovered)
    # The survivors stopped on SIGTERM by themselves (not killed after the test's 20 s).
    exits = {f"{p.name} ({p.replica})": p.proc.returncode for p in replicas["a"]}
    assert set(exits.values()) == {0}, exits
    await central.close()
