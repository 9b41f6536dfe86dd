"""``wrtci drain [--wait]`` and ``wrtci resume``: let running jobs finish, start no new one.

``drain`` pauses the scheduler (no new firmware is fanned out) and holds every
queued job back from the labs (services/scheduler/hold.py): devices finish
what they run and take nothing new. ``--wait`` returns once no job is running
any more — the moment to upgrade, KernelCI's production-update procedure.
``resume`` lifts both: the queued jobs start, the waiting firmware is scheduled.
(``wrtci scheduler drain`` is the other kind: it waits until the queue is empty.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from nats.js import JetStreamContext

from wrtci.services import db
from wrtci.services.cli.common import (
    CliConfig,
    add_command,
    cli_config,
    nats_connection,
)
from wrtci.services.scheduler.control import write_control
from wrtci.services.scheduler.hold import JobsInFlight, hold_jobs, release_jobs


def add_parser(sub: argparse._SubParsersAction) -> None:
    drain = add_command(sub, "drain", lambda a: asyncio.run(_drain(a)),
                        "let running jobs finish and start no new one")
    drain.add_argument("--wait", action="store_true", help="return once no job is running")
    drain.add_argument("--timeout", type=float, default=3600.0,
                       help="with --wait: give up after this many seconds (exit 1)")
    drain.add_argument("--reason", default="", help="shown in status and logs")
    drain.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    add_command(sub, "resume", lambda a: asyncio.run(_resume(a)),
                "start queued jobs and new firmware again")


async def running_jobs(config: CliConfig) -> int:
    conn = await db.connect(config.database)
    try:
        return await conn.fetchval("SELECT count(*) FROM jobs WHERE state = 'running'")
    finally:
        await conn.close()


def _describe(running: int, flight: JobsInFlight) -> str:
    return (f"{running} jobs running ({flight.taken} taken by labs), "
            f"{flight.waiting} queued and held")


async def _hold(js: JetStreamContext, config: CliConfig) -> tuple[int, JobsInFlight]:
    # Every round: a job consumer that appeared since (a new device type) is held too.
    flight = await hold_jobs(js, config.nats.subjects)
    return await running_jobs(config), flight


async def _drain(args: argparse.Namespace) -> int:
    config = cli_config(args)
    subjects = config.nats.subjects
    async with nats_connection(config.nats) as nc:
        js = nc.jetstream()
        await write_control(js, subjects, paused=True, reason=args.reason or "drain",
                            jobs_held=True)
        running, flight = await _hold(js, config)
        print("draining: no new firmware is scheduled and labs start no queued job; "
              + _describe(running, flight), flush=True)
        if not args.wait:
            print("`wrtci drain --wait` waits for the running jobs; `wrtci resume` ends it")
            return 0
        deadline = time.monotonic() + args.timeout
        last = ""
        while running or flight.taken:
            if time.monotonic() > deadline:
                print(f"still {_describe(running, flight)} after {args.timeout:.0f} s",
                      file=sys.stderr)
                return 1
            await asyncio.sleep(args.interval)
            running, flight = await _hold(js, config)
            line = _describe(running, flight)
            if line != last:
                print(line, flush=True)
                last = line
    print(f"drained: no job running ({flight.waiting} queued and held); upgrade, then "
          "`wrtci resume`", flush=True)
    return 0


async def _resume(args: argparse.Namespace) -> int:
    config = cli_config(args)
    async with nats_connection(config.nats) as nc:
        js = nc.jetstream()
        await write_control(js, config.nats.subjects, paused=False)
        flight = await release_jobs(nc, js, config.nats.subjects)
    print(f"resumed: {flight.waiting} queued jobs are open to the labs again, and new "
          "firmware is scheduled")
    return 0
