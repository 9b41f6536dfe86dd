"""Real servers for the tests: started once per session, isolated per test.

nats-server (JetStream), PostgreSQL and the S3 server run as local processes
on free loopback ports in a temp dir. Each test gets its own subject prefix
(hence its own streams and buckets), its own database (a copy of a migrated
template) and its own object-storage bucket.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from minio import Minio

from wrtci.core.config import NatsConfig
from wrtci.core.runtime import connect_nats
from wrtci.proto import topology
from wrtci.proto.subjects import Subjects
from wrtci.services import db
from wrtci.services.config import DatabaseConfig, StorageConfig
from wrtci.services.db.migrate import migrate
from wrtci.services.stack.servers import NatsServer, PostgresServer, S3Server

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Fixtures every area uses: the lab's (devices, suites, firmware) and GitHub's double.
pytest_plugins = ["tests.lab_fixtures", "tests.servers.github_fixture"]

TEST_DATA = PROJECT_ROOT / "tests" / "data"
SHARED_FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures"
TEMPLATE_DB = "wrtci_template"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Real-format OpenWrt files written for these tests, kept in the repository."""
    return TEST_DATA


@pytest.fixture(scope="session")
def shared_fixtures_dir() -> Path:
    """The workplace's own copies of OpenWrt files, for an extra conformance run.

    They sit beside a checkout only on the developers' machines; elsewhere the
    conformance tests are skipped, never failed.
    """
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"no shared fixtures at {SHARED_FIXTURES} (conformance run only)")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def server_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="wrtci-test-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as the postgres user when we are root
    yield root
    shutil.rmtree(root, ignore_errors=True)


# The session's servers keep nothing worth a clean shutdown (their directories are
# removed next): a clean stop of a NATS server holding a thousand test streams, or of
# PostgreSQL with hundreds of test databases, took over a minute on a loaded machine.
DISCARD = signal.SIGKILL


@pytest.fixture(scope="session")
def nats_server(server_root: Path) -> Iterator[NatsServer]:
    server = NatsServer(server_root / "nats" / "store").start()
    yield server
    server.stop(DISCARD)


@pytest.fixture(scope="session")
def postgres_server(server_root: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(server_root / "postgres", durable=False).start()
    yield server
    server.stop(signal.SIGQUIT)  # PostgreSQL's immediate shutdown: its data is thrown away


@pytest.fixture(scope="session")
def s3_server(server_root: Path) -> Iterator[S3Server]:
    server = S3Server(server_root / "s3").start()
    yield server
    server.stop(DISCARD)


@pytest.fixture
def traversable_tmp() -> Iterator[Path]:
    """A temp dir the postgres user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="wrtci-state-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- per test ----------------------------------------------------------------------


@pytest.fixture
def subjects() -> Subjects:
    return Subjects(f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def nats_config(nats_server: NatsServer, subjects: Subjects) -> NatsConfig:
    return NatsConfig(url=nats_server.url, prefix=subjects.prefix)


@pytest.fixture
async def nc(nats_config: NatsConfig) -> AsyncIterator:
    client = await connect_nats(nats_config, "wrtci-test")
    yield client
    await client.close()


@pytest.fixture
async def js(nc, subjects: Subjects):
    """JetStream with this test's streams and buckets applied."""
    context = nc.jetstream()
    await topology.apply(context, subjects)
    return context


@pytest.fixture(scope="session")
async def template_database(postgres_server: PostgresServer) -> str:
    conn = await asyncpg.connect(postgres_server.dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    conn = await db.connect(DatabaseConfig(dsn=postgres_server.dsn(TEMPLATE_DB)))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE_DB


async def _create_database(postgres_server: PostgresServer, template: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres_server.dsn())
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()
    return name


@pytest.fixture
async def empty_database_config(postgres_server: PostgresServer) -> DatabaseConfig:
    """A database with no schema at all."""
    return await new_database_config(postgres_server, None)


@pytest.fixture
async def database_config(
    postgres_server: PostgresServer, template_database: str
) -> DatabaseConfig:
    """A freshly migrated database of this test's own."""
    return await new_database_config(postgres_server, template_database)


@pytest.fixture
async def pool(database_config: DatabaseConfig) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_config)
    yield pool
    await pool.close()


def new_storage_config(s3_server: S3Server) -> StorageConfig:
    """A new bucket of its own on the session's S3 server."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    client = Minio(s3_server.endpoint, access_key=s3_server.access_key,
                   secret_key=s3_server.secret_key, secure=False, region=s3_server.region)
    client.make_bucket(bucket)
    return StorageConfig(endpoint=s3_server.endpoint, access_key=s3_server.access_key,
                         secret_key=s3_server.secret_key, bucket=bucket)


async def new_database_config(postgres_server: PostgresServer,
                              template: str | None) -> DatabaseConfig:
    """A new database of its own: a copy of ``template``, or empty."""
    name = await _create_database(postgres_server, template)
    return DatabaseConfig(dsn=postgres_server.dsn(name), max_pool=5)


@pytest.fixture
def storage_config(s3_server: S3Server) -> StorageConfig:
    return new_storage_config(s3_server)


@pytest.fixture
def site_config_file(tmp_path: Path, nats_config: NatsConfig, storage_config: StorageConfig,
                     database_config: DatabaseConfig) -> Path:
    """A site TOML file for the CLI pointing at this test's servers."""
    from wrtci.core.config import dump_config
    from wrtci.services.cli.common import CliConfig

    path = tmp_path / "wrtci.toml"
    path.write_bytes(dump_config(CliConfig(nats=nats_config, database=database_config,
                                           storage=storage_config)))
    return path
