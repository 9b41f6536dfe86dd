"""Console logs and artifacts of a job attempt, streamed from object storage.

The object is read in pieces and each piece written to the client before the
next is read: a 100 MB console log costs one piece of memory, not 100 MB.
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import web
from minio.error import S3Error

from wrtci.proto.storage import job_log_key
from wrtci.services.config import StorageConfig
from wrtci.services.storage import content_type, is_missing, minio_client

log = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def log_key(job_id: str, attempt: int, stream: str, recorded_key: str | None) -> str:
    """The key the log writer uses; the console log as the results service recorded it."""
    if stream == "console" and recorded_key:
        return recorded_key
    return job_log_key(job_id, attempt, stream)


class LogReader:
    def __init__(self, config: StorageConfig, chunk_bytes: int) -> None:
        self.config = config
        self.client = minio_client(config)
        self.chunk_bytes = chunk_bytes

    async def _call(self, fn, *args, **kwargs):
        return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs),
                                      self.config.timeout_s)

    async def stream(self, request: web.Request, key: str,
                     stream: str) -> web.StreamResponse | None:
        """Send the object to the client; None when there is no such object."""
        try:
            obj = await self._call(self.client.get_object, self.config.bucket, key)
        except S3Error as exc:
            if is_missing(exc):
                return None
            raise
        try:
            response = web.StreamResponse(headers={
                # Never the stored type: a lab must not be able to serve HTML from our origin.
                "Content-Type": content_type(stream),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "no-cache",
            })
            size = obj.headers.get("Content-Length")
            if size is not None and size.isdigit():
                response.content_length = int(size)
            await response.prepare(request)
            try:
                while chunk := await self._call(obj.read, self.chunk_bytes):
                    await response.write(chunk)
                await response.write_eof()
            except (OSError, TimeoutError) as exc:
                # The response has started: no error page can follow. The client
                # went away, or storage failed mid-object; end the connection.
                log.warning("log stream cut off: %r", exc, extra={"key": key})
                if request.transport is not None:
                    request.transport.close()
            return response
        finally:
            obj.close()
            obj.release_conn()

    async def check(self) -> None:
        if not await self._call(self.client.bucket_exists, self.config.bucket):
            raise RuntimeError(f"bucket {self.config.bucket} does not exist")

    async def read_tail(self, key: str, max_bytes: int) -> tuple[str, int] | None:
        """The last ``max_bytes`` of the object as text, and how many bytes came before;
        None when there is no such object (for the log viewer page, which must stay small)."""
        try:
            stat = await self._call(self.client.stat_object, self.config.bucket, key)
            skipped = max(0, (stat.size or 0) - max_bytes)
            obj = await self._call(self.client.get_object, self.config.bucket, key,
                                   offset=skipped)
        except S3Error as exc:
            if is_missing(exc):
                return None
            raise
        try:
            data = await self._call(obj.read, max_bytes)
        finally:
            obj.close()
            obj.release_conn()
        return data.decode("utf-8", errors="replace"), skipped

    async def names(self, prefix: str) -> set[str]:
        """The object names directly under ``prefix`` (a job attempt's artifacts)."""
        def listing() -> set[str]:
            return {o.object_name[len(prefix):] for o in self.client.list_objects(
                self.config.bucket, prefix=prefix)}
        return await self._call(listing)
