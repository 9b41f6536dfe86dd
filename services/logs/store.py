"""Object storage for logs: one object per (job, attempt, stream)."""

from __future__ import annotations

import asyncio

from wrtci.services.config import StorageConfig
from wrtci.services.logs.buffer import DROPPED_HEADER, RunLogStorage
from wrtci.services.storage import minio_client


class LogStore:
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.client = minio_client(config)

    async def put_log(self, key: str, log: RunLogStorage, content_type: str,
                      dropped_bytes: int = 0) -> int:
        """Store a log streamed from memory and its spill file (one part at a time)."""
        reader, length = log.reader()
        metadata = {DROPPED_HEADER: str(dropped_bytes)} if dropped_bytes else None
        # The time allowed grows with the size: a big log on a slow store is not a failure.
        timeout = self.config.timeout_s * 2 + length / (1024 * 1024)
        await asyncio.wait_for(asyncio.to_thread(
            self.client.put_object, self.config.bucket, key, reader, length,
            content_type=content_type, metadata=metadata, num_parallel_uploads=1), timeout)
        return length

    async def check(self) -> None:
        exists = await asyncio.wait_for(
            asyncio.to_thread(self.client.bucket_exists, self.config.bucket),
            self.config.timeout_s)
        if not exists:
            raise RuntimeError(f"bucket {self.config.bucket} does not exist")
