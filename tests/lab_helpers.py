"""Helpers for the lab daemon tests: configs, jobs, running daemons, event logs."""


from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import tomli_w

from wrtci.core.config import LoggingConfig, NatsConfig
from wrtci.core.runtime import EventPublisher, connect_nats
from wrtci.lab_daemon.config import HEALTH_TESTS, Config, DeviceConfig, HealthConfig, LabSection
from wrtci.lab_daemon.daemon import LabDaemon
from wrtci.lab_daemon.labnet import DeviceProblem
from wrtci.lab_daemon.logstream import ChunkSender, LogStream
from wrtci.proto import events as ev
from wrtci.proto import topology
from wrtci.proto.control import DeviceStatus, LabAction, LabControlReply, LabControlRequest
from wrtci.proto.events import decode
from wrtci.proto.jobwake import wake_labs
from wrtci.proto.model import Image, TestPlan
from wrtci.proto.subjects import Priority, Subjects
from wrtci.proto.topology import JOB_ACK_WAIT, ensure_job_consumers
from wrtci.services import logs as logs_service
from wrtci.services.config import StorageConfig
from wrtci.services.stack.virtual_lab import suite_envs_dir

PROJECT = Path(__file__).resolve().parent.parent
VIRTUAL_LAB = PROJECT / "deploy" / "virtual-lab"
VIRTUAL_TARGET = VIRTUAL_LAB / "qemu-x86-64-virtual.yaml"
VIRTUAL_SUITE = VIRTUAL_LAB / "openwrt-tests"
SUITE_ENVS = suite_envs_dir()
"""The suites' environments, shared by every test of a session (and kept between them),
and with the virtual lab `wrtci up` runs (test_spine, test_up): one build per session."""
VIRTUAL_SUITE_TARGET = VIRTUAL_SUITE / "targets" / "qemu-x86-64.yaml"
"""The bundled suite's own target file (openwrt-tests format: LAN/WAN, SSH)."""
DEVICE_TYPE = "x86/64/generic"
VERSION, REVISION = "24.10.0", "r28427-6df0e3d02a"
LAB_PLACE_USER = f"{socket.gethostname()}/wrtci-lab1"
"""Who holds a place the daemon of lab1 acquired (labgrid's host/user)."""


class Firmware(msgspec.Struct, frozen=True):
    directory: Path
    image: Path
    sha256: str


FAKE_CONFTEST = '''
import pytest
import tomli_w

def pytest_addoption(parser):
    parser.addoption("--firmware", action="store", default=None)

@pytest.fixture
def firmware(pytestconfig):
    return pytestconfig.getoption("firmware")
'''

FAKE_TESTS = '''
import os, time

def test_firmware_is_the_verified_image(firmware):
    assert os.environ["LG_IMAGE"] == firmware
    with open(firmware, "rb") as f:
        assert f.read() == b"firmware-bytes"

def test_prints():
    print("fake suite says hello", flush=True)

def test_sleeps():
    # FAKE_SLEEP seconds; with FAKE_RELEASE, until that file appears (the test's go)
    release = os.environ.get("FAKE_RELEASE")
    deadline = time.monotonic() + float(os.environ.get("FAKE_SLEEP", "0"))
    while time.monotonic() < deadline and not (release and os.path.exists(release)):
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

def test_hang():
    time.sleep(3600)
'''


FAKE_FIRMWARE = b"firmware-bytes"
FAKE_HEALTH_TEST = "tests/test_fake.py::test_prints"


def lab_config(nats_config: NatsConfig, work: Path, suite: Path, *, name: str = "lab1",
               env: dict[str, str] | None = None, health_image: str | None = None,
               health: HealthConfig | None = None, place: str | None = None,
               target_file: Path = VIRTUAL_TARGET, **lab) -> Config:
    """A lab with one QEMU-target device ``dut1``.

    With the tiny fake suite, health checks run its quick ``test_prints`` (no
    boot) with a fake health image, and the suite runs with this interpreter
    (``python``) unless the test asks for the lab-built environment
    (``python=None``); with a real-layout suite, its own boot/shell tests.
    """
    health = health or HealthConfig()
    if (suite / "tests" / "test_fake.py").is_file():
        if health.tests == HEALTH_TESTS:
            health = msgspec.structs.replace(health, tests=[FAKE_HEALTH_TEST])
        if health_image is None and health.image is None:
            work.mkdir(parents=True, exist_ok=True)
            (work / "health-image.bin").write_bytes(FAKE_FIRMWARE)
            health = msgspec.structs.replace(health, image=str(work / "health-image.bin"))
        lab.setdefault("python", sys.executable)
    else:
        # A real-layout suite runs in the environment the lab builds from its
        # declaration, as in production; one build per dependency set per session.
        lab.setdefault("python", None)
        lab.setdefault("suite_envs_dir", str(SUITE_ENVS))
    device = DeviceConfig(name="dut1", target_file=str(target_file), target="x86",
                          subtarget="64", profile="generic", env=env or {},
                          health_image=health_image, place=place)
    section = LabSection(
        name=name, suite_dir=str(suite), work_dir=str(work), devices=[device],
        health=health, fetch_timeout_s=0.3, log_flush_s=0.2, **lab)
    return Config(nats=nats_config, lab=section, logging=LoggingConfig(format="text"))


