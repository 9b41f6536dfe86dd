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
    apply.add_argument("--device-type", action="append", default=[],
                       help="also create this device type's job consumers (repeatable); "
                            "the types labs announced get theirs anyway")
    apply.set_defaults(func=run_apply)


async def _apply(args: argparse.Namespace) -> dict[str, topology.Change]:
    config = cli_config(args)
    async with nats_connection(config.nats) as nc:
        js = nc.jetstream()
        changes = await topology.apply(js, config.nats.subjects, args.replicas)
        device_types = set(args.device_type) | await _announced_device_types(js, config)
        changes.update(await topology.ensure_job_consumers(js, config.nats.subjects,
                                                           device_types))
        return changes


async def _announced_device_types(js, config) -> set[str]:
    """Device types in the labs' records (labs create no consumers: we do)."""
    from nats.js.errors import NoKeysError

    from proto.records import LabRecord, decode_record

    kv = await js.key_value(config.nats.subjects.labs_bucket)
    types: set[str] = set()
    try:
        keys = await kv.keys()
    except NoKeysError:
        return types
    for key in keys:
        entry = await kv.get(key)
        if entry.value:
            types |= {d.device_type for d in decode_record(entry.value, LabRecord).devices}
    return types


def run_apply(args: argparse.Namespace) -> int:
    changes = asyncio.run(_apply(args))
    for name, change in changes.items():
        print(f"{change.value:9}  {name}")
    return 0
