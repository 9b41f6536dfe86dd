"""`wrtci watch`, `events --since/--firmware`, retry/cancel of unknown ids, bad arguments."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys

import pytest

from tests.api_support import _finish_job, scenario
from tests.core.test_events_cli import _publish_samples
from tests.factories_results import Factory, finished, publish, started
from tests.helpers import PROJECT_ROOT, run_cli
from wrtci.proto.model import ErrorCode, JobResult
from wrtci.services.cli.common import CliError, parse_time
from wrtci.services.cli.watch_cmd import JobOutcome, Verdict, firmware_outcome


def test_parse_time_durations_and_iso():
    now = dt.datetime.now(dt.UTC)
    assert abs((now - parse_time("2h")) - dt.timedelta(hours=2)) < dt.timedelta(seconds=5)
    assert abs((now - parse_time("1h30m")) - dt.timedelta(minutes=90)) < dt.timedelta(seconds=5)
    assert abs((now - parse_time("1w")) - dt.timedelta(days=7)) < dt.timedelta(seconds=5)
    assert parse_time("2026-11-25") == dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    assert parse_time("2026-11-25T10:00:00+01:00") == dt.datetime(2026, 11, 25, 9,
                                                                  tzinfo=dt.UTC)
    for bad in ("yesterday", "", "2x", "h", "-1h"):
        with pytest.raises(CliError, match="is not a duration"):
            parse_time(bad)


def _job(result: str | None, state: str = "done", error: str | None = None) -> JobOutcome:
    return JobOutcome(id="j", device_type="x86/64/generic", state=state, result=result,
                      error_code=error)


def test_firmware_verdict_rules():
    assert firmware_outcome("running", [_job(None, "running")], 0).verdict is None
    assert firmware_outcome("done", [], 0).verdict is Verdict.NO_VERDICT
    assert firmware_outcome("done", [_job("pass"), _job("skip")], 0).verdict is Verdict.PASS
    assert firmware_outcome("done", [_job("pass"), _job("error", error="lab_lost")],
                            0).verdict is Verdict.NO_VERDICT
    # A failure outweighs an infrastructure error elsewhere; a regression is a failure.
    assert firmware_outcome("done", [_job("fail"), _job("error")], 0).verdict is Verdict.FAIL
    outcome = firmware_outcome("done", [_job("pass")], 2)
    assert outcome.verdict is Verdict.FAIL and "2 regressions" in outcome.message


async def test_watch_exits_by_the_verdict(js, subjects, pool, storage_config,
                                          site_config_file):
    s = await scenario(js, subjects, pool, storage_config)
    cfg = ["-c", str(site_config_file)]
    assert run_cli("watch", s.good, "-q", *cfg).returncode == 0
    passed = run_cli("watch", s.good_job, *cfg)
    assert passed.stdout.strip() == "job pass"
    failed = run_cli("watch", s.bad, *cfg, check=False)
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout.startswith("fail:")
    unknown = run_cli("watch", "wrtci:nosuch", *cfg, check=False)
    assert unknown.returncode == 2 and "no firmware or job 'wrtci:nosuch'" in unknown.stderr
    # The stable firmware waits for a lab: no verdict before the timeout.
    waiting = run_cli("watch", s.stable, "--timeout", "0.5", *cfg, check=False)
    assert waiting.returncode == 2 and "no verdict after 0.5 s" in waiting.stderr


async def test_watch_follows_a_job_live(js, subjects, pool, site_config_file):
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrtci.services.cli.main", "watch", job, "-c", str(site_config_file),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=PROJECT_ROOT,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert first.decode().startswith("# job queued")  # subscribed: now it runs
        await publish(js, subjects, started(job))
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert "job.started" in line.decode()
        # The real order: the event, then the results service's row. (Row first, the
        # watcher could reach its verdict before the event and never show it.)
        await publish(js, subjects, finished(job, result=JobResult.ERROR,
                                             error_code=ErrorCode.LAB_LOST))
        await _finish_job(pool, job, "error", 1, None, error_code=ErrorCode.LAB_LOST)
        rest = (await asyncio.wait_for(proc.stdout.read(), 20)).decode()
        assert "job.finished" in rest and rest.rstrip().endswith("job error (lab_lost)")
        assert await asyncio.wait_for(proc.wait(), 20) == 2  # infrastructure error
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_events_since_durations_and_iso(js, subjects, site_config_file):
    published = await _publish_samples(js, subjects)
    cfg = ["-c", str(site_config_file)]
    # The samples are published now: 2h ago includes all, a future ISO time none.
    assert len(run_cli("events", "--since", "2h", *cfg).stdout.splitlines()) == len(published)
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert run_cli("events", "--since", future, *cfg).stdout == ""
    bad = run_cli("events", "--since", "yesterday", *cfg, check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "--since: 'yesterday' is not a duration" in bad.stderr


async def test_events_firmware_includes_its_jobs(js, subjects, pool, site_config_file):
    await _publish_samples(js, subjects)
    lines = run_cli("events", "--firmware", "fw1", "-c", str(site_config_file)).stdout
    kinds = [line.split()[1] for line in lines.splitlines()]
    # The firmware's own events, and job1's (known from its job.created event).
    assert sorted(kinds) == sorted([
        "firmware.state", "firmware.cancel_requested", "firmware.retry_requested",
        "job.created", "job.started", "job.progress", "job.finished", "job.cancelled",
        "job.retry_requested", "job.cancel_requested"])

    # A job the database knows, whose job.created is not in the stream any more.
    factory = Factory(pool)
    firmware = await factory.firmware()
    job = await factory.job(firmware)
    await publish(js, subjects, started(job))
    lines = run_cli("events", "--firmware", firmware, "-c", str(site_config_file)).stdout
    assert [line.split()[1] for line in lines.splitlines()] == ["job.started"]


async def test_unknown_ids_and_bad_arguments_are_clear_errors(pool, js, site_config_file):
    cfg = ["-c", str(site_config_file)]
    for noun in ("job", "firmware"):
        for verb in ("retry", "cancel"):
            result = run_cli(noun, verb, "nosuch", *cfg, check=False)
            assert result.returncode == 1, result.stdout
            assert f"no {noun} 'nosuch'" in result.stderr and "requested" not in result.stdout
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    assert "requested" in run_cli("job", "retry", job, *cfg).stdout

    export = run_cli("kcidb", "export", "--since", "bogus", *cfg, check=False)
    assert export.returncode == 1 and "Traceback" not in export.stderr
    assert "--since: 'bogus'" in export.stderr
    minor = run_cli("kcidb", "export", "--since", "1h", "--minor", "7", *cfg, check=False)
    assert minor.returncode == 2 and "invalid choice" in minor.stderr