def with_device(config: Config, **changes: Any) -> Config:
    """``config`` with its one device changed by ``changes`` (DeviceConfig fields)."""
    [device] = config.lab.devices
    device = msgspec.structs.replace(device, **changes)
    return msgspec.structs.replace(config, lab=msgspec.structs.replace(config.lab,
                                                                       devices=[device]))


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def write_config(config: Config, path: Path) -> Path:
    """lab.toml as a lab maintainer would write it (TOML has no null)."""
    path.write_text(tomli_w.dumps(_drop_none(msgspec.to_builtins(config))))
    return path


@contextlib.asynccontextmanager
async def running_lab(config: Config, *, central: NatsConfig | None = None,
                      problems: Sequence[DeviceProblem] = ()) -> AsyncIterator[LabDaemon]:
    """The lab daemon, started and stopped; ``central`` (default: the lab's own
    connection, open in these tests) first creates its job consumers, as the
    scheduler does for announced device types. ``problems``: labnet.yaml devices
    left out (``wrtci-lab run`` passes those ``load`` found)."""
    await create_job_consumers(central or config.nats,
                               {d.device_type for d in config.lab.devices},
                               config.lab.job_ack_wait_s)
    stop = asyncio.Event()
    daemon = LabDaemon(config, stop, problems=problems)
    task = asyncio.create_task(daemon.run())
    try:
        online = asyncio.ensure_future(daemon.online.wait())
        await asyncio.wait({online, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the daemon failed to start: raise its error
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def create_job_consumers(nats_config: NatsConfig, device_types: set[str],
                               ack_wait: float) -> None:
    nc = await connect_nats(nats_config, "wrtci-test-central")
    try:
        js = nc.jetstream()
        await topology.apply(js, nats_config.subjects)
        await topology.ensure_job_consumers(js, nats_config.subjects, device_types,
                                            ack_wait=ack_wait)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def running_log_writer(nats_config: NatsConfig, storage_config: StorageConfig,
                             database_config=None, **section: Any) -> AsyncIterator[None]:
    """The log writer; without a database it cannot check who holds a job (lab-only tests)."""
    stop = asyncio.Event()
    section.setdefault("partial_interval_s", 0.5)
    section.setdefault("check_holder", database_config is not None)
    extra = {"database": database_config} if database_config is not None else {}
    config = logs_service.Config(nats=nats_config, storage=storage_config,
                                 logs=logs_service.LogsSection(**section), **extra)
    task = asyncio.create_task(logs_service.run(config, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def job_spec(job_id: str, url: str | None, sha256: str, *, plans: list[TestPlan] | None = None,
             tests: list[str] | None = None, revision: str | None = REVISION,
             name: str = "firmware.bin", timeout_s: float = 600) -> ev.JobSpec:
    """``plans``, or ``tests``: one plan, ``base``, of those paths."""
    if plans is None:
        plans = [TestPlan(name="base", tests=tests or [])]
    image = Image(id=f"wrtci:test:{job_id}", target="x86", subtarget="64", profile="generic",
                  name=name, type="initramfs", sha256=sha256, url=url)
    return ev.JobSpec(job_id=job_id, firmware_id="wrtci:test:fw", device_type=DEVICE_TYPE,
                      image=image, plans=plans, priority=int(Priority.SNAPSHOT),
                      timeout_s=timeout_s, firmware_revision=revision)


def fake_job(job_id: str, url: str, **kwargs) -> ev.JobSpec:
    """A job for the fake firmware served at ``url`` (see the fake_firmware_url fixture);
    ``kwargs``: job_spec's (``plans`` or ``tests``)."""
    return job_spec(job_id, url, sha256_of(FAKE_FIRMWARE), **kwargs)


async def publish_job(nc, subjects: Subjects, spec: ev.JobSpec, *,
                      ack_wait: float = JOB_ACK_WAIT) -> None:
    """Queue ``spec`` as the scheduler would: its job consumers first (labs only bind),
    the job, then the labs' wake-up (core NATS, on ``nc``)."""
    js = nc.jetstream()
    await ensure_job_consumers(js, subjects, [spec.device_type], ack_wait=ack_wait)
    event = ev.JobCreated.build(spec, source="test", id=f"job.created:{spec.job_id}")
    await js.publish(subjects.job(spec.priority, spec.device_type), ev.encode(event),
                     headers={"Nats-Msg-Id": event.id})
    await wake_labs(nc, subjects, [(spec.priority, spec.device_type)])


async def cancel_job(js, subjects: Subjects, spec: ev.JobSpec, reason: str) -> None:
    """What the scheduler announces when it cancels ``spec``'s attempt: job.cancelled."""
    await EventPublisher(js, subjects).publish(ev.JobCancelled.build(
        ev.JobCancelledData(job_id=spec.job_id, attempt=spec.attempt, reason=reason),
        source="wrtci/scheduler"))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EventLog:
    """Every lab event and log chunk as it arrives (core NATS subscription)."""

    def __init__(self) -> None:
        self.events: list[ev.CloudEvent] = []
        self.changed = asyncio.Event()

    async def start(self, nc, subjects: Subjects) -> EventLog:
        async def on_msg(msg) -> None:
            if msg.subject.endswith(".control"):
                return  # requests to the daemon, not events
            self.events.append(decode(msg.data))
            self.changed.set()

        self.subs = [await nc.subscribe(f"{subjects.prefix}.lab.>", cb=on_msg)]
        return self

    def of(self, kind: type[ev.CloudEvent]) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, predicate, within_s: float = 60) -> None:
        async def loop() -> None:
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), within_s)


async def stream_events(js, stream: str, subject: str) -> list[ev.CloudEvent]:
    """Everything a stream holds on ``subject`` (what a consumer would see)."""
    from nats.js.api import DeliverPolicy

    info = await js.stream_info(stream, subjects_filter=subject)
    found: list[ev.CloudEvent] = []
    if not info.state.subjects:
        return found
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL,
                             stream=stream)
    try:
        while True:
            msg = await sub.next_msg(timeout=5)
            found.append(decode(msg.data))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found


