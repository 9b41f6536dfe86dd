"""Firmware files wrtci holds itself (uploads, PR artifacts), in object storage.

minio is synchronous: every call runs in a thread, with the HTTP timeouts of
the storage config.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from wrtci.services.config import StorageConfig
from wrtci.services.storage import minio_client


class ObjectStore:
    def __init__(self, config: StorageConfig) -> None:
        self.bucket = config.bucket
        self.client = minio_client(config)

    async def put_file(self, key: str, path: Path,
                       content_type: str = "application/octet-stream") -> None:
        """Store a local file under ``key`` (multipart for large files)."""
        await asyncio.to_thread(self.client.fput_object, self.bucket, key, str(path),
                                content_type=content_type)

    async def check(self) -> None:
        if not await asyncio.to_thread(self.client.bucket_exists, self.bucket):
            raise RuntimeError(f"bucket {self.bucket!r} does not exist")
