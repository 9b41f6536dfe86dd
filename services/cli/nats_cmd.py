"""``wrtci nats apply``: create or update streams and buckets."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import msgspec
from nats.js.errors import KeyNotFoundError, NoKeysError

from wrtci.proto import topology
from wrtci.proto.records import LabRecord, decode_record
from wrtci.services.cli.common import add_command, cli_config, command_group, nats_connection


def add_parser(sub: argparse._SubParsersAction) -> None:
    nats_sub = command_group(sub, "nats", "JetStream topology")
    apply = add_command(nats_sub, "apply", run_apply, "create or update streams and KV buckets")
    apply.add_argument("--replicas", type=int, default=1, help="replicas (3 in a cluster)")
    apply.add_argument("--device-type", action="append", default=[],
                       help="also create this device type's job consumers (repeatable); "
                            "the types labs announced get theirs anyway")


async def _announced_device_types(js, subjects) -> set[str]:
    """Device types of the labs online now (their job consumers are made sure of too)."""
    kv = await js.key_value(subjects.labs_bucket)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return set()
    found: set[str] = set()
    for key in keys:
        with contextlib.suppress(KeyNotFoundError, msgspec.DecodeError):
            entry = await kv.get(key)
            if entry.value:
                found |= {d.device_type for d in decode_record(entry.value, LabRecord).devices}
    return found


async def _apply(args: argparse.Namespace) -> dict[str, topology.Change]:
    config = cli_config(args)
    async with nats_connection(config.nats) as nc:
        js, subjects = nc.jetstream(), config.nats.subjects
        changes = await topology.apply(js, subjects, args.replicas)
        device_types = set(args.device_type) | await _announced_device_types(js, subjects)
        changes.update(await topology.ensure_job_consumers(js, subjects, device_types))
        return changes


def run_apply(args: argparse.Namespace) -> int:
    changes = asyncio.run(_apply(args))
    for name, change in changes.items():
        print(f"{change.value:9}  {name}")
    return 0
