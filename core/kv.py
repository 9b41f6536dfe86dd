"""Following a JetStream KV watch until ``stop``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.js.kv import KeyValue

from wrtci.core.retry import CALL_TIMEOUT_S, FAILOVER_BACKOFF, retry_call

log = logging.getLogger(__name__)


async def follow_watch(watcher: KeyValue.KeyWatcher, stop: asyncio.Event,
                       on_entry: Callable[[KeyValue.Entry], Awaitable[object]],
                       ready: asyncio.Event) -> None:
    """Hand every update of ``watcher`` to ``on_entry`` until ``stop``; then stop the watch.

    ``ready`` is set at the end of what the bucket held when the watch began
    (nats-py's ``None`` marker). ``stop`` is looked at every second at least.
    """
    try:
        while not stop.is_set():
            try:
                entry = await watcher.updates(timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            if entry is None:  # the end of what was there before the watch
                ready.set()
                continue
            await on_entry(entry)
    finally:
        try:
            await asyncio.wait_for(watcher.stop(), CALL_TIMEOUT_S)
        except Exception as exc:  # the server may be gone; its consumer is ephemeral
            log.info("KV watch not stopped cleanly: %r", exc)


async def open_watch(js: Any, bucket: str, stop: asyncio.Event, keys: str = ">",
                     *, timeout_s: float = CALL_TIMEOUT_S) -> KeyValue.KeyWatcher:
    """A watch of ``keys`` in ``bucket``; each JetStream request bounded by ``timeout_s``
    and retried with :data:`FAILOVER_BACKOFF` (a bucket whose stream elects a new
    leader answers again within seconds), until it works or ``stop``."""

    async def watch() -> KeyValue.KeyWatcher:
        kv = await asyncio.wait_for(js.key_value(bucket), timeout_s)
        return await asyncio.wait_for(kv.watch(keys), timeout_s)

    return await retry_call(f"KV watch of {bucket}", watch, stop=stop,
                            backoff=FAILOVER_BACKOFF, logger=log)


async def watch_bucket(js: Any, bucket: str, stop: asyncio.Event,
                       on_entry: Callable[[KeyValue.Entry], Awaitable[object]],
                       ready: asyncio.Event, keys: str = ">") -> None:
    """:func:`open_watch` then :func:`follow_watch`: a daemon loop's whole body."""
    await follow_watch(await open_watch(js, bucket, stop, keys), stop, on_entry, ready)
