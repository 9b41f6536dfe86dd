"""``run`` / ``check`` of the results daemon: wires the loops together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp
import asyncpg
from nats.js.api import ConsumerConfig

from wrtci.core.config import ConfigError
from wrtci.core.runtime import Daemon, check_all, check_nats
from wrtci.proto.subjects import Subjects
from wrtci.proto.topology import service_consumer
from wrtci.services import db
from wrtci.services.batch_consume import Delivery, Verdict, consume_batches
from wrtci.services.checks import check_database
from wrtci.services.consume import Pull
from wrtci.services.results.config import Config
from wrtci.services.results.forwarder import Forwarder, KcidbClient
from wrtci.services.results.logs import LogTailReader
from wrtci.services.results.signatures import SignatureSet
from wrtci.services.results.store import ingest_batch
from wrtci.services.results.work import Analyser
from wrtci.services.storage import minio_client

__all__ = ["Config", "check", "consumer_config", "run"]

log = logging.getLogger(__name__)

INPUT_EVENTS = ("job.started", "job.progress", "job.finished", "device.health",
                "lab.online", "lab.offline")


def consumer_config(subjects: Subjects, durable: str = "results",
                    max_ack_pending: int = 5000) -> ConsumerConfig:
    """The lab events, plus job.finished from the timeout service (central, authoritative)."""
    filters = [subjects.all_lab_events(kind) for kind in INPUT_EVENTS]
    filters.append(subjects.event("job.finished"))
    config = service_consumer(durable, filters)
    config.max_ack_pending = max_ack_pending
    return config


def ingest_handler(pool: asyncpg.Pool, subjects: Subjects):
    async def handle(deliveries: Sequence[Delivery]) -> list[Verdict]:
        return await ingest_batch(pool, subjects, deliveries)
    return handle


async def run(config: Config, stop: asyncio.Event) -> None:
    section = config.results
    signatures = SignatureSet.load(section.signatures_file)  # bad config: fail at start
    if config.kcidb.enabled and not config.kcidb.url:
        raise ConfigError("[kcidb] enabled = true needs [kcidb] url (the kcidb-ng endpoint); "
                          "nothing is forwarded to a default")
    subjects = config.nats.subjects
    async with Daemon("results", stop) as daemon:
        nc = await daemon.connect_nats(config.nats)
        pool = await db.open_pool(daemon, config.database)
        js = nc.jetstream(timeout=config.nats.request_timeout_s)
        daemon.loop("ingest", lambda stop: consume_batches(
            js, Pull(subjects.events_stream, consumer_config(subjects, section.durable),
                     batch=section.batch_size, fetch_timeout=section.fetch_timeout_s),
            ingest_handler(pool, subjects), stop))
        analyser = Analyser(pool, LogTailReader(minio_client(config.storage), config.storage.bucket,
                                           config.storage.timeout_s * 2), signatures, section)
        daemon.loop("analysis", analyser.run)
        if config.kcidb.forwarding:
            if not config.kcidb.public_url:
                log.warning("[kcidb] public_url is not set: forwarded tests carry no log_url")
            session = await daemon.enter(aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=config.kcidb.timeout_s)))
            client = KcidbClient(session, config.kcidb.url or "", config.kcidb.token)
            daemon.loop("kcidb", Forwarder(pool, client, config.kcidb).run)
        await daemon.serve()


async def check(config: Config) -> None:
    SignatureSet.load(config.results.signatures_file)
    await check_all(nats=check_nats(config.nats),
                    database=check_database(config.database, "SELECT count(*) FROM results_work"))
