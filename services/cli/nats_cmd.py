"""``wrtci nats apply``: create or update streams and buckets."""

from __future__ import annotations

import argparse
import asyncio

from proto import topology
from services.cli.common import add_config_argument, cli_config, nats_connection


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("nats", help="JetStream topology")
    nats_sub = parser.add_subparsers(dest="nats_command", required=True)
    apply = nats_sub.add_parser("apply", help="create or update streams and KV buckets")
    add_config_argument(apply)
    apply.add_argument("--replicas", type=int, default=1, help="replicas (3 in a cluster)")
    apply.set_defaults(func=run_apply)


async def _apply(args: argparse.Namespace) -> dict[str, topology.Change]:
    config = cli_config(args)
    async with nats_connection(config.nats) as nc:
        return await topology.apply(nc.jetstream(), config.nats.subjects, args.replicas)


def run_apply(args: argparse.Namespace) -> int:
    changes = asyncio.run(_apply(args))
    for name, change in changes.items():
        print(f"{change.value:9}  {name}")
    return 0
