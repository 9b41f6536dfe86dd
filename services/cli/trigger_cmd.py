"""``wrtci trigger scan-once | poll-github-once``: one pass of a firmware source, now."""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from wrtci.core.config import load_config
from wrtci.core.runtime import setup_logging
from wrtci.services.cli.common import add_command, command_group


def add_parser(sub: argparse._SubParsersAction) -> None:
    actions = command_group(sub, "trigger", "run one pass of a firmware source")
    add_command(actions, "scan-once", scan_once, "scan the downloads server once")
    add_command(actions, "poll-github-once", poll_github_once, "poll labelled pull requests once")


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
