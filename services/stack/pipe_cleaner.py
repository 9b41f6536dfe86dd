"""``wrtci pipe-cleaner``: does the whole installation work? One smoke firmware through it.

Against a running installation (its site file), the pipe cleaner stores the
virtual lab's firmware in object storage and records and announces it as an
upload would (``services.trigger.record``), under a new firmware id each
time. Then it follows the firmware until it is done and checks what came
out: every job passed, the tests are stored and none failed, and each job's
console log is in object storage. Exit 0 when all of that holds within the
timeout, else 1 with the reason — KernelCI's pipe cleaner after an upgrade.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import TextIO

import asyncpg
import msgspec

from wrtci.core.runtime import EventPublisher, connect_nats
from wrtci.proto.events import FirmwareDiscoveredData
from wrtci.proto.model import Image, SourceKind
from wrtci.proto.storage import firmware_object_key
from wrtci.proto.subjects import PriorityClass
from wrtci.services import db
from wrtci.services.cli.common import CliConfig
from wrtci.services.scheduler.control import read_control
from wrtci.services.storage import minio_client
from wrtci.services.trigger.images import discovered_event_id, image_id
from wrtci.services.trigger.record import record_and_announce

SUBMITTER = "pipe-cleaner"


class SmokeFirmware(msgspec.Struct, frozen=True, kw_only=True):
    image: Path
    version: str
    revision: str
    target: str = "x86"
    subtarget: str = "64"
    profile: str = "generic"


class Verdict(msgspec.Struct, kw_only=True):
    done: bool = False
    passed: bool = False
    reason: str = ""
    lines: list[str] = []


def new_firmware_id(now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"wrtci:pipe-cleaner:{stamp}-{uuid.uuid4().hex[:8]}"


def firmware_data(firmware_id: str, smoke: SmokeFirmware, sha256: str,
                  size: int) -> FirmwareDiscoveredData:
    name = smoke.image.name
    image = Image(id=image_id(firmware_id, smoke.target, smoke.subtarget, smoke.profile, name),
                  target=smoke.target, subtarget=smoke.subtarget, profile=smoke.profile,
                  name=name, type="rootfs", filesystem="initramfs", sha256=sha256, size=size,
                  object_key=firmware_object_key(firmware_id, name))
    return FirmwareDiscoveredData(
        firmware_id=firmware_id, source_kind=SourceKind.UPLOAD,
        priority_class=PriorityClass.CUSTOM, channel="custom", version=smoke.version,
        revision=smoke.revision, images=[image], submitter=SUBMITTER)


async def push(config: CliConfig, smoke: SmokeFirmware, sha256: str) -> str:
    """Store the image, record and announce the firmware; returns its id."""
    firmware_id = new_firmware_id()
    data = firmware_data(firmware_id, smoke, sha256, smoke.image.stat().st_size)
    client = minio_client(config.storage)
    key = data.images[0].object_key
    if key is None:
        raise RuntimeError(f"smoke firmware {firmware_id}: its image has no object key")
    await asyncio.to_thread(client.fput_object, config.storage.bucket, key, str(smoke.image),
                            content_type="application/octet-stream")
    pool = await db.create_pool(config.database)
    nc = await connect_nats(config.nats, "wrtci-pipe-cleaner", max_reconnect_attempts=0)
    try:
        await record_and_announce(pool, EventPublisher(nc.jetstream(), config.nats.subjects),
                                  data, event_id=discovered_event_id(firmware_id))
    finally:
        await nc.drain()
        await db.close_pool(pool)
    return firmware_id


async def judge(conn: asyncpg.Connection, config: CliConfig, firmware_id: str) -> Verdict:
    """What the installation made of the firmware so far."""
    state = await conn.fetchval("SELECT state FROM checkouts WHERE id = $1", firmware_id)
    if state != "done":
        return Verdict(reason=f"firmware {state or 'not recorded'}")
    jobs = await conn.fetch(
        """SELECT j.id, j.device_type, j.result, j.error_code, a.lab, a.device, a.log_key,
                  a.state AS attempt_state,
                  (SELECT count(*) FROM tests t WHERE t.job_id = j.id AND t.attempt = j.attempt)
                      AS tests,
                  (SELECT count(*) FROM tests t WHERE t.job_id = j.id AND t.attempt = j.attempt
                      AND t.status IN ('FAIL', 'ERROR')) AS failed
           FROM jobs j LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt
           WHERE j.checkout_id = $1 ORDER BY j.id""", firmware_id)
    if not jobs:
        return Verdict(done=True, reason="no job ran (no lab with the smoke firmware's device?)")
    lines, problems, waiting = [], [], []
    client = minio_client(config.storage)
    for job in jobs:
        where = f"{job['lab']}/{job['device']}" if job["lab"] else "no device"
        size = None
        if job["log_key"]:
            try:
                stat = await asyncio.to_thread(client.stat_object, config.storage.bucket,
                                               job["log_key"])
                size = stat.size
            except Exception:  # not (yet) stored
                size = None
        lines.append(f"  {job['id']} {job['device_type']} on {where}: {job['result']}"
                     f"{' / ' + job['error_code'] if job['error_code'] else ''}, "
                     f"{job['tests']} tests ({job['failed']} failed), console log "
                     + (f"{size} bytes" if size else "not stored"))
        if job["result"] != "pass":
            problems.append(f"{job['id']} ended {job['result']}")
        elif job["failed"]:
            problems.append(f"{job['id']}: {job['failed']} tests failed")
        elif job["attempt_state"] != "done" or not job["tests"] or not size:
            waiting.append(job["id"])  # results and the log follow the job's end
    if problems:
        return Verdict(done=True, reason="; ".join(problems), lines=lines)
    if waiting:
        return Verdict(reason=f"results or console log of {len(waiting)} job(s) not stored yet",
                       lines=lines)
    return Verdict(done=True, passed=True, lines=lines)


async def run_pipe_cleaner(config: CliConfig, smoke: SmokeFirmware, sha256: str, *,
                           timeout_s: float, interval_s: float = 1.0,
                           out: TextIO) -> int:
    nc = await connect_nats(config.nats, "wrtci-pipe-cleaner", max_reconnect_attempts=0)
    try:
        control = await read_control(nc.jetstream(), config.nats.subjects)
    finally:
        await nc.close()
    if control.paused or control.jobs_held:
        print("pipe-cleaner: FAILED: the installation is drained or paused "
              f"({control.reason or 'no reason given'}); `wrtci resume` first", file=out)
        return 1
    firmware_id = await push(config, smoke, sha256)
    print(f"pipe-cleaner: {firmware_id} ({smoke.image.name}, OpenWrt {smoke.version}) "
          f"announced; waiting up to {timeout_s:.0f} s", file=out, flush=True)
    deadline = asyncio.get_running_loop().time() + timeout_s
    conn = await db.connect(config.database)
    last = ""
    try:
        while True:
            verdict = await judge(conn, config, firmware_id)
            if verdict.reason != last and verdict.reason:
                print(f"pipe-cleaner: {verdict.reason}", file=out, flush=True)
                last = verdict.reason
            if verdict.done or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(interval_s)
    finally:
        await conn.close()
    for line in verdict.lines:
        print(line, file=out)
    if verdict.passed:
        print(f"pipe-cleaner: PASSED ({firmware_id})", file=out, flush=True)
        return 0
    why = verdict.reason if verdict.done else f"not done after {timeout_s:.0f} s: {last}"
    print(f"pipe-cleaner: FAILED: {why} ({firmware_id})", file=out, flush=True)
    return 1
