"""``wrtci drain --wait`` / ``wrtci resume`` through the CLI, against the real servers.

A drain lets the running job finish and starts no queued one (the labs' fetch
gets nothing while the job consumers are paused); ``--wait`` returns once no
job runs; ``resume`` lets the queued job start, and wakes the idle device
for it: the device takes it without waiting for its safety poll. Nothing is
lost or doubled.
"""

from __future__ import annotations

import asyncio
import sys

from tests import factories
from tests.helpers import PROJECT_ROOT, eventually, run_cli
from tests.pipeline import FAST, WAIT, X86, FakeLab, firmware_jobs, running
from wrtci.proto.model import JobResult
from wrtci.proto.subjects import Priority
from wrtci.services.scheduler.hold import job_consumers

ATH = "ath79/generic/tplink_archer-c7-v2"
NEVER = 1e-6
"""A max_idle_rate whose safety poll never comes within a test (and the first one
comes only after the job ack wait, 120 s): such a device looks only when woken."""


def report(name: str, **counts: int) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in counts.items()))


async def _cli(*args: str, config) -> str:
    return (await asyncio.to_thread(run_cli, *args, "--config", str(config))).stdout


async def test_drain_wait_lets_the_running_job_finish_and_starts_no_new_one(
        js, nc, subjects, nats_config, database_config, storage_config, pool, site_config_file):
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, []), ("ath-1", ATH, [])])
    data = factories.firmware([X86, ATH])
    async with running(nats_config, database_config, storage_config,
                       scheduler=FAST) as pipeline:
        x86_lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        # The ath79 device looks for jobs only when woken: its safety poll never
        # comes within this test. A job it takes after the resume came by the
        # resume's wake-up, not by a poll.
        ath_lab = FakeLab(nc, subjects, "lab-a", "ath-1", max_idle_rate=NEVER)
        assert ath_lab.queue.poll_interval > 1e6
        # Another lab's device of the type looks at every priority ten times a
        # second while drained: nothing is handed out.
        poller = FakeLab(nc, subjects, "lab-b", "ath-2", max_idle_rate=50.0)

        async def ath_consumers() -> bool:
            return {c.name for c in await job_consumers(js, subjects)} >= {
                subjects.job_consumer(p, ATH) for p in Priority}
        await eventually(ath_consumers, "the scheduler creates the ath79 job consumers")
        # Both devices are idle and asking when the drain begins: the start-up look.
        assert await ath_lab.queue.next_job(ATH, wait=0.2) is None
        assert ath_lab.queue.requests == len(Priority)
        await factories.publish_firmware(js, subjects, data)
        running_job = await x86_lab.take(X86)
        await x86_lab.start(running_job)

        async def queued_for_ath() -> bool:
            return any(r["device_type"] == ATH for r in await firmware_jobs(pool, data.firmware_id))
        await eventually(queued_for_ath, "the ath79 job queued")
        drain = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wrtci.services.cli.main", "drain", "--wait",
            "--config", str(site_config_file), "--timeout", str(WAIT), "--interval", "0.2",
            cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        first_line = await asyncio.wait_for(drain.stdout.readline(), WAIT)
        assert first_line.startswith(b"draining"), first_line

        # Drained: idle devices ask and get nothing, for as long as the drain lasts.
        taken_while_drained = 0
        for _ in range(5):
            for lab in (poller, ath_lab):  # ath_lab: woken by the job's publish
                job = await lab.queue.next_job(ATH, wait=0.5)
                if job is not None:
                    taken_while_drained += 1
                    await job.nak()
        assert drain.returncode is None, "drain --wait returned while a job runs"

        async def held() -> bool:
            return pipeline.scheduler.switch.record.jobs_held
        await eventually(held, "the scheduler sees the drain")

        await x86_lab.finish(running_job, JobResult.PASS)
        out, err = await asyncio.wait_for(drain.communicate(), WAIT)
        assert drain.returncode == 0, err.decode()
        assert "drained: no job running (1 queued and held)" in out.decode()
        await poller.close()
        # The ath79 device had its look at the queued job (while held): from now
        # on only a wake-up makes it look again.
        assert await ath_lab.queue.next_job(ATH, wait=0.3) is None
        waiting = asyncio.create_task(ath_lab.take(ATH))
        await asyncio.sleep(0.3)
        assert not waiting.done()

        resumed = await _cli("resume", config=site_config_file)
        assert resumed.startswith("resumed: 1 queued jobs")
        ath_job = await waiting  # woken by the resume (FakeLab.take gives up after WAIT)
        await ath_lab.start(ath_job)
        await ath_lab.finish(ath_job, JobResult.PASS)
        taken_again = await ath_lab.queue.next_job(ATH, wait=0.5)
        await x86_lab.close()
        await ath_lab.close()
    rows = await firmware_jobs(pool, data.firmware_id)
    report("drain --wait", jobs=len(rows), taken_while_drained=taken_while_drained,
           lost=2 - len(rows), doubled=int(taken_again is not None),
           done=sum(r["state"] == "done" for r in rows))
    assert taken_while_drained == 0 and taken_again is None
    assert ath_job.spec.firmware_id == data.firmware_id and ath_job.num_delivered == 1
    assert sorted(r["device_type"] for r in rows) == sorted([X86, ATH])


async def test_drain_wait_gives_up_after_its_timeout(
        js, nc, subjects, nats_config, database_config, storage_config, pool, site_config_file):
    await factories.announce_lab(js, subjects, "lab-a", [("x86-1", X86, [])])
    data = factories.firmware([X86])
    async with running(nats_config, database_config, storage_config, scheduler=FAST):
        lab = FakeLab(nc, subjects, "lab-a", "x86-1")
        await factories.publish_firmware(js, subjects, data)
        job = await lab.take(X86)
        await lab.start(job)
        result = await asyncio.to_thread(
            run_cli, "drain", "--wait", "--timeout", "1", "--interval", "0.2",
            "--config", str(site_config_file), check=False)
        assert result.returncode == 1 and "jobs running" in result.stderr
        await lab.finish(job, JobResult.PASS)
        await _cli("resume", config=site_config_file)
        await lab.close()
