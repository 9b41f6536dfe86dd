"""``wrtci kcidb``: the results as KCIDB v5 JSON, and one forwarding pass."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path

import aiohttp
import msgspec

from wrtci.core.config import load_config
from wrtci.services import db
from wrtci.services.api.config import ApiSection
from wrtci.services.cli.common import (
    TIME_HELP,
    CliConfig,
    CliError,
    add_command,
    command_group,
    parse_time,
)
from wrtci.services.kcidb import export as kcidb
from wrtci.services.kcidb import model as kcidb_model
from wrtci.services.kcidb.config import KcidbSection
from wrtci.services.results.config import Config as ResultsConfig
from wrtci.services.results.forwarder import Forwarder, KcidbClient


def add_parser(sub: argparse._SubParsersAction) -> None:
    kcidb_sub = command_group(sub, "kcidb", "KCIDB v5 export and forwarding")
    export = add_command(
        kcidb_sub, "export", run_export, "write KCIDB v5 JSON for a firmware or a time range",
        description="Checkouts, builds, tests, issues and incidents as one KCIDB v5 "
                    "document (for kcidb-submit or a kcidb-ng /submit).")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--firmware", help="firmware (checkout) id")
    which.add_argument("--since", help=f"results stored since: {TIME_HELP}")
    export.add_argument("--until", help="results stored before (default: now)")
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    export.add_argument("--minor", type=int, default=kcidb.KCIDB_MINOR,
                        choices=kcidb.KCIDB_MINORS,
                        help="KCIDB v5 minor version of the document (default: %(default)s)")
    add_command(kcidb_sub, "forward", run_forward,
                "forward new results to the kcidb-ng endpoint once",
                description="One pass of the results service's forwarder ([kcidb] section).")


class ExportConfig(CliConfig, kw_only=True, forbid_unknown_fields=True):
    """What an export reads of the site file: the origin and the API's public URL."""

    kcidb: KcidbSection = msgspec.field(default_factory=KcidbSection)
    api: ApiSection = msgspec.field(default_factory=ApiSection)

    def exporter(self) -> kcidb.Exporter:
        exporter = self.kcidb.exporter()
        if exporter.public_url is None:  # on the site itself: the API's own address
            host = "127.0.0.1" if self.api.host in ("0.0.0.0", "::") else self.api.host
            exporter = msgspec.structs.replace(exporter,
                                               public_url=f"http://{host}:{self.api.port}")
        return exporter


async def _export(args: argparse.Namespace) -> kcidb_model.Document | None:
    config = load_config(ExportConfig, args.config)
    since = until = None
    if not args.firmware:  # parse before connecting: a typo is reported as such
        since = parse_time(args.since)
        until = parse_time(args.until, "--until") if args.until else dt.datetime.now(dt.UTC)
    conn = await db.connect(config.database)
    try:
        if args.firmware:
            return await kcidb.export_firmware(conn, args.firmware, config.exporter(),
                                               args.minor)
        return await kcidb.export_range(conn, since, until, config.exporter(), args.minor)
    finally:
        await conn.close()


def run_export(args: argparse.Namespace) -> int:
    document = asyncio.run(_export(args))
    if document is None:
        print(f"wrtci: no firmware {args.firmware!r}", file=sys.stderr)
        return 1
    text = msgspec.json.format(msgspec.json.encode(document), indent=2).decode() + "\n"
    if args.output:
        Path(args.output).write_text(text)
        counts = ", ".join(f"{document.count(k)} {k}" for k in kcidb.KINDS)
        print(f"wrote {args.output}: {counts}")
    else:
        sys.stdout.write(text)
    return 0


async def _forward(args: argparse.Namespace) -> None:
    config = load_config(ResultsConfig, args.config)
    if not config.kcidb.url:
        raise CliError("no kcidb-ng endpoint configured: set [kcidb] url "
                       "(and the token as WRTCI_KCIDB__TOKEN_FILE)")
    pool = await db.create_pool(config.database)
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=config.kcidb.timeout_s)) as session:
            client = KcidbClient(session, config.kcidb.url, config.kcidb.token)
            await Forwarder(pool, client, config.kcidb).step()
    finally:
        await pool.close()


def run_forward(args: argparse.Namespace) -> int:
    asyncio.run(_forward(args))
    return 0
