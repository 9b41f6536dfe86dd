"""Configuration and connections shared by the ``wrtci`` subcommands."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from nats.aio.client import Client as NATS

from core.config import LoggingConfig, NatsConfig, load_config
from core.runtime import connect_nats
from services.config import ServiceConfig

CONFIG_ENV = "WRTCI_CONFIG"


class CliConfig(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    """What the command line reads of the site file: the shared sections."""

    logging: LoggingConfig = msgspec.field(default_factory=lambda: LoggingConfig(format="text"))


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", default=os.environ.get(CONFIG_ENV),
        help=f"site TOML file (default: ${CONFIG_ENV}; `wrtci up` writes one in its state dir)",
    )


def cli_config(args: argparse.Namespace) -> CliConfig:
    return load_config(CliConfig, args.config)


@asynccontextmanager
async def nats_connection(config: NatsConfig, name: str = "wrtci-cli") -> AsyncIterator[NATS]:
    nc = await connect_nats(config, name, max_reconnect_attempts=0)
    try:
        yield nc
    finally:
        await nc.drain()
