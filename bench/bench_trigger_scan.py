"""Scan a generated downloads mirror: first scan, then an unchanged rescan.

    python bench/bench_trigger_scan.py [--targets 100] [--profiles 20]

Starts nats-server and PostgreSQL as local processes in a temp dir, serves a
generated mirror (one stable release, TARGETS x PROFILES profiles, three images
each) from a local HTTP server, and prints the time, requests and bytes
fetched of each scan. The rescan should cost one conditional request per
document and no profiles.json body.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from common import options, servers, work_dir  # first: the repository on sys.path

from tests.servers.downloads import DownloadsServer, generate_mirror
from wrtci.services import db
from wrtci.services.config import StorageConfig
from wrtci.services.trigger.config import OfficialConfig, TriggerConfig, WebConfig
from wrtci.services.trigger.service import Config, open_context


async def bench(targets: int, profiles: int, root: Path) -> None:
    downloads = await DownloadsServer().start()
    try:
        async with servers(root, postgres=True) as local:
            generate_mirror(downloads, targets=targets, profiles=profiles)
            official = OfficialConfig(base_url=downloads.url, channels=["stable"])
            config = Config(nats=local.nats, database=local.database, storage=StorageConfig(),
                            trigger=TriggerConfig(official=official,
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
                      f"{downloads.profile_body_downloads() - bodies_before:5d} "
                      "profiles.json bodies  "
                      f"{(downloads.body_bytes - bytes_before) / 1e6:8.3f} MB fetched  "
                      f"announced {report.announced}, unchanged {report.unchanged}, "
                      f"skipped {report.skipped}")
            pool = await db.create_pool(local.database)
            builds = await pool.fetchval("SELECT count(*) FROM builds")
            firmware = await pool.fetchval("SELECT count(*) FROM checkouts")
            await pool.close()
            print(f"recorded: {firmware} firmware, {builds} builds")
    finally:
        await downloads.stop()


def main() -> None:
    args = options(__doc__, targets=100, profiles=20).parse_args()
    with work_dir("/var/tmp") as root:
        asyncio.run(bench(args.targets, args.profiles, root))


if __name__ == "__main__":
    main()
