"""The GitHub REST API client the services share (trigger and notifier).

One place for the headers, the token (sent to the API's own origin only),
timeouts, pagination by ``Link`` header and GitHub's rate limits. Errors:

- :class:`RateLimited` — 403/429 with ``X-RateLimit-Remaining: 0`` or
  ``Retry-After``; ``reset_at`` says when to ask again;
- :class:`GithubHttpError` — any other unexpected status (``status`` kept);
- :class:`GithubError` — the base, also for network trouble, timeouts and
  answers that do not decode.

No service imports another's package: this module depends on nothing but
aiohttp, msgspec and yarl.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec
import yarl

T = TypeVar("T")

MAX_PAUSE_S = 3600.0
"""GitHub's limits reset hourly: no answer pauses a caller for longer."""


class GithubError(Exception):
    """GitHub did not give a usable answer (network, status, shape)."""


class GithubHttpError(GithubError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(GithubError):
    def __init__(self, message: str, reset_at: float) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class ResponseTooLarge(GithubError):
    """A download grew past the caller's limit."""


def rate_limit_reset(headers: Mapping[str, str], now: float) -> float:
    """When to ask again: ``Retry-After`` (seconds or an HTTP date), else
    ``X-RateLimit-Reset`` (epoch seconds), else in a minute; a value that does
    not parse counts as absent."""
    retry_after = headers.get("Retry-After", "").strip()
    reset_at = None
    if retry_after.isdigit():
        reset_at = now + int(retry_after)
    elif retry_after:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            reset_at = email.utils.parsedate_to_datetime(retry_after).timestamp()
    if reset_at is None:
        reset = headers.get("X-RateLimit-Reset", "").strip()
        reset_at = float(reset) if reset.isdigit() else now + 60
    return min(max(reset_at, now), now + MAX_PAUSE_S)


class GithubClient:
    def __init__(self, session: aiohttp.ClientSession, *, api_url: str = "https://api.github.com",
                 token: str | None = None, timeout_s: float = 30.0) -> None:
        self.session = session
        self.base = api_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.headers = {"Accept": "application/vnd.github+json",
                        "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._origin = yarl.URL(self.base).origin()

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base}{path}"

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers for ``url``: the token goes to the API's own origin only.

        URLs come from answers (``Link: next``, ``archive_download_url``); one
        naming another host must not receive the token.
        """
        if yarl.URL(url).origin() == self._origin:
            return self.headers
        return {k: v for k, v in self.headers.items() if k != "Authorization"}

    @staticmethod
    def check(resp: aiohttp.ClientResponse, url: str, ok: tuple[int, ...] = (200,)) -> None:
        """Raise for a status not in ``ok``: RateLimited, else GithubHttpError."""
        if resp.status in ok:
            return
        remaining = resp.headers.get("X-RateLimit-Remaining")
        if resp.status in (403, 429) and (remaining == "0" or "Retry-After" in resp.headers):
            reset_at = rate_limit_reset(resp.headers, time.time())
            raise RateLimited(f"{url}: rate limited until {reset_at:.0f}", reset_at)
        raise GithubHttpError(f"{resp.method} {url}: HTTP {resp.status}", resp.status)

    async def request(self, method: str, path: str, *, payload: Any = None,
                      params: Mapping[str, Any] | None = None,
                      ok: tuple[int, ...] = (200, 201)) -> tuple[bytes, str | None]:
        """The answer's body and the next page's URL (``Link: rel=next``)."""
        url = self.url(path)
        try:
            async with self.session.request(method, url, json=payload, params=params,
                                            headers=self.headers_for(url),
                                            timeout=self.timeout) as resp:
                if resp.status not in ok:
                    try:
                        self.check(resp, url, ok)
                    except GithubHttpError as exc:
                        text = (await resp.text(errors="replace"))[:300]
                        raise GithubHttpError(f"{exc}: {text}", exc.status) from None
                next_url = resp.links.get("next", {}).get("url")
                return await resp.read(), str(next_url) if next_url else None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise GithubError(f"{method} {url}: {exc!r}") from exc

    async def get(self, path: str, params: Mapping[str, Any],
                  shape: type[T]) -> tuple[T, str | None]:
        """One page decoded as ``shape``, and the next page's URL from the Link header."""
        body, next_url = await self.request("GET", path, params=params, ok=(200,))
        try:
            return msgspec.json.decode(body, type=shape), next_url
        except msgspec.DecodeError as exc:
            raise GithubError(f"{self.url(path)}: unexpected answer: {exc}") from exc

    async def all_pages(self, path: str, params: Mapping[str, Any], shape: type[T],
                        max_pages: int = 20) -> list[T]:
        pages = []
        url: str | None = path
        for _ in range(max_pages):
            if url is None:
                break
            page, url = await self.get(url, params if url == path else {}, shape)
            pages.append(page)
        return pages

    async def download(self, url: str, dest: Path, max_bytes: int) -> int:
        size = 0
        try:
            # A file of a gigabyte takes longer than any API call: bound the
            # connection and each read, not the whole transfer.
            timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout.total,
                                            sock_read=self.timeout.total)
            async with self.session.get(url, headers=self.headers_for(url),
                                        timeout=timeout) as resp:
                self.check(resp, url)
                with dest.open("wb") as out:
                    async for chunk in resp.content.iter_chunked(1024 * 1024):
                        size += len(chunk)
                        if size > max_bytes:
                            raise ResponseTooLarge(f"{url}: over {max_bytes} bytes")
                        out.write(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise GithubError(f"{url}: {exc!r}") from exc
        return size
