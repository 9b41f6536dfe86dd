"""--check probes that only the central services need."""

from __future__ import annotations

from wrtci.services.config import DatabaseConfig


async def check_database(config: DatabaseConfig, probe_sql: str) -> None:
    """Connect and run a query that needs this daemon's tables."""
    import asyncpg  # only the central services have it

    conn = await asyncpg.connect(config.dsn, timeout=10, command_timeout=config.command_timeout_s)
    try:
        await conn.fetchval(probe_sql)
    finally:
        await conn.close()
