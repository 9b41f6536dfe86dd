"""``wrtci trigger scan-once | poll-github-once``: one pass of a firmware source, now."""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from wrtci.core.config import load_config
from wrtci.core.runtime import setup_logging
from wrtci.services.cli.common import add_config_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("trigger", help="run one pass of a firmware source")
    actions = parser.add_subparsers(dest="action", required=True)
    scan = actions.add_parser("scan-once", help="scan the downloads server once")
    add_config_argument(scan)
    scan.set_defaults(func=scan_once)
    poll = actions.add_parser("poll-github-once", help="poll labelled pull requests once")
    add_config_argument(poll)
    poll.set_defaults(func=poll_github_once)


def _config(args: argparse.Namespace):
    from wrtci.services.trigger.service import Config

    config = load_config(Config, args.config)
    setup_logging(config.logging, "trigger")
    return config


def _print(report: msgspec.Struct) -> None:
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")


def scan_exit_code(report) -> int:
    """0: everything was scanned; 1: only part was (said on stderr); 2: nothing was."""
    if not report.failed:
        return 0
    for problem in report.failed:
        print(f"wrtci trigger scan-once: not scanned: {problem}", file=sys.stderr)
    return 1 if report.scanned > 0 else 2


def scan_once(args: argparse.Namespace) -> int:
    from wrtci.services.trigger.service import open_context

    config = _config(args)

    async def main() -> int:
        async with open_context(config) as ctx:
            report = await ctx.official_scanner().scan_once()
        _print(report)
        return scan_exit_code(report)

    return asyncio.run(main())


def poll_github_once(args: argparse.Namespace) -> int:
    from wrtci.services.trigger.github import PullRequestSource
    from wrtci.services.trigger.service import open_context

    config = _config(args)

    async def main() -> int:
        async with open_context(config) as ctx:
            report = await PullRequestSource(config.trigger.github, ctx).poll_once()
        _print(report)
        return 0

    return asyncio.run(main())
