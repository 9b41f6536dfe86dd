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

from wrtci.core.retry import sleep_or_stop, wait_or_stop
from wrtci.core.runtime import Daemon, EventPublisher, check_all, check_nats
from wrtci.services import db
from wrtci.services.checks import check_database
from wrtci.services.config import ServiceConfig
from wrtci.services.trigger.config import TriggerConfig
from wrtci.services.trigger.httpcache import ConditionalFetcher
from wrtci.services.trigger.official import OfficialScanner
from wrtci.services.trigger.storage import ObjectStore

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
    """The connections for one command (``wrtci trigger scan-once``): no waiting."""
    async with Daemon("trigger", asyncio.Event(), open_attempts=1) as daemon:
        yield await daemon_context(daemon, config)


async def daemon_context(daemon: Daemon, config: Config) -> Context:
    """The shared connections, opened through the daemon (closed at its exit)."""
    pool = await db.open_pool(daemon, config.database)
    nc = await daemon.connect_nats(config.nats)
    publisher = EventPublisher(nc.jetstream(), config.nats.subjects,
                               timeout=config.nats.request_timeout_s)
    session = await daemon.enter(aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}))
    return Context(config, pool, publisher, session, ObjectStore(config.storage))


def every(name: str, interval_s: float,
          work: Callable[[], Awaitable[object]]) -> Callable[[asyncio.Event], Awaitable[None]]:
    """A loop running ``work`` now and then every ``interval_s`` until ``stop``.

    The sources are remote HTTP servers with no way to push to us, so polling
    is the only way; ``stop`` ends the wait at once, and cuts a poll short (a
    poll that waits on a server or on NATS would otherwise hold the daemon past
    its stop; the next poll, here or in another replica, does it again). A
    failed poll (the downloads server or GitHub away) is logged and retried at
    the next interval.
    """
    async def loop(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await wait_or_stop(work(), stop)
            except Exception:  # one failed poll must not end the daemon; the next one retries
                log.exception("poll failed, retrying at the next interval",
                              extra={"source": name})
            await sleep_or_stop(stop, interval_s)
    return loop


async def run(config: Config, stop: asyncio.Event) -> None:
    async with Daemon("trigger", stop) as daemon:
        ctx = await daemon_context(daemon, config)
        trigger = config.trigger
        # A scan cut short loses nothing: validators are stored only after recording.
        if trigger.official.enabled:
            scanner = ctx.official_scanner()
            daemon.loop("official", every("official", trigger.official.interval_s,
                                          scanner.scan_once))
        if trigger.github.enabled:
            from wrtci.services.trigger.github import PullRequestSource

            prs = PullRequestSource(trigger.github, ctx)
            daemon.loop("github", every("github", trigger.github.interval_s, prs.poll_once))
        if trigger.web.enabled:
            from wrtci.services.trigger.web import start_web

            runner = await start_web(ctx)
            daemon.exits.push_async_callback(runner.cleanup)
        await daemon.serve()


async def check(config: Config) -> None:
    await check_all(
        nats=check_nats(config.nats),
        database=check_database(config.database, "SELECT count(*) FROM trigger_http_cache"),
        storage=ObjectStore(config.storage).check())
