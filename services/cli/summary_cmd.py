"""``wrtci summary FIRMWARE``: per device type, tests by status, regressions, incidents."""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from wrtci.services import db
from wrtci.services.cli.common import add_command, cli_config
from wrtci.services.summary import FirmwareSummary, firmware_summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "summary", run_summary, "results summary of a firmware")
    parser.add_argument("firmware", help="firmware (checkout) id")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


async def _summary(args: argparse.Namespace) -> FirmwareSummary | None:
    conn = await db.connect(cli_config(args).database)
    try:
        return await firmware_summary(conn, args.firmware)
    finally:
        await conn.close()


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(counts.items())) or "-"


def format_summary(summary: FirmwareSummary) -> str:
    lines = [f"{summary.firmware_id}  {summary.version} ({summary.channel}, {summary.state})",
             f"tests: {_counts(summary.tests)}"]
    for dtype in summary.device_types:
        lines.append(f"  {dtype.device_type}: jobs {_counts(dtype.jobs)}; "
                     f"tests {_counts(dtype.tests)}")
        lines += [f"    REGRESSION {r.path} (last passed on {r.last_passing_checkout_id})"
                  for r in dtype.regressions]
        lines += [f"    flaky failure {r.path}" for r in dtype.flaky_failures]
        lines += [f"    fixed {r.path}" for r in dtype.fixed]
        lines += [f"    incident {i.title or i.issue_id} [{i.test_id or i.job_id}]"
                  for i in dtype.incidents]
    return "\n".join(lines)


def run_summary(args: argparse.Namespace) -> int:
    summary = asyncio.run(_summary(args))
    if summary is None:
        print(f"wrtci: no firmware {args.firmware!r}", file=sys.stderr)
        return 1
    if args.json:
        print(msgspec.json.encode(summary).decode())
    else:
        print(format_summary(summary))
    return 0
