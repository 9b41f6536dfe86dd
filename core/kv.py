"""Following a JetStream KV watch until ``stop``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats.errors
from nats.js.kv import KeyValue


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
        await watcher.stop()
