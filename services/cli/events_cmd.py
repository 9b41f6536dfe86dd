"""``wrtci events``: the event log, past and live, like ``nats stream view`` / ``nats sub``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
import time
from typing import TextIO

import asyncpg
import msgspec
import nats.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from wrtci.proto.events import (
    CloudEvent,
    DecodeError,
    DeviceHealthChanged,
    FirmwareDiscovered,
    FirmwareStateChanged,
    JobCreated,
    JobFinished,
    JobProgress,
    LabOnline,
    decode,
    object_ids,
)
from wrtci.services import db
from wrtci.services.cli.common import (
    TIME_HELP,
    CliConfig,
    add_command,
    cli_config,
    nats_connection,
    parse_time,
)


class EventFilter(msgspec.Struct, kw_only=True):
    types: list[str] = []
    firmware: str | None = None
    job: str | None = None
    device: str | None = None
    lab: str | None = None
    firmware_jobs: set[str] = msgspec.field(default_factory=set)
    """With ``firmware``: its jobs, whose events carry only the job id. Filled from the
    database at start and from each ``job.created`` seen (a job created while following)."""

    def matches(self, event: CloudEvent) -> bool:
        ids = object_ids(event)
        if self.firmware is not None:
            if isinstance(event, JobCreated) and event.data.firmware_id == self.firmware:
                self.firmware_jobs.add(event.data.job_id)
            if ids.get("firmware_id") != self.firmware and \
                    ids.get("job_id") not in self.firmware_jobs:
                return False
        if self.types and not any(
            event.kind == t or event.kind.startswith(t + ".") for t in self.types
        ):
            return False
        wanted = {"job_id": self.job, "device": self.device, "lab": self.lab}
        return all(value is None or ids.get(key) == value for key, value in wanted.items())


async def firmware_jobs(config: CliConfig, firmware_id: str) -> set[str]:
    """The jobs the database knows for a firmware (none when it cannot be reached: the
    ``job.created`` events in the stream still name them)."""
    try:
        conn = await asyncio.wait_for(db.connect(config.database), 5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        print(f"wrtci: database unreachable ({exc}); a job's events are matched through "
              "its job.created event only", file=sys.stderr)
        return set()
    try:
        rows = await conn.fetch("SELECT id FROM jobs WHERE checkout_id = $1", firmware_id)
    finally:
        await conn.close()
    return {row["id"] for row in rows}


def what_happened(event: CloudEvent) -> str:
    """The gist of an event in a few words, for one-line views."""
    data = event.data  # type: ignore[attr-defined]
    if isinstance(event, FirmwareStateChanged):
        return f"-> {data.state}"
    if isinstance(event, JobCreated):
        return f"attempt {data.attempt}, priority {data.priority}"
    if isinstance(event, JobProgress):
        return data.stage
    if isinstance(event, JobFinished):
        error = f"/{data.error_code}" if data.error_code else ""
        return f"{data.result}{error}, {len(data.tests)} tests"
    if isinstance(event, DeviceHealthChanged):
        return f"{data.health} ({data.state})"
    if isinstance(event, LabOnline):
        return f"{len(data.devices)} devices"
    if isinstance(event, FirmwareDiscovered):
        return f"{data.source_kind} {data.version}, {len(data.images)} images"
    return ""


async def next_event(sub, within_s: float) -> tuple[CloudEvent, str] | None:
    """The next message of ``sub`` that decodes as an event, with its subject; None when
    none comes within ``within_s`` seconds (messages that do not decode are passed over)."""
    end = time.monotonic() + within_s
    while (left := end - time.monotonic()) > 0:
        try:
            msg = await sub.next_msg(timeout=left)
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        try:
            return decode(msg.data), msg.subject
        except DecodeError:
            continue
    return None


def format_line(event: CloudEvent, subject: str) -> str:
    ids = " ".join(f"{k.removesuffix('_id')}={v}" for k, v in object_ids(event).items())
    when = event.time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    what = what_happened(event)
    return f"{when}  {event.kind:20} {what + '  ' if what else ''}{ids}  [{subject}]"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub, "events", run_events, "show past and live events",
        description="Past events of the EVENTS stream, then (with --follow) new ones.",
    )
    parser.add_argument("--follow", "-f", action="store_true", help="keep showing new events")
    parser.add_argument("--new", action="store_true", help="only events from now on")
    parser.add_argument("--since", help=f"start at a time: {TIME_HELP}")
    parser.add_argument("--type", "-t", action="append", default=[], dest="types",
                        help="event type or family (firmware, job.finished); repeatable")
    parser.add_argument("--firmware", help="only events of this firmware id")
    parser.add_argument("--job", help="only events of this job id")
    parser.add_argument("--device", help="only events of this device")
    parser.add_argument("--lab", help="only events of this lab")
    parser.add_argument("--json", action="store_true",
                        help="print each event as its CloudEvents JSON, one per line")
    parser.add_argument("--idle-timeout", type=float, default=1.0, help=argparse.SUPPRESS)


async def stream_events(args: argparse.Namespace, out: TextIO) -> int:
    config = cli_config(args)
    subjects = config.nats.subjects
    wanted = EventFilter(types=args.types, firmware=args.firmware, job=args.job,
                         device=args.device, lab=args.lab)
    consumer = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    if args.new:
        consumer = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    elif args.since:
        consumer = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME,
                                  opt_start_time=parse_time(args.since))
    if args.firmware:
        wanted.firmware_jobs = await firmware_jobs(config, args.firmware)
    shown = 0
    async with nats_connection(config.nats) as nc:
        js = nc.jetstream()
        sub = await js.subscribe(f"{subjects.prefix}.>", stream=subjects.events_stream,
                                 ordered_consumer=True, config=consumer)
        while True:
            try:
                msg = await sub.next_msg(timeout=args.idle_timeout)
            except (TimeoutError, nats.errors.TimeoutError):
                if args.follow:
                    continue
                break
            try:
                event = decode(msg.data)
            except DecodeError as exc:
                print(f"# undecodable message on {msg.subject}: {exc}", file=out)
                continue
            if wanted.matches(event):
                if args.json:
                    print(msg.data.decode(), file=out)
                else:
                    print(format_line(event, msg.subject), file=out)
                out.flush()
                shown += 1
            if not args.follow and msg.metadata.num_pending == 0:
                break
        await sub.unsubscribe()
    return shown


def run_events(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(stream_events(args, sys.stdout))
    return 0