def lab_subprocess(config_path: Path, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wrtci.lab_daemon.cli", "run", "--config", str(config_path)],
            cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def lab_process_with_job(nc, subjects: Subjects, config: Config, spec: ev.JobSpec,
                               log_path: Path) -> AsyncIterator[subprocess.Popen]:
    """The lab daemon as a process (``config`` written beside ``log_path``), its job
    consumers created with its ack wait as the scheduler creates them, and ``spec``
    queued; killed on the way out if still running."""
    ack_wait = config.lab.job_ack_wait_s
    await create_job_consumers(config.nats, {d.device_type for d in config.lab.devices},
                               ack_wait)
    daemon = lab_subprocess(write_config(config, log_path.with_suffix(".toml")), log_path)
    try:
        await publish_job(nc, subjects, spec, ack_wait=ack_wait)
        yield daemon
    finally:
        daemon.kill()


async def signal_while_testing(daemon: subprocess.Popen, events: EventLog, sig: int) -> int:
    """Send ``sig`` to the daemon once its job's tests run; its exit status."""
    await events.wait_for(lambda e: any(p.data.stage == "test" for p in e.of(ev.JobProgress)))
    daemon.send_signal(sig)
    return await asyncio.to_thread(daemon.wait, 30)


async def wrtci_lab(*args: str) -> tuple[int, str]:
    """``wrtci-lab ARGS`` in a subprocess: its exit code and its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrtci.lab_daemon.cli", *args, cwd=PROJECT,
        env={"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, output.decode()


def dedent(text: str) -> str:
    return textwrap.dedent(text)


async def device_status(nc, subjects: Subjects, lab: str = "lab1",
                        device: str = "dut1") -> DeviceStatus:
    """The running daemon's answer to ``wrtci-lab status`` for one device."""
    request = LabControlRequest(action=LabAction.STATUS, device=device)
    reply = await nc.request(subjects.lab_control(lab), msgspec.json.encode(request), timeout=10)
    [status] = msgspec.json.decode(reply.data, type=LabControlReply).devices
    return status


def log_sender(js, subjects: Subjects, job_id: str = "j", *, chunk_chars: int,
               **sender: Any) -> tuple[ChunkSender, LogStream]:
    """The lab's log sender (started; quick NATS timeout) and a stream of one job's log
    through it (lab1/dut1, attempt 1, run 1); ``sender``: ChunkSender's options."""
    started = ChunkSender(EventPublisher(js, subjects, timeout=1.0), "test", **sender).start()
    return started, LogStream(started, job_id=job_id, attempt=1, run=1, lab="lab1",
                              device="dut1", chunk_chars=chunk_chars)


async def run_one_job(nc, subjects: Subjects, events: EventLog, config: Config,
                      spec: ev.JobSpec) -> ev.JobFinishedData:
    """A lab with ``config`` runs ``spec`` until it finishes; what its job.finished says."""
    async with running_lab(config):
        await publish_job(nc, subjects, spec)
        await events.wait_for(lambda e: e.of(ev.JobFinished))
    return events.of(ev.JobFinished)[0].data


def commit_all(root: Path, message: str = "suite") -> str:
    """``git init`` and commit everything below ``root`` (a suite checkout); the commit id."""
    git = ["git", "-C", str(root), "-c", "user.name=lab", "-c", "user.email=lab@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", message], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
