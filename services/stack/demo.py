"""``wrtci up --demo``: a firmware carried from the downloads mirror to stored results.

The trigger finds the virtual lab's firmware as a stable release on the local
mirror, the scheduler queues a job for ``x86/64/generic``, the lab daemon boots
the QEMU device with it and runs the suite, the log writer stores the console
log, the results service records the tests. The demo follows the firmware's
events as they happen and, once the firmware is done, prints the per-device
summary and where the console log is kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from nats.js.api import DeliverPolicy

from wrtci.core.runtime import connect_nats
from wrtci.core.swallow import logged
from wrtci.proto.events import (
    CloudEvent,
    FirmwareStateChanged,
    JobCreated,
    object_ids,
)
from wrtci.proto.model import FirmwareState, JobResult
from wrtci.services import db
from wrtci.services.cli.events_cmd import format_line, next_event
from wrtci.services.cli.summary_cmd import format_summary
from wrtci.services.stack import mirror
from wrtci.services.stack.up import Stack
from wrtci.services.summary import firmware_summary

log = logging.getLogger(__name__)

DEMO_TIMEOUT_S = 20 * 60.0
RESULTS_SETTLE_S = 60.0


class DemoFailed(RuntimeError):
    pass


async def follow_firmware(stack: Stack, firmware_id: str, timeout_s: float) -> set[str]:
    """Print the firmware's events until it is done; returns its job ids."""
    config = stack.config
    subjects = config.nats.subjects
    jobs: set[str] = set()
    nc = await connect_nats(config.nats, "wrtci-demo")
    try:
        sub = await nc.jetstream().subscribe(
            f"{subjects.prefix}.>", stream=subjects.events_stream, ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise DemoFailed(f"{firmware_id} not done after {timeout_s:.0f} s")
            got = await next_event(sub, min(left, 5.0))
            if got is None:
                continue
            event, subject = got
            if not _belongs(event, firmware_id, jobs):
                continue
            print(f"demo: {format_line(event, subject)}", file=stack.out, flush=True)
            if isinstance(event, FirmwareStateChanged) and event.data.state is FirmwareState.DONE:
                await sub.unsubscribe()
                return jobs
    finally:
        await nc.close()


def _belongs(event: CloudEvent, firmware_id: str, jobs: set[str]) -> bool:
    if isinstance(event, JobCreated) and event.data.firmware_id == firmware_id:
        jobs.add(event.data.job_id)
        return True
    ids = object_ids(event)
    return ids.get("firmware_id") == firmware_id or ids.get("job_id") in jobs


async def wait_for_results(stack: Stack, jobs: set[str]) -> list:
    """The results service writes from the same events: wait until every attempt is in."""
    conn = await db.connect(stack.config.database)
    try:
        deadline = asyncio.get_running_loop().time() + RESULTS_SETTLE_S
        while True:
            rows = await conn.fetch(
                """SELECT j.id, j.device_type, j.result, j.error_code, a.lab, a.device,
                          a.log_key, (SELECT count(*) FROM tests t
                                      WHERE t.job_id = j.id AND t.attempt = j.attempt) AS tests
                   FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt
                   WHERE j.id = ANY($1::text[]) AND a.state = 'done'""", sorted(jobs))
            if len(rows) == len(jobs):
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise DemoFailed(f"results of {len(jobs) - len(rows)} job(s) not stored")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def _stored_size(stack: Stack, key: str) -> int | None:
    with logged("stored console log not found", log, key=key):
        return stack.minio().stat_object(stack.config.storage.bucket, key).size
    return None


async def run_demo(stack: Stack) -> int:
    out = stack.out
    if stack.firmware is None:
        print("demo: no virtual lab here (see the log above); nothing to test", file=out)
        return 1
    firmware_id = mirror.firmware_id(stack.firmware)
    started = dt.datetime.now(dt.UTC)
    print(f"\ndemo: OpenWrt {stack.firmware.version} ({stack.firmware.revision}) is on the "
          f"mirror {stack.mirror_url}; following {firmware_id}", file=out, flush=True)
    try:
        jobs = await follow_firmware(stack, firmware_id, DEMO_TIMEOUT_S)
        rows = await wait_for_results(stack, jobs)
    except DemoFailed as exc:
        print(f"demo: FAILED: {exc}", file=out, flush=True)
        return 1
    conn = await db.connect(stack.config.database)
    try:
        summary = await firmware_summary(conn, firmware_id)
    finally:
        await conn.close()
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    print(f"\ndemo: firmware done in {elapsed:.0f} s; results stored in PostgreSQL:\n",
          file=out)
    if summary is not None:
        print(format_summary(summary), file=out)
    for row in rows:
        size = _stored_size(stack, row["log_key"]) if row["log_key"] else None
        where = f"s3://{stack.config.storage.bucket}/{row['log_key']}" if row["log_key"] else "-"
        print(f"\n  job {row['id']}\n    on {row['lab']}/{row['device']} ({row['device_type']}):"
              f" {row['result']}{' / ' + row['error_code'] if row['error_code'] else ''},"
              f" {row['tests']} tests\n    console log {where}"
              f"{f' ({size} bytes)' if size is not None else ' (not stored)'}", file=out)
    passed = bool(rows) and all(row["result"] == JobResult.PASS for row in rows)
    if not rows:
        print("\ndemo: no job ran for the firmware (no lab with x86/64/generic?)", file=out)
    print(f"\ndemo: {'PASSED' if passed else 'FAILED'}  (wrtci summary {firmware_id})",
          file=out, flush=True)
    return 0 if passed else 1
