"""PostgreSQL access: the pool and the schema migrations (``rows``: reading rows;
``attempts``: an attempt's stored outcome)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from wrtci.core.runtime import Daemon
from wrtci.services.config import DatabaseConfig


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary jsonb codec: text codecs break COPY (see ENVIRONMENT.md).
    for type_name in ("jsonb",):
        await conn.set_type_codec(
            type_name,
            schema="pg_catalog",
            encoder=lambda value: b"\x01" + json.dumps(value).encode(),
            decoder=lambda data: json.loads(data[1:]),
            format="binary",
        )


async def create_pool(config: DatabaseConfig, **kwargs: Any) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        config.dsn,
        min_size=config.min_pool,
        max_size=config.max_pool,
        command_timeout=config.command_timeout_s,
        init=_init_connection,
        timeout=10,
        **kwargs,
    )


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close, and if connections hang (the server is gone), terminate them."""
    try:
        await asyncio.wait_for(pool.close(), 10)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pool.terminate()


async def open_pool(daemon: Daemon, config: DatabaseConfig) -> asyncpg.Pool:
    """The daemon's pool: waited for (with backoff) while PostgreSQL is away; closed at exit."""
    return await daemon.open("PostgreSQL", lambda: create_pool(config), close_pool)


async def connect(config: DatabaseConfig) -> asyncpg.Connection:
    conn = await asyncpg.connect(config.dsn, command_timeout=config.command_timeout_s, timeout=10)
    await _init_connection(conn)
    return conn
