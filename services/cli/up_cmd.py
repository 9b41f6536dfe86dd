"""``wrtci up``: run the whole system locally."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("up", help="run NATS, PostgreSQL, S3, all services and a virtual lab")
    parser.add_argument("--state-dir", type=Path, default=Path(".wrtci"),
                        help="where data, logs and the generated config live (default .wrtci)")
    parser.add_argument("--demo", action="store_true",
                        help="push a firmware through the system and show the results")
    parser.add_argument("--once", action="store_true",
                        help="stop after start-up (and the demo) instead of waiting for Ctrl-C")
    parser.set_defaults(func=run_up)


def run_up(args: argparse.Namespace) -> int:
    from wrtci.services.stack.demo import run_demo
    from wrtci.services.stack.up import run_stack

    return asyncio.run(run_stack(args.state_dir, run_demo if args.demo else None, args.once))
