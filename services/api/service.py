"""``run`` / ``check`` of the api daemon: REST + web over PostgreSQL, S3 and NATS.

Stateless: any number of replicas can serve behind a load balancer; what they
show is in PostgreSQL and object storage, what they ask for goes to NATS.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from core.runtime import EventPublisher, check_nats, connect_nats
from services import db
from services.api import control, livelog_http, pages, rest
from services.api.app import CONTEXT, ApiContext, errors, json_response
from services.api.config import Config
from services.api.logs import LogReader
from services.checks import check_database

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def make_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=64 * 1024)
    app[CONTEXT] = ctx
    app.router.add_get("/healthz", healthz)
    livelog_http.add_routes(app)  # before rest: its /jobs/{id} would take .../log
    rest.add_routes(app)
    control.add_routes(app)
    pages.add_routes(app)
    return app


async def run(config: Config, stop: asyncio.Event) -> None:
    section = config.api
    nc = await connect_nats(config.nats, "wrtci-api")
    try:
        pool = await db.create_pool(config.database)
        try:
            js = nc.jetstream(timeout=config.nats.request_timeout_s)
            ctx = ApiContext(section=section, subjects=config.nats.subjects, pool=pool, js=js,
                             publisher=EventPublisher(js, config.nats.subjects,
                                                      timeout=config.nats.request_timeout_s),
                             logs=LogReader(config.storage, section.log_chunk_bytes))
            runner = web.AppRunner(make_app(ctx), access_log=None,
                                   shutdown_timeout=section.shutdown_timeout_s)
            await runner.setup()
            try:
                await web.TCPSite(runner, section.host, section.port).start()
                log.info("listening", extra={"host": section.host, "port": section.port})
                await stop.wait()
            finally:
                # Stops accepting, lets requests in flight finish (bounded), closes.
                await runner.cleanup()
        finally:
            await pool.close()
    finally:
        await nc.drain()


async def check(config: Config) -> None:
    await check_nats(config.nats)
    await check_database(config.database, "SELECT count(*) FROM firmware_progress LIMIT 1")
    await LogReader(config.storage, config.api.log_chunk_bytes).check()
