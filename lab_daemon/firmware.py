"""Firmware downloads into a bounded cache keyed by sha256.

A file is only ever in the cache under the checksum it really has: the
download goes to a temp file, is hashed while it streams, and is renamed into
place only when the digest matches. The least recently used files go when
the cache grows past its limit, except those a running job holds: a firmware
is read again long after the job started (labgrid boots it, a TFTP server
serves it), so it must stay until the job releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections import Counter
from pathlib import Path

import aiohttp

from wrtci.core.retry import Backoff, retry_call

log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"[^A-Za-z0-9._+-]+")


DOWNLOAD_RETRY = Backoff(steps_s=(5.0, 30.0))
"""Delays between the download tries of one job attempt."""


class DownloadError(Exception):
    """The image could not be fetched (network, HTTP status, timeout)."""


class ChecksumMismatch(Exception):
    """The fetched file is not the image the job names."""


class FirmwareCache:
    def __init__(self, root: Path, max_bytes: int, timeout_s: float = 600.0, *,
                 download_attempts: int = 3,
                 download_retry: Backoff = DOWNLOAD_RETRY) -> None:
        self.download_attempts = download_attempts
        """Tries inside one job attempt: a short outage of the server does not fail the job."""
        self.download_retry = download_retry
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._locks: dict[str, asyncio.Lock] = {}
        self._in_use: Counter[Path] = Counter()
        # evict() runs in a thread: it and hold() decide about a file under this lock.
        self._guard = threading.Lock()

    def path_for(self, sha256: str, name: str) -> Path:
        safe = _NAME_RE.sub("_", name).strip(".") or "image"
        return self.root / sha256 / safe

    def cached(self, sha256: str, name: str) -> Path | None:
        """The image if the cache has it, held for the caller (``release`` it)."""
        sha256 = sha256.lower()
        if not _SHA_RE.match(sha256):
            return None  # not a checksum (maybe a path): never a cache entry
        path = self.path_for(sha256, name)
        return path if self.hold(path) else None

    async def fetch(self, url: str, sha256: str, name: str) -> Path:
        """The image, from the cache or downloaded from ``url`` and verified; held."""
        sha256 = sha256.lower()
        if not _SHA_RE.match(sha256):
            raise ChecksumMismatch(f"job carries an invalid sha256 {sha256!r}")
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            path = self.path_for(sha256, name)
            if self.hold(path):
                return path
            path.parent.mkdir(parents=True, exist_ok=True)
            await retry_call(f"download {_redact(url)}", self._download, url, sha256, path,
                             stop=asyncio.Event(), backoff=self.download_retry, on=DownloadError,
                             attempts=self.download_attempts, logger=log)
            self.hold(path)
        await asyncio.to_thread(self.evict)
        return path

    def hold(self, path: Path) -> bool:
        """Mark ``path`` in use (and most recently used); False if it is not there."""
        with self._guard:
            try:
                os.utime(path)
            except FileNotFoundError:
                return False
            self._in_use[path] += 1
            return True

    def release(self, path: Path) -> None:
        """The job is done with ``path``: eviction may take it again."""
        with self._guard:
            self._in_use[path] -= 1
            if self._in_use[path] <= 0:
                del self._in_use[path]

    def remove_partial_downloads(self) -> int:
        """Delete the temp files of downloads a killed daemon left; returns how many."""
        removed = 0
        for tmp in self.root.glob("*/.download-*"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
        return removed

    async def _download(self, url: str, sha256: str, path: Path) -> None:
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".download-")
        tmp = Path(tmp_name)
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s, sock_read=60)
            with os.fdopen(fd, "wb") as out:
                async with aiohttp.ClientSession(timeout=timeout) as session, \
                        session.get(url) as response:
                    if response.status != 200:
                        raise DownloadError(f"GET {_redact(url)}: HTTP {response.status}")
                    async for block in response.content.iter_chunked(256 * 1024):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
            actual = digest.hexdigest()
            if actual != sha256:
                raise ChecksumMismatch(
                    f"sha256 of {_redact(url)} is {actual}, the job expects {sha256}")
            os.replace(tmp, path)
            log.info("firmware downloaded", extra={"sha256": sha256, "bytes": size})
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DownloadError(f"GET {_redact(url)}: {exc!r}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def evict(self) -> None:
        """Drop least recently used images until the cache fits its limit (none in use)."""
        files = [p for p in self.root.glob("*/*") if p.is_file() and not p.name.startswith(".")]
        entries = sorted(((p.stat().st_mtime, p.stat().st_size, p) for p in files),
                         key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            with self._guard:
                if path in self._in_use:
                    continue
                with contextlib.suppress(OSError):
                    path.unlink()
                    total -= size
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only once its directory is empty


def _redact(url: str) -> str:
    """URLs may be presigned: never log the signature."""
    return url.split("?", 1)[0]
