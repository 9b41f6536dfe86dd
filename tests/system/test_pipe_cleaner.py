"""``wrtci pipe-cleaner`` through the CLI against a running installation.

The installation here is the test fixtures' servers with the real central
services started in-process (trigger recording through the CLI, scheduler,
timeout, results, log writer). The lab is the one part played by the test,
with the lab's own log streaming (lab_daemon.logstream): it takes the job,
downloads the image from the URL the job names and checks its sha256, and
reports a console log and tests. The full run with the QEMU virtual lab under
`wrtci up --demo` is in test_spine.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from tests import factories
from tests.helpers import PROJECT_ROOT
from tests.lab_helpers import running_log_writer
from tests.pipeline import FakeLab, running
from wrtci.core.config import LoggingConfig
from wrtci.core.runtime import EventPublisher
from wrtci.lab_daemon.logstream import ChunkSender, LogStream
from wrtci.proto import events as ev
from wrtci.proto.model import JobResult, TestResult, TestStatus
from wrtci.proto.storage import job_log_key
from wrtci.services.results import Config as ResultsConfig
from wrtci.services.results import run as run_results
from wrtci.services.results.config import ResultsSection
from wrtci.services.scheduler.service import SchedulerSettings

X86 = "x86/64/generic"
FAST = SchedulerSettings(holdoff_s=0.2)
CONSOLE = "OpenWrt 24.10.0 r28427-6df0e3d02a booting\nroot@OpenWrt:/# \n"


@contextlib.asynccontextmanager
async def installation(nats_config, database_config, storage_config):
    stop = asyncio.Event()
    results = asyncio.create_task(run_results(ResultsConfig(
        nats=nats_config, database=database_config, storage=storage_config,
        logging=LoggingConfig(format="text"),
        results=ResultsSection(work_interval_s=0.1, fetch_timeout_s=0.2)), stop))
    try:
        async with running(nats_config, database_config, storage_config, scheduler=FAST), \
                running_log_writer(nats_config, storage_config):
            yield
    finally:
        stop.set()
        await asyncio.wait_for(results, 30)


async def play_lab(js, nc, subjects, *, status: TestStatus) -> str:
    """Take the smoke firmware's job and answer it as a lab daemon does."""
    lab = FakeLab(nc, subjects, "lab-a", "x86-1")
    job = await lab.take(X86, limit=60)
    spec = job.spec
    async with aiohttp.ClientSession() as session, session.get(spec.image.url) as resp:
        assert resp.status == 200
        assert hashlib.sha256(await resp.read()).hexdigest() == spec.image.sha256
    await lab.start(job)
    sender = ChunkSender(EventPublisher(js, subjects), "lab/lab-a").start()
    console = LogStream(sender, job_id=spec.job_id, attempt=spec.attempt, run=1, lab="lab-a",
                        device="x86-1")
    console.write(CONSOLE)
    console.finish()
    assert await sender.drain(within_s=30)
    await sender.close()
    result = JobResult.PASS if status is TestStatus.PASS else JobResult.FAIL
    await lab.events.publish(ev.JobFinished.build(ev.JobFinishedData(
        job_id=spec.job_id, attempt=spec.attempt, lab="lab-a", device="x86-1", result=result,
        tests=[TestResult(path="base.test_base.test_shell", status=status)],
        log_key=job_log_key(spec.job_id, spec.attempt)), source="lab/lab-a"))
    await job.ack()
    await lab.close()
    return spec.firmware_id


async def pipe_cleaner(config: Path, firmware: Path, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrtci.services.cli.main", "pipe-cleaner", "--config", str(config),
        "--firmware", str(firmware), "--interval", "0.2", *extra, cwd=PROJECT_ROOT,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode()


@pytest.mark.parametrize("status", [TestStatus.PASS, TestStatus.FAIL])
async def test_pipe_cleaner_exits_by_whether_the_system_works(
        status, js, nc, subjects, nats_config, database_config, storage_config, pool,
        site_config_file, tmp_path):
    firmware = tmp_path / "openwrt-24.10.0-x86-64-generic-initramfs-rootfs.cpio.gz"
    firmware.write_bytes(os.urandom(4096))
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, [])])
    async with installation(nats_config, database_config, storage_config):
        cleaner = asyncio.create_task(pipe_cleaner(site_config_file, firmware, "--timeout", "90"))
        firmware_id = await play_lab(js, nc, subjects, status=status)
        code, out = await cleaner
    assert firmware_id.startswith("wrtci:pipe-cleaner:") and firmware_id in out, out
    if status is TestStatus.PASS:
        assert code == 0, out
        assert "pipe-cleaner: PASSED" in out and f"{len(CONSOLE)} bytes" in out
    else:
        assert code == 1, out
        assert "pipe-cleaner: FAILED" in out and "ended fail" in out


async def test_pipe_cleaner_fails_when_nothing_runs_the_firmware(
        js, subjects, nats_config, database_config, storage_config, site_config_file,
        tmp_path):
    firmware = tmp_path / "openwrt-24.10.0-x86-64-generic-initramfs-rootfs.cpio.gz"
    firmware.write_bytes(os.urandom(4096))
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, [])])
    async with installation(nats_config, database_config, storage_config):
        code, out = await pipe_cleaner(site_config_file, firmware, "--timeout", "3")
    assert code == 1 and "FAILED: not done after 3 s" in out, out


async def test_pipe_cleaner_refuses_a_drained_installation(
        js, subjects, nats_config, database_config, storage_config, site_config_file,
        tmp_path):
    firmware = tmp_path / "openwrt-24.10.0-x86-64-generic-initramfs-rootfs.cpio.gz"
    firmware.write_bytes(os.urandom(4096))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrtci.services.cli.main", "drain", "--config", str(site_config_file),
        cwd=PROJECT_ROOT, stdout=asyncio.subprocess.DEVNULL)
    assert await proc.wait() == 0
    code, out = await pipe_cleaner(site_config_file, firmware, "--timeout", "3")
    assert code == 1 and "drained or paused" in out, out
