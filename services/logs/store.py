"""Object storage for logs: one object per (job, attempt, stream)."""

from __future__ import annotations

import asyncio

from minio.error import S3Error

from wrtci.services.config import StorageConfig
from wrtci.services.logs.buffer import DROPPED_HEADER, RunLogStorage
from wrtci.services.storage import minio_client

FINAL_META = "wrtci-final"
"""Object metadata on a complete log: a partial (live view) never replaces it."""


class LogStore:
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.client = minio_client(config)

    async def put_log(self, key: str, log: RunLogStorage, content_type: str,
                      dropped_bytes: int = 0, final: bool = False) -> int:
        """Store a log streamed from memory and its spill file (one part at a time)."""
        reader, length = log.reader()
        metadata = {DROPPED_HEADER: str(dropped_bytes)} if dropped_bytes else {}
        if final:
            metadata[FINAL_META] = "1"
        # The time allowed grows with the size: a big log on a slow store is not a failure.
        timeout = self.config.timeout_s * 2 + length / (1024 * 1024)
        await asyncio.wait_for(asyncio.to_thread(
            self.client.put_object, self.config.bucket, key, reader, length,
            content_type=content_type, metadata=metadata or None, num_parallel_uploads=1),
            timeout)
        return length

    async def is_final(self, key: str) -> bool:
        """Whether ``key`` holds a complete log (stored by this or another replica)."""
        try:
            stat = await asyncio.wait_for(asyncio.to_thread(
                self.client.stat_object, self.config.bucket, key), self.config.timeout_s)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise
        return (stat.metadata or {}).get(f"x-amz-meta-{FINAL_META}") == "1"

    async def check(self) -> None:
        exists = await asyncio.wait_for(
            asyncio.to_thread(self.client.bucket_exists, self.config.bucket),
            self.config.timeout_s)
        if not exists:
            raise RuntimeError(f"bucket {self.config.bucket} does not exist")
