"""``wrtci watch FIRMWARE|JOB``: follow live until the verdict, and exit by it.

Exit codes follow kci-dev's (``kci-dev results compare``): 0 pass, 1 a test
failed (or a regression), 2 no verdict from the firmware: an infrastructure
error, a cancelled job, a firmware no lab could test, an unknown id, or the
``--timeout`` passed. Progress goes to stdout as ``wrtci events`` lines.

The database says when it is over; the EVENTS stream only wakes the command
up (with a slow poll as a safety net), so nothing is missed between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import sys
import time
from typing import TextIO

import asyncpg
import msgspec
import nats.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from wrtci.services import db
from wrtci.services.cli.common import add_config_argument, cli_config, nats_connection
from wrtci.services.cli.events_cmd import EventFilter, format_line, next_event
from wrtci.services.db.rows import columns_of, fetch_row, fetch_rows


class Verdict(enum.IntEnum):
    PASS = 0
    FAIL = 1
    NO_VERDICT = 2


class JobOutcome(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    device_type: str
    state: str
    result: str | None
    error_code: str | None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """Where a watched firmware or job stands; ``verdict`` is None while it runs."""

    verdict: Verdict | None
    message: str


def job_verdict(job: JobOutcome) -> Verdict | None:
    if job.state != "done":
        return None
    if job.result == "fail":
        return Verdict.FAIL
    if job.result == "error":
        return Verdict.NO_VERDICT
    return Verdict.PASS  # pass, or skip: nothing failed


def _describe_job(job: JobOutcome) -> str:
    outcome = job.result or job.state
    return f"{outcome} ({job.error_code})" if job.error_code else outcome


def firmware_outcome(state: str, jobs: list[JobOutcome], regressions: int) -> Outcome:
    """The firmware's verdict once it is done: fail wins over infra errors over pass."""
    counts: dict[str, int] = {}
    for job in jobs:
        key = job.result or job.state
        counts[key] = counts.get(key, 0) + 1
    tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no jobs"
    if regressions:
        tally += f", {regressions} regression{'s' if regressions > 1 else ''}"
    if state != "done":
        return Outcome(verdict=None, message=f"firmware {state}: {tally}")
    if not jobs:
        return Outcome(verdict=Verdict.NO_VERDICT,
                       message="no jobs: no lab has a device of this firmware's types")
    verdicts = [job_verdict(job) for job in jobs]
    if regressions or Verdict.FAIL in verdicts:
        return Outcome(verdict=Verdict.FAIL, message=f"fail: {tally}")
    if Verdict.NO_VERDICT in verdicts or None in verdicts:
        return Outcome(verdict=Verdict.NO_VERDICT, message=f"infrastructure error: {tally}")
    return Outcome(verdict=Verdict.PASS, message=f"pass: {tally}")


_JOB_COLUMNS = columns_of(JobOutcome)


async def identify(conn: asyncpg.Connection, object_id: str) -> str | None:
    if await conn.fetchval("SELECT 1 FROM checkouts WHERE id = $1", object_id):
        return "firmware"
    if await conn.fetchval("SELECT 1 FROM jobs WHERE id = $1", object_id):
        return "job"
    return None


async def current_outcome(conn: asyncpg.Connection, kind: str, object_id: str) -> Outcome:
    if kind == "job":
        job = await fetch_row(conn, JobOutcome, f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1",
                              object_id)
        return Outcome(verdict=job_verdict(job), message=f"job {_describe_job(job)}")
    state = await conn.fetchval("SELECT state FROM checkouts WHERE id = $1", object_id)
    jobs = await fetch_rows(conn, JobOutcome,
                            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE checkout_id = $1 ORDER BY id",
                            object_id)
    regressions = await conn.fetchval(
        """SELECT count(*) FROM regressions
            WHERE first_failing_checkout_id = $1 AND NOT flaky""", object_id)
    return firmware_outcome(state, jobs, regressions)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "watch", help="follow a firmware or a job until its verdict; exit 0/1/2",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("id", help="firmware id or job id")
    parser.add_argument("--timeout", type=float, default=None,
                        help="give up after this many seconds (exit 2)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print only the verdict, not the events")
    parser.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.set_defaults(func=run_watch)


async def watch(args: argparse.Namespace, out: TextIO) -> Verdict:
    config = cli_config(args)
    if args.timeout is not None and args.timeout <= 0:
        print("wrtci: --timeout must be positive", file=sys.stderr)
        return Verdict.NO_VERDICT
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    conn = await db.connect(config.database)
    try:
        kind = await identify(conn, args.id)
        if kind is None:
            print(f"wrtci: no firmware or job {args.id!r}", file=sys.stderr)
            return Verdict.NO_VERDICT
        wanted = EventFilter(firmware=args.id) if kind == "firmware" else EventFilter(job=args.id)
        if kind == "firmware":
            wanted.firmware_jobs = {r["id"] for r in await conn.fetch(
                "SELECT id FROM jobs WHERE checkout_id = $1", args.id)}
        subjects = config.nats.subjects
        async with nats_connection(config.nats) as nc:
            # Subscribe first, then read the state: an event between the two still wakes us.
            sub = await nc.jetstream().subscribe(
                f"{subjects.prefix}.>", stream=subjects.events_stream, ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW))
            last = ""
            while True:
                outcome = await current_outcome(conn, kind, args.id)
                if outcome.verdict is not None:
                    print(outcome.message, file=out, flush=True)
                    await sub.unsubscribe()
                    return outcome.verdict
                if outcome.message != last and not args.quiet:
                    print(f"# {outcome.message}", file=out, flush=True)
                last = outcome.message
                wait = args.poll
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        print(f"wrtci: no verdict after {args.timeout:g} s ({outcome.message})",
                              file=sys.stderr)
                        return Verdict.NO_VERDICT
                await _next_event(sub, wanted, wait, None if args.quiet else out)
    finally:
        await conn.close()


async def _next_event(sub, wanted: EventFilter, wait: float, out: TextIO | None) -> None:
    """Wait for one event of the watched object (shown), or until ``wait`` passes."""
    end = time.monotonic() + wait
    while (got := await next_event(sub, end - time.monotonic())) is not None:
        event, subject = got
        if wanted.matches(event):
            if out is not None:
                print(format_line(event, subject), file=out, flush=True)
            return


def run_watch(args: argparse.Namespace) -> int:
    try:
        return int(asyncio.run(watch(args, sys.stdout)))
    except KeyboardInterrupt:
        return int(Verdict.NO_VERDICT)
    except (OSError, TimeoutError, nats.errors.Error, asyncpg.PostgresError) as exc:
        # Not the firmware's fault: the services could not be asked.
        print(f"wrtci: cannot follow {args.id}: {exc!r}", file=sys.stderr)
        return int(Verdict.NO_VERDICT)
