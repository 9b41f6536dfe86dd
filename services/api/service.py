"""``run`` / ``check`` of the api daemon: REST + web over PostgreSQL, S3 and NATS.

Stateless: any number of replicas can serve behind a load balancer; what they
show is in PostgreSQL and object storage, what they ask for goes to NATS.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from wrtci.core.runtime import Daemon, EventPublisher, check_all, check_nats
from wrtci.services import db
from wrtci.services.api import control, dashboard_more, health_logs, livelog_http, pages, rest
from wrtci.services.api.app import CONTEXT, ApiContext, errors, json_response
from wrtci.services.api.config import Config
from wrtci.services.api.logs import LogReader
from wrtci.services.checks import check_database
from wrtci.services.kcidb.config import KcidbSection

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def make_app(ctx: ApiContext, kcidb: KcidbSection | None = None) -> web.Application:
    # errors first: a refused read token is answered like any other error.
    app = web.Application(middlewares=[errors, control.read_token],
                          client_max_size=64 * 1024)
    app[CONTEXT] = ctx
    app.router.add_get("/healthz", healthz)
    health_logs.add_routes(app)
    livelog_http.add_routes(app)  # before rest: its /jobs/{id} would take .../log
    rest.add_routes(app)
    control.add_routes(app)
    pages.add_routes(app)
    dashboard_more.add_routes(app, (kcidb or KcidbSection()).exporter())
    return app


async def run(config: Config, stop: asyncio.Event) -> None:
    section = config.api
    async with Daemon("api", stop) as daemon:
        nc = await daemon.connect_nats(config.nats)
        pool = await db.open_pool(daemon, config.database)
        js = nc.jetstream(timeout=config.nats.request_timeout_s)
        ctx = ApiContext(section=section, subjects=config.nats.subjects, pool=pool, js=js,
                         publisher=EventPublisher(js, config.nats.subjects,
                                                  timeout=config.nats.request_timeout_s),
                         logs=LogReader(config.storage, section.log_chunk_bytes))
        runner = web.AppRunner(make_app(ctx, config.kcidb), access_log=None,
                               shutdown_timeout=section.shutdown_timeout_s)
        await runner.setup()
        # At exit: stops accepting, lets requests in flight finish (bounded), closes.
        daemon.exits.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, section.host, section.port).start()
        log.info("listening", extra={"host": section.host, "port": section.port})
        await daemon.serve()


async def check(config: Config) -> None:
    await check_all(
        nats=check_nats(config.nats),
        database=check_database(config.database, "SELECT count(*) FROM firmware_progress LIMIT 1"),
        storage=LogReader(config.storage, config.api.log_chunk_bytes).check())
