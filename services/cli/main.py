"""``wrtci``: the operator and developer command line."""

from __future__ import annotations

import argparse
import sys

from core.config import ConfigError
from services.cli import (
    control_cmd,
    db_cmd,
    drain_cmd,
    events_cmd,
    jobs_cmd,
    kcidb_cmd,
    logs_cmd,
    nats_cmd,
    pipe_cleaner_cmd,
    run_cmd,
    show_cmd,
    summary_cmd,
    trigger_cmd,
    up_cmd,
)

COMMANDS = [
    nats_cmd, db_cmd, events_cmd, run_cmd, up_cmd,
    trigger_cmd, control_cmd, jobs_cmd, kcidb_cmd, summary_cmd, show_cmd, logs_cmd,
    drain_cmd, pipe_cleaner_cmd,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wrtci", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"wrtci: configuration error: {exc}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError) as exc:
        print(f"wrtci: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
