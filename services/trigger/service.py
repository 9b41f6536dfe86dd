"""The trigger daemon: watches the firmware sources, records and announces firmware.

Sources run side by side in one process: the official scanner and the GitHub
poller on their intervals, the upload / buildbot endpoints as an aiohttp app.
Several replicas may run at once; deterministic ids, upserts and
``Nats-Msg-Id`` make that safe (see ``record``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import asyncpg
import msgspec

from core.runtime import EventPublisher, check_nats, connect_nats
from services import db
from services.checks import check_database
from services.config import ServiceConfig
from services.trigger.config import TriggerConfig
from services.trigger.httpcache import ConditionalFetcher
from services.trigger.official import OfficialScanner
from services.trigger.storage import ObjectStore

log = logging.getLogger(__name__)

USER_AGENT = "wrtci-trigger/0.1"


class Config(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    trigger: TriggerConfig = msgspec.field(default_factory=TriggerConfig)


@dataclass
class Context:
    """The connections every source shares."""

    config: Config
    pool: asyncpg.Pool
    publisher: EventPublisher
    session: aiohttp.ClientSession
    store: ObjectStore

    def official_scanner(self) -> OfficialScanner:
        official = self.config.trigger.official
        fetcher = ConditionalFetcher(self.session, self.pool, timeout_s=official.timeout_s,
                                     max_bytes=official.max_document_bytes)
        return OfficialScanner(official, fetcher, self.pool, self.publisher)


@contextlib.asynccontextmanager
async def open_context(config: Config) -> AsyncIterator[Context]:
    pool = await db.create_pool(config.database)
    try:
        nc = await connect_nats(config.nats, "wrtci-trigger")
        try:
            publisher = EventPublisher(nc.jetstream(), config.nats.subjects,
                                       timeout=config.nats.request_timeout_s)
            async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
                yield Context(config, pool, publisher, session, ObjectStore(config.storage))
        finally:
            await nc.drain()
    finally:
        await pool.close()


async def every(name: str, interval_s: float, work: Callable[[], Awaitable[object]],
                stop: asyncio.Event) -> None:
    """Run ``work`` now and then every ``interval_s`` until ``stop``; failures are logged.

    The sources are remote HTTP servers with no way to push to us, so polling
    is the only way; ``stop`` ends the wait at once.
    """
    while not stop.is_set():
        try:
            await work()
        except Exception:  # one failed poll must not end the daemon; the next one retries
            log.exception("poll failed, retrying at the next interval", extra={"source": name})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def run(config: Config, stop: asyncio.Event) -> None:
    async with open_context(config) as ctx:
        trigger = config.trigger
        tasks = []
        if trigger.official.enabled:
            scanner = ctx.official_scanner()
            tasks.append(asyncio.create_task(
                every("official", trigger.official.interval_s, scanner.scan_once, stop)))
        if trigger.github.enabled:
            from services.trigger.github import PullRequestSource

            prs = PullRequestSource(trigger.github, ctx)
            tasks.append(asyncio.create_task(
                every("github", trigger.github.interval_s, prs.poll_once, stop)))
        runner = None
        if trigger.web.enabled:
            from services.trigger.web import start_web

            runner = await start_web(ctx)
        try:
            await stop.wait()
        finally:
            if runner is not None:
                await runner.cleanup()
            # A scan cut short loses nothing: validators are stored only after recording.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def check(config: Config) -> None:
    await check_nats(config.nats)
    await check_database(config.database, "SELECT count(*) FROM trigger_http_cache")
    await ObjectStore(config.storage).check()
