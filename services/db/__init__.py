"""PostgreSQL access: the pool and the schema migrations (``rows``: reading rows)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

import asyncpg
import msgspec

from wrtci.core.runtime import Daemon
from wrtci.services.config import DatabaseConfig

S = TypeVar("S", bound=msgspec.Struct)


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


async def fetch_rows(conn: asyncpg.Connection, row_type: type[S], sql: str, *args: Any) -> list[S]:
    """The rows of ``sql`` as ``row_type``, whose fields are the selected columns (a
    column selected and not named there, or named and not selected, is an error)."""
    return [row_type(**dict(row)) for row in await conn.fetch(sql, *args)]


async def fetch_row(conn: asyncpg.Connection, row_type: type[S], sql: str,
                    *args: Any) -> S | None:
    """The first row of ``sql`` as ``row_type`` (see :func:`fetch_rows`); None: no row."""
    row = await conn.fetchrow(sql, *args)
    return None if row is None else row_type(**dict(row))
