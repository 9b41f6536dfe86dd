"""The lab's own overhead per job, excluding download and boot.

    python bench/bench_lab_overhead.py [--jobs 5]

Starts nats-server locally and a real lab daemon (one device) with a tiny
suite whose single test does nothing, so pytest's own run is all the device
time there is. The firmware is in the lab's cache (no download). For each job
it prints, from the daemon's own marks:

- taken -> pytest start: suite revision check, place, job.started, run dir;
- pytest end -> result published: junit, artifacts, log drain, job.finished;
- pytest itself (interpreter start, plugin load, one test), for scale.

Target: each overhead under 2 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
from pathlib import Path

from common import ROOT, options, servers, work_dir

from wrtci.core.config import LoggingConfig, NatsConfig
from wrtci.lab_daemon.config import Config, DeviceConfig, HealthConfig, LabSection
from wrtci.lab_daemon.daemon import LabDaemon
from wrtci.lab_daemon.firmware import FirmwareCache
from wrtci.proto import events as ev
from wrtci.proto import topology
from wrtci.proto.jobwake import wake_labs
from wrtci.proto.model import Image, TestPlan
from wrtci.proto.subjects import Priority

FIRMWARE = b"bench-firmware"
TARGET = ROOT / "deploy" / "virtual-lab" / "qemu-x86-64-virtual.yaml"
DEVICE_TYPE = "x86/64/generic"


def _suite(root: Path) -> Path:
    suite = root / "suite"
    (suite / "tests").mkdir(parents=True)
    (suite / "conftest.py").write_text(
        "def pytest_addoption(parser):\n"
        "    parser.addoption('--firmware', action='store', default=None)\n")
    (suite / "tests" / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    (suite / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return suite


def _config(nats: NatsConfig, root: Path, suite: Path, image: Path) -> Config:
    device = DeviceConfig(name="dut1", target_file=str(TARGET), target="x86", subtarget="64",
                          profile="generic")
    lab = LabSection(name="bench", suite_dir=str(suite), work_dir=str(root / "work"),
                     devices=[device], python=sys.executable, fetch_timeout_s=0.2,
                     log_flush_s=0.2, health=HealthConfig(
                         tests=["tests/test_nothing.py"], image=str(image)))
    return Config(nats=nats, lab=lab, logging=LoggingConfig(level="WARNING", format="text"))


async def bench(jobs: int) -> None:
    with work_dir() as root:
        async with servers(root) as local:
            nats, subjects, js, nc = local.nats, local.nats.subjects, local.js, local.nc
            # What the scheduler does for an announced device type: labs only bind.
            await topology.ensure_job_consumers(js, subjects, [DEVICE_TYPE])
            image = root / "fw.bin"
            image.write_bytes(FIRMWARE)
            sha = hashlib.sha256(FIRMWARE).hexdigest()
            config = _config(nats, root, _suite(root), image)
            # the firmware is already in the lab's cache: no download is measured
            cached = FirmwareCache(config.lab.cache_dir, 1 << 30).path_for(sha, "fw.bin")
            cached.parent.mkdir(parents=True)
            cached.write_bytes(FIRMWARE)
            stop = asyncio.Event()
            daemon = LabDaemon(config, stop)
            task = asyncio.create_task(daemon.run())
            await asyncio.wait_for(daemon.online.wait(), 30)
            finished: asyncio.Queue = asyncio.Queue()

            async def on_finished(msg):
                if isinstance(ev.decode(msg.data), ev.JobFinished):
                    finished.put_nowait(msg)

            # lab events (job.finished among them) go out under <prefix>.lab.<lab>.
            await nc.subscribe(f"{subjects.prefix}.lab.bench.>", cb=on_finished)
            for n in range(jobs):
                spec = ev.JobSpec(
                    job_id=f"bench:{n}", firmware_id="bench", device_type=DEVICE_TYPE,
                    image=Image(id="bench", target="x86", subtarget="64", profile="generic",
                                name="fw.bin", type="initramfs", sha256=sha, url=None),
                    plans=[TestPlan(name="base", tests=["tests/test_nothing.py"])],
                    priority=int(Priority.SNAPSHOT), timeout_s=120)
                event = ev.JobCreated.build(spec, source="bench", id=f"job.created:{n}")
                await js.publish(subjects.job(spec.priority, DEVICE_TYPE), ev.encode(event),
                                 headers={"Nats-Msg-Id": event.id})
                await wake_labs(nc, subjects, [(spec.priority, DEVICE_TYPE)])
                await asyncio.wait_for(finished.get(), 120)
            stop.set()
            await asyncio.wait_for(task, 60)
    _report(list(daemon.jobs.timings))


def _report(timings: list[dict[str, float]]) -> None:
    if not timings:
        raise SystemExit("no job finished")
    before = [t["pytest_start"] - t["taken"] for t in timings]
    after = [t["published"] - t["pytest_end"] for t in timings]
    pytest = [t["pytest_end"] - t["pytest_start"] for t in timings]
    for name, values in (("taken -> pytest start", before),
                         ("pytest end -> result published", after),
                         ("pytest itself (1 empty test)", pytest)):
        print(f"{name:32s} median {statistics.median(values):6.3f} s  "
              f"max {max(values):6.3f} s  (n={len(values)})")
    worst = max(max(before), max(after))
    print(f"lab overhead: {'OK' if worst < 2.0 else 'OVER'} (target < 2 s each)")


def main() -> None:
    asyncio.run(bench(options(__doc__.splitlines()[0], jobs=5).parse_args().jobs))


if __name__ == "__main__":
    main()
