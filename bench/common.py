"""What the benchmarks share: their options, a scratch directory, and the local servers
(nats-server with the topology applied, a migrated PostgreSQL database, an S3 bucket).

    from common import options, servers, work_dir

    args = options(__doc__, jobs=1000, batch=(500, "messages per fetch")).parse_args()
    with work_dir() as root:
        async with servers(root, postgres=True) as local:
            ... local.nats, local.js, local.database ...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks use tests' servers and factories too

import asyncpg  # noqa: E402
from minio import Minio  # noqa: E402
from nats.aio.client import Client  # noqa: E402
from nats.js import JetStreamContext  # noqa: E402

from wrtci.core.config import NatsConfig  # noqa: E402
from wrtci.core.runtime import connect_nats  # noqa: E402
from wrtci.proto import topology  # noqa: E402
from wrtci.services import db  # noqa: E402
from wrtci.services.config import DatabaseConfig, StorageConfig  # noqa: E402
from wrtci.services.db.migrate import migrate  # noqa: E402
from wrtci.services.stack.servers import NatsServer, PostgresServer, S3Server  # noqa: E402

NAME = "bench"
"""The NATS subject prefix, database and bucket of every benchmark."""


def options(doc: str | None, **defaults: Any) -> argparse.ArgumentParser:
    """A parser described by the module's docstring, with ``--NAME`` (``_`` as ``-``) for
    each ``NAME=default`` or ``NAME=(default, help)``, typed like its default."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in defaults.items():
        default, text = value if isinstance(value, tuple) else (value, None)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default),
                            default=default, help=text)
    return parser


@contextlib.contextmanager
def work_dir(parent: str | None = None) -> Iterator[Path]:
    """A scratch directory, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="wrtci-bench-", dir=parent))
    os.chmod(root, 0o755)  # PostgreSQL runs as the postgres user when we are root
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Servers:
    nats_server: NatsServer
    nats: NatsConfig
    nc: Client
    js: JetStreamContext
    database: DatabaseConfig | None
    storage: StorageConfig | None


async def create_database(postgres: PostgresServer, max_pool: int) -> DatabaseConfig:
    """A new database on the server, migrated."""
    admin = await asyncpg.connect(postgres.dsn())
    await admin.execute(f'CREATE DATABASE "{NAME}"')
    await admin.close()
    database = DatabaseConfig(dsn=postgres.dsn(NAME), max_pool=max_pool)
    conn = await db.connect(database)
    await migrate(conn)
    await conn.close()
    return database


def create_bucket(s3: S3Server) -> StorageConfig:
    Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
          secure=False).make_bucket(NAME)
    return StorageConfig(endpoint=s3.endpoint, access_key=s3.access_key,
                         secret_key=s3.secret_key, bucket=NAME)


@contextlib.asynccontextmanager
async def servers(root: Path, *, postgres: bool = False, s3: bool = False,
                  max_pool: int = 10) -> AsyncIterator[Servers]:
    """nats-server (the topology applied, a connection open), and PostgreSQL (not
    durable, like the tests') and the S3 server when asked, stopped afterwards."""
    with contextlib.ExitStack() as stop:
        nats_server = NatsServer(root / "nats").start()
        stop.callback(nats_server.stop)
        database = storage = None
        if postgres:
            pg = PostgresServer(root / "postgres", durable=False).start()
            stop.callback(pg.stop)
            database = await create_database(pg, max_pool)
        if s3:
            s3_server = S3Server(root / "s3").start()
            stop.callback(s3_server.stop)
            storage = create_bucket(s3_server)
        nats = NatsConfig(url=nats_server.url, prefix=NAME)
        nc = await connect_nats(nats, NAME)
        try:
            js = nc.jetstream()
            await topology.apply(js, nats.subjects)
            yield Servers(nats_server=nats_server, nats=nats, nc=nc, js=js, database=database,
                          storage=storage)
        finally:
            if not nc.is_closed:
                await nc.close()
