"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from wrtci.core.config import NatsConfig
from wrtci.core.retry import Backoff, retry_call
from wrtci.core.runtime import connect_nats
from wrtci.proto import topology
from wrtci.services.config import StorageConfig
from wrtci.services.stack.servers import NatsServer
from wrtci.services.storage import minio_client

PROJECT_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``wrtci ARGS`` as a user would, in a subprocess of this checkout."""
    full_env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    full_env.pop("WRTCI_CONFIG", None)
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "wrtci.services.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=PROJECT_ROOT,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"wrtci {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def read_object(storage_config: StorageConfig, key: str) -> bytes:
    """An object of this test's bucket, whole."""
    response = minio_client(storage_config).get_object(storage_config.bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def put_object(storage_config: StorageConfig, key: str, data: bytes) -> None:
    minio_client(storage_config).put_object(storage_config.bucket, key, io.BytesIO(data),
                                            len(data))


def kcidb_errors(document: Any) -> list[str]:
    """What KernelCI's own validator (kcidb-io, the newest schema) says of a document."""
    import jsonschema
    import kcidb_io

    if not isinstance(document, dict):
        document = msgspec.to_builtins(document)
    try:
        kcidb_io.schema.LATEST.validate(document)
    except jsonschema.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.absolute_path))}: {exc.message}"]
    return []


def assert_kcidb_valid(document: Any) -> None:
    errors = kcidb_errors(document)
    assert not errors, errors


async def eventually(predicate, what: str = "the condition", within_s: float = 30.0,
                     every_s: float = 0.05):
    """Until ``predicate()`` (sync or async) returns something true; returns that.

    The one wait of the tests: the database and the streams have no change feed
    a test could wait on, so it looks again every ``every_s``. On time-out it
    fails the test, naming ``what`` it waited for.
    """
    async def loop():
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(every_s)
    try:
        return await asyncio.wait_for(loop(), within_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_s} s waiting for {what}") from None


async def run_until(loop: Callable[[asyncio.Event], Awaitable[Any]], done: asyncio.Event,
                    within_s: float = 15.0) -> None:
    """Run a daemon loop (given its stop event) until ``done`` is set, then stop it and
    wait for its end."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop(stop))
    try:
        await asyncio.wait_for(done.wait(), within_s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def consumer_caught_up(js: JetStreamContext, stream: str, durable: str) -> bool:
    """Every message the consumer's filter matches, up to now, handled (acked or terminated).

    The consumer's own ``num_pending`` can lag a publish that was just acknowledged (the
    stream tells its consumers asynchronously), so it is not trusted alone: the newest
    matching message is looked up first and must have been delivered.
    """
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:  # its loop has not created it yet
        return False
    filters = info.config.filter_subjects or [info.config.filter_subject or ">"]
    newest = 0
    for subject in filters:
        with contextlib.suppress(NotFoundError):
            newest = max(newest, (await js.get_last_msg(stream, subject)).seq or 0)
    info = await js.consumer_info(stream, durable)
    return (info.delivered.stream_seq >= newest and info.num_pending == 0
            and info.num_ack_pending == 0)


async def eventually_succeeds(call: Callable[[], Awaitable[T]], what: str,
                              within_s: float = 30.0, every_s: float = 0.2) -> T:
    """``await call()`` until it does not raise; returns its value.

    For a dependency that comes up or back (a NATS cluster electing, an object
    not written yet): core.retry's own retries, every ``every_s``; after
    ``within_s`` the last error is raised.
    """
    stop = asyncio.Event()
    timer = asyncio.get_running_loop().call_later(within_s, stop.set)
    try:
        return await retry_call(what, call, stop=stop,
                                backoff=Backoff(steps_s=(every_s,), jitter=0))
    finally:
        timer.cancel()


@contextlib.asynccontextmanager
async def private_nats(root: Path, prefix: str
                       ) -> AsyncIterator[tuple[NatsServer, NatsConfig, JetStreamContext]]:
    """A NATS server of the test's own (to stop and start), its topology applied,
    and a JetStream client of it that reconnects."""
    server = NatsServer(root / prefix / "store").start()
    config = NatsConfig(url=server.url, prefix=prefix)
    try:
        nc = await connect_nats(config, "test-sender")
        try:
            js = nc.jetstream()
            await topology.apply(js, config.subjects)
            yield server, config, js
        finally:
            await nc.close()
    finally:
        server.stop()
