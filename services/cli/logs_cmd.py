"""``wrtci logs status``: each log writer's buffer, and what it had to drop.

Every log writer puts its figures in the control bucket when they change
(``logs-writer.<host>-<pid>``): bytes in memory and spilled to disk now, and
since it started, bytes dropped because both were full and logs stored
truncated. Exit 1 when a writer dropped anything, so monitoring can watch it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt

import msgspec
from nats.js.errors import NoKeysError

from wrtci.proto.records import LogWriterRecord, decode_record
from wrtci.services.cli.common import add_command, cli_config, command_group, nats_connection

KEY_PREFIX = "logs-writer."
"""As services.logs.STATUS_KEY_PREFIX (the CLI imports no service package)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    commands = command_group(sub, "logs", "the log writers' buffers")
    status = add_command(commands, "status", lambda a: asyncio.run(_status(a)),
                         "memory, spill and dropped bytes per writer")
    status.add_argument("--json", action="store_true", help="one JSON object per writer")


async def writer_records(js, subjects) -> list[LogWriterRecord]:
    kv = await js.key_value(subjects.control_bucket)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    records = []
    for key in sorted(k for k in keys if k.startswith(KEY_PREFIX)):
        entry = await kv.get(key)
        if entry.value:
            try:
                records.append(decode_record(entry.value, LogWriterRecord))
            except msgspec.DecodeError:
                continue
    return records


def describe(record: LogWriterRecord, now: dt.datetime) -> str:
    age = (now - record.updated_at).total_seconds()
    return (f"{record.writer}: {record.memory_bytes} bytes in memory "
            f"(limit {record.memory_limit}), {record.spilled_bytes} spilled "
            f"(limit {record.spill_limit}), {record.dropped_bytes} dropped in "
            f"{record.dropped_chunks} chunks, {record.truncated_logs} logs stored truncated "
            f"(updated {age:.0f} s ago)")


async def _status(args: argparse.Namespace) -> int:
    config = cli_config(args)
    async with nats_connection(config.nats) as nc:
        records = await writer_records(nc.jetstream(), config.nats.subjects)
    now = dt.datetime.now(dt.UTC)
    if not records:
        print("no log writer has reported")
    for record in records:
        print(msgspec.json.encode(record).decode() if args.json else describe(record, now))
    return 1 if any(r.dropped_bytes or r.truncated_logs for r in records) else 0
