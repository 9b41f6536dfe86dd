"""The results daemon as ``wrtci run results`` starts it: all loops wired together."""

from __future__ import annotations

import asyncio

from tests.factories_results import Factory, finished, publish, started
from tests.helpers import eventually
from tests.results.test_results_kcidb import PANIC_LOG, _put
from wrtci.core.config import LoggingConfig
from wrtci.proto.storage import job_log_key
from wrtci.services.results import Config, check, run
from wrtci.services.results.config import ResultsSection


async def test_daemon_ingests_and_analyses(js, subjects, pool, nats_config, database_config,
                                           storage_config):
    config = Config(nats=nats_config, database=database_config, storage=storage_config,
                    logging=LoggingConfig(format="text"),
                    results=ResultsSection(work_interval_s=0.1, fetch_timeout_s=0.2))
    await check(config)
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    _put(storage_config, job_log_key(job, 1), PANIC_LOG)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run(config, stop))
    try:
        await publish(js, subjects, started(job), finished(
            job, {"base.test_boot": "FAIL"}, log_key=job_log_key(job, 1)))
        # the incident is the last thing the daemon writes
        await eventually(lambda: pool.fetchval("SELECT count(*) FROM incidents"),
                         "an incident", within_s=20, every_s=0.1)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 15)
    assert await pool.fetchval("SELECT status FROM tests WHERE job_id = $1", job) == "FAIL"
    assert await pool.fetchval("SELECT count(*) FROM flaky_tests") == 1
    assert await pool.fetchval("SELECT count(*) FROM results_work") == 0
