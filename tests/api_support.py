"""The api service running in the test's event loop, and results for it to show.

The rows are made the way their owners make them: checkouts/builds/jobs/attempts
like the trigger and scheduler (``factories_results.Factory``), tests, labs and
devices by the real results ingestion from lab events, regressions and
incidents by the real analysis, logs in the test's own bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import aiohttp
import msgspec

from tests.factories import announce_lab
from tests.factories_results import T0, Factory, finished, ingest_all, publish, started
from tests.helpers import eventually, put_object
from tests.results.test_results_kcidb import analyser
from tests.token_support import add_token
from wrtci.core.config import NatsConfig
from wrtci.proto import events as ev
from wrtci.proto.model import DeviceHealth, DeviceState, ErrorCode, JobResult
from wrtci.proto.storage import job_log_key
from wrtci.services.api import Config, run
from wrtci.services.api.config import ApiSection
from wrtci.services.auth import TokenError
from wrtci.services.config import DatabaseConfig, StorageConfig
from wrtci.services.stack.servers import free_port

TOKEN = "operator-token-for-tests"
HOSTILE = "base.test_<script>alert('x')</script>&"
CONSOLE_TAIL = "[    5.300000] Kernel panic - not syncing: Attempted to kill init!\n"


class Api:
    """An HTTP client of the running service."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str, **params) -> tuple[int, object]:
        async with self.session.get(self.base + path, params=params) as resp:
            body = await resp.read()
            is_json = resp.content_type == "application/json"
            return resp.status, msgspec.json.decode(body) if is_json else body.decode()

    async def post(self, path: str, body: bytes = b"", token: str | None = TOKEN,
                   ) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.session.post(self.base + path, data=body, headers=headers) as resp:
            return resp.status, msgspec.json.decode(await resp.read())


@contextlib.asynccontextmanager
async def serving(nats_config: NatsConfig, database_config: DatabaseConfig,
                  storage_config: StorageConfig, **section) -> AsyncIterator[Api]:
    """``services.api.run`` on a free port until the block ends (then SIGTERM's path).

    ``TOKEN`` is the control token ``alice`` of the test's database."""
    port = free_port()
    config = Config(nats=nats_config, database=database_config, storage=storage_config,
                    api=ApiSection(port=port, **section))
    with contextlib.suppress(TokenError):  # a second server on the same database
        await add_token(database_config, "alice", TOKEN, ["control"])
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop))
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def healthy() -> bool:
            if task.done():
                task.result()
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(base + "/healthz") as resp:
                    return resp.status == 200
            return False

        try:
            await eventually(healthy, "the API server healthy", within_s=20)
            yield Api(session, base)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)



def console_log(lines: int = 4000) -> bytes:
    """A console log of some 250 kB (several streamed pieces) ending in a kernel panic."""
    body = "".join(f"[{n:11.6f}] line {n} of the boot & <console>\n" for n in range(lines))
    return (body + CONSOLE_TAIL).encode()


class Scenario(msgspec.Struct, kw_only=True):
    good: str
    """Snapshot firmware where every test passed."""
    bad: str
    """The next snapshot: attempt 1 boot failure, attempt 2 two regressions (one hostile)."""
    stable: str
    good_job: str
    bad_job: str
    log: bytes


async def _finish_job(pool, job_id: str, result: str, attempt: int, log_key: str | None,
                      error_code: str | None = None) -> None:
    """The job row as the timeout service leaves it when the attempt's job.finished arrives."""
    await pool.execute(
        """UPDATE jobs SET state = 'done', result = $2, attempt = $3, error_code = $4,
                  lab = 'lab-a', device = 'dut-1', log_key = $5,
                  started_at = $6::timestamptz, finished_at = $6::timestamptz + interval '3 minutes'
            WHERE id = $1""", job_id, result, attempt, error_code, log_key, T0)
    await pool.execute("UPDATE checkouts SET state = 'done', done_at = $2 WHERE id = $1",
                       (await pool.fetchval("SELECT checkout_id FROM jobs WHERE id = $1",
                                            job_id)), T0)


async def scenario(js, subjects, pool, storage_config) -> Scenario:
    factory = Factory(pool)
    good = await factory.firmware(revision="r100-aaaa")
    bad = await factory.firmware(revision="r101-bbbb")
    stable = await factory.firmware("24.10.0", channel="stable", revision="r200-cccc")
    await factory.job(stable)  # queued, no lab: waiting
    good_job = await factory.job(good)
    bad_job = await factory.job(bad, attempts=2)
    log = console_log()
    bad_log_key = job_log_key(bad_job, 2)
    put_object(storage_config, bad_log_key, log)

    online = ev.LabOnline.build(
        ev.LabOnlineData(lab="lab-a", version="0.3", devices=[ev.LabDevice(
            name="dut-1", device_type="x86/64/generic", features=["wan", "<b>wifi</b>"])]),
        source="wrtci/lab/lab-a", id="online-lab-a", time=T0)
    health = ev.DeviceHealthChanged.build(
        ev.DeviceHealthData(lab="lab-a", device="dut-1", device_type="x86/64/generic",
                            health=DeviceHealth.WARNING, state=DeviceState.IDLE,
                            consecutive_failures=1, message="slow boot"),
        source="wrtci/lab/lab-a", id="health-lab-a-1", time=T0 + dt.timedelta(minutes=1))
    await publish(
        js, subjects, online, health,
        started(good_job), finished(good_job, {"base.test_wifi": "PASS", HOSTILE: "PASS",
                                               "base.test_shell": "PASS"}),
        started(bad_job), finished(bad_job, result=JobResult.ERROR,
                                   error_code=ErrorCode.BOOT_FAILED),
        started(bad_job, attempt=2),
        finished(bad_job, {"base.test_wifi": "FAIL", HOSTILE: "FAIL", "base.test_shell": "PASS"},
                 attempt=2, log_key=bad_log_key))
    await ingest_all(js, subjects, pool)
    # lab-a heartbeats (its entry in the labs bucket), as an online lab does.
    await announce_lab(js, subjects, "lab-a", [("dut-1", "x86/64/generic", ["wan", "<b>wifi</b>"])])
    work = analyser(pool, storage_config)
    for _ in range(10):  # history and log analysis; bounded in case work is put off
        if not await work.run_due(50):
            break
    await _finish_job(pool, good_job, "pass", 1, None)
    await _finish_job(pool, bad_job, "fail", 2, bad_log_key)
    return Scenario(good=good, bad=bad, stable=stable, good_job=good_job, bad_job=bad_job,
                    log=log)
