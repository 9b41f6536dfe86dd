"""``wrtci``: the operator and developer command line."""

from __future__ import annotations

import argparse
import importlib
import sys

from core.config import ConfigError

COMMANDS = [
    "nats_cmd", "db_cmd", "events_cmd", "run_cmd", "up_cmd",
    "trigger_cmd", "control_cmd", "jobs_cmd", "kcidb_cmd", "summary_cmd", "show_cmd",
]
"""Modules under services.cli, imported one by one: on a lab host (``wrtci[lab]``,
no asyncpg or minio) the central commands are missing, the rest still work."""


def _unavailable(sub, module: str, error: ImportError) -> None:
    name = module.removesuffix("_cmd")
    reason = f"needs the central extra (pip install 'wrtci[central]'): {error}"
    parser = sub.add_parser(name, help=f"(unavailable: {reason})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def refuse(args: argparse.Namespace) -> int:
        print(f"wrtci {name}: {reason}", file=sys.stderr)
        return 2

    parser.set_defaults(func=refuse)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wrtci", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        try:
            command = importlib.import_module(f"services.cli.{module}")
        except ModuleNotFoundError as exc:
            _unavailable(sub, module, exc)
            continue
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
