"""``wrtci db migrate``: bring the PostgreSQL schema up to date."""

from __future__ import annotations

import argparse
import asyncio

from wrtci.services import db
from wrtci.services.cli.common import add_command, cli_config, command_group
from wrtci.services.db.migrate import current_version, migrate


def add_parser(sub: argparse._SubParsersAction) -> None:
    db_sub = command_group(sub, "db", "database schema")
    add_command(db_sub, "migrate", run_migrate, "apply missing schema migrations")


async def _migrate(args: argparse.Namespace) -> tuple[list, int]:
    conn = await db.connect(cli_config(args).database)
    try:
        applied = await migrate(conn)
        return applied, await current_version(conn)
    finally:
        await conn.close()


def run_migrate(args: argparse.Namespace) -> int:
    applied, version = asyncio.run(_migrate(args))
    for migration in applied:
        print(f"applied    {migration.version:04d}_{migration.name}")
    print(f"schema at version {version}" + ("" if applied else " (nothing to do)"))
    return 0
