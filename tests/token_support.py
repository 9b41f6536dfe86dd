"""API tokens for the tests' servers: stored the way ``wrtci token create`` stores them.

The tests know their token's secret in advance (it appears in parametrized
cases), so they store its digest with the same ``services.auth.insert_token``
that ``create_token`` uses after generating a secret.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from wrtci.services import db
from wrtci.services.auth import insert_token, token_digest
from wrtci.services.config import DatabaseConfig


async def add_token(target: asyncpg.Pool | DatabaseConfig, name: str, secret: str,
                    scopes: list[str], expires_at: dt.datetime | None = None) -> None:
    if isinstance(target, DatabaseConfig):
        conn = await db.connect(target)
        try:
            await insert_token(conn, name, scopes, token_digest(secret), expires_at)
        finally:
            await conn.close()
        return
    async with target.acquire() as conn:
        await insert_token(conn, name, scopes, token_digest(secret), expires_at)
