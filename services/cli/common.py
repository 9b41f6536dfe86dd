"""Configuration and connections shared by the ``wrtci`` subcommands."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from wrtci.core.config import LoggingConfig, NatsConfig, load_config
from wrtci.core.runtime import connect_nats
from wrtci.services.config import ServiceConfig

CONFIG_ENV = "WRTCI_CONFIG"


class CliConfig(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    """What the command line reads of the site file: the shared sections."""

    logging: LoggingConfig = msgspec.field(default_factory=lambda: LoggingConfig(format="text"))


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", default=os.environ.get(CONFIG_ENV),
        help=f"site TOML file (default: ${CONFIG_ENV}; `wrtci up` writes one in its state dir)",
    )


Subparsers = argparse._SubParsersAction


def command_group(sub: Subparsers, name: str, help: str) -> Subparsers:
    """``wrtci NAME VERB ...``: the group's parser; its verbs go on what this returns
    (with :func:`add_command`)."""
    parser = sub.add_parser(name, help=help)
    return parser.add_subparsers(dest=f"{name.replace('-', '_')}_command", required=True)


def add_command(sub: Subparsers, name: str, func: Callable[[argparse.Namespace], int | None],
                help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A command that reads the site file (``--config``) and runs ``func(args)``;
    ``kwargs`` go to ``add_parser`` (``description``, ...)."""
    parser = sub.add_parser(name, help=help, **kwargs)
    add_config_argument(parser)
    parser.set_defaults(func=func)
    return parser


def cli_config(args: argparse.Namespace) -> CliConfig:
    return load_config(CliConfig, args.config)


@asynccontextmanager
async def nats_connection(config: NatsConfig, name: str = "wrtci-cli") -> AsyncIterator[NATS]:
    nc = await connect_nats(config, name, max_reconnect_attempts=0)
    try:
        yield nc
    finally:
        await nc.drain()


class CliError(Exception):
    """A mistake the user can fix (bad argument, unknown id): one line, exit 1, no traceback."""


_DURATION_RE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_DURATION_S = (7 * 86400, 86400, 3600, 60, 1)
TIME_HELP = "a duration back from now (90s, 15m, 2h, 1d, 1w, 1h30m) or an ISO time " \
            "(2026-11-25, 2026-11-25T10:00, 2026-11-25T10:00:00+01:00; UTC when no zone)"


def parse_time(value: str, option: str = "--since") -> dt.datetime:
    """A point in time from a duration back from now or an ISO 8601 time (aware, UTC default)."""
    text = value.strip()
    match = _DURATION_RE.match(text)
    if text and match and any(match.groups()):
        seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _DURATION_S, strict=True)
                      if n)
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option}: {value!r} is not {TIME_HELP}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

def env_token(explicit: str | None = None) -> str | None:
    """The API token a command sends: ``explicit`` (``--token``), else ``WRTCI_TOKEN``,
    else the file ``WRTCI_TOKEN_FILE``; None when none is given. (For any command that
    calls the HTTP API, e.g. reads when ``[api] require_read_token`` is set.)"""
    token = explicit or os.environ.get("WRTCI_TOKEN")
    if not token and (path := os.environ.get("WRTCI_TOKEN_FILE")):
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise CliError(f"WRTCI_TOKEN_FILE: {exc}") from None
    return token or None
