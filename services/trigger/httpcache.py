"""Conditional GET with validators that every replica shares (``trigger_http_cache``).

``get`` sends ``If-None-Match`` / ``If-Modified-Since`` from the table; a 304
costs no body. ``remember`` stores the validators of a response, and is called
by the scanner only once what the body described has been recorded, so a
crash in between means the next scan downloads the body again.
"""

from __future__ import annotations

import aiohttp
import asyncpg
import msgspec


class FetchError(Exception):
    """The server did not give a usable answer (network, 5xx, too large)."""


class NotFound(FetchError):
    pass


class Document(msgspec.Struct, frozen=True):
    url: str
    changed: bool
    """False when the server answered 304 (body is the cached one, or None)."""
    body: bytes | None
    etag: str | None = None
    last_modified: str | None = None


class FetchStats(msgspec.Struct):
    requests: int = 0
    not_modified: int = 0
    bytes: int = 0


class ConditionalFetcher:
    def __init__(self, session: aiohttp.ClientSession, pool: asyncpg.Pool, *,
                 timeout_s: float = 30.0, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.session = session
        self.pool = pool
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_bytes = max_bytes
        self.stats = FetchStats()

    async def get(self, url: str, *, keep_body: bool = False,
                  conditional: bool = True) -> Document:
        """Fetch ``url``; with ``keep_body`` a 304 returns the body stored by ``remember``."""
        row = None
        if conditional:
            row = await self.pool.fetchrow(
                "SELECT etag, last_modified, body FROM trigger_http_cache WHERE url = $1", url)
        headers = {}
        if row is not None and (not keep_body or row["body"] is not None):
            if row["etag"]:
                headers["If-None-Match"] = row["etag"]
            if row["last_modified"]:
                headers["If-Modified-Since"] = row["last_modified"]
        self.stats.requests += 1
        try:
            async with self.session.get(url, headers=headers, timeout=self.timeout) as resp:
                if resp.status == 304 and headers:
                    self.stats.not_modified += 1
                    body = bytes(row["body"]) if keep_body else None
                    return Document(url, False, body, row["etag"], row["last_modified"])
                if resp.status == 404:
                    raise NotFound(f"{url}: 404 not found")
                if resp.status != 200:
                    raise FetchError(f"{url}: HTTP {resp.status}")
                if (resp.content_length or 0) > self.max_bytes:
                    raise FetchError(f"{url}: {resp.content_length} bytes is over the limit")
                body = await self._read_limited(resp, url)
                return Document(url, True, body, resp.headers.get("ETag"),
                                resp.headers.get("Last-Modified"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise FetchError(f"{url}: {exc!r}") from exc

    async def _read_limited(self, resp: aiohttp.ClientResponse, url: str) -> bytes:
        chunks = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchError(f"{url}: body over {self.max_bytes} bytes")
            chunks.append(chunk)
        self.stats.bytes += size
        return b"".join(chunks)

    async def remember(self, doc: Document, *, keep_body: bool = False) -> None:
        """Store the validators of a fetched document (nothing to do after a 304)."""
        if not doc.changed or not (doc.etag or doc.last_modified):
            return
        await self.pool.execute(
            """INSERT INTO trigger_http_cache (url, etag, last_modified, body, updated_at)
               VALUES ($1, $2, $3, $4, now())
               ON CONFLICT (url) DO UPDATE SET etag = $2, last_modified = $3, body = $4,
                                               updated_at = now()""",
            doc.url, doc.etag, doc.last_modified, doc.body if keep_body else None,
        )
