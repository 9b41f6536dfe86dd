"""``wrtci show``: the command line reads results through the REST API."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.api_support import HOSTILE, scenario, serving
from tests.helpers import run_cli


@pytest.fixture
async def api(js, nats_config, database_config, storage_config):
    async with serving(nats_config, database_config, storage_config) as client:
        yield client


async def _show(config, *args: str, check: bool = True):
    return await asyncio.to_thread(run_cli, "show", *args, "--config", str(config),
                                   check=check)


async def test_show_reads_firmware_jobs_labs_and_logs_from_the_api(
        api, js, subjects, pool, storage_config, site_config_file):
    s = await scenario(js, subjects, pool, storage_config)
    port = api.base.rsplit(":", 1)[1]
    with site_config_file.open("a") as site:  # the [api] section `wrtci up` writes
        site.write(f"\n[api]\nport = {port}\n")

    listing = (await _show(site_config_file, "firmware", "--channel", "snapshot")).stdout
    assert listing.index(s.bad) < listing.index(s.good) and "(2 of 2)" in listing

    one = (await _show(site_config_file, "firmware", s.bad)).stdout
    assert f"REGRESSION {HOSTILE}" in one
    assert f"job {s.bad_job}: fail, attempt 2, lab-a/dut-1" in one

    job = (await _show(site_config_file, "job", s.bad_job)).stdout
    assert "attempt 1: error boot_failed on lab-a/dut-1" in job
    assert "FAIL  base.test_wifi" in job

    labs = json.loads((await _show(site_config_file, "labs", "--json")).stdout)
    assert [lab["name"] for lab in labs["items"]] == ["lab-a"]

    log = await _show(site_config_file, "log", s.bad_job)  # the last attempt's
    assert log.stdout.encode() == s.log

    missing = await _show(site_config_file, "job", "wrtci:none", check=False)
    assert missing.returncode == 1 and "404: no job wrtci:none" in missing.stderr
