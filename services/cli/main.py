"""``wrtci``: the operator and developer command line."""

from __future__ import annotations

import argparse
import importlib
import sys

import nats.errors

from wrtci.core.config import ConfigError
from wrtci.services.cli.common import CliError

COMMANDS: dict[str, tuple[str, str]] = {
    "nats": ("nats_cmd", "JetStream topology"),
    "db": ("db_cmd", "database schema"),
    "events": ("events_cmd", "show past and live events"),
    "run": ("run_cmd", "run a central service in the foreground"),
    "up": ("up_cmd", "run NATS, PostgreSQL, S3, all services and a virtual lab"),
    "trigger": ("trigger_cmd", "run one pass of a firmware source"),
    "scheduler": ("control_cmd", "pause, drain, resume the scheduler"),
    "job": ("jobs_cmd", "retry or cancel a job"),
    "firmware": ("jobs_cmd", "retry or cancel a firmware"),
    "kcidb": ("kcidb_cmd", "KCIDB v5 export and forwarding"),
    "summary": ("summary_cmd", "results summary of a firmware"),
    "show": ("show_cmd", "firmware, jobs, labs and logs from the REST API"),
    "lab": ("lab_cmd", "onboard, list and revoke labs (NATS credentials)"),
    "token": ("token_cmd", "create, list and revoke API tokens"),
    "upload": ("upload_cmd", "upload a firmware for testing (API token, scope upload)"),
    "watch": ("watch_cmd", "follow a firmware or a job until its verdict; exit 0/1/2"),
    "drain": ("drain_cmd", "let running jobs finish and start no new one"),
    "resume": ("drain_cmd", "start queued jobs and new firmware again"),
    "logs": ("logs_cmd", "the log writers' buffers"),
    "pipe-cleaner": ("pipe_cleaner_cmd", "does the whole system work? (exit 0/1)"),
}
"""Command -> (module in services.cli, one-line help). A module is imported only
when its command runs: a lab host (wrtci[lab], no asyncpg or minio) can still
run ``wrtci --help`` and the commands its packages allow."""


def _chosen(argv: list[str]) -> str | None:
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported (all when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="wrtci", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = _chosen(argv) if argv is not None else None
    modules = {m for name, (m, _) in COMMANDS.items() if argv is None or name == chosen}
    for module in sorted(modules):  # first: a module may add several commands
        importlib.import_module(f"wrtci.services.cli.{module}").add_parser(sub)
    for name, (_, help_text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser(argv)
    except ModuleNotFoundError as exc:
        print(f"wrtci: this command needs packages not installed here ({exc.name}); "
              "install wrtci[central]", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"wrtci: configuration error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"wrtci: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"wrtci: {exc}", file=sys.stderr)
        return 1
    except nats.errors.Error as exc:
        print(f"wrtci: NATS: {exc!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # asyncpg is not installed on a lab host: recognise its errors by module.
        if type(exc).__module__.startswith("asyncpg"):
            print(f"wrtci: database: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
