"""``wrtci scheduler pause|drain|resume|status``: stop new scheduling for upgrades.

``pause`` stops the scheduler taking new firmware (events wait in the stream);
``drain`` pauses and then waits until no job is queued or running, like
KernelCI's production update; ``resume`` lets the waiting firmware through.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from wrtci.proto.subjects import Subjects
from wrtci.services import db
from wrtci.services.cli.common import (
    CliConfig,
    add_command,
    cli_config,
    command_group,
    nats_connection,
)
from wrtci.services.scheduler.control import INTAKE_CONSUMER, read_control, write_control


class PipelineStatus(msgspec.Struct, kw_only=True):
    paused: bool
    reason: str
    queued_jobs: int
    running_jobs: int
    firmware_events_waiting: int
    """New-work events the scheduler has not finished (waiting while paused, or handed
    back when the pause caught them in a fetch)."""

    @property
    def empty(self) -> bool:
        return self.queued_jobs == 0 and self.running_jobs == 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    commands = command_group(sub, "scheduler", "pause, drain, resume the scheduler")
    pause = add_command(commands, "pause", lambda a: _run(_pause(a)),
                        "take no new firmware until resumed")
    drain = add_command(commands, "drain", lambda a: _run(_drain(a)),
                        "pause, then wait until no job is left")
    add_command(commands, "resume", lambda a: _run(_resume(a)), "take new firmware again")
    add_command(commands, "status", lambda a: _run(_status(a)),
                "switch position and jobs in the pipeline")
    for command in (pause, drain):
        command.add_argument("--reason", default="", help="shown in status and logs")
    drain.add_argument("--timeout", type=float, default=3600.0,
                       help="give up after this many seconds (exit 1)")
    drain.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)


def _run(coro) -> int:
    return asyncio.run(coro)


async def pipeline_status(js: JetStreamContext, subjects: Subjects,
                          config: CliConfig) -> PipelineStatus:
    control = await read_control(js, subjects)
    try:
        info = await js.consumer_info(subjects.events_stream, INTAKE_CONSUMER)
        waiting = info.num_pending + info.num_ack_pending
    except NotFoundError:  # the scheduler never ran here
        waiting = 0
    conn = await db.connect(config.database)
    try:
        counts = dict(await conn.fetch(
            "SELECT state, count(*) FROM jobs WHERE state <> 'done' GROUP BY state"))
    finally:
        await conn.close()
    return PipelineStatus(paused=control.paused, reason=control.reason,
                          queued_jobs=counts.get("queued", 0),
                          running_jobs=counts.get("running", 0),
                          firmware_events_waiting=waiting)


def _describe(status: PipelineStatus) -> str:
    switch = f"paused ({status.reason})" if status.paused and status.reason else (
        "paused" if status.paused else "running")
    return (f"scheduler {switch}: {status.queued_jobs} jobs queued, "
            f"{status.running_jobs} running, {status.firmware_events_waiting} firmware events "
            "not yet scheduled")


async def _pause(args: argparse.Namespace) -> int:
    config = cli_config(args)
    async with nats_connection(config.nats) as nc:
        await write_control(nc.jetstream(), config.nats.subjects, paused=True,
                            reason=args.reason)
    print("scheduler paused: no new firmware is scheduled until `wrtci scheduler resume`")
    return 0


async def _resume(args: argparse.Namespace) -> int:
    config = cli_config(args)
    async with nats_connection(config.nats) as nc:
        await write_control(nc.jetstream(), config.nats.subjects, paused=False)
    print("scheduler resumed")
    return 0


async def _status(args: argparse.Namespace) -> int:
    config = cli_config(args)
    async with nats_connection(config.nats) as nc:
        status = await pipeline_status(nc.jetstream(), config.nats.subjects, config)
    print(_describe(status))
    return 0


async def _drain(args: argparse.Namespace) -> int:
    config = cli_config(args)
    subjects = config.nats.subjects
    deadline = time.monotonic() + args.timeout
    async with nats_connection(config.nats) as nc:
        js = nc.jetstream()
        await write_control(js, subjects, paused=True, reason=args.reason or "drain")
        print("scheduler paused; waiting for the jobs in the pipeline to finish", flush=True)
        last = ""
        empty_before = False
        while True:
            status = await pipeline_status(js, subjects, config)
            line = _describe(status)
            if line != last:
                print(line, flush=True)
                last = line
            # Empty twice in a row: a firmware event the pause caught mid-way has
            # had the time to queue its jobs (its handler finishes before pausing).
            if status.empty and empty_before:
                print("drained: no job queued or running; upgrade, then "
                      "`wrtci scheduler resume`")
                return 0
            empty_before = status.empty
            if time.monotonic() > deadline:
                print(f"not drained after {args.timeout:.0f} s", file=sys.stderr)
                return 1
            await asyncio.sleep(args.interval)
