"""What the trigger tests share: the service config for this test's servers,
the service context, PR artifacts, and reading back what was recorded and
announced. The local GitHub API fixture is in ``tests.servers.github_fixture``."""

from __future__ import annotations

import asyncpg

from tests.servers.github import make_zip
from wrtci.core.config import NatsConfig
from wrtci.proto import events as ev
from wrtci.services.config import DatabaseConfig, StorageConfig
from wrtci.services.trigger.config import GithubConfig, OfficialConfig, TriggerConfig, WebConfig
from wrtci.services.trigger.service import Config

REPO = "openwrt/openwrt"
LABEL = "ci-test-requested"
TOKEN = "ghs_localtesttoken"
SYSUPGRADE = "openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
X86_IMAGE = "openwrt-x86-64-generic-squashfs-combined.img.gz"


def firmware_artifacts(seed: bytes = b"1") -> dict[str, bytes]:
    """A PR build's artifacts: two firmware targets and a log that is not firmware."""
    return {
        "openwrt-ath79-generic": make_zip({
            f"bin/targets/ath79/generic/{SYSUPGRADE}": seed * 5000,
            "bin/targets/ath79/generic/sha256sums": b"whatever",
            "bin/targets/ath79/generic/config.buildinfo": b"CONFIG_TARGET_ath79=y",
        }),
        "openwrt-x86-64": make_zip({f"{X86_IMAGE}": seed * 7000}),
        "logs-ath79-generic": make_zip({"build.log": b"log"}),
    }


def trigger_config(nats_config: NatsConfig, database_config: DatabaseConfig,
                   storage_config: StorageConfig, *, official: OfficialConfig | None = None,
                   github: GithubConfig | None = None, web: WebConfig | None = None) -> Config:
    return Config(
        nats=nats_config, database=database_config, storage=storage_config,
        trigger=TriggerConfig(
            official=official or OfficialConfig(enabled=False),
            github=github or GithubConfig(enabled=False),
            web=web or WebConfig(enabled=False),
        ),
    )


async def discovered_events(js, subjects) -> list[ev.FirmwareDiscovered]:
    """Every firmware.discovered event in this test's EVENTS stream, in order."""
    info = await js.stream_info(subjects.events_stream)
    found = []
    if info.state.messages:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(subjects.events_stream, seq)
            event = ev.decode(msg.data)
            if isinstance(event, ev.FirmwareDiscovered):
                found.append(event)
    return found


async def checkouts(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM checkouts ORDER BY id")
    return {row["id"]: row for row in rows}


async def build_count(pool: asyncpg.Pool, checkout_id: str | None = None) -> int:
    if checkout_id is None:
        return await pool.fetchval("SELECT count(*) FROM builds")
    return await pool.fetchval("SELECT count(*) FROM builds WHERE checkout_id = $1",
                               checkout_id)
