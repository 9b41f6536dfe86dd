"""Scan a generated downloads mirror: first scan, then an unchanged rescan.

    python bench/bench_trigger_scan.py [--targets 100] [--profiles 20]

Starts nats-server and PostgreSQL as local processes in a temp dir, serves a
generated mirror (one stable release, TARGETS x PROFILES profiles, three images
each) from a local HTTP server, and prints the time, requests and bytes
fetched of each scan. The rescan should cost one conditional request per
document and no profiles.json body.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from tests.servers.downloads import DownloadsServer, generate_mirror
from wrtci.core.config import NatsConfig
from wrtci.core.runtime import connect_nats
from wrtci.proto import topology
from wrtci.services import db
from wrtci.services.config import DatabaseConfig, StorageConfig
from wrtci.services.db.migrate import migrate
from wrtci.services.stack.servers import NatsServer, PostgresServer
from wrtci.services.trigger.config import OfficialConfig, TriggerConfig, WebConfig
from wrtci.services.trigger.service import Config, open_context


async def bench(targets: int, profiles: int, root: Path) -> None:
    nats_server = NatsServer(root / "nats" / "store").start()
    postgres = PostgresServer(root / "postgres", durable=False).start()
    downloads = await DownloadsServer().start()
    try:
        admin = await asyncpg.connect(postgres.dsn())
        await admin.execute('CREATE DATABASE "bench"')
        await admin.close()
        database = DatabaseConfig(dsn=postgres.dsn("bench"))
        conn = await db.connect(database)
        await migrate(conn)
        await conn.close()
        nats_config = NatsConfig(url=nats_server.url, prefix="bench")
        nc = await connect_nats(nats_config, "bench")
        await topology.apply(nc.jetstream(), nats_config.subjects)
        await nc.close()

        generate_mirror(downloads, targets=targets, profiles=profiles)
        config = Config(nats=nats_config, database=database, storage=StorageConfig(),
                        trigger=TriggerConfig(
                            official=OfficialConfig(base_url=downloads.url, channels=["stable"]),
                            web=WebConfig(enabled=False)))
        print(f"mirror: {targets} targets x {profiles} profiles = {targets * profiles} "
              f"profiles, {targets * profiles * 3} images")
        for label in ("first scan", "unchanged rescan"):
            requests_before = sum(downloads.requests.values())
            bytes_before = downloads.body_bytes
            bodies_before = downloads.profile_body_downloads()
            async with open_context(config) as ctx:  # a fresh process each time
                started = time.perf_counter()
                report = await ctx.official_scanner().scan_once()
                elapsed = time.perf_counter() - started
            print(f"{label:>17}: {elapsed:6.2f} s  "
                  f"{sum(downloads.requests.values()) - requests_before:5d} requests  "
                  f"{downloads.profile_body_downloads() - bodies_before:5d} profiles.json bodies  "
                  f"{(downloads.body_bytes - bytes_before) / 1e6:8.3f} MB fetched  "
                  f"announced {report.announced}, unchanged {report.unchanged}, "
                  f"skipped {report.skipped}")
        pool = await db.create_pool(database)
        builds = await pool.fetchval("SELECT count(*) FROM builds")
        firmware = await pool.fetchval("SELECT count(*) FROM checkouts")
        await pool.close()
        print(f"recorded: {firmware} firmware, {builds} builds")
    finally:
        await downloads.stop()
        postgres.stop()
        nats_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--profiles", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wrtci-bench-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    try:
        asyncio.run(bench(args.targets, args.profiles, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
