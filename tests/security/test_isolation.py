"""Lab isolation on a real nats-server running what `wrtci lab add` generated.

The real wrtci-lab runs under its generated NKey credentials; another lab's
credentials are refused everything that would touch its work, by a NATS
permission or by the services' identity check; `wrtci lab revoke` cuts an
online lab off and its job goes to another lab.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import msgspec
import pytest

from tests.helpers import eventually, read_object
from tests.isolation_support import (
    OTHER,
    X86,
    add_lab,
    central_services,
    fake_firmware,
    lab_connection,
    lab_process,
    publish_firmware,
    wrtci,
)
from tests.lab_helpers import lab_config
from wrtci.core.publisher import new_key
from wrtci.core.runtime import EventPublisher, connect_nats
from wrtci.proto import events as ev
from wrtci.proto.model import JobResult
from wrtci.proto.storage import job_log_key
from wrtci.proto.subjects import Priority
from wrtci.services import identity


def _job(pool, **where):
    async def check():
        async with pool.acquire() as conn:
            row = await conn.fetchrow("SELECT id, state, lab, attempt, result FROM jobs")
        if row is not None and all(row[k] == v for k, v in where.items()):
            return row
        return None
    return check


def _lab_cli(command: str, config_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wrtci.lab_daemon.cli", command, "--config",
                           str(config_path)], capture_output=True, text=True, timeout=60)


async def _attack(nc, subjects, job_id: str) -> dict[str, str]:
    """Lab A's attempts on lab B's work; returns the subject each should be refused on."""
    jobs = subjects.jobs_stream
    consumer = subjects.job_consumer(Priority.SNAPSHOT, X86)
    devices, labs = subjects.devices_bucket, subjects.labs_bucket
    publish = {
        "publish under lab B's subjects": subjects.lab_event("lab-b", "job.finished"),
        "publish B's log": subjects.log_chunk("lab-b", job_id),
        "publish a firmware event": subjects.event("firmware.discovered"),
        "publish a job": subjects.job(Priority.SNAPSHOT, X86),
        "publish a central job event": subjects.event("job.finished"),
        "fetch from another type's consumer": f"$JS.API.CONSUMER.MSG.NEXT.{jobs}.{consumer}",
        "ack on another type's consumer": f"$JS.ACK.{jobs}.{consumer}.1.1.1.1.1.0",
        "create a consumer": f"$JS.API.CONSUMER.CREATE.{jobs}.mine",
        "write B's device key": f"$KV.{devices}.lab-b.dut1",
        "write B's lab key": f"$KV.{labs}.lab-b",
        "read B's keys by message get": f"$JS.API.STREAM.MSG.GET.KV_{devices}",
        "read B's key directly": f"$JS.API.DIRECT.GET.KV_{devices}.$KV.{devices}.lab-b.dut1",
    }
    subscribe = {
        "read B's events": subjects.lab_scope("lab-b"),
        "read B's inbox": f"{subjects.lab_inbox_prefix('lab-b')}.>",
        "read every inbox": "_INBOX.>",
        "read job deliveries of another type": subjects.jobs_of_type(X86),
        # Its own type's jobs come only as answers to its pull requests.
        "subscribe to its own type's job subjects": subjects.jobs_of_type(OTHER),
        "read central events": subjects.event("job.finished"),
    }
    for subject in publish.values():
        await nc.publish(subject, b"forged", reply=nc.new_inbox())
    for subject in subscribe.values():
        await nc.subscribe(subject)
    await nc.flush()
    return publish | subscribe


async def test_real_lab_runs_under_generated_credentials_and_another_lab_cannot_touch_it(
        secured, tmp_path, pool, database_config, storage_config, fake_suite,
        fake_firmware_url):
    subjects = secured.subjects
    lab_b = await add_lab(secured, "lab-b", X86)
    lab_a = await add_lab(secured, "lab-a", OTHER)
    listing = await wrtci("lab", "list", "-c", str(secured.site))
    assert "lab-a" in listing.stdout and "lab-b" in listing.stdout and X86 in listing.stdout
    before = dict(identity.REJECTED)
    # The job runs until the attack is over: the test creates the release file.
    release = tmp_path / "release-the-job"
    config = lab_config(lab_b, tmp_path / "work", fake_suite, name="lab-b",
                        env={"FAKE_SLEEP": "600", "FAKE_RELEASE": str(release)})

    async with central_services(secured, tmp_path, database_config, storage_config), \
            lab_process(config, tmp_path, pool) as config_path:
        check = await asyncio.to_thread(_lab_cli, "check", config_path)
        assert check.returncode == 0, check.stdout + check.stderr

        async def healthy():
            # the device's first health check runs the suite under lab-b's credentials
            status = await asyncio.to_thread(_lab_cli, "status", config_path)
            assert status.returncode == 0, status
            return "dut1: state=idle health=healthy" in status.stdout

        await eventually(healthy, "lab-b's device passes its health check")

        await publish_firmware(secured, fake_firmware(X86, fake_firmware_url, "r1-iso"))
        job = await eventually(_job(pool, state="running", lab="lab-b"), "lab-b runs the job")

        errors: list[str] = []
        async with lab_connection(lab_a, "lab-a", errors) as nc:
            refused = await _attack(nc, subjects, job["id"])
            # Forgeries under A's own subjects, which A may publish on.
            publisher = EventPublisher(nc.jetstream(), subjects, key=new_key())
            for event in (
                ev.JobStarted.build(ev.JobStartedData(
                    job_id=job["id"], attempt=1, lab="lab-a", device="x"), source="a"),
                ev.JobFinished.build(ev.JobFinishedData(
                    job_id=job["id"], attempt=1, lab="lab-a", device="x",
                    result=JobResult.FAIL), source="a"),
                ev.LogChunk.build(ev.LogChunkData(
                    job_id=job["id"], attempt=1, lab="lab-a", device="x", seq=0,
                    text="forged console\n", final=True), source="a"),
            ):
                await publisher.publish(event)
            await eventually(lambda: asyncio.sleep(0, result=all(
                any(subject.lower() in e for e in errors) for subject in refused.values())),
                "every permission violation", within_s=10)

        def rejected(service: str, kind: str) -> int:
            return identity.REJECTED[(service, kind)] - before.get((service, kind), 0)

        await eventually(lambda: asyncio.sleep(0, result=rejected("timeout", "job.started") >= 1
                                                and rejected("timeout", "job.finished") >= 1
                                                and rejected("logs", "log.chunk") >= 1),
                         "the services rejecting the forgeries", within_s=20)
        release.touch()
        done = await eventually(_job(pool, state="done"), "the job done", within_s=120)

    assert (done["result"], done["lab"], done["attempt"]) == ("pass", "lab-b", 1)
    # The console (empty: the fake suite boots nothing) is B's, not A's forged text.
    console = read_object(storage_config, job_log_key(job["id"], 1, "console")).decode()
    assert "forged" not in console
    pytest_log = read_object(storage_config, job_log_key(job["id"], 1, "pytest.log")).decode()
    assert "3 passed" in pytest_log
    log_text = (tmp_path / "lab-b.log").read_text()
    assert "Permissions Violation" not in log_text, log_text[-3000:]


async def test_revoke_cuts_an_online_lab_off_and_its_job_goes_to_another_lab(
        secured, tmp_path, pool, database_config, storage_config, fake_suite,
        fake_firmware_url):
    lab_a = await add_lab(secured, "lab-a", X86)
    lab_b = await add_lab(secured, "lab-b", X86)
    # Lab A's job outlasts the test. Revoked, lab A can hand nothing back and reach
    # nothing when it is stopped at the end: a short grace and short NATS timeouts let
    # it exit in seconds, not after the default 60 s grace and a 5 s wait per request.
    config_a = lab_config(msgspec.structs.replace(lab_a, request_timeout_s=1.0),
                          tmp_path / "work-a", fake_suite, name="lab-a",
                          env={"FAKE_SLEEP": "600"}, shutdown_grace_s=0.5)
    config_b = lab_config(lab_b, tmp_path / "work-b", fake_suite, name="lab-b")
    async with central_services(secured, tmp_path, database_config, storage_config,
                                logs=False), lab_process(config_a, tmp_path, pool):
        await publish_firmware(secured, fake_firmware(X86, fake_firmware_url, "r2-iso"))
        job = await eventually(_job(pool, state="running", lab="lab-a"), "lab-a runs the job")
        async with lab_process(config_b, tmp_path, pool):
            result = await wrtci("lab", "revoke", "lab-a", "-c", str(secured.site))
            assert result.returncode == 0, result.stderr
            assert f"job {job['id']}: retried" in result.stdout

            async def a_gone():
                names = await asyncio.to_thread(secured.connections)
                return not any("lab-a" in name for name in names)

            await eventually(a_gone, "lab-a's connection closed", within_s=20)
            done = await eventually(_job(pool, state="done"), "the job done by lab-b",
                                    within_s=120)

    assert (done["result"], done["lab"], done["attempt"]) == ("pass", "lab-b", 2)
    assert "authorization violation" in (tmp_path / "lab-a.log").read_text().lower()
    listing = await wrtci("lab", "list", "-c", str(secured.site))
    assert any(line.startswith("lab-a") and "revoked" in line
               for line in listing.stdout.splitlines())
    # A revoked lab cannot come back with its old key.
    with pytest.raises(Exception):  # noqa: B017 (nats-py raises several kinds)
        await connect_nats(lab_a, "again", max_reconnect_attempts=0)
