"""Object storage for logs: one object per (job, attempt, stream)."""

from __future__ import annotations

import asyncio
import io

from services.config import StorageConfig
from services.storage import minio_client


class LogStore:
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.client = minio_client(config)

    async def put_text(self, key: str, text: str, content_type: str) -> int:
        data = text.encode("utf-8")
        await asyncio.wait_for(asyncio.to_thread(
            self.client.put_object, self.config.bucket, key, io.BytesIO(data), len(data),
            content_type=content_type), self.config.timeout_s * 2)
        return len(data)

    async def check(self) -> None:
        exists = await asyncio.wait_for(
            asyncio.to_thread(self.client.bucket_exists, self.config.bucket),
            self.config.timeout_s)
        if not exists:
            raise RuntimeError(f"bucket {self.config.bucket} does not exist")


def content_type(stream: str) -> str:
    if stream.endswith(".xml"):
        return "application/xml"
    if stream.endswith(".json"):
        return "application/json"
    return "text/plain; charset=utf-8"
